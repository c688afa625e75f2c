"""Long commands other than runs: ``demo build`` and ``gpucheck`` stop at the first Ctrl-C and leave nothing
half-built behind; ``gpucheck`` refuses the 1B shape on a machine without a GPU at once.

Real processes and real signals: each command runs as ``python -m lab`` in a child process and is signalled
once while it works.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def lab(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lab", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env})


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the command never reached the point to signal it at"
        time.sleep(0.05)


def interrupted_once(proc: subprocess.Popen) -> tuple[int, str]:
    """Send one SIGINT; the exit code and stderr (the process must end by itself: no second signal)."""
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("one Ctrl-C did not stop the command") from None
    return proc.returncode, err


def test_one_ctrl_c_stops_a_demo_build_and_leaves_no_folder(tmp_path):
    out = tmp_path / "demo"
    staging = tmp_path / "demo.building"
    proc = lab("demo", "build", "--profile", "tiny", "--out", str(out), env={})
    wait_for(lambda: (staging / "models").is_dir(), proc)  # training has started
    code, err = interrupted_once(proc)
    assert code == 2 and err.strip().splitlines()[-1] == "error: interrupted", err[-2000:]
    assert not out.exists() and not staging.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gpucheck_refuses_without_a_gpu(tmp_path):
    """One line and exit 2, before the demo is built or a byte of the 1.24B pair is written."""
    scratch, cache = tmp_path / "tmp", tmp_path / "cache"
    scratch.mkdir()
    proc = lab("gpucheck", "--out", str(tmp_path / "gpu.json"), env={"TMPDIR": str(scratch),
                                                                        "XDG_CACHE_HOME": str(cache)})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out == ""
    assert err.strip() == ("error: gpucheck --shape llama-3.2-1b measures a CUDA GPU and this machine has none "
                           "visible; --shape tiny runs the same steps on the CPU")
    assert not (tmp_path / "gpu.json").exists() and not list(scratch.iterdir())
    assert not (cache / "unlearning-audit-lab" / "demo-tiny").exists()  # no demo built for it


def test_one_ctrl_c_stops_the_gpu_check_and_removes_its_models(tiny_demo, tmp_path):
    """The tiny shape on the CPU: signalled while it builds its random pair, it stops before loading it and its
    temporary folder (the models) is gone."""
    scratch, cache = tmp_path / "tmp", tmp_path / "cache" / "unlearning-audit-lab"
    scratch.mkdir()
    cache.mkdir(parents=True)
    (cache / "demo-tiny").symlink_to(tiny_demo)  # the check's demo facts, already built
    proc = lab("gpucheck", "--shape", "tiny", "--out", str(tmp_path / "gpu.json"),
               env={"TMPDIR": str(scratch), "XDG_CACHE_HOME": str(tmp_path / "cache")})
    wait_for(lambda: any(p.name.startswith("tmp") for p in scratch.iterdir()), proc)  # the pair is being built
    code, err = interrupted_once(proc)
    assert code == 2 and err.strip().splitlines()[-1] == "error: interrupted", err[-2000:]
    assert not (tmp_path / "gpu.json").exists()
    assert not [p for p in scratch.iterdir() if p.name.startswith("tmp")]
