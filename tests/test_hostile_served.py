"""Hostile input, served models: servers that hang, garble, redirect or answer in another shape.

Each case is a real HTTP server on this machine (a thread here) that answers the lab's requests the way a
broken or hostile server would; the lab must give one line naming the server and what it sent, within
seconds, and store nothing.  The hang is a real socket that accepts and never answers, audited through the
command line with the lab's own timeouts.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from test_hostile import ROOT, cli, one_line_error

Answer = tuple[int, dict[str, str], bytes]


def served(handler: Callable[[str, dict], Answer]):
    """A server at 127.0.0.1 whose every request is answered by ``handler(path, body)``; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            status, headers, content = handler(self.path, body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def as_json(data) -> Answer:
    return 200, {"content-type": "application/json"}, json.dumps(data).encode()


def openai_like(model: str, completion: Callable[[dict], dict] | None = None, models=None):
    """A handler that lists ``model`` (or ``models``, verbatim) and answers completions with ``completion``."""

    def handle(path: str, body: dict) -> Answer:
        if path.endswith("/models"):
            return as_json(models if models is not None else {"object": "list", "data": [{"id": model}]})
        return as_json(completion(body) if completion else {"choices": [{"text": " x", "index": 0}]})

    return handle


def html_page(path: str, body: dict) -> Answer:
    return 200, {"content-type": "text/html"}, b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>"


def plain_text(path: str, body: dict) -> Answer:
    return 200, {"content-type": "text/plain"}, b"OK\n"


def redirect(path: str, body: dict) -> Answer:
    return 302, {"location": "http://127.0.0.1:1/login"}, b""


def string_logprobs(body: dict) -> dict:
    """Completions whose echoed log-probs are strings (a proxy that stringifies numbers)."""
    prompt = body.get("prompt")
    count = len(prompt) if isinstance(prompt, list) else 4
    if body.get("echo"):
        return {"choices": [{"text": " x", "logprobs": {"tokens": [str(i) for i in range(count)],
                                                        "token_logprobs": [None] + ["-0.5"] * (count - 1),
                                                        "top_logprobs": [None] + [{"a": "-0.5"}] * (count - 1)}}]}
    return {"choices": [{"text": " x"}]}


CASES = {
    "html page": (lambda model: html_page, "not JSON (text/html: '<!DOCTYPE html>"),
    "plain text": (lambda model: plain_text, "not JSON (text/plain: 'OK')"),
    "302 redirect": (lambda model: redirect, "answered 302, a redirect to 'http://127.0.0.1:1/login'"),
    "models as a list": (lambda model: openai_like(model, models=[{"id": model}]),
                         "a JSON list where an object was expected"),
    "models of strings": (lambda model: openai_like(model, models={"data": [model]}),
                          "a model list of another shape"),
    "null completion text": (lambda model: openai_like(model, lambda body: {"choices": [{"text": None}]}),
                             "a completion without text"),
    "string log-probs": (lambda model: openai_like(model, string_logprobs), "log-probs that are not numbers"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_garbled_server_is_one_line_naming_it(tiny_demo, case):
    from lab.core.errors import LabError
    from lab.core.models import load_engine

    model = str(tiny_demo / "models" / "base")  # the tokenizer loads from the model name, a local folder
    make, message = CASES[case]
    server, url = served(make(model))
    try:
        start = time.monotonic()
        with pytest.raises(LabError) as caught:
            load_engine(f"openai+{url}#{model}")
        assert time.monotonic() - start < 10
    finally:
        server.shutdown()
    text = str(caught.value)
    assert message in text and f"the inference server at {url}" in text and "\n" not in text, text


def test_a_garbled_server_through_the_cli_stores_nothing(tiny_demo, tmp_path, capsys, monkeypatch):
    from lab.shell.cli import main

    monkeypatch.setenv("LAB_DEMO_DIR", str(tiny_demo))
    model = str(tiny_demo / "models" / "base")
    server, url = served(html_page)
    db = tmp_path / "s.duckdb"
    try:
        code = main(["audit", "--base", model, "--unlearned", f"openai+{url}#{model}", "--audits", "direct",
                     "--facts", str(tiny_demo / "facts.jsonl"), "--db", str(db), "--device", "cpu"])
    finally:
        server.shutdown()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "not JSON (text/html" in lines[0]
    assert not db.exists()


def test_a_server_that_never_answers_times_out_in_seconds(tiny_demo, tmp_path):
    """A socket that accepts connections and never answers: the command ends with the timeout named."""
    from lab.core.remote import PROBE_READ_S

    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # kept open, never answered
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    model = str(tiny_demo / "models" / "base")
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    db = tmp_path / "h.duckdb"
    try:
        start = time.monotonic()
        proc = cli("audit", "--base", model, "--unlearned", f"openai+{url}#{model}", "--audits", "direct",
                   "--facts", str(tiny_demo / "facts.jsonl"), "--db", str(db), timeout=120)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        listener.close()
        for conn in accepted:
            conn.close()
    line = one_line_error(proc, f"sent no answer within {PROBE_READ_S:.0f} s")
    assert url in line and elapsed < PROBE_READ_S + 30, (elapsed, line)
    assert not db.exists()
