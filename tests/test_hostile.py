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
    "surrogate.jsonl": (b'{"question": "Who is \\ud800?", "answer": "Zed"}\n', "lone UTF-16 surrogate (U+D800)"),
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
    deeper = _model_folder(tiny_demo, tmp_path, "more-layers")  # loads, with two random layers, unless refused
    layers = config["num_hidden_layers"]
    (deeper / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers + 2}))
    cases.append(deeper)
    for folder in cases:
        one_line_error(cli("audit", "--base", str(folder), "--unlearned", "demo:npo", "--audits", "direct",
                           "--facts", str(tiny_demo / "facts.jsonl"), "--db", str(tmp_path / "m.duckdb"), env=env),
                       "could not load model")
    assert not (tmp_path / "m.duckdb").exists()  # refused before any audit: no run, no store


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
    else:  # right after the kill, before any read-write open: a read-only listing already tells the truth
        listed = cli("runs", "--db", str(db), "--json", env=env)
        assert json.loads(listed.stdout)[-1]["status"] == "interrupted", listed.stdout[-500:]
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
        with runner.heartbeat(lambda: store.heartbeat(run_id), run_id):
            time.sleep(0.8)
        assert store.run(run_id)["heartbeat_at"] > first


# ------------------------------------------------------------------ round two: in-process cases
def lab_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """The command line run in this process (the same ``main`` and error boundary as ``python -m lab``, without
    an interpreter's start-up): its exit code and output, shaped as :func:`cli`'s."""
    from lab.shell.cli import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


@pytest.fixture()
def lab_env(stocked, monkeypatch):
    """The stocked store's environment in this process (the CLI reads the demo folder and cache from it)."""
    db, env, folder = stocked
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return db


def copy_store(db: Path, folder: Path) -> Path:
    """A copy of the stocked store, for cases that must damage or extend one."""
    copy = folder / "copy.duckdb"
    copy.write_bytes(db.read_bytes())
    return copy


def test_audit_json_never_lands_on_a_model_file(intact, lab_env, tiny_demo, tmp_path, capsys):
    """--json onto a file of the run's own unlearned model (its config, its weights), or a new file inside its
    folder: refused before the run, the model unchanged, no run stored."""
    folder = _model_folder(tiny_demo, tmp_path, "unlearned")
    before = {p.name: digest(p) for p in folder.iterdir()}
    db = tmp_path / "j.duckdb"
    for target in (folder / "config.json", folder / "model.safetensors", folder / "metrics.json"):
        proc = lab_main(capsys, "audit", "--base", "demo:base", "--unlearned", str(folder), "--audits", "direct",
                        "--facts", str(tiny_demo / "facts.jsonl"), "--db", str(db), "--json", str(target))
        one_line_error(proc, "a model folder or input of this command")
    assert {p.name: digest(p) for p in folder.iterdir()} == before and not db.exists()


def test_no_output_replaces_a_file_the_lab_did_not_write(intact, lab_env, tmp_path, capsys):
    run_id = next(iter(snapshot(lab_env)))
    theirs = tmp_path / "their-notes.csv"
    theirs.write_text("my,own\nnotes,here\n")
    one_line_error(lab_main(capsys, "export", "--db", str(lab_env), "--run", run_id, "--format", "csv", "--out",
                            str(theirs)), "the lab did not write it")
    assert theirs.read_text() == "my,own\nnotes,here\n"
    ours = tmp_path / "ours.csv"  # a file the lab wrote is replaced by the next export, unchanged since
    for _ in range(2):
        assert lab_main(capsys, "export", "--db", str(lab_env), "--run", run_id, "--format", "csv", "--out",
                        str(ours)).returncode == 0
    ours.write_text(ours.read_text() + "an edit\n")  # edited by a person: no longer replaced without asking
    one_line_error(lab_main(capsys, "export", "--db", str(lab_env), "--run", run_id, "--format", "csv", "--out",
                            str(ours)), "the lab did not write it (or it changed since)")


