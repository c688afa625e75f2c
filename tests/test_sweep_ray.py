"""Sweeps as Ray tasks on a real one-machine cluster (2 CPUs): the same rows as in one process, one writer,
a killed worker costs only its own pair, and without Ray (or with ``--local``) the sweep runs in one process.

No mocks: the cluster is Ray's own, the worker is killed with SIGKILL, and the Ray-less run is a fresh
interpreter in which ``import ray`` fails.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lab.core.batching import Cancelled
from lab.core.store import Store
from lab.shell.cli import main
from lab.shell.sweep import SweepSpec, run_sweep, sweep_spec as make_sweep

ROOT = Path(__file__).resolve().parents[1]
UNLEARNERS = ("npo", "graddiff", "ga", "retrain")
TASK_TITLE = "ray::run_pair_isolated"  # the process title Ray gives a worker while it runs a pair


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray cluster on this machine, 2 CPUs, for this module; its address (for ``--ray-address``)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def sweep_spec(demo: Path, limit: int, names: tuple[str, ...] = UNLEARNERS) -> SweepSpec:
    """The demo's unlearned models against its base: the direct audit and one cheap recovery attack."""
    return make_sweep(dict(base=str(demo / "models" / "base"), unlearned=[str(demo / "models" / n) for n in names],
                     audits=["direct", "keywords"], facts=str(demo / "facts.jsonl"), limit=limit, device="cpu"))


def write_spec(path: Path, spec: SweepSpec) -> Path:
    """The spec as a file: the first pair's fields for all, the checkpoints as a list."""
    fields = {k: v for k, v in spec.pairs[0].to_dict().items() if k != "unlearned"}
    path.write_text(json.dumps({**fields, "unlearned": spec.unlearned}))
    return path


def stored(store: Store, sweep_id: str) -> dict[str, dict]:
    """Per checkpoint: its run's metrics, items (order-free) and the process that ran it."""
    out = {}
    for run in store.sweep_runs(sweep_id).itertuples():
        items = store.items(run.run_id)[["audit", "fact_id", "prompt", "output_base", "output_unlearned",
                                         "recovered"]]
        out[run.unlearned_ref] = {"status": run.status, "metrics": store.metrics_dict(run.run_id),
                                  "items": sorted(map(tuple, items.astype(str).values.tolist())),
                                  "facts": len(store.facts(run.run_id)), "pid": store.run(run.run_id)["pid"]}
    return out


def same_metrics(a: dict, b: dict) -> bool:
    """Equal metrics; floats to 1e-9 (both paths run the same code on the same CPU)."""
    if a.keys() != b.keys():
        return False
    return all(a[k].keys() == b[k].keys() and all(
        (x is None and y is None) or (x is not None and y is not None and abs(x - y) <= 1e-9 * max(1, abs(x)))
        for x, y in ((a[k][m], b[k][m]) for m in a[k])) for k in a)


def test_ray_sweep_stores_the_same_runs_as_one_process(ray_cluster, tiny_demo, tmp_path):
    spec = sweep_spec(tiny_demo, limit=3)
    with Store(tmp_path / "ray.duckdb") as store:
        started = time.perf_counter()
        outcome = run_sweep(spec, store)
        print(f"ray sweep: {time.perf_counter() - started:.1f} s")
        assert outcome.status == "complete" and [p.unlearned for p in outcome.pairs] == spec.unlearned
        sweep = store.sweeps().iloc[-1]
        assert (sweep.sweep_id, sweep.status, sweep.pairs, sweep.completed) == (outcome.sweep_id, "complete", 4, 4)
        on_ray = stored(store, outcome.sweep_id)
    with Store(tmp_path / "local.duckdb") as store:
        here = stored(store, run_sweep(spec, store, local=True).sweep_id)

    assert sorted(on_ray) == sorted(here) == sorted(spec.unlearned)
    for ref in spec.unlearned:
        assert on_ray[ref]["status"] == here[ref]["status"] == "complete"
        assert on_ray[ref]["pid"] != os.getpid() and here[ref]["pid"] == os.getpid()  # ran in a Ray worker
        assert set(on_ray[ref]["metrics"]) == {"direct", "keywords"}
        assert same_metrics(on_ray[ref]["metrics"], here[ref]["metrics"]), ref
        assert on_ray[ref]["items"] == here[ref]["items"] and on_ray[ref]["items"]
        assert on_ray[ref]["facts"] == here[ref]["facts"] > 0


