"""The Hugging Face Space: the Dockerfile and README front matter (read statically: no Docker
engine here), and Space mode (LAB_SPACE=1): hub ids and uploads only, limits on every request."""

from __future__ import annotations

import json
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
    with pytest.raises(LabError, match=r"max new tokens must be at most 64 \(the cap in Space mode\), got 10000"):
        auditing.run_spec(demo_pair(), auditing.DEMO_FACTS, None, "", ["direct"], None, 10, 10_000, "")  # the form
    run = auditing.run_spec(demo_pair(), auditing.DEMO_FACTS, None, "", ["direct"], None, 10, 64, "")
    with pytest.raises(LabError, match="--max-new-tokens=10000 is above the cap of 64 new tokens in Space mode"):
        check(replaced(run, max_new_tokens=10_000))  # the runner, for every door
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
    too_long = api_error(lambda: run(max_new=1000))  # the page's own field check, in the policy's words
    assert "max new tokens must be at most 64 (the cap in Space mode), got 1000" in too_long, too_long
    message = api_error(lambda: client.predict(source_="Server path", upload_=None, path_="/etc/passwd",
                                               names_=["direct"], options_=OPTIONS, limit_=2, max_new_=16,
                                               reference_="", api_name="/run_audit"))
    assert "not in the list of choices" in message or "server path" in message
    assert len(lab.store.runs()) == before  # nothing was stored by any refused request
    status = run()[0]  # and an honest request still runs
    runs = lab.store.runs()
    assert len(runs) == before + 1 and runs.iloc[-1]["status"] == "complete" and runs.iloc[-1]["run_id"] in status


SPACE_CAPS = [  # (audit, option, value, what the refusal names): every size and text a request can set
    ("relearn", "steps", "5000", "relearn.steps=5000 is above its cap of 200"),
    ("relearn", "rank", "1024", "relearn.rank=1024 is above its cap of 128"),
    ("relearn", "batch_size", "256", "relearn.batch_size=256 is above its cap of 16"),
    ("relearn", "size", "100000", "relearn.size=100000 is above its cap of 400"),
    ("sae", "k", "100000", "sae.k=100000 is above its cap of 64"),
    ("incontext", "k", "32", "incontext.k=32 is above its cap of 8"),
    ("surrogates", "samples", "32", "surrogates.samples=32 is above its cap of 8"),
    ("multiple_choice", "description", "x" * 50_000,
     "option multiple_choice.description is longer than the cap of 2000 characters"),
    ("reasoning", "temperature", "nan", "expected a finite number, got 'nan'"),
]


def test_space_caps_every_size_over_http(space_app):
    """Every size an option can set, and the text a prompt takes, is capped by the one policy at the API too;
    no refused request stores a run."""
    client, lab = space_app
    before = len(lab.store.runs())
    for audit, option, value, message in SPACE_CAPS:
        row = {**OPTIONS, "data": [[audit, option, "int", "", value, ""]]}
        error = api_error(lambda: client.predict(source_="Demo facts", upload_=None, path_="", names_=[audit],
                                                 options_=row, limit_=2, max_new_=16, reference_="",
                                                 api_name="/run_audit"))
        assert message in error, (option, error[:300])
    assert len(lab.store.runs()) == before


def visible_runs(client) -> set[str]:
    """The run ids the Results tab lists to this client's session."""
    frame = client.predict("", "all", None, api_name="/runs")[0]
    return {row[0] for row in frame["data"]}


def private_call(url: str, session: str, fn_index: int, data: list) -> dict:
    """A call to a private event of the page (what the browser itself sends), as a hostile visitor can make
    it over raw HTTP; the last message of the event: its output or its error."""
    import httpx

    with httpx.Client(base_url=url.rstrip("/"), trust_env=False, timeout=60) as http:
        joined = http.post("/gradio_api/queue/join", json={"data": data, "fn_index": fn_index,
                                                           "session_hash": session, "event_data": None,
                                                           "trigger_id": None})
        assert joined.status_code == 200, joined.text
        with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        return message
    raise AssertionError("the event did not complete")


def dependency_of(url: str, elem_id: str) -> int:
    """The index of the page's event whose outputs include the element ``elem_id`` (its fn_index)."""
    import httpx

    config = httpx.get(url.rstrip("/") + "/config", trust_env=False).json()
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    return next(i for i, dep in enumerate(config["dependencies"]) if elem_id in [ids.get(o) for o in dep["outputs"]])


def test_a_visitor_sees_only_their_own_runs_and_the_demos(space_app, tmp_path):
    """Two visitors of one Space: A's run on an uploaded file (questions and gold answers) is listed to A only,
    and B cannot open it by id through the Results page's own event (called over raw HTTP, as a hostile page
    would), through the page's URL, or through the store behind any other door; the demo's run, made by no
    visitor, is everyone's."""
    import gradio as gr
    from gradio_client import Client, handle_file

    from lab.core.errors import LabError
    from lab.shell.runner import RunSpec, check, execute, prepare
    from lab.shell.ui.app import open_link
    from lab.shell.ui.session import demo_pair

    a, lab = space_app
    url = a.src
    run = RunSpec(base="demo:base", unlearned="demo:npo", audits=["direct"], limit=2, device="cpu")
    demo_run = execute(prepare(run, loader=lab.loader(demo_pair(device="cpu")), checked=check(run)),
                       lab.store).run_id  # the operator's run: no visitor made it
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"question": "What is the vault code of Ada Quill?", "answer": "7319-ZETA"}) + "\n")
    status = a.predict(source_="Upload a file", upload_=handle_file(str(secret)), path_="", names_=["direct"],
                       options_=OPTIONS, limit_=2, max_new_=16, reference_="", api_name="/run_audit")[0]
    a_run = next(r for r in lab.store.runs()["run_id"] if r in status)

    b = Client(url, verbose=False)
    assert visible_runs(a) == {demo_run, a_run}
    assert visible_runs(b) == {demo_run}

    # The Results page's private event that opens a run, called as the page itself calls it, in B's session.
    opens = dependency_of(url, "results-summary")
    refused = private_call(url, b.session_hash, opens, [a_run, [], None])
    assert refused["success"] is False and "7319-ZETA" not in json.dumps(refused)
    opened = private_call(url, b.session_hash, opens, [demo_run, [], None])
    assert opened["success"] is True and demo_run in json.dumps(opened), opened
    # ?tab=results&run=<A's run> in B's browser opens nothing; in A's it opens A's run.
    link = open_link(lab, gr.Request(query_params={"tab": "results", "run": a_run}, session_hash=b.session_hash))
    assert "run" not in link
    own = open_link(lab, gr.Request(query_params={"tab": "results", "run": a_run}, session_hash=a.session_hash))
    assert own["run"].value == a_run
    # And every read of the run behind B's view fails as for a run that does not exist.
    seen_by_b = lab.view(gr.Request(session_hash=b.session_hash))
    for read in (seen_by_b.run, seen_by_b.items, seen_by_b.audits, seen_by_b.metrics_dict, seen_by_b.artifacts,
                 seen_by_b.facts, lambda r: seen_by_b.export(r, "json", tmp_path / "x.json")):
        with pytest.raises(LabError, match=f"no run '{a_run}' in this lab"):
            read(a_run)
    assert not (tmp_path / "x.json").exists()
