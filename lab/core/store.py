"""The DuckDB store: the one place results are written.

Tables: ``runs`` (one row per audit run with both models, their content
hashes, config and status), ``audits`` (status of each audit in a run),
``items`` (every prompt and both outputs with scores), ``metrics`` and
``artifacts`` (plot data as JSON).  Rows are committed as they arrive, so a run
killed mid-way keeps its partial rows.  A working run beats a heartbeat into
its row; on the next open, a ``running`` run whose heartbeat is stale (or
whose process on this very host is gone) is marked ``interrupted``, whatever
host or container it ran in.  Writes only ever add rows or update the run's
own status, so earlier runs are never damaged; a DuckDB file that belongs to
another tool is refused, not extended.  A run written by another process into
a store of its own (a sweep's Ray worker) comes in whole through
``import_run``, so the user's store keeps one writer.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

import duckdb
import pandas as pd

from lab.core.errors import LabError
from lab.core.files import write_output
from lab.core.records import ItemRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    created_at TIMESTAMP,
    finished_at TIMESTAMP,
    status VARCHAR,
    base_ref VARCHAR,
    base_hash VARCHAR,
    unlearned_ref VARCHAR,
    unlearned_hash VARCHAR,
    reference_ref VARCHAR,
    facts_source VARCHAR,
    facts_hash VARCHAR,
    audits VARCHAR,
    config JSON,
    environment JSON,
    error VARCHAR,
    host VARCHAR,
    pid INTEGER,
    heartbeat_at TIMESTAMP,
    host_id VARCHAR
);
CREATE TABLE IF NOT EXISTS audits (
    run_id VARCHAR, audit VARCHAR, status VARCHAR, started_at TIMESTAMP,
    finished_at TIMESTAMP, error VARCHAR, notes JSON
);
CREATE TABLE IF NOT EXISTS items (
    run_id VARCHAR, audit VARCHAR, fact_id VARCHAR, split VARCHAR, category VARCHAR,
    prompt VARCHAR, answer VARCHAR, output_base VARCHAR, output_unlearned VARCHAR,
    hit_base BOOLEAN, hit_unlearned BOOLEAN, rouge_base DOUBLE, rouge_unlearned DOUBLE,
    logprob_base DOUBLE, logprob_unlearned DOUBLE, recovered BOOLEAN, extra JSON
);
CREATE TABLE IF NOT EXISTS metrics (run_id VARCHAR, audit VARCHAR, key VARCHAR, value DOUBLE);
CREATE TABLE IF NOT EXISTS facts (
    run_id VARCHAR, fact_id VARCHAR, split VARCHAR, kind VARCHAR, subset VARCHAR, level VARCHAR,
    probe_type VARCHAR, entity VARCHAR
);
CREATE TABLE IF NOT EXISTS artifacts (run_id VARCHAR, audit VARCHAR, name VARCHAR, data JSON);
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id VARCHAR PRIMARY KEY, created_at TIMESTAMP, finished_at TIMESTAMP, status VARCHAR,
    spec JSON, pairs INTEGER, completed INTEGER
);
"""
ITEM_COLUMNS = list(ItemRecord.__dataclass_fields__)
ITEM_TYPES = {  # the items table's columns in order, with their SQL types
    "run_id": "VARCHAR", "audit": "VARCHAR", "fact_id": "VARCHAR", "split": "VARCHAR", "category": "VARCHAR",
    "prompt": "VARCHAR", "answer": "VARCHAR", "output_base": "VARCHAR", "output_unlearned": "VARCHAR",
    "hit_base": "BOOLEAN", "hit_unlearned": "BOOLEAN", "rouge_base": "DOUBLE", "rouge_unlearned": "DOUBLE",
    "logprob_base": "DOUBLE", "logprob_unlearned": "DOUBLE", "recovered": "BOOLEAN", "extra": "JSON",
}
EXPORT_FORMATS = ("parquet", "csv", "json")
LAB_TABLES = ("runs", "audits", "items", "metrics", "artifacts", "facts", "sweeps")
RUN_TABLES = ("runs", "audits", "items", "metrics", "artifacts", "facts")  # every table a run writes rows into
FACT_COLUMNS = ("fact_id", "split", "kind", "subset", "level", "probe_type", "entity")
HEARTBEAT_S = 5.0  # a working run touches its row this often
STALE_AFTER_S = 60.0  # a running run silent for longer is dead
MIGRATIONS = ("ALTER TABLE runs ADD COLUMN IF NOT EXISTS heartbeat_at TIMESTAMP",
              "ALTER TABLE runs ADD COLUMN IF NOT EXISTS host_id VARCHAR",
              "ALTER TABLE runs ADD COLUMN IF NOT EXISTS sweep_id VARCHAR")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def host_id() -> str:
    """This host, also across containers that share a host name: the name and the kernel's boot id."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}:{boot}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def to_json(value: Any) -> str:
    """JSON text with NaN written as null (JSON has no NaN)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(json.loads(json.dumps(value, default=_json_default))))