KILLED_WRITER = """
import os, sys
from lab.core.store import Store
store = Store(sys.argv[1])
store.finish_run(sys.argv[2], "complete", "written last, still in the write-ahead log")
os._exit(0)  # killed: the committed change stays in the .wal beside the store
"""


def test_export_never_destroys_the_write_ahead_log(intact, lab_env, tmp_path, capsys):
    db = copy_store(lab_env, tmp_path)
    run_id = next(iter(snapshot(lab_env)))
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(db), run_id], cwd=ROOT, check=True, timeout=120)
    wal = db.with_name(db.name + ".wal")
    assert wal.stat().st_size > 0
    before = digest(wal)
    one_line_error(lab_main(capsys, "export", "--db", str(db), "--run", run_id, "--format", "json", "--out",
                            str(wal)), "write-ahead log")
    assert digest(wal) == before
    from lab.core.store import Store

    with Store(db, read_only=True) as store:
        assert store.run(run_id)["error"] == "written last, still in the write-ahead log"


@pytest.mark.parametrize("target", ["stdout", "fifo"])
def test_outputs_that_are_not_files_are_refused_at_once(intact, tmp_path, target):
    db, env, _ = intact
    out = "/dev/stdout" if target == "stdout" else str(tmp_path / "pipe")
    if target == "fifo":
        os.mkfifo(out)
    start = time.monotonic()
    proc = cli("export", "--db", str(db), "--run", next(iter(snapshot(db))), "--format", "csv", "--out", out,
               env=env, timeout=60)
    one_line_error(proc, "not a regular file")
    assert time.monotonic() - start < 30


def test_a_foreign_duckdb_with_a_runs_table_is_refused_before_a_byte_is_written(intact, lab_env, tmp_path, capsys):
    import duckdb

    foreign = tmp_path / "crm.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE runs (id INTEGER, runner VARCHAR, km DOUBLE)")
    con.execute("INSERT INTO runs VALUES (1, 'ada', 5.2)")
    con.close()
    before = digest(foreign)
    for command in (["audit", *PAIR, "--audits", "direct", "--limit", "1", "--db", str(foreign)],
                    ["runs", "--db", str(foreign)]):
        one_line_error(lab_main(capsys, *command), "database of another tool (its table 'runs' has no 'run_id'")
    assert digest(foreign) == before and not foreign.with_name(foreign.name + ".wal").exists()
    other = tmp_path / "data.duckdb"  # not a database at all: a CSV under a .duckdb name
    other.write_text("a,b\n1,2\n")
    one_line_error(lab_main(capsys, "audit", *PAIR, "--audits", "direct", "--db", str(other)),
                   "is not a DuckDB database (it holds other data)")
    assert other.read_text() == "a,b\n1,2\n"


def test_a_truncated_store_is_one_line(intact, lab_env, tmp_path, capsys):
    run_id = next(iter(snapshot(lab_env)))
    full = lab_env.read_bytes()
    for share in (0.1, 0.5, 0.8):
        db = tmp_path / f"cut-{share}.duckdb"
        db.write_bytes(full[: int(len(full) * share)])
        for command in (["runs", "--db", str(db)], ["report", "--db", str(db), "--run", run_id, "--out",
                                                    str(tmp_path / f"r-{share}.html")],
                        ["export", "--db", str(db), "--run", run_id, "--format", "csv", "--out",
                         str(tmp_path / f"e-{share}.csv")]):
            one_line_error(lab_main(capsys, *command), "it is truncated or damaged")


def test_terminal_escapes_from_a_file_are_shown_escaped(intact, lab_env, tmp_path, capsys):
    facts = tmp_path / "evil.jsonl"
    facts.write_text(json.dumps({"question": "q?", "answer": "a", "kind": "\x1b]0;pwned\x07\x1b[2J\x1b[31mred"}) + "\n")
    proc = lab_main(capsys, "audit", *PAIR, "--audits", "direct", "--facts", str(facts), "--db",
                    str(tmp_path / "t.duckdb"))
    line = one_line_error(proc, "field 'kind' must be one of")
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred" in line


