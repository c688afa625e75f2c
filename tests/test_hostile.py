"""The lab under careless and hostile input: every case is one line and exit 2 (or a message in the page), no
traceback, and no stored run or unrelated file is ever lost or changed.

Each CLI case runs as a real process against a store that already holds a finished run; after the case the
store is compared with a snapshot taken before it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAIR = ["--base", "demo:base", "--unlearned", "demo:npo"]


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, contains: str = "") -> str:
    """The process failed with exit 2 and exactly one 'error:' line, no traceback; returns that line."""
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("note:")
             and "it/s]" not in line and "s/it]" not in line]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert contains in lines[0], lines[0]
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def snapshot(db: Path) -> dict:
    """Everything stored about every run (statuses, items, metrics), to compare before and after a case."""
    from lab.core.store import Store

    with Store(db, read_only=True) as store:
        runs = store.runs()
        return {r: (runs.set_index("run_id").loc[r, "status"], len(store.items(r)),
                    json.dumps(store.metrics_dict(r), sort_keys=True)) for r in runs["run_id"]}


@pytest.fixture(scope="module")
def stocked(tiny_demo, tmp_path_factory):
    """A store holding one finished run, and the environment that points the CLI at the tiny demo."""
    folder = tmp_path_factory.mktemp("hostile")
    env = {"LAB_DEMO_DIR": str(tiny_demo), "XDG_CACHE_HOME": str(folder / "cache")}
    db = folder / "lab.duckdb"
    proc = cli("audit", *PAIR, "--audits", "direct", "--limit", "2", "--db", str(db), "--device", "cpu", env=env)
    assert proc.returncode == 0, proc.stderr
    return db, env, folder


@pytest.fixture()
def intact(stocked):
    """Yields (db, env, folder); afterwards, every earlier run must be exactly as it was."""
    db, env, folder = stocked
    before = snapshot(db)
    yield db, env, folder
    after = snapshot(db)
    assert {r: v for r, v in after.items() if r in before} == before


# ------------------------------------------------------------------ data loss
def test_demo_build_refuses_a_folder_it_did_not_write(intact, tmp_path):
    db, env, _ = intact
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    store_copy = mine / "lab.duckdb"
    store_copy.write_bytes(db.read_bytes())
    before = {p.name: digest(p) for p in mine.iterdir()}
    one_line_error(cli("demo", "build", "--profile", "tiny", "--out", str(mine), env=env), "refusing to build")
    assert {p.name: digest(p) for p in mine.iterdir()} == before
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    one_line_error(cli("demo", "build", "--profile", "tiny", "--out", str(a_file), env=env), "is a file")
    assert a_file.read_text() == "x"


def test_the_app_refuses_a_foreign_demo_folder(tmp_path, monkeypatch):
    from lab.core.errors import LabError
    from lab.shell.ui.demo_world import DemoWorlds

    (tmp_path / "data.csv").write_text("a,b\n")
    monkeypatch.setenv("LAB_DEMO_DIR", str(tmp_path))
    with pytest.raises(LabError, match="refusing to build the demo"):
        DemoWorlds().ensure()
    assert (tmp_path / "data.csv").read_text() == "a,b\n"


@pytest.mark.parametrize("command", ["export", "report", "audit-json"])
def test_no_output_replaces_the_store(intact, command):
    db, env, _ = intact
    run_id = next(iter(snapshot(db)))
    before = digest(db)
    if command == "export":
        proc = cli("export", "--db", str(db), "--run", run_id, "--format", "csv", "--out", str(db), env=env)
    elif command == "report":
        proc = cli("report", "--db", str(db), "--run", run_id, "--out", str(db), env=env)
    else:
        proc = cli("audit", *PAIR, "--audits", "direct", "--limit", "1", "--db", str(db), "--json", str(db), env=env)
    one_line_error(proc, "refusing to")
    assert digest(db) == before


def test_no_output_replaces_another_duckdb_file(intact, tmp_path):
    db, env, _ = intact
    other = tmp_path / "other.duckdb"
    other.write_bytes(db.read_bytes())
    run_id = next(iter(snapshot(db)))
    one_line_error(cli("export", "--db", str(db), "--run", run_id, "--format", "json", "--out", str(other), env=env),
                   "is a DuckDB database")
    assert digest(other) == digest(db)


def test_a_duckdb_file_of_another_tool_is_left_alone(intact, tmp_path):
    import duckdb

    _, env, _ = intact
    foreign = tmp_path / "their.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE sales (id INTEGER)")
    con.close()
    before = digest(foreign)
    one_line_error(cli("audit", *PAIR, "--audits", "direct", "--limit", "1", "--db", str(foreign), env=env),
                   "database of another tool")
    one_line_error(cli("runs", "--db", str(foreign), env=env), "database of another tool")
    assert digest(foreign) == before


def test_store_paths(intact, tmp_path):
    db, env, _ = intact
    one_line_error(cli("runs", "--db", str(tmp_path / "typo.duckdb"), env=env), "no store at")
    assert not (tmp_path / "typo.duckdb").exists()
    one_line_error(cli("audit", *PAIR, "--audits", "direct", "--db", "/proc/lab.duckdb", env=env), "")
    new = cli("audit", *PAIR, "--audits", "direct", "--limit", "1", "--db", str(tmp_path / "new.duckdb"), env=env)
    assert new.returncode == 0 and "does not exist yet; creating a new store" in new.stderr
    os.chmod(db, 0o444)
    try:
        listed = cli("runs", "--db", str(db), "--json", env=env)
        assert listed.returncode == 0 and json.loads(listed.stdout)
    finally:
        os.chmod(db, 0o644)
    one_line_error(cli("report", "--db", str(db), "--run", next(iter(snapshot(db))), "--out",
                       "/proc/report.html", env=env), "cannot write")


# ------------------------------------------------------------------ bad files
BAD_FACTS = {
    "utf16.jsonl": ('{"question": "Who?", "answer": "Zed"}\n'.encode("utf-16"), "not UTF-8"),
    "binary.jsonl": (bytes(range(256)) * 40, "not UTF-8"),
    "deep.json": (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    "deep.jsonl": (b"[" * 200_000 + b"]" * 200_000 + b"\n", "nested too deeply"),
    "object.json": (b'{"data": [1, 2]}', "field"),
    "numbers.json": (b"[1, 2, 3]", "expected an object with fields"),
    "latin1.csv": ("question,answer\nCafé?,crème\n".encode("latin-1"), "not UTF-8"),
    "empty.csv": (b"", "cannot be read as CSV"),
    "broken.parquet": (b"PAR1 not really", "cannot be read as PARQUET"),
}


@pytest.mark.parametrize("name", list(BAD_FACTS))
def test_bad_facts_files(intact, tmp_path, name):
    _, env, _ = intact
    content, message = BAD_FACTS[name]
    (tmp_path / name).write_bytes(content)
    one_line_error(cli("audit", *PAIR, "--audits", "direct", "--facts", str(tmp_path / name), "--db",
                       str(tmp_path / "x.duckdb"), env=env), message)


def test_limit_bounds_memory_on_a_large_facts_file(tmp_path):
    """A ~60 MB facts file with --limit: reading stops early and memory stays far below the file's size."""
    path = tmp_path / "big.jsonl"
    row = json.dumps({"question": "Where was Ada born? " + "x" * 300, "answer": "Velmora", "split": "forget"})
    with open(path, "w") as handle:
        for _ in range(180_000):
            handle.write(row + "\n")
    assert path.stat().st_size > 50e6
    script = ("import resource, sys, time; from lab.core.facts import load_facts; "
              "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; t = time.time(); "
              f"facts = load_facts({str(path)!r}, per_split=5); "
              "print(len(facts), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base, time.time() - t)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    count, grown_kb, seconds = out.stdout.split()
    assert int(count) == 5 and int(grown_kb) < 20_000, out.stdout  # < 20 MB grown for a 60 MB file


# ------------------------------------------------------------------ bad models
def _model_folder(tiny_demo: Path, tmp_path: Path, name: str) -> Path:
    import shutil

    folder = tmp_path / name
    shutil.copytree(tiny_demo / "models" / "base", folder)
    return folder


def test_malformed_model_folders(intact, tiny_demo, tmp_path):
    _, env, _ = intact
    cases = []
    bad_config = _model_folder(tiny_demo, tmp_path, "bad-config")
    (bad_config / "config.json").write_text("{ not json")
    cases.append(bad_config)
    unknown = _model_folder(tiny_demo, tmp_path, "unknown-type")
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "model_type": "no-such-family"}))
    cases.append(unknown)
    damaged = _model_folder(tiny_demo, tmp_path, "damaged")
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    cases.append(damaged)
    mismatched = _model_folder(tiny_demo, tmp_path, "mismatched")
    (mismatched / "config.json").write_text(json.dumps({**config, "hidden_size": config["hidden_size"] * 2}))
    cases.append(mismatched)
    for folder in cases:
        one_line_error(cli("audit", "--base", str(folder), "--unlearned", "demo:npo", "--audits", "direct",
                           "--facts", str(tiny_demo / "facts.jsonl"), "--db", str(tmp_path / "m.duckdb"), env=env),
                       "could not load model")