def test_stop_cancels_what_is_unfinished_and_keeps_what_finished(ray_cluster, tiny_demo, tmp_path):
    spec, stop = sweep_spec(tiny_demo, limit=3), threading.Event()
    with Store(tmp_path / "stop.duckdb") as store:
        with pytest.raises(Cancelled):
            run_sweep(spec, store, stop=stop, on_pair=lambda result, done, total: stop.set())  # Stop at the first
        sweep = store.sweeps().iloc[-1]
        runs = stored(store, sweep.sweep_id)
    assert sweep.status == "interrupted" and 1 <= sweep.completed == len(runs) < 4
    assert all(run["status"] == "complete" and run["items"] for run in runs.values())


def test_a_pair_asks_for_a_gpu_only_where_the_cluster_has_one(ray_cluster):
    from lab.core.errors import LabError
    from lab.shell.distributed import task_options

    for device in ("auto", "cpu"):  # this cluster has CPUs only: one CPU per pair, never retried
        assert {k: task_options(device)[k] for k in ("num_cpus", "num_gpus", "max_retries")} == {
            "num_cpus": 1, "num_gpus": 0, "max_retries": 0}
    with pytest.raises(LabError, match="no GPU"):
        task_options("cuda")
    with pytest.raises(LabError, match="write device cuda"):
        task_options("cuda:1")


