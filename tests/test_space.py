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
    from lab.core.errors import LabError
    from lab.shell.ui.session import Lab

    lab = Lab(tmp_path / "lab.duckdb")
    try:
        with pytest.raises(LabError, match="disabled"):
            lab.engine(ref)
    finally:
        lab.close()


@pytest.mark.parametrize("ref", ["meta-llama/Llama-2-7b-chat-hf", "gpt2", "demo:npo"])
def test_space_mode_accepts_hub_ids_and_demo_models(space, ref):
    from lab.core.policy import current

    assert current().check_ref(ref).text == ref


def test_space_mode_limits_requests(space, demo_env, tmp_path):
    from lab.core.errors import LabError
    from lab.core.policy import current
    from lab.shell.runner import check
    from lab.shell.ui import auditing
    from lab.shell.ui.session import PairSpec

    policy = current()
    assert policy.max_new_tokens == 64 and not policy.server_paths and not policy.remote_code and policy.max_upload
    assert auditing.SERVER_PATH not in auditing.fact_sources()
    with pytest.raises(LabError, match="server paths are disabled"):
        auditing.facts_path(auditing.SERVER_PATH, None, str(tmp_path / "facts.jsonl"))
    run = auditing.run_spec(PairSpec.demo(), auditing.DEMO_FACTS, None, "", ["direct"], None, 10, 10_000, "")
    with pytest.raises(LabError, match="--max-new-tokens=10000 is above the cap of 64 new tokens in Space mode"):
        check(run)
    run.max_new_tokens = 64
    assert len(check(run).facts) <= 30 and run.limit == 10
    assert auditing.default_limit() == 50
    for value in ("/etc/passwd", "~/.ssh", "lab"):  # an SAE corpus read from the server
        options = auditing.options_frame(["sae"])
        options.loc[options["option"] == "corpus", "value"] = value
        spec = auditing.run_spec(PairSpec.demo(), auditing.DEMO_FACTS, None, "", ["sae"], options, 10, 24, "")
        with pytest.raises(LabError, match="option sae.corpus: .* server path"):
            check(spec)


def test_space_mode_caps_facts_per_run(space, demo_env, tmp_path, monkeypatch):
    from lab.core.errors import LabError
    from lab.core.policy import SPACE
    from lab.shell.runner import check
    from lab.shell.ui import auditing
    from lab.shell.ui.session import PairSpec

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    big = tmp_path / "uploads" / "abc" / "big.csv"  # where an upload lands
    big.parent.mkdir(parents=True)
    big.write_text("question,answer\n" + "".join(f"Question {i}?,answer {i}\n" for i in range(SPACE.max_facts + 1)))
    spec = PairSpec.demo()
    too_many = auditing.run_spec(spec, auditing.UPLOAD, str(big), "", ["direct"], None, 1000, 24, "")
    with pytest.raises(LabError, match=f"at most {SPACE.max_facts} facts"):
        check(too_many)
    limited = auditing.run_spec(spec, auditing.UPLOAD, str(big), "", ["direct"], None, 50, 24, "")
    assert len(check(limited).facts) == 50
    outside = tmp_path / "big.csv"  # the same file outside the upload folder is a server path
    outside.write_text(big.read_text())
    with pytest.raises(LabError, match="server path"):
        check(auditing.run_spec(spec, auditing.UPLOAD, str(outside), "", ["direct"], None, 50, 24, ""))


def test_space_mode_refuses_remote_code(space, demo_env, tmp_path):
    from lab.core.errors import LabError
    from lab.shell.ui.session import Lab

    lab = Lab(tmp_path / "lab.duckdb")
    try:
        with pytest.raises(LabError, match="remote model code is disabled"):
            lab.engine("demo:base", trust_remote_code=True)
    finally:
        lab.close()
