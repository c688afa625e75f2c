"""The reaper: ends the Ray processes a sweep's driver started, when the driver dies without ending them.

A driver that starts Ray on this machine (:func:`lab.shell.distributed.cluster`
without an address) shuts it down when the sweep ends, is stopped (Ctrl-C,
SIGTERM) or fails.  Killed outright (SIGKILL, the out-of-memory killer), it
runs no code: Ray's own fate-sharing ends its GCS server and raylet, but the
agents (and, depending on timing, workers) they started live on, orphaned.

So the driver starts this small process first (:func:`start`).  It notes the
driver's descendants (every process Ray starts for it) twice a second; when
the driver is gone it kills the noted processes that still exist (the same
process, not one that took its number: the start time must match).  When the
driver ends normally it stops the reaper itself (:func:`stop`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

POLL_S = 0.5


def descendants(pid: int) -> dict[int, float]:
    """Every process below ``pid``, with its start time (the reaper itself left out)."""
    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if child.pid != os.getpid():
                found[child.pid] = child.create_time()
        except psutil.NoSuchProcess:
            continue
    return found


def reap(noted: dict[int, float]) -> int:
    """Kill the noted processes that still run (each checked by its start time); how many were killed."""
    killed = 0
    for pid, created in noted.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created:
                proc.kill()
                killed += 1
        except psutil.Error:
            continue
    return killed


def watch(driver: int) -> None:
    """Note ``driver``'s descendants until it is gone, then end those left."""
    noted: dict[int, float] = {}
    while True:
        try:
            noted.update(descendants(driver))
        except psutil.NoSuchProcess:
            break
        if os.getppid() != driver:  # reparented: the driver died
            break
        time.sleep(POLL_S)
    reap(noted)


def start() -> subprocess.Popen:
    """A reaper for this process, in a session of its own (a Ctrl-C to the driver's terminal does not reach
    it, so it outlives a driver that a second Ctrl-C ends at once)."""
    return subprocess.Popen([sys.executable, "-m", "lab.shell.reaper", str(os.getpid())], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(reaper: subprocess.Popen) -> None:
    """The driver ended normally (Ray shut down): the reaper is not needed."""
    reaper.kill()
    reaper.wait(timeout=10)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
