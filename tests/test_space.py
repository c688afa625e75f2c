"""The Hugging Face Space: the Dockerfile and README front matter (read statically: no Docker
engine here), and Space mode (LAB_SPACE=1): hub ids and uploads only, limits on every request."""

from __future__ import annotations

from collections import Counter

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
    from lab.shell.ui.session import Lab, demo_pair

    lab = Lab(tmp_path / "lab.duckdb")
    try:
        with pytest.raises(LabError, match="disabled"):
            lab.engine(ref, demo_pair())
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
    from lab.shell.spec import replaced
    from lab.shell.ui import auditing
    from lab.shell.ui.session import demo_pair

    policy = current()
    assert policy.max_new_tokens == 64 and not policy.server_paths and not policy.remote_code and policy.max_upload
    assert auditing.SERVER_PATH not in auditing.fact_sources()
    with pytest.raises(LabError, match="server paths are disabled"):
        auditing.facts_path(auditing.SERVER_PATH, None, str(tmp_path / "facts.jsonl"))
    run = auditing.run_spec(demo_pair(), auditing.DEMO_FACTS, None, "", ["direct"], None, 10, 10_000, "")
    with pytest.raises(LabError, match="--max-new-tokens=10000 is above the cap of 64 new tokens in Space mode"):
        check(run)
    run = replaced(run, max_new_tokens=64)
    per_split_and_kind = Counter((f.split, f.kind) for f in check(run).facts)
    assert max(per_split_and_kind.values()) == 10 and run.limit == 10
    assert auditing.default_limit() == 50
    for value in ("/etc/passwd", "~/.ssh", "lab"):  # an SAE corpus read from the server
        options = auditing.options_frame(["sae"])
        options.loc[options["option"] == "corpus", "value"] = value
        spec = auditing.run_spec(demo_pair(), auditing.DEMO_FACTS, None, "", ["sae"], options, 10, 24, "")
        with pytest.raises(LabError, match="option sae.corpus: .* server path"):
            check(spec)


def test_space_mode_caps_facts_per_run(space, demo_env, tmp_path, monkeypatch):
    from lab.core.errors import LabError
    from lab.core.policy import SPACE
    from lab.shell.runner import check
    from lab.shell.ui import auditing
    from lab.shell.ui.session import demo_pair

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    big = tmp_path / "uploads" / "abc" / "big.csv"  # where an upload lands
    big.parent.mkdir(parents=True)
    big.write_text("question,answer\n" + "".join(f"Question {i}?,answer {i}\n" for i in range(SPACE.max_facts + 1)))
    spec = demo_pair()
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
    from lab.shell.ui.session import Lab, demo_pair

    lab = Lab(tmp_path / "lab.duckdb")
    try:
        with pytest.raises(LabError, match="remote model code is disabled"):
            lab.engine("demo:base", demo_pair(trust_remote_code=True))
    finally:
        lab.close()


@pytest.fixture()
def space_app(demo_env, monkeypatch):
    """The lab served in Space mode on the tiny demo, driven over HTTP as a visitor would: (client, lab)."""
    from gradio_client import Client

    from lab.shell.ui import running

    monkeypatch.setenv("LAB_SPACE", "1")
    monkeypatch.setenv("LAB_DEMO_PROFILE", "tiny")
    with running(server_name="127.0.0.1", quiet=True) as (url, lab):
        client = Client(url, verbose=False)
        status = client.predict("Demo pair", "npo", "", "", "cpu", "auto", False, api_name="/load_models")[0]
        assert "demo:base → demo:npo" in status
        yield client, lab


def api_error(call) -> str:
    with pytest.raises(Exception) as caught:
        call()
    return str(caught.value)


OPTIONS = {"headers": ["audit", "option", "type", "default", "value", "help"], "data": []}


def test_a_space_visitor_over_http(space_app, tiny_demo):
    """Path escapes, remote code and oversized requests through the HTTP API: refused with the rule named,
    nothing stored, the app keeps serving."""
    client, lab = space_app
    before = len(lab.store.runs())
    for base in (str(tiny_demo / "models" / "base"), "demo:../../etc", "demo:/etc", "../models", "~"):
        message = api_error(lambda: client.predict("Your models", "npo", base, "demo:npo", "cpu", "auto", False,
                                                   api_name="/load_models"))
        assert "disabled in Space mode" in message or "plain name" in message, message
    message = api_error(lambda: client.predict("Your models", "npo", "demo:base", "demo:npo", "cpu", "auto", True,
                                               api_name="/load_models"))
    assert "remote model code is disabled" in message

    def run(options=OPTIONS, reference="", max_new=16, names=("direct",)):
        return client.predict(source_="Demo facts", upload_=None, path_="", names_=list(names), options_=options,
                              limit_=2, max_new_=max_new, reference_=reference, api_name="/run_audit")

    assert "server paths are disabled" in api_error(lambda: run(reference="/etc"))
    attacker = {**OPTIONS, "data": [["reasoning", "attacker", "str", "base", "/tmp", ""]]}
    assert "server paths are disabled" in api_error(lambda: run(options=attacker, names=("reasoning",)))
    tokens = {**OPTIONS, "data": [["reasoning", "max_new_tokens", "int", "0", "357", ""]]}
    assert "above the cap of 64" in api_error(lambda: run(options=tokens, names=("reasoning",)))
    variants = {**OPTIONS, "data": [["remind", "variants_per_radius", "int", "8", "100", ""]]}
    assert "above its cap of 8" in api_error(lambda: run(options=variants, names=("remind",)))
    too_long = api_error(lambda: run(max_new=1000))  # the page's own field limit, or the policy's cap
    assert "maximum value 64" in too_long or "above the cap of 64 new tokens" in too_long
    message = api_error(lambda: client.predict(source_="Server path", upload_=None, path_="/etc/passwd",
                                               names_=["direct"], options_=OPTIONS, limit_=2, max_new_=16,
                                               reference_="", api_name="/run_audit"))
    assert "not in the list of choices" in message or "server path" in message
    assert len(lab.store.runs()) == before  # nothing was stored by any refused request
    status = run()[0]  # and an honest request still runs
    runs = lab.store.runs()
    assert len(runs) == before + 1 and runs.iloc[-1]["status"] == "complete" and runs.iloc[-1]["run_id"] in status
