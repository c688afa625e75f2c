"""Ray, for sweeps: each job a Ray task, their ends streamed back to the one process that writes the store.

Only what is Ray-specific lives here (:mod:`lab.shell.sweep` decides what a
job is and stores its rows):

- where: a Ray the caller already started, the cluster at ``--ray-address``
  (checked first: its head must answer within ``RAY_CONNECT_S`` seconds, so a
  wrong address is one line in seconds, not minutes of Ray's retries and
  logs), or a new local one sized to this machine (Ray counts its CPUs and
  GPUs), listening on the loopback interface only (:func:`loopback_only`),
  shut down again when the sweep ends, and by :mod:`lab.shell.reaper`
  when the driver is killed outright;
- how much: one GPU per task when the pair runs on CUDA (device ``cuda``, or
  ``auto`` on a cluster with GPUs), else one CPU, so Ray runs as many pairs
  at once as the cluster has of that resource (with ``OMP_NUM_THREADS`` set
  to 1 by Ray, pairs do not oversubscribe the cores);
- failures: no retries (a pair whose worker died, maybe of its own model, is
  reported, not silently run again); a task that raised, a worker that was
  killed or ran out of memory, a node that died: each becomes a one-line
  reason beside its job, and the other jobs go on;
- stopping: when ``stop`` is set, or the consumer of :func:`run_tasks` stops
  reading (Ctrl-C), every unfinished task is cancelled.

Workers find the lab's code as the driver does (Ray gives them the driver's
``sys.path``); on a cluster of several machines, every node needs the lab
installed and the model and facts paths reachable.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import ray
from ray import exceptions as ray_errors

from lab.core.batching import Cancelled
from lab.core.errors import LabError
from lab.shell import reaper

POLL_S = 0.5  # how often the driver looks at ``stop`` while it waits for tasks
REASON_CHARS = 300  # a reason is one line, at most this long
FORWARDED_PREFIXES = ("LAB_",)  # the lab's own settings (demo folder, Space mode) travel to the workers
RAY_CONNECT_S = 3.0  # a Ray head that does not answer within this long is not there
GCS_PORT, CLIENT_PORT = 6379, 10001  # Ray's defaults: the head's GCS, and Ray Client (ray://)
PROBES = {"gcs": "/ray.rpc.NodeInfoGcsService/GetClusterId", "ray": "/ray.rpc.RayletDriver/ClusterInfo"}
log = logging.getLogger("lab")


@dataclass
class TaskEnd:
    """How one job ended: its value, or a one-line reason why there is none."""

    key: str
    value: Any | None
    error: str | None = None


def one_line(text: str) -> str:
    """The first non-empty line of ``text``, cut to ``REASON_CHARS``."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else "no message")[:REASON_CHARS]


def reason(exc: BaseException) -> str:
    """Why a task gave no value, in one line a user can act on."""
    if isinstance(exc, ray_errors.TaskCancelledError):
        return "cancelled before it finished"
    if isinstance(exc, ray_errors.WorkerCrashedError):
        return "the Ray worker running this pair died (killed, or out of memory)"
    if isinstance(exc, ray_errors.OutOfMemoryError):
        return "Ray stopped the worker running this pair: its node ran out of memory"
    if isinstance(exc, (ray_errors.NodeDiedError, ray_errors.LocalRayletDiedError)):
        return "the Ray node running this pair died"
    if isinstance(exc, ray_errors.RayTaskError):
        cause = exc.cause
        return one_line(str(cause) if isinstance(cause, LabError) else f"{type(cause).__name__}: {cause}")
    return one_line(f"{type(exc).__name__}: {exc}")