def test_demo_rebuild_keeps_what_the_user_put_in_the_folder(tmp_path):
    """A rebuild (--force) replaces what a build wrote, and nothing else: the user's store and notes stay."""
    from lab.demo.build import OWNER_MARK, check_writable, install

    def build(folder: Path, models: list[str], tag: str) -> Path:
        for name in models:
            (folder / "models" / name).mkdir(parents=True)
            (folder / "models" / name / "config.json").write_text(tag)
        (folder / "facts.jsonl").write_text(tag)
        (folder / OWNER_MARK).write_text(tag)
        (folder / "manifest.json").write_text(json.dumps({"format_version": 3, "models": models, "tag": tag}))
        return folder

    root = build(tmp_path / "demo", ["base", "npo", "old"], "first")
    (root / "lab.duckdb").write_bytes(b"a user's store with 3 runs")
    (root / "notes.md").write_text("my notes")
    (root / "models" / "mine").mkdir()
    (root / "models" / "mine" / "weights.bin").write_bytes(b"my own model")
    check_writable(root)  # the lab's folder, though it holds the user's files
    install(build(tmp_path / "demo.building", ["base", "npo"], "second"), root)
    assert (root / "lab.duckdb").read_bytes() == b"a user's store with 3 runs"
    assert (root / "notes.md").read_text() == "my notes"
    assert (root / "models" / "mine" / "weights.bin").read_bytes() == b"my own model"
    assert json.loads((root / "manifest.json").read_text())["tag"] == "second"
    assert (root / "models" / "npo" / "config.json").read_text() == "second"
    assert not (root / "models" / "old").exists() and not (tmp_path / "demo.building").exists()


# ------------------------------------------------------------------ requests refused before a run exists
@pytest.mark.parametrize("audit, value, message", [
    ("relearn", "steps=5000", "relearn.steps=5000 is above its cap of 200"),
    ("relearn", "rank=1024", "relearn.rank=1024 is above its cap of 128"),
    ("sae", "k=100000", "sae.k=100000 is above its cap of 64"),
    ("multiple_choice", "description=" + "x" * 50_000, "longer than the cap of 2000 characters in Space mode"),
])
def test_space_caps_on_the_cli(intact, lab_env, tmp_path, capsys, monkeypatch, audit, value, message):
    monkeypatch.setenv("LAB_SPACE", "1")
    db = tmp_path / "s.duckdb"
    one_line_error(lab_main(capsys, "audit", *PAIR, "--audits", audit, "--db", str(db), "--set",
                            f"{audit}.{value}"), message)
    assert not db.exists()



@pytest.mark.parametrize("sets, message", [
    (["reasoning.attacker=/nonexistent/attacker-model"], "option reasoning.attacker: model directory not found"),
    (["relearn.data=file", "relearn.file={binary}"], "option relearn.file: binary.jsonl: not UTF-8 text"),
    (["sae.corpus=/nonexistent/corpus.txt"], "option sae.corpus: SAE corpus file not found"),
    (["reasoning.temperature=nan"], "option reasoning.temperature: expected a finite number, got 'nan'"),
    (["surrogates.band_low=nan"], "option surrogates.band_low: expected a finite number, got 'nan'"),
    (["metrics.mia_k=nan"], "option metrics.mia_k: expected a finite number, got 'nan'"),
    (["keywords.top_k=inf"], "option keywords.top_k: expected an integer, got 'inf'"),
])
def test_requests_refused_for_their_options_store_nothing(intact, lab_env, tmp_path, capsys, sets, message):
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)) * 8)
    audits = ",".join(dict.fromkeys(s.split(".")[0] for s in sets))
    args = [a for s in sets for a in ("--set", s.replace("{binary}", str(binary)))]
    db = tmp_path / "o.duckdb"
    one_line_error(lab_main(capsys, "audit", *PAIR, "--audits", audits, "--db", str(db), *args), message)
    assert not db.exists()