def pair_workers() -> list[int]:
    """Processes of this test's cluster (children of this process) that are running a pair right now."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.cmdline()[:1] and proc.cmdline()[0].startswith(TASK_TITLE):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def kill_a_running_pair(lines: queue.Queue, deadline: float) -> int:
    """After the first pair finished, SIGKILL the worker of a pair that is running; its pid."""
    while time.monotonic() < deadline:
        try:
            if lines.get(timeout=0.2).startswith("[1/"):
                break
        except queue.Empty:
            continue
    while time.monotonic() < deadline:
        for pid in pair_workers():
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.05)
    raise AssertionError("no running pair to kill")


def test_a_killed_worker_costs_only_its_pair(ray_cluster, tiny_demo, tmp_path):
    spec = sweep_spec(tiny_demo, limit=8)  # pairs of about a second: there is one running to kill
    db, err = tmp_path / "kill.duckdb", tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "lab", "sweep", str(write_spec(tmp_path / "s.json", spec)), "--db", str(db),
               "--ray-address", ray_cluster]
    lines: queue.Queue = queue.Queue()
    out: list[str] = []
    started = time.perf_counter()
    with open(err, "w") as stderr:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        reader = threading.Thread(target=lambda: [(out.append(l), lines.put(l)) for l in proc.stdout], daemon=True)
        reader.start()
        try:
            kill_a_running_pair(lines, time.monotonic() + 240)
            code = proc.wait(timeout=240)
        finally:
            proc.kill()
        reader.join(timeout=10)
    print(f"ray sweep with a killed worker: {time.perf_counter() - started:.1f} s")

    errors = [line for line in err.read_text().splitlines() if line.startswith("error")]
    assert code == 2, "".join(out) + err.read_text()
    assert len(errors) == 1 and "Traceback" not in err.read_text()
    assert "is partial: 1 of 4 pairs did not complete" in errors[0] and "worker" in errors[0] and "died" in errors[0]
    assert any("error (the Ray worker running this pair died" in line for line in out)
    with Store(db, read_only=True) as store:
        sweep = store.sweeps().iloc[-1]
        assert (sweep.status, sweep.pairs, sweep.completed) == ("partial", 4, 3)
        runs = stored(store, sweep.sweep_id)
    assert len(runs) == 3 and set(runs) < set(spec.unlearned)  # every finished pair, the killed one absent
    for run in runs.values():
        assert run["status"] == "complete" and run["items"] and set(run["metrics"]) == {"direct", "keywords"}


def test_local_flag_runs_every_pair_in_this_process(demo_env, tmp_path, capsys):
    db = tmp_path / "local.duckdb"
    spec = write_spec(tmp_path / "s.json", sweep_spec(demo_env, limit=3, names=("npo", "ga")))
    assert main(["sweep", str(spec), "--db", str(db), "--local"]) == 0
    assert "[2/2]" in capsys.readouterr().out
    with Store(db, read_only=True) as store:
        sweep = store.sweeps().iloc[-1]
        runs = stored(store, sweep.sweep_id)
    assert (sweep.status, sweep.completed) == ("complete", 2)
    assert {r["pid"] for r in runs.values()} == {os.getpid()}  # no Ray worker ran a pair


def test_local_and_a_ray_address_exclude_each_other(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.json", make_sweep(dict(base="b", unlearned=["u"], audits=["direct"])))
    db = tmp_path / "x.duckdb"
    assert main(["sweep", str(spec), "--db", str(db), "--local", "--ray-address", "auto"]) == 2
    assert "exclude each other" in capsys.readouterr().err and not db.exists()


def test_a_pair_run_elsewhere_lands_whole_and_once(tiny_demo, tmp_path):
    from lab.core.errors import LabError
    from lab.shell.sweep import run_pair_isolated

    spec = sweep_spec(tiny_demo, limit=3, names=("npo",))
    result, rows = run_pair_isolated(spec.pairs[0], 0, "sweep-test")  # what a Ray worker returns
    with Store(tmp_path / "user.duckdb") as store:
        assert store.import_run(rows) == result.run_id
        with pytest.raises(LabError, match="already in"):
            store.import_run(rows)  # imports add rows, never replace or double them
        assert store.run(result.run_id)["sweep_id"] == "sweep-test"
        assert len(store.items(result.run_id)) == rows["items"].num_rows > 0
        assert set(store.metrics_dict(result.run_id)) == set(result.metrics) == {"direct", "keywords"}
        assert len(store.audits(result.run_id)) == 2 and len(store.facts(result.run_id)) > 0


WITHOUT_RAY = """
import os, sys
sys.modules["ray"] = None  # `import ray` now fails, as where Ray is not installed
from lab.shell.cli import main
print("codes", main(sys.argv[1:] + ["--ray-address", "auto"]), main(sys.argv[1:]), "pid", os.getpid())
"""


def test_without_ray_the_sweep_runs_in_one_process(tiny_demo, tmp_path):
    db = tmp_path / "noray.duckdb"
    spec = write_spec(tmp_path / "s.json", sweep_spec(tiny_demo, limit=3, names=("graddiff",)))
    done = subprocess.run([sys.executable, "-c", WITHOUT_RAY, "sweep", str(spec), "--db", str(db)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert "codes 2 0 pid" in done.stdout, done.stdout + done.stderr
    assert "--ray-address needs Ray" in done.stderr
    with Store(db, read_only=True) as store:
        sweep = store.sweeps().iloc[-1]
        runs = stored(store, sweep.sweep_id)
    assert (sweep.status, sweep.completed) == ("complete", 1)
    assert [r["pid"] for r in runs.values()] == [int(done.stdout.split("pid")[-1])]  # ran in that process


LISTENING = """
import json
import psutil
from lab.shell.distributed import run_tasks

def sockets():
    '''Every listening TCP socket of this driver and the Ray processes under it, with its owner.'''
    found = []
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            found += [(c.laddr.ip, proc.name()) for c in proc.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    return found

for end in run_tasks(json.dumps, {"job": ([1],)}, device="cpu"):  # a worker runs a task
    assert end.error is None, end.error
    print(json.dumps(sockets()))
"""


def test_a_sweeps_own_ray_listens_on_loopback_only():
    """The Ray a sweep starts on this machine (no --ray-address): its GCS, raylet, workers and agents listen
    on 127.0.0.1 only, never on the machine's other interfaces, while a task runs."""
    pytest.importorskip("ray")
    done = subprocess.run([sys.executable, "-c", LISTENING], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    sockets = json.loads(done.stdout.strip().splitlines()[-1])
    owners = {owner for _, owner in sockets}
    assert {"gcs_server", "raylet"} <= owners, sockets  # Ray's own servers were seen
    import ipaddress

    def loopback(ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)

    assert [(ip, owner) for ip, owner in sockets if not loopback(ip)] == []
