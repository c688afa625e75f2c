"""The DuckDB store: runs survive failures and kills; earlier runs stay intact."""

import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from lab.core.errors import LabError
from lab.core.records import ItemRecord
from lab.core.store import Store, new_run_id

MODEL = {"ref": "demo:base", "content_hash": "abc"}


def new_run(store, audits=("direct",)):
    return store.create_run(run_id=new_run_id(), base=MODEL, unlearned=MODEL, reference=None, facts_source="f.jsonl", facts_hash="h",
                            audits=list(audits), config={"limit": None}, environment={"python": "3"})


def test_complete_run_round_trip(tmp_path):
    with Store(tmp_path / "db.duckdb") as store:
        run = new_run(store)
        store.start_audit(run, "direct")
        store.add_items(run, [ItemRecord("direct", "f1", "forget", prompt="p", answer="a", output_base="a",
                                         hit_base=True, extra={"curve": [1.0, float("nan")]})])
        store.add_metrics(run, "direct", {"forget_accuracy_base": 1.0, "empty": float("nan")})
        store.add_artifact(run, "direct", "curve", {"x": [1, 2]})
        store.finish_audit(run, "direct", "complete")
        store.finish_run(run, "complete")
        assert store.runs()["status"].tolist() == ["complete"]
        assert store.metrics_dict(run) == {"direct": {"forget_accuracy_base": 1.0, "empty": None}}
        assert store.artifacts(run) == {"direct": {"curve": {"x": [1, 2]}}}
        items = store.items(run)
        assert isinstance(items, pd.DataFrame) and items.loc[0, "output_base"] == "a"
        for fmt in ("parquet", "csv", "json"):
            assert store.export(run, fmt, tmp_path / f"out.{fmt}").stat().st_size > 0
        assert len(pd.read_parquet(tmp_path / "out.parquet")) == 1
        with pytest.raises(LabError, match="no run 'nope'"):
            store.export("nope", "csv", tmp_path / "x.csv")


def test_killed_run_is_marked_interrupted_and_keeps_rows(tmp_path):
    db = tmp_path / "db.duckdb"
    with Store(db) as store:
        done = new_run(store)
        store.add_items(done, [ItemRecord("direct", "f0", "retain")])
        store.finish_run(done, "complete")
    script = textwrap.dedent(f"""
        import os, signal
        from lab.core.records import ItemRecord
        from lab.core.store import Store, new_run_id
        store = Store({str(db)!r})
        run = store.create_run(run_id=new_run_id(), base={MODEL!r}, unlearned={MODEL!r}, reference=None, facts_source="f",
                               facts_hash="h", audits=["direct"], config={{}}, environment={{}})
        store.start_audit(run, "direct")
        store.add_items(run, [ItemRecord("direct", "f1", "forget"), ItemRecord("direct", "f2", "forget")])
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-run, no cleanup at all
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path.parents[0]),
                          env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])})
    assert proc.returncode == -9
    with Store(db) as store:
        runs = store.runs().set_index("run_id")
        assert runs.loc[done, "status"] == "complete"
        killed = [r for r in runs.index if r != done][0]
        assert runs.loc[killed, "status"] == "interrupted"
        assert len(store.items(killed)) == 2 and len(store.items(done)) == 1
        assert store.audits(killed)["status"].tolist() == ["interrupted"]


def test_not_a_database(tmp_path):
    bad = tmp_path / "bad.duckdb"
    bad.write_text("this is not a database")
    with pytest.raises(LabError, match="is not a DuckDB database \\(it holds other data\\)"):
        Store(bad)
    assert bad.read_text() == "this is not a database"


def holding(path, read_only: bool) -> subprocess.Popen:
    """Another process with the store open (a report reads it; a run or a sweep writes it), until killed."""
    code = (f"import sys, time\nfrom lab.core.store import Store\nstore = Store({str(path)!r}, read_only={read_only})\n"
            "print('open', flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "open"
    return holder


def test_a_store_held_by_another_process_is_one_line(tmp_path, capsys):
    """A sweep meeting a report on its store, and a report meeting a run: one line naming the holder, no
    DuckDB message, exit 2; the store is as it was."""
    from lab.shell.cli import main

    path = tmp_path / "lab.duckdb"
    with Store(path) as store:
        run_id = new_run(store)
    spec = tmp_path / "sweep.json"
    spec.write_text('{"base": "demo:base", "unlearned": ["demo:npo"], "audits": ["direct"]}')
    for read_only, argv in ((True, ["sweep", str(spec), "--db", str(path), "--local"]),
                            (False, ["report", "--db", str(path), "--run", run_id, "--out", str(tmp_path / "r.md"),
                                     "--format", "md"])):
        holder = holding(path, read_only)
        try:
            assert main(argv) == 2
        finally:
            holder.kill()
            holder.wait()
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"is in use by process {holder.pid} (python" in err[0], err
        assert "IO Error" not in err[0] and "another --db" in err[0]
    with Store(path, read_only=True) as store:
        assert list(store.runs()["run_id"]) == [run_id]
