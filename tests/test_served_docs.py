"""The manual's served-model example (docs/served.md, "Try it on the demo") runs as written: its two bash blocks,
word for word but for the demo folder and the port, against a real llama.cpp server started by its own command."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.core.store import Store

pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by make test (requirements-serve.txt)")
pytest.importorskip("gguf", reason="gguf is installed by make test (requirements-serve.txt)")

from llama_server import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "served.md"
FOLDER, PORT = "/tmp/lab-demo", "8001"  # what the page writes; the test runs with its own


def block(name: str) -> str:
    """The bash block after the page's ``<!-- served-example: NAME -->`` mark."""
    match = re.search(rf"<!-- served-example: {name} -->\n```bash\n(.*?)```", PAGE.read_text(encoding="utf-8"),
                      re.S)
    assert match, f"docs/served.md has no served-example block '{name}'"
    return match.group(1)


def test_the_served_model_example_runs_as_written(tiny_demo, tmp_path):
    server_block, audit_block = block("server"), block("audit")
    assert server_block.count(FOLDER) == audit_block.count(FOLDER) == 1  # one DEMO= line each
    assert server_block.count(PORT) == audit_block.count(PORT) == 1
    folder, port = tmp_path / "lab-demo", str(free_port())
    folder.symlink_to(tiny_demo)  # the tiny demo is built already: its build command reuses it
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LAB_DB": str(tmp_path / "lab.duckdb"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # `python` is this one

    def ours(text: str) -> str:
        return text.replace(FOLDER, str(folder)).replace(PORT, port)

    assert server_block.strip().splitlines()[-1].startswith("python -m llama_cpp.server ")  # it runs till stopped
    log = tmp_path / "server.log"
    server = subprocess.Popen(["bash", "-ec", ours(server_block)], cwd=ROOT, env=env, stdout=log.open("w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_serving(server, port, log)
        assert Path(f"{folder}-npo.gguf").stat().st_size > 0  # the converter wrote the file the server reads
        audit = subprocess.run(["bash", "-ec", ours(audit_block)], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=600)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the block's shell and the server it started
        server.wait(timeout=30)
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-3000:]
    run_id = re.search(r"^run (\S+): complete$", audit.stdout, re.M).group(1)
    with Store(tmp_path / "lab.duckdb", read_only=True) as store:
        audits = store.audits(run_id).set_index("audit")
    assert dict(audits["status"]) == {"direct": "complete", "reasoning": "complete", "keywords": "skipped",
                                      "metrics": "skipped"}
    for name in ("keywords", "metrics"):
        note = json.loads(audits.loc[name, "notes"])[0]
        assert note.startswith(f"skipped: {name} needs log-probs of exact token rows") and "does not offer" in note


def wait_until_serving(server: subprocess.Popen, port: str, log: Path, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the documented server command did not start: {log.read_text()[-2000:]}")


def test_gguf_converts_the_demo_models_and_refuses_others_in_one_line(tiny_demo, tmp_path, capsys):
    from lab.shell.cli import main

    out = tmp_path / "npo.gguf"
    assert main(["gguf", str(tiny_demo / "models" / "npo"), str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.read_bytes()[:4] == b"GGUF"
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (other / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}, "pre_tokenizer": {"type": "ByteLevel"}}))
    assert main(["gguf", str(other), str(tmp_path / "gpt2.gguf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'gpt2'" in err and "convert_hf_to_gguf.py" in err
    assert not (tmp_path / "gpt2.gguf").exists()