def head_of(address: str) -> tuple[str, int]:
    """(host, port) of a Ray address: ``HOST:PORT``, ``HOST`` (the GCS port), ``ray://HOST[:PORT]``."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or (port is None and parts.netloc.rsplit("]", 1)[-1].count(":")):
        raise LabError(f"--ray-address '{address}': expected HOST:PORT, ray://HOST:PORT or auto")
    return parts.hostname, port or (CLIENT_PORT if parts.scheme == "ray" else GCS_PORT)


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """One HTTP/2 frame (RFC 9113 section 4.1)."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _header(name: str, value: str) -> bytes:
    """One HPACK header field, literal without indexing, plain strings (RFC 7541 section 6.2.2)."""
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def grpc_answers(host: str, port: int, path: str, timeout: float) -> bool:
    """Whether a gRPC server answers an empty unary call to ``path`` at ``host:port`` within ``timeout``
    seconds: an HTTP/2 response that says status 200 or carries gRPC's content type, whatever its gRPC
    status (Ray's GCS asks for a token: it still answers).  A silent port, or a proxy that speaks HTTP/2 and
    answers 404, is no gRPC server.  Raises ``OSError`` when the connection fails."""
    fields = ((":method", "POST"), (":scheme", "http"), (":path", path), (":authority", f"{host}:{port}"),
              ("content-type", "application/grpc"), ("te", "trailers"))
    hello = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b"")  # preface, our SETTINGS
             + _frame(1, 4, 1, b"".join(_header(n, v) for n, v in fields))  # HEADERS, end of headers
             + _frame(0, 1, 1, b"\x00\x00\x00\x00\x00"))  # DATA, end of stream: one empty gRPC message
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(hello)
        received = b""
        while time.monotonic() < deadline:
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                return False
            if not chunk:
                return False
            received += chunk
            while len(received) >= 9 and len(received) >= 9 + int.from_bytes(received[:3], "big"):
                size, kind = int.from_bytes(received[:3], "big"), received[3]
                stream = int.from_bytes(received[5:9], "big") & 0x7FFFFFFF
                block, received = received[9:9 + size], received[9 + size:]
                if kind == 1 and stream == 1:  # the response's HEADERS: ":status 200" is HPACK's static 0x88
                    return block[:1] == b"\x88" or b"application/grpc" in block
    return False


def check_reachable(address: str) -> None:
    """The Ray head at ``address`` answers within ``RAY_CONNECT_S`` seconds: its port takes a connection and
    answers a gRPC call.  (``auto`` finds a running cluster by itself, fast or not at all: not checked.)"""
    if address == "auto":
        return
    host, port = head_of(address)
    try:
        answered = grpc_answers(host, port, PROBES["ray" if address.startswith("ray://") else "gcs"], RAY_CONNECT_S)
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__).lower()
        raise LabError(f"cannot reach Ray at {address}: {host}:{port} gave {why} within {RAY_CONNECT_S:.0f} s; "
                       "is the cluster's head running there (ray start --head)?") from None
    if not answered:
        raise LabError(f"cannot reach Ray at {address}: {host}:{port} did not answer as a Ray head within "
                       f"{RAY_CONNECT_S:.0f} s; check the address (the head's port is 6379, Ray Client's "
                       "ray://HOST:10001)")


@contextmanager
def own_signals() -> Iterator[None]:
    """Keep this process's SIGINT and SIGTERM handlers across the block: ``ray.init`` installs its own fatal
    handler (a SIGTERM would abort the driver with a C++ stack dump, leaving the sweep running in the store),
    so the CLI's own (stop before the next batch) is put back."""
    main = threading.current_thread() is threading.main_thread()
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def loopback_only() -> Iterator[None]:
    """A Ray started here listens on 127.0.0.1 only: nothing on the network can join it or submit work to it.

    Ray's servers (GCS, raylet, workers, agents) bind every interface unless the node's address is the loopback
    one, and Ray takes that address only where it runs a machine as a cluster of one (its switch
    ``ray_constants.ENABLE_RAY_CLUSTER``, off on macOS and Windows); the switch is off while the local Ray
    starts, so the node is 127.0.0.1.  Pairs across machines run on a cluster started with ``ray start --head``
    and named by ``--ray-address``."""
    from ray._private import ray_constants

    kept = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = kept


