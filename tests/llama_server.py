"""A real OpenAI-compatible inference server for the tests: llama.cpp's, through llama-cpp-python
(requirements-serve.txt), serving a demo model written in llama.cpp's GGUF format by the lab's own converter
(:mod:`lab.core.gguf`, ``python -m lab gguf``: the manual's served-model steps use it too)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server on one GGUF model, started and stopped by a fixture."""

    def __init__(self, gguf_path: Path, alias: str, context: int):
        self.port = free_port()
        self.alias = alias
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = gguf_path.with_suffix(".log")
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path), "--model_alias", alias,
                   "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(context), "--logits_all", "true",
                   "--n_threads", "2", "--seed", "0"]
        self.process = subprocess.Popen(command, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"})

    def wait(self, timeout: float = 60.0) -> "LlamaServer":
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"llama.cpp server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
