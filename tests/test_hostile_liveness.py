"""Hostile input, liveness: a sweep whose driver is stopped or killed reads as interrupted, with its runs,
the moment it is gone (also through a read-only open), and leaves no Ray process behind; a Ray address
that does not answer is one line in seconds.

Real processes and real signals: the sweep runs as ``python -m lab sweep`` in a child process (in-process
pairs, or on a Ray cluster the driver starts itself), is signalled while a pair runs, and the store is read
right after.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_hostile import ROOT, lab_main, one_line_error

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]


def write_spec(folder: Path, demo: Path) -> Path:
    """Two demo checkpoints against the base: pairs of a few seconds, long enough to be signalled mid-way."""
    spec = {"base": str(demo / "models" / "base"), "unlearned": [str(demo / "models" / n) for n in ("npo", "ga")],
            "audits": ["direct", "keywords"], "facts": str(demo / "facts.jsonl"), "limit": 8, "device": "cpu"}
    path = folder / "sweep.json"
    path.write_text(json.dumps(spec))
    return path


def start_sweep(spec: Path, db: Path, *flags: str) -> tuple[subprocess.Popen, list[str]]:
    """The sweep as a child process; its stderr lines collect in the returned list as they come."""
    proc = subprocess.Popen([sys.executable, "-m", "lab", "sweep", str(spec), "--db", str(db), *flags], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(line) for line in proc.stderr], daemon=True).start()
    return proc, lines


def descendants(pid: int) -> dict[int, float]:
    import psutil

    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found[child.pid] = child.create_time()
        except psutil.Error:
            continue
    return found


def still_running(noted: dict[int, float]) -> list[int]:
    """The noted processes that still run (the same processes: start time checked; zombies are gone)."""
    import psutil

    alive = []
    for pid, created in noted.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.Error:
            continue
    return alive


def wait_for(check, seconds: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


def stop_sweep(proc: subprocess.Popen, lines: list[str], sig: signal.Signals) -> None:
    """Signal the driver; a stop signal ends it with one line, SIGKILL without a word."""
    proc.send_signal(sig)
    proc.wait(timeout=120)
    time.sleep(0.3)  # the reader thread takes the last lines
    errors = [line for line in lines if line.startswith("error")]
    assert "Traceback" not in "".join(lines) and "SIGTERM received" not in "".join(lines), "".join(lines)[-3000:]
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 2 and errors == ["error: interrupted\n"], "".join(lines)[-3000:]


def read_back(db: Path) -> tuple[str, list[str]]:
    """The sweep's status and its runs' statuses, read right away through a read-only open."""
    from lab.core.store import Store

    with Store(db, read_only=True) as store:
        sweep = store.sweeps().iloc[-1]
        return sweep["status"], list(store.sweep_runs(sweep["sweep_id"])["status"])


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_stopped_or_killed_sweep_reads_interrupted(tiny_demo, tmp_path, sig):
    """Pairs in the driver's own process (--local): the sweep and the run it was in read interrupted."""
    db = tmp_path / "local.duckdb"
    proc, lines = start_sweep(write_spec(tmp_path, tiny_demo), db, "--local")
    try:
        assert wait_for(lambda: any("plain questions" in line for line in lines), 120), "".join(lines)
        stop_sweep(proc, lines, sig)
    finally:
        proc.kill()
    status, runs = read_back(db)
    assert status == "interrupted" and runs and runs[-1] == "interrupted", (status, runs)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_stopped_or_killed_ray_sweep_leaves_no_process(tiny_demo, tmp_path, sig):
    """Pairs on the Ray cluster the driver starts itself: whichever way the driver ends, the sweep reads
    interrupted and every process Ray started for it (GCS, raylet, agents, workers) is gone within seconds."""
    pytest.importorskip("ray")
    db = tmp_path / "ray.duckdb"
    proc, lines = start_sweep(write_spec(tmp_path, tiny_demo), db)
    try:
        def pair_running() -> bool:
            import psutil

            for child in psutil.Process(proc.pid).children(recursive=True):
                try:
                    if "run_pair_isolated" in " ".join(child.cmdline()):
                        return True
                except psutil.Error:
                    continue
            return False

        assert wait_for(pair_running, 180), "".join(lines)[-3000:]
        started = descendants(proc.pid)
        stop_sweep(proc, lines, sig)
    finally:
        proc.kill()
    assert wait_for(lambda: not still_running(started), 30), still_running(started)
    status, runs = read_back(db)
    assert status == "interrupted" and "running" not in runs, (status, runs)


def test_a_ray_address_that_does_not_answer_is_one_line_in_seconds(tiny_demo, tmp_path, capsys, monkeypatch):
    """A refused port, and a port that accepts and never answers (Ray would retry for minutes, with pages of
    logs): one line each, in seconds, and no store is created."""
    pytest.importorskip("ray")
    from lab.shell.distributed import RAY_CONNECT_S

    monkeypatch.setenv("LAB_DEMO_DIR", str(tiny_demo))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = write_spec(tmp_path, tiny_demo)
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
    refused = socket.create_server(("127.0.0.1", 0))
    refused_port = refused.getsockname()[1]
    refused.close()
    db = tmp_path / "r.duckdb"
    try:
        for port, message in ((silent.getsockname()[1], "did not answer as a Ray head within 3 s"),
                              (refused_port, "connection refused")):
            start = time.monotonic()
            proc = lab_main(capsys, "sweep", str(spec), "--db", str(db), "--ray-address", f"127.0.0.1:{port}")
            line = one_line_error(proc, message)
            assert f"cannot reach Ray at 127.0.0.1:{port}" in line
            assert time.monotonic() - start < RAY_CONNECT_S + 5
    finally:
        silent.close()
        for conn in held:
            conn.close()
    assert not db.exists()