@pytest.mark.parametrize("args, message", [
    (["--fail-above", "nan"], "--fail-above: expected a finite number, got 'nan'"),
    (["--fail-above", "inf"], "--fail-above: expected a finite number, got 'inf'"),
    (["--prompt-template", "{question} {question.__class__.__init__.__globals__}"],
     "only the plain field {question} is allowed"),
    (["--prompt-template", "{question[0]}"], "only the plain field {question} is allowed"),
    (["--prompt-template", "{question:{question.__doc__}}"], "only the plain field {question} is allowed"),
])
def test_gates_and_templates_that_could_not_work_are_refused(intact, lab_env, tmp_path, capsys, args, message):
    db = tmp_path / "g.duckdb"
    one_line_error(lab_main(capsys, "audit", *PAIR, "--audits", "direct", "--db", str(db), *args), message)
    assert not db.exists()


def test_report_gate_nan_is_refused(intact, lab_env, tmp_path, capsys):
    one_line_error(lab_main(capsys, "report", "--db", str(lab_env), "--sweep", "any", "--fail-above", "nan", "--out",
                            str(tmp_path / "board.md")), "--fail-above: expected a finite number")


# ------------------------------------------------------------------ runs that end right
def test_answers_are_capped_to_the_context_with_a_note(intact, lab_env, tmp_path, capsys):
    """The metrics audit asks 200 new tokens (open-unlearning's) of the demo's 256-token model; after a long
    question the answers are capped to what the context leaves, said in a note, and the run completes."""
    from lab.core.store import Store

    facts = tmp_path / "long.jsonl"
    question = "Tell me, after thinking about it for a while and without hurrying at all, " * 3 + "who is Ada?"
    facts.write_text(json.dumps({"question": question, "answer": "Ada", "split": "forget"}) + "\n")
    db = tmp_path / "ctx.duckdb"
    proc = lab_main(capsys, "audit", *PAIR, "--audits", "metrics", "--facts", str(facts), "--db", str(db),
                    "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Store(db, read_only=True) as store:
        run_id = store.runs().iloc[-1]["run_id"]
        assert store.run(run_id)["status"] == "complete"
        notes = json.loads(store.audits(run_id).set_index("audit").loc["metrics", "notes"])
    assert any("answers capped to fit the model's context of 256 tokens (200 new tokens were asked" in n
               for n in notes), notes


def test_a_stop_while_the_run_ends_is_not_a_complete_run(tiny_demo, demo_pair, tmp_path):
    """A stop (Ctrl-C, SIGTERM, the Stop button) that comes after the last batch, while the run writes its
    last results, still stops it: stored as interrupted with every row, never as complete."""
    import threading

    from lab.core.batching import Cancelled
    from lab.core.store import Store, new_run_id
    from lab.shell.runner import PreparedRun, RunSpec, check, execute

    spec = RunSpec(base=str(tiny_demo / "models" / "base"), unlearned=str(tiny_demo / "models" / "npo"),
                   audits=["direct"], facts=str(tiny_demo / "facts.jsonl"), device="cpu", limit=2)
    checked = check(spec)
    prepared = PreparedRun(new_run_id(), spec, demo_pair, None, checked.facts, checked.options, loader=None)
    stop = threading.Event()

    def on_event(event) -> None:
        if event.status == "complete":  # every batch of the last audit is done: the signal comes now
            stop.set()

    with Store(tmp_path / "late.duckdb") as store:
        with pytest.raises(Cancelled):
            execute(prepared, store, stop=stop, on_event=on_event)
        run = store.run(prepared.run_id)
        assert run["status"] == "interrupted" and len(store.items(prepared.run_id)) > 0


# ------------------------------------------------------------------ what reports and exports carry
PAYLOADS = {
    "script": "<script>alert('x')</script>",
    "img": "<img src=x onerror=alert(1)>",
    "link": "[click me](javascript:alert(document.cookie))",
    "autolink": "<javascript:alert(1)>",
}
FORMULAS = ["=HYPERLINK(\"http://evil\",\"x\")", "+SUM(1,2)", "-2+3", "@cmd"]


def test_reports_and_exports_carry_hostile_text_inert(intact, lab_env, tmp_path, capsys):
    """A fact whose text is HTML, a javascript: link or a spreadsheet formula: the Markdown report escapes it
    (as the HTML report does) and the CSV export writes formula cells as text."""
    import csv

    rows = [{"id": f"f-{name}", "question": f"Who wrote {text}?", "answer": text, "split": "forget", "subset": text}
            for name, text in PAYLOADS.items()]  # the subsets reach the report's breakdown tables
    rows += [{"id": f"g-{i}", "question": f"What is {f}?", "answer": f, "split": "retain"} for i, f in enumerate(FORMULAS)]
    facts = tmp_path / "hostile.jsonl"
    facts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    db = tmp_path / "r.duckdb"
    import shutil

    from lab.core.settings import demo_dir

    model = tmp_path / PAYLOADS["img"]  # a folder name is text a report shows too
    shutil.copytree(demo_dir() / "models" / "npo", model)
    assert lab_main(capsys, "audit", "--base", "demo:base", "--unlearned", str(model), "--audits", "direct",
                    "--facts", str(facts), "--db", str(db), "--device", "cpu").returncode == 0
    from lab.core.store import Store

    with Store(db, read_only=True) as store:
        run_id = store.runs().iloc[-1]["run_id"]
    report = tmp_path / "report.md"
    assert lab_main(capsys, "report", "--db", str(db), "--run", run_id, "--format", "md", "--out",
                    str(report)).returncode == 0
    text = report.read_text()
    import re

    # Code blocks and spans show their content as text; everything else a renderer interprets.
    prose = re.sub(r"(`+)[^`].*?\1", "", re.sub(r"^(`{3,}).*?^\1$", "", text, flags=re.S | re.M), flags=re.S)
    for raw in (r"<script", r"<img", r"(?<!\\)\]\(javascript:", r"<javascript:"):  # an escaped \] is no link
        assert not re.search(raw, prose), raw
    assert "&lt;script&gt;" in prose and "\\[click me\\](javascript:alert(document.cookie))" in prose
    assert "&lt;img src=x onerror=alert(1)&gt;" in prose
    html_report = tmp_path / "report.html"
    assert lab_main(capsys, "report", "--db", str(db), "--run", run_id, "--out", str(html_report)).returncode == 0
    assert "<script>alert('x')</script>" not in html_report.read_text()
    export = tmp_path / "items.csv"
    assert lab_main(capsys, "export", "--db", str(db), "--run", run_id, "--format", "csv", "--out",
                    str(export)).returncode == 0
    def number(cell: str) -> bool:
        try:
            float(cell)
        except ValueError:
            return False
        return True

    cells = [cell for row in csv.reader(export.open()) for cell in row]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@")) and not number(c)]  # numbers stay numbers
    assert {f"'{f}" for f in FORMULAS} <= set(cells)


# ------------------------------------------------------------------ every size an option can set
def test_every_size_and_text_an_option_can_set_is_capped_in_a_space():
    """Every integer option declares what it is (a size or a length, capped in a Space, or an index that picks
    rather than scales), every free-text option is a model, a path or a prompt text; and the one policy refuses
    each size one above its cap and each text one character over the prompt cap."""
    import dataclasses

    from audits import available, get_audit
    from lab.core.errors import LabError
    from lab.core.options import option_specs
    from lab.core.policy import SPACE

    for name in available():
        options = get_audit(name).Options()
        for spec in option_specs(type(options)):
            where = f"{name}.{spec.name}"
            if spec.base_type is int:
                assert spec.kind in ("size", "tokens", "index"), f"{where}: an integer option without a kind"
            if spec.base_type is str and not spec.choices:
                assert spec.kind in ("model", "path", "text"), f"{where}: a free-text option without a kind"
            over = {"size": (spec.space_cap or SPACE.size_cap or 0) + 1, "tokens": SPACE.max_new_tokens + 1,
                    "text": "x" * (SPACE.max_prompt_chars + 1)}.get(spec.kind or "")
            if over is None:
                continue
            value = over if spec.many is False else (over,)
            with pytest.raises(LabError, match="cap"):
                SPACE.check_options(name, dataclasses.replace(options, **{spec.name: value}), given=[spec.name])
