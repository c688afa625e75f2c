"""The Hugging Face Space: the Dockerfile and README front matter (read statically: no Docker
engine here), and Space mode (LAB_SPACE=1): hub ids and uploads only, limits on every request."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def instructions(name: str) -> list[str]:
    return [line[len(name) + 1:] for line in dockerfile() if line.split()[0] == name]


def front_matter() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, flags=re.S)
    assert match, "README.md must start with a --- front matter block"
    pairs = (line.split(":", 1) for line in match.group(1).splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def test_dockerfile_builds_the_space_from_the_repo():
    lines = dockerfile()
    assert lines[0].startswith("FROM python:3.11")
    runs = " && ".join(instructions("RUN"))
    assert re.search(r"useradd .*--uid 1000 user", runs)
    assert instructions("USER") == ["user"]
    env = " ".join(instructions("ENV"))
    for setting in ("LAB_SPACE=1", "GRADIO_SERVER_NAME=0.0.0.0", "GRADIO_SERVER_PORT=7860"):
        assert setting in env.split()
    assert instructions("EXPOSE") == ["7860"]
    # torch: the CPU wheel at the version pinned in requirements.txt, then every requirement as pinned.
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    torch_pin = next(line for line in requirements if line.startswith("torch=="))
    assert "download.pytorch.org/whl/cpu" in runs and "grep -E '^torch==' requirements.txt" in runs
    assert torch_pin == "torch==2.13.0"
    assert "pip install --user -r requirements.txt" in runs
    # The demo is built into the image once the code is in, and the app starts from it.
    copy_code = lines.index("COPY --chown=user . .")
    build_demo = next(i for i, line in enumerate(lines) if line.startswith("RUN python -m lab demo build"))
    assert copy_code < build_demo
    assert lines[-1] == 'CMD ["python", "app.py"]'


def test_dockerignore_keeps_local_state_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".cache", "test-artifacts", "*.duckdb"} <= ignored


def test_readme_front_matter_declares_a_docker_space():
    meta = front_matter()
    assert meta["sdk"] == "docker"
    assert meta["app_port"] == instructions("EXPOSE")[0] == "7860"
    assert meta["pinned"] == "false"
    assert {"title", "emoji", "colorFrom", "colorTo"} <= set(meta)


@pytest.fixture()
def space(monkeypatch):
    monkeypatch.setenv("LAB_SPACE", "1")
    monkeypatch.chdir(ROOT)  # so that "lab" names a folder on the server


@pytest.mark.parametrize("ref", ["/etc", "./models", "../x", "lab", "~", "owner/../../etc", "a b"])
def test_space_mode_refuses_server_paths(space, tmp_path, ref):
    from lab.errors import LabError
    from lab.ui.session import Lab

    lab = Lab(tmp_path / "lab.duckdb")
    try:
        with pytest.raises(LabError, match="disabled"):
            lab.engine(ref)
    finally:
        lab.close()


@pytest.mark.parametrize("ref", ["meta-llama/Llama-2-7b-chat-hf", "gpt2", "demo:npo"])
def test_space_mode_accepts_hub_ids_and_demo_models(space, ref):
    from lab.ui.session import check_model_ref

    assert check_model_ref(ref) == ref


def test_space_mode_limits_requests(space, tmp_path):
    from lab.errors import LabError
    from lab.ui import auditing
    from lab.ui.session import PairSpec, limits

    lim = limits()
    assert lim.max_new_tokens == 64 and not lim.server_paths and not lim.remote_code and lim.max_upload
    assert auditing.SERVER_PATH not in auditing.fact_sources()
    with pytest.raises(LabError, match="server paths are disabled"):
        auditing.facts_path(auditing.SERVER_PATH, None, str(tmp_path / "facts.jsonl"))
    run = auditing.run_spec(PairSpec.demo(), auditing.DEMO_FACTS, None, "", ["direct"], None, 10, 10_000, "")
    assert run.max_new_tokens == 64 and run.limit == 10
    assert auditing.default_limit() == 50
    for value in ("/etc/passwd", "~/.ssh", "lab"):  # an SAE corpus read from the server
        options = auditing.options_frame(["sae"])
        options.loc[options["option"] == "corpus", "value"] = value
        with pytest.raises(LabError, match="option sae.corpus: .* server path"):
            auditing.run_spec(PairSpec.demo(), auditing.DEMO_FACTS, None, "", ["sae"], options, 10, 24, "")


def test_space_mode_caps_facts_per_run(space, demo_env, tmp_path):
    from lab.errors import LabError
    from lab.runner import SPACE_MAX_FACTS, prepare_audits
    from lab.ui import auditing
    from lab.ui.session import PairSpec

    big = tmp_path / "big.csv"
    big.write_text("question,answer\n" + "".join(f"Question {i}?,answer {i}\n" for i in range(SPACE_MAX_FACTS + 1)))
    spec = PairSpec.demo()
    too_many = auditing.run_spec(spec, auditing.UPLOAD, str(big), "", ["direct"], None, 0, 24, "")
    with pytest.raises(LabError, match=f"at most {SPACE_MAX_FACTS} facts"):
        prepare_audits(too_many)
    limited = auditing.run_spec(spec, auditing.UPLOAD, str(big), "", ["direct"], None, 50, 24, "")
    assert len(prepare_audits(limited)[0]) == 50


def test_space_mode_refuses_remote_code(space, demo_env, tmp_path):
    from lab.errors import LabError
    from lab.ui.session import Lab

    lab = Lab(tmp_path / "lab.duckdb")
    try:
        with pytest.raises(LabError, match="remote model code is disabled"):
            lab.engine("demo:base", trust_remote_code=True)
    finally:
        lab.close()