@contextmanager
def cluster(address: str | None) -> Iterator[None]:
    """Ray for the duration of the block: the one already running in this process, the cluster at
    ``address`` (checked to answer first), or a new one on this machine listening on 127.0.0.1 only; only a Ray
    started here is shut down here, and a reaper ends it if this process is killed outright."""
    if ray.is_initialized():
        yield
        return
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    watcher = None
    try:
        if address:
            check_reachable(address)
            with own_signals():
                ray.init(address=address, **quiet)
        else:
            watcher = reaper.start()
            with own_signals(), loopback_only():
                ray.init(address="local", include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError, LabError) as exc:
        if watcher is not None:
            reaper.stop(watcher)
        if isinstance(exc, LabError):
            raise
        raise LabError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {one_line(str(exc))}") \
            from None
    try:
        yield
    finally:
        ray.shutdown()
        if watcher is not None:
            reaper.stop(watcher)


def task_options(device: str) -> dict[str, Any]:
    """Resources and retries of one task: one GPU when the pair runs on CUDA, else one CPU; never retried."""
    gpus = ray.cluster_resources().get("GPU", 0)
    if device.startswith("cuda:"):
        raise LabError(f"device {device}: under Ray each pair gets the GPU Ray assigns; write device cuda "
                       "(or use --local to pick the GPU yourself)")
    if device == "cuda" and not gpus:
        raise LabError("device cuda, but the Ray cluster has no GPU (use device auto or cpu, or --local)")
    on_gpu = device == "cuda" or (device == "auto" and gpus > 0)
    return {"num_cpus": 1, "num_gpus": 1 if on_gpu else 0, "max_retries": 0,
            "runtime_env": {"env_vars": forwarded_environment()}}


def forwarded_environment() -> dict[str, str]:
    """The driver's settings a worker must share: a worker on another node (or a cluster started before the
    driver) would otherwise read another demo folder or policy.  Tokenizers stay single-threaded."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}
    return {**env, "TOKENIZERS_PARALLELISM": "false"}


def collect(ref: ray.ObjectRef, key: str) -> TaskEnd:
    """A finished task's value, or its reason (the full error goes to the lab's log)."""
    try:
        return TaskEnd(key, ray.get(ref))
    except Exception as exc:  # noqa: BLE001 - every way a task can fail is one job's failure, not the sweep's
        log.warning("task %s failed", key, exc_info=exc)
        return TaskEnd(key, None, reason(exc))


def cancel(pending: dict[ray.ObjectRef, str]) -> None:
    """Cancel every unfinished task; a running one's worker is killed, so a long GPU batch stops too."""
    for ref in pending:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001 - it finished or its worker is gone meanwhile: nothing to cancel
            log.debug("could not cancel task %s", pending[ref])


def run_tasks(work: Callable[..., Any], jobs: dict[str, tuple[Any, ...]], device: str, address: str | None = None,
              stop: threading.Event | None = None) -> Iterator[TaskEnd]:
    """``work(*args)`` for every job as a Ray task; each job's end as soon as it comes, in any order.

    ``work`` must be importable by name (a module-level function), so workers import its module.  A set
    ``stop`` cancels what is unfinished and raises :class:`Cancelled`; closing the iterator cancels too."""
    with cluster(address):
        remote = ray.remote(work).options(**task_options(device))
        pending = {remote.remote(*args): key for key, args in jobs.items()}
        try:
            while pending:
                if stop is not None and stop.is_set():
                    yield from finished(pending)
                    raise Cancelled(f"stopped: {len(pending)} of {len(jobs)} jobs cancelled")
                done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                for ref in done:
                    yield collect(ref, pending.pop(ref))
        finally:
            cancel(pending)


def finished(pending: dict[ray.ObjectRef, str]) -> Iterator[TaskEnd]:
    """The jobs that are already done (taken out of ``pending``), so a stop keeps every finished one."""
    if pending:
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
        for ref in done:
            yield collect(ref, pending.pop(ref))