class Boom:
    """A pickle that would run code when loaded: it must never be."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_weights_never_run_code(intact, tiny_demo, tmp_path):
    _, env, _ = intact
    folder = _model_folder(tiny_demo, tmp_path, "pickled")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump(Boom(marker), handle)
    one_line_error(cli("audit", "--base", str(folder), "--unlearned", "demo:npo", "--audits", "direct",
                       "--facts", str(tiny_demo / "facts.jsonl"), "--db", str(tmp_path / "p.duckdb"), env=env),
                   "could not load model")
    assert not marker.exists()


def test_an_offline_hub_id_fails_fast(intact, tiny_demo, tmp_path):
    _, env, _ = intact
    start = time.time()
    proc = cli("audit", "--base", "some-org/not-cached-model", "--unlearned", "demo:npo", "--audits", "direct",
               "--facts", str(tiny_demo / "facts.jsonl"), "--db", str(tmp_path / "o.duckdb"),
               env={**env, "HF_HOME": str(tmp_path / "hf")})
    one_line_error(proc, "not found locally and the hub is unreachable")
    assert time.time() - start < 30


def test_a_template_with_an_unknown_field(intact, tmp_path):
    _, env, _ = intact
    one_line_error(cli("audit", *PAIR, "--audits", "direct", "--db", str(tmp_path / "t.duckdb"),
                       "--prompt-template", "Q: {question} ({topic})\\nA:", env=env), "field {topic} that nothing fills")


# ------------------------------------------------------------------ Space mode on the CLI
@pytest.mark.parametrize("args, message", [
    (["--base", "{demo}/models/base"], "server paths are disabled in Space mode"),
    (["--base", "demo:../../etc"], "demo:<name> with a plain name"),
    (["--base", "demo:/etc"], "demo:<name> with a plain name"),
    (["--base", "demo:nope"], "is not a demo model"),
    (["--reference", "/etc"], "server paths are disabled in Space mode"),
    (["--set", "reasoning.attacker=/tmp"], "server paths are disabled in Space mode"),
    (["--set", "reasoning.attacker=openai+http://10.0.0.1:8000/v1#m"], "inference server are disabled"),
    (["--set", "reasoning.max_new_tokens=357"], "reasoning.max_new_tokens=357 is above the cap of 64"),
    (["--set", "remind.variants_per_radius=100"], "remind.variants_per_radius=100 is above its cap of 8"),
    (["--max-new-tokens", "500"], "above the cap of 64 new tokens"),
    (["--facts", "/etc/passwd"], "server path"),
    (["--trust-remote-code"], "trusting remote model code is disabled"),
])
def test_space_mode_on_the_cli(intact, tiny_demo, tmp_path, args, message):
    _, env, _ = intact
    args = [a.replace("{demo}", str(tiny_demo)) for a in args]
    base = [] if "--base" in args else ["--base", "demo:base"]
    proc = cli("audit", *base, "--unlearned", "demo:npo", "--audits", "direct,reasoning,remind", "--db",
               str(tmp_path / "s.duckdb"), *args, env={**env, "LAB_SPACE": "1"})
    one_line_error(proc, message)
    assert not (tmp_path / "s.duckdb").exists()


# ------------------------------------------------------------------ kills and liveness
@pytest.mark.parametrize("sig, delay", [(signal.SIGINT, 0.0), (signal.SIGTERM, 0.7), (signal.SIGKILL, 0.3)])
def test_killed_runs_keep_their_rows_and_end_interrupted(intact, tmp_path, sig, delay):
    """A run is signalled once its second audit has started (plus a delay): it ends interrupted, rows kept."""
    import threading

    db, env, _ = intact
    proc = subprocess.Popen([sys.executable, "-m", "lab", "audit", *PAIR, "--audits", "direct,reasoning,remind",
                             "--limit", "10", "--db", str(db), "--device", "cpu"], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    seen = bytearray()
    started = threading.Event()

    def read() -> None:
        while chunk := proc.stderr.read1(4096):
            seen.extend(chunk)
            if b"reasoning" in seen:
                started.set()
        started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(120)
    time.sleep(delay)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    stderr = seen.decode(errors="replace")
    assert proc.returncode != 0 and "Traceback" not in stderr, stderr[-2000:]
    if sig != signal.SIGKILL:
        assert stderr.rstrip().splitlines()[-1] == "error: interrupted"
    from lab.core.store import Store

    with Store(db) as store:  # opening marks a killed (SIGKILL) run interrupted
        last = store.runs().iloc[-1]
        assert last["status"] == "interrupted", (sig, last["status"])
        assert len(store.items(last["run_id"], "direct")) > 0  # the rows written before the signal are kept


def test_liveness_survives_hosts_and_containers(tmp_path):
    from lab.core.store import STALE_AFTER_S, Store, _now, new_run_id

    db = tmp_path / "live.duckdb"
    model = {"ref": "m", "content_hash": "h"}
    with Store(db) as store:
        ids = {}
        for name in ("other-host-stale", "other-host-fresh", "same-host-dead", "container-pid-1"):
            ids[name] = store.create_run(run_id=new_run_id(), base=model, unlearned=model, reference=None,
                                         facts_source="f", facts_hash="h", audits=["direct"], config={},
                                         environment={})
        old = _now().replace(microsecond=0) - __import__("datetime").timedelta(seconds=STALE_AFTER_S * 3)
        store._exec("UPDATE runs SET host_id = 'elsewhere:x', heartbeat_at = ? WHERE run_id = ?",
                    [old, ids["other-host-stale"]])
        store._exec("UPDATE runs SET host_id = 'elsewhere:x', heartbeat_at = ? WHERE run_id = ?",
                    [_now(), ids["other-host-fresh"]])
        store._exec("UPDATE runs SET pid = 999999 WHERE run_id = ?", [ids["same-host-dead"]])
        # PID 1 is alive in every container; another container has another boot id, so only the beat counts.
        store._exec("UPDATE runs SET pid = 1, host_id = 'box:other-boot', heartbeat_at = ? WHERE run_id = ?",
                    [old, ids["container-pid-1"]])
    with Store(db) as store:
        status = store.runs().set_index("run_id")["status"]
    assert status[ids["other-host-stale"]] == "interrupted"
    assert status[ids["other-host-fresh"]] == "running"
    assert status[ids["same-host-dead"]] == "interrupted"
    assert status[ids["container-pid-1"]] == "interrupted"


def test_a_working_run_beats_its_heartbeat(tmp_path, monkeypatch):
    from lab.core.store import Store, new_run_id
    from lab.shell import runner

    monkeypatch.setattr(runner, "HEARTBEAT_S", 0.1)
    model = {"ref": "m", "content_hash": "h"}
    with Store(tmp_path / "beat.duckdb") as store:
        run_id = store.create_run(run_id=new_run_id(), base=model, unlearned=model, reference=None,
                                  facts_source="f", facts_hash="h", audits=["direct"], config={}, environment={})
        first = store.run(run_id)["heartbeat_at"]
        with runner.heartbeat(store, run_id):
            time.sleep(0.8)
        assert store.run(run_id)["heartbeat_at"] > first