def new_run_id() -> str:
    """A unique, sortable run id, known before the run writes anything."""
    return f"run-{_now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


class Store:
    """A DuckDB file shared by the CLI and the UI; thread-safe within a process.

    ``read_only`` opens an existing store for reading (``runs``, ``export``,
    ``report`` on a file that cannot be written): nothing is created or marked.
    """

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path).expanduser()
        self.read_only = read_only
        if read_only and not self.path.is_file():
            raise LabError(f"no store at {self.path}")
        if self.path.is_dir():
            raise LabError(f"{self.path} is a folder, not a DuckDB store file")
        try:
            if not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.con = self._connect(read_only)
        except OSError as exc:
            raise LabError(f"cannot open database {self.path}: {exc.strerror or exc}") from None
        except duckdb.IOException as exc:
            raise LabError(f"cannot open database {self.path}: {str(exc).splitlines()[0]}") from None
        except duckdb.Error as exc:
            raise LabError(f"{self.path} is not a usable DuckDB database: {str(exc).splitlines()[0]}") from None
        self.lock = threading.RLock()
        try:
            self._check_owner()
            if not read_only:
                with self.lock:
                    self.con.execute(SCHEMA)
                    for sql in MIGRATIONS:
                        self.con.execute(sql)
                self.mark_stale_runs()
        except BaseException:
            self.con.close()
            raise

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """A connection; read-only falls back to the mode this process already holds the file in."""
        try:
            return duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.ConnectionException as exc:
            if read_only and "different configuration" in str(exc):
                return duckdb.connect(str(self.path))  # this process has it open read-write; we only read
            raise

    def _check_owner(self) -> None:
        """Refuse a database of another tool: the lab's tables or none at all."""
        tables = {row[0] for row in self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
        if tables and "runs" not in tables:
            shown = ", ".join(sorted(tables)[:3])
            raise LabError(f"{self.path} is a DuckDB database of another tool (tables: {shown}); give the lab "
                           "its own --db file")
        if self.read_only and not tables:
            raise LabError(f"{self.path} holds no lab runs")

    def close(self) -> None:
        with self.lock:
            self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _exec(self, sql: str, params: Iterable[Any] = ()) -> duckdb.DuckDBPyConnection:
        with self.lock:
            return self.con.execute(sql, list(params))

    def _frame(self, sql: str, params: Iterable[Any] = ()) -> pd.DataFrame:
        with self.lock:
            return self.con.execute(sql, list(params)).df()

    # ---------------------------------------------------------------- lifecycle
    def mark_stale_runs(self) -> None:
        """Runs left 'running' by a process that stopped are interrupted.

        Dead: its heartbeat is older than ``STALE_AFTER_S`` (any host), or it
        ran on this host (same host id) under a process that no longer exists.
        """
        cutoff = _now() - timedelta(seconds=STALE_AFTER_S)
        stale = self._exec(
            "SELECT run_id, pid, host_id, coalesce(heartbeat_at, created_at) FROM runs WHERE status = 'running'"
        ).fetchall()
        here = host_id()
        for run_id, pid, host, beat in stale:
            silent = beat is None or beat < cutoff
            gone = host == here and (pid is None or not _pid_alive(int(pid)))
            if silent or gone:
                self.finish_run(run_id, "interrupted", "the process running it stopped before it finished")

    def create_run(
        self,
        *,
        run_id: str,
        base: dict[str, Any],
        unlearned: dict[str, Any],
        reference: str | None,
        facts_source: str,
        facts_hash: str,
        audits: list[str],
        config: dict[str, Any],
        environment: dict[str, Any],
        sweep_id: str | None = None,
    ) -> str:
        now = _now()
        self._exec(
            "INSERT INTO runs (run_id, created_at, status, base_ref, base_hash, unlearned_ref, unlearned_hash, "
            "reference_ref, facts_source, facts_hash, audits, config, environment, host, pid, heartbeat_at, host_id, "
            "sweep_id) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, now, base["ref"], base["content_hash"], unlearned["ref"], unlearned["content_hash"],
             reference, facts_source, facts_hash, ",".join(audits), to_json(config), to_json(environment),
             socket.gethostname(), os.getpid(), now, host_id(), sweep_id],
        )
        return run_id

    def create_sweep(self, sweep_id: str, spec: dict[str, Any], pairs: int) -> None:
        """A sweep starts: its spec and how many pairs it will run (each pair is a run carrying its id)."""
        self._exec("INSERT INTO sweeps VALUES (?, ?, NULL, 'running', ?, ?, 0)", [sweep_id, _now(), to_json(spec),
                                                                                   pairs])

    def finish_sweep(self, sweep_id: str, status: str, completed: int) -> None:
        self._exec("UPDATE sweeps SET status = ?, completed = ?, finished_at = ? WHERE sweep_id = ?",
                   [status, completed, _now(), sweep_id])

    def sweeps(self) -> pd.DataFrame:
        """All sweeps, newest last."""
        return self._frame("SELECT sweep_id, created_at, finished_at, status, pairs, completed FROM sweeps "
                           "ORDER BY created_at, sweep_id")

    def sweep_runs(self, sweep_id: str) -> pd.DataFrame:
        """The runs of one sweep, in the order they started."""
        return self._frame("SELECT run_id, status, unlearned_ref, unlearned_hash, error FROM runs "
                           "WHERE sweep_id = ? ORDER BY created_at, run_id", [sweep_id])

    def heartbeat(self, run_id: str) -> None:
        """The run is still working (see ``mark_stale_runs``)."""
        self._exec("UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND status = 'running'", [_now(), run_id])

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        self._exec(
            "UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE run_id = ?",
            [status, error, _now(), run_id],
        )
        self._exec(
            "UPDATE audits SET status = ?, finished_at = ? WHERE run_id = ? AND status = 'running'",
            [status, _now(), run_id],
        )

    def start_audit(self, run_id: str, audit: str) -> None:
        self._exec("INSERT INTO audits VALUES (?, ?, 'running', ?, NULL, NULL, '[]')", [run_id, audit, _now()])

    def finish_audit(self, run_id: str, audit: str, status: str, error: str | None = None,
                     notes: list[str] | None = None) -> None:
        self._exec(
            "UPDATE audits SET status = ?, error = ?, finished_at = ?, notes = ? WHERE run_id = ? AND audit = ?",
            [status, error, _now(), to_json(notes or []), run_id, audit],
        )

    # ------------------------------------------------------------------- writes
    def add_items(self, run_id: str, items: list[ItemRecord]) -> None:
        """Append items in one statement (a DataFrame scan: far faster than row-by-row inserts)."""
        if not items:
            return
        rows = []
        for item in items:
            row = asdict(item)
            row["extra"] = to_json(row["extra"])
            rows.append(row)
        frame = pd.DataFrame(rows, columns=ITEM_COLUMNS).astype(object)
        frame.insert(0, "run_id", run_id)
        casts = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in ITEM_TYPES.items())
        with self.lock:
            self.con.register("new_items", frame)
            try:
                self.con.execute(f"INSERT INTO items SELECT {casts} FROM new_items")
            finally:
                self.con.unregister("new_items")

    def add_facts(self, run_id: str, facts: Iterable[Any]) -> None:
        """What each fact of the run is (split, kind, subset, level, probe type, entity), for breakdowns."""
        rows = [[run_id, f.id, f.split, f.kind, f.subset, f.level, f.probe_type, f.entity] for f in facts]
        if rows:
            frame = pd.DataFrame(rows, columns=["run_id", *FACT_COLUMNS])
            with self.lock:
                self.con.register("new_facts", frame)
                try:
                    self.con.execute("INSERT INTO facts SELECT * FROM new_facts")
                finally:
                    self.con.unregister("new_facts")

    def facts(self, run_id: str) -> pd.DataFrame:
        return self._frame(f"SELECT {', '.join(FACT_COLUMNS)} FROM facts WHERE run_id = ?", [run_id])

    def add_metrics(self, run_id: str, audit: str, metrics: dict[str, float]) -> None:
        rows = [[run_id, audit, key, None if value is None or not math.isfinite(float(value)) else float(value)]
                for key, value in metrics.items()]
        if rows:
            with self.lock:
                self.con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)", rows)

    def add_artifact(self, run_id: str, audit: str, name: str, data: Any) -> None:
        self._exec("INSERT INTO artifacts VALUES (?, ?, ?, ?)", [run_id, audit, name, to_json(data)])

    def run_rows(self, run_id: str) -> dict[str, Any]:
        """Every row one run wrote, per table, as Arrow tables (typed, and cheap to pickle).

        A sweep's worker runs its pair into a store of its own and hands these rows to the driver,
        which alone writes the user's store (:meth:`import_run`)."""
        self.run(run_id)  # raises for an unknown run
        with self.lock:
            return {table: self.con.sql(f"SELECT * FROM {table} WHERE run_id = ?", params=[run_id]).to_arrow_table()
                    for table in RUN_TABLES}

    def import_run(self, rows: dict[str, Any]) -> str:
        """Add a run written elsewhere (:meth:`run_rows` of another store) in one transaction: all of its rows
        or none.  Columns are matched by name, so a store migrated to more columns still takes it.
        A run id already here is refused (imports add rows, they never replace)."""
        if set(rows) != set(RUN_TABLES) or rows["runs"].num_rows != 1:
            raise LabError("a run to import holds one 'runs' row and the rows of " + ", ".join(RUN_TABLES[1:]))
        run_id = rows["runs"].column("run_id")[0].as_py()
        with self.lock:
            if self.con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]:
                raise LabError(f"run '{run_id}' is already in {self.path}")
            self.con.execute("BEGIN TRANSACTION")
            try:
                for table in RUN_TABLES:
                    self._insert_by_name(table, rows[table])
            except duckdb.Error as exc:
                self.con.execute("ROLLBACK")
                raise LabError(f"cannot import run '{run_id}': {str(exc).splitlines()[0]}") from None
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            self.con.execute("COMMIT")
        return run_id

    def _insert_by_name(self, table: str, frame: Any) -> None:
        """Append an Arrow table to ``table``, its columns matched by name."""
        if frame.num_rows:
            self.con.register("imported_rows", frame)
            try:
                self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM imported_rows")
            finally:
                self.con.unregister("imported_rows")

    # ------------------------------------------------------------------ queries
    def runs(self) -> pd.DataFrame:
        """All runs, newest last."""
        return self._frame(
            "SELECT run_id, created_at, finished_at, status, base_ref, unlearned_ref, audits, error "
            "FROM runs ORDER BY created_at, run_id"
        )

    def run(self, run_id: str) -> dict[str, Any]:
        frame = self._frame("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if frame.empty:
            raise LabError(f"no run '{run_id}' in {self.path}")
        row = frame.iloc[0].to_dict()
        for key in ("config", "environment"):
            row[key] = json.loads(row[key]) if row.get(key) else {}
        return row

    def audits(self, run_id: str) -> pd.DataFrame:
        return self._frame("SELECT * FROM audits WHERE run_id = ? ORDER BY started_at", [run_id])

    def items(self, run_id: str, audit: str | None = None) -> pd.DataFrame:
        if audit:
            return self._frame("SELECT * FROM items WHERE run_id = ? AND audit = ?", [run_id, audit])
        return self._frame("SELECT * FROM items WHERE run_id = ?", [run_id])

    def metrics(self, run_id: str) -> pd.DataFrame:
        return self._frame("SELECT audit, key, value FROM metrics WHERE run_id = ?", [run_id])

    def metrics_dict(self, run_id: str) -> dict[str, dict[str, float | None]]:
        out: dict[str, dict[str, float | None]] = {}
        for audit, key, value in self.metrics(run_id).itertuples(index=False):
            out.setdefault(audit, {})[key] = None if pd.isna(value) else float(value)
        return out

    def artifacts(self, run_id: str, audit: str | None = None) -> dict[str, dict[str, Any]]:
        frame = self._frame("SELECT audit, name, data FROM artifacts WHERE run_id = ?", [run_id])
        out: dict[str, dict[str, Any]] = {}
        for a, name, data in frame.itertuples(index=False):
            if audit is None or a == audit:
                out.setdefault(a, {})[name] = json.loads(data)
        return out

    def export(self, run_id: str, fmt: str, out: str | Path, items: pd.DataFrame | None = None) -> Path:
        """Write a run's items (all, or the ``items`` given: a filtered view) as Parquet, CSV or JSON.

        JSON carries the run and its metrics too.  The output never replaces the store itself.
        """
        if fmt not in EXPORT_FORMATS:
            raise LabError(f"unknown export format '{fmt}' (use {', '.join(EXPORT_FORMATS)})")
        run = self.run(run_id)  # raises for an unknown run
        rows = self.items(run_id) if items is None else items

        def write(tmp: Path) -> None:
            if fmt == "parquet":
                rows.to_parquet(tmp, index=False)
            elif fmt == "csv":
                rows.to_csv(tmp, index=False)
            else:
                payload = {
                    "run": {k: (str(v) if isinstance(v, (datetime, pd.Timestamp)) else v) for k, v in run.items()},
                    "metrics": self.metrics_dict(run_id),
                    "items": json.loads(rows.to_json(orient="records")),
                }
                tmp.write_text(to_json(payload))

        return write_output(out, write, protected=[self.path])
