"""The DuckDB store: the one place results are written.

Tables: ``runs`` (one row per audit run with both models, their content
hashes, config and status), ``audits`` (status of each audit in a run),
``items`` (every prompt and both outputs with scores), ``metrics`` and
``artifacts`` (plot data as JSON), and ``sweeps``.  Rows are committed as they
arrive, so a run killed mid-way keeps its partial rows.  A working run (and a
working sweep's driver) beats a heartbeat into its row; one whose heartbeat is
stale, or whose process on this very host is gone, reads as ``interrupted``
at once (also through a read-only open) and is marked so on the next
read-write open, whatever host or container it ran in.  Writes only ever add
rows or update the run's own status, so earlier runs are never damaged.

An existing file is checked through a read-only connection before a
read-write one is opened: anything but the lab's own DuckDB store (another
file, another tool's database, even one with a table named ``runs``) is
refused before a byte is written, and a truncated or damaged store is a
one-line error wherever a query meets the damage.

A run written by another process into a store of its own (a sweep's Ray
worker) comes in whole through ``import_run``, so the user's store keeps one
writer.  In a hosted Space every visitor sees the store through
:meth:`Store.for_visitor`: their own runs and sweeps and those no visitor
made (the demo's), nothing else.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import socket
import stat
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import duckdb
import pandas as pd

from lab.core.errors import LabError
from lab.core.files import is_duckdb_file, write_output
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
              "ALTER TABLE runs ADD COLUMN IF NOT EXISTS sweep_id VARCHAR",
              "ALTER TABLE runs ADD COLUMN IF NOT EXISTS visitor VARCHAR",
              "ALTER TABLE sweeps ADD COLUMN IF NOT EXISTS host VARCHAR",
              "ALTER TABLE sweeps ADD COLUMN IF NOT EXISTS pid INTEGER",
              "ALTER TABLE sweeps ADD COLUMN IF NOT EXISTS host_id VARCHAR",
              "ALTER TABLE sweeps ADD COLUMN IF NOT EXISTS heartbeat_at TIMESTAMP",
              "ALTER TABLE sweeps ADD COLUMN IF NOT EXISTS visitor VARCHAR")
LAB_COLUMNS = {  # columns every lab store has had in each table: a table by a lab name without them is not ours
    "runs": ("run_id", "created_at", "status", "base_ref", "unlearned_ref", "audits", "config"),
    "audits": ("run_id", "audit", "status"), "items": ("run_id", "audit", "fact_id"),
    "metrics": ("run_id", "audit", "key", "value"), "artifacts": ("run_id", "audit", "name", "data"),
    "facts": ("run_id", "fact_id"), "sweeps": ("sweep_id", "status", "spec"),
}
DAMAGED = (duckdb.IOException, duckdb.SerializationException, duckdb.InternalException, duckdb.FatalException)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def host_id() -> str:
    """This host, also across containers that share a host name: the name and the kernel's boot id."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}:{boot}"


def is_dead(pid: Any, host: Any, beat: Any, cutoff: datetime, here: str) -> bool:
    """A 'running' row whose process stopped: its heartbeat is older than ``cutoff`` (any host), or it ran on
    this host (same host id: host name and boot) under a process that no longer exists."""
    silent = beat is None or pd.isna(beat) or beat < cutoff
    gone = host == here and (pid is None or pd.isna(pid) or not _pid_alive(int(pid)))
    return bool(silent or gone)


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


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet runs a cell that begins so as a formula


def formula_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` for a CSV file: every text cell that a spreadsheet would run as a formula (OWASP's CSV
    injection: ``=``, ``+``, ``-``, ``@``, tab, carriage return first) gets a leading ``'``, which spreadsheets
    show as text; numbers stay numbers."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_object_dtype(out[column]) or pd.api.types.is_string_dtype(out[column]):
            out[column] = [f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v for v in out[column]]
    return out


def new_run_id() -> str:
    """A unique, sortable run id, known before the run writes anything."""
    return f"run-{_now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


class Store:
    """A DuckDB file shared by the CLI and the UI; thread-safe within a process.

    ``read_only`` opens an existing store for reading (``runs``, ``export``,
    ``report`` on a file that cannot be written): nothing is created or marked.
    ``visitor`` is None for the store itself (it sees every run; the CLI and
    the local lab); :meth:`for_visitor` gives a Space visitor's view.
    """

    visitor: str | None = None

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path).expanduser()
        self.read_only = read_only
        self._owner = True  # this object opened the connection (a visitor's view shares it)
        if read_only and not self.path.is_file():
            raise LabError(f"no store at {self.path}")
        if self.path.is_dir():
            raise LabError(f"{self.path} is a folder, not a DuckDB store file")
        self._check_file()
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LabError(f"cannot open database {self.path}: {exc.strerror or exc}") from None
        self.con = self._connect(read_only)
        self.lock = threading.RLock()
        try:
            self._check_owner(self.con)
            if not read_only:
                with self.lock, self._io():
                    self.con.execute(SCHEMA)
                    for sql in MIGRATIONS:
                        self.con.execute(sql)
            self.tables = self._columns(self.con)  # a read-only store of an older lab may lack later columns
            if not read_only:
                self.mark_stale_runs()
        except BaseException:
            self.con.close()
            raise

    def _check_file(self) -> None:
        """An existing file must be the lab's DuckDB store, checked through a read-only connection before a
        read-write one (which may write) is opened; an empty file holds nothing and becomes a new store."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise LabError(f"cannot open database {self.path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(info.st_mode):
            raise LabError(f"{self.path} is not a regular file (a device, a pipe or a socket); give the lab a store "
                           "file")
        if info.st_size == 0:
            return
        if not is_duckdb_file(self.path):
            raise LabError(f"{self.path} is not a DuckDB database (it holds other data); give the lab its own --db "
                           "file")
        if not self.read_only:
            probe = self._connect(read_only=True)
            try:
                self._check_owner(probe)
            finally:
                probe.close()

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """A connection; read-only falls back to the mode this process already holds the file in."""
        try:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.ConnectionException as exc:
                if read_only and "different configuration" in str(exc):
                    return duckdb.connect(str(self.path))  # this process has it open read-write; we only read
                raise
        except OSError as exc:
            raise LabError(f"cannot open database {self.path}: {exc.strerror or exc}") from None
        except duckdb.IOException as exc:
            if "Could not read" in str(exc):
                raise self._damaged(exc) from None
            if "Could not set lock" in str(exc):
                raise self._locked(exc) from None
            raise LabError(f"cannot open database {self.path}: {str(exc).splitlines()[0]}") from None
        except duckdb.Error as exc:
            raise LabError(f"{self.path} is not a usable DuckDB database: {str(exc).splitlines()[0]}") from None

    def _columns(self, con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
        """The columns of every table, by table."""
        columns: dict[str, set[str]] = {}
        with self._io():
            for table, column in con.execute("SELECT table_name, column_name FROM information_schema.columns "
                                             "WHERE table_schema = 'main'").fetchall():
                columns.setdefault(table, set()).add(column)
        return columns

    def _check_owner(self, con: duckdb.DuckDBPyConnection) -> None:
        """Refuse a database of another tool: the lab's tables with the lab's columns, or no table at all."""
        columns = self._columns(con)
        foreign = sorted(set(columns) - set(LAB_COLUMNS))
        if columns and "runs" not in columns:
            raise LabError(f"{self.path} is a DuckDB database of another tool (tables: {', '.join(foreign[:3])}); "
                           "give the lab its own --db file")
        for table, needed in LAB_COLUMNS.items():
            missing = [c for c in needed if table in columns and c not in columns[table]]
            if missing:
                raise LabError(f"{self.path} is a DuckDB database of another tool (its table '{table}' has no "
                               f"'{missing[0]}' column); give the lab its own --db file")
        if self.read_only and not columns:
            raise LabError(f"{self.path} holds no lab runs")

    def _damaged(self, exc: BaseException) -> LabError:
        return LabError(f"the store {self.path} cannot be read or written ({str(exc).splitlines()[0][:200]}): it is "
                        "truncated or damaged, or its disk is full; restore it from a copy or give another --db")

    def _locked(self, exc: BaseException) -> LabError:
        """DuckDB lets one process write a file, or several read it, never both: a sweep or a run meeting a report
        (or the web lab) on the same store, or the other way round, is told who holds it and what to do."""
        holder = re.search(r"lock is held in (\S+) \(PID (\d+)\)", str(exc))
        who = f"process {holder.group(2)} ({Path(holder.group(1)).name})" if holder else "another process"
        return LabError(f"the store {self.path} is in use by {who}: a run, a sweep, a report or the web lab on the "
                        "same file; wait until it finishes, or give this command another --db")

    @contextmanager
    def _io(self) -> Iterator[None]:
        """A truncated or damaged store file (or a full disk) is one line naming the store, at any query."""
        try:
            yield
        except DAMAGED as exc:
            raise self._damaged(exc) from None

    def for_visitor(self, visitor: str) -> "Store":
        """This store as one visitor of a hosted Space sees it: their own runs and sweeps and those no visitor
        made; what they run is theirs.  The view shares this store's connection and lock (one writer)."""
        if not visitor:
            raise LabError("no visitor session: reload the page")
        view = copy.copy(self)
        view.visitor, view._owner = visitor, False
        return view

    def close(self) -> None:
        if self._owner:
            with self.lock:
                self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _exec(self, sql: str, params: Iterable[Any] = ()) -> duckdb.DuckDBPyConnection:
        with self.lock, self._io():
            return self.con.execute(sql, list(params))

    def _frame(self, sql: str, params: Iterable[Any] = ()) -> pd.DataFrame:
        with self.lock, self._io():
            return self.con.execute(sql, list(params)).df()

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """A query's rows, fetched while the lock is held (the connection serves one call at a time)."""
        with self.lock, self._io():
            return self.con.execute(sql, list(params)).fetchall()

    # --------------------------------------------------------------- visibility
    def _scope(self, table: str = "runs") -> tuple[str, list[Any]]:
        """The SQL condition (and its parameters) of the rows of ``table`` this view may see."""
        if self.visitor is None:
            return "TRUE", []
        return f"({table}.visitor IS NULL OR {table}.visitor = ?)", [self.visitor]

    def _visible(self, run_id: str) -> None:
        """Raise, as for a run that does not exist, unless this view may see ``run_id``."""
        where, params = self._scope()
        if not self._rows(f"SELECT 1 FROM runs WHERE run_id = ? AND {where}", [run_id, *params]):
            raise LabError(f"no run '{run_id}' in {self.path if self.visitor is None else 'this lab'}")

    def _visible_sweep(self, sweep_id: str) -> None:
        where, params = self._scope("sweeps")
        if not self._rows(f"SELECT 1 FROM sweeps WHERE sweep_id = ? AND {where}", [sweep_id, *params]):
            raise LabError(f"no sweep '{sweep_id}' in {self.path if self.visitor is None else 'this lab'}")

    def _liveness(self, table: str) -> str:
        """The columns that decide whether a 'running' row of ``table`` lives (pid, host_id, beat), as this
        store has them (a read-only store of an older lab lacks the later ones: they read as unknown)."""
        have = self.tables.get(table, set())
        pid = "pid" if "pid" in have else "NULL::INTEGER AS pid"
        host = "host_id" if "host_id" in have else "NULL::VARCHAR AS host_id"
        return f"{pid}, {host}, {self._beat(table)} AS beat"

    def _beat(self, table: str) -> str:
        return "coalesce(heartbeat_at, created_at)" if "heartbeat_at" in self.tables.get(table, set()) else "created_at"

    @staticmethod
    def _live(frame: pd.DataFrame, drop: tuple[str, ...] = ("pid", "host_id", "beat")) -> pd.DataFrame:
        """``frame`` (with the :meth:`_liveness` columns) as it stands now: a 'running' row whose process
        stopped reads 'interrupted' (marked so in the file on the next read-write open); ``drop``: the
        liveness columns the caller does not show."""
        cutoff, here = _now() - timedelta(seconds=STALE_AFTER_S), host_id()
        if not frame.empty:
            dead = [status == "running" and is_dead(pid, host, beat, cutoff, here)
                    for status, pid, host, beat in zip(frame["status"], frame["pid"], frame["host_id"],
                                                       frame["beat"])]
            frame.loc[dead, "status"] = "interrupted"
        return frame.drop(columns=list(drop))

    # ---------------------------------------------------------------- lifecycle
    def mark_stale_runs(self) -> None:
        """Runs and sweeps left 'running' by a process that stopped (:func:`is_dead`) are interrupted."""
        cutoff, here = _now() - timedelta(seconds=STALE_AFTER_S), host_id()
        for run_id, pid, host, beat in self._rows(
                f"SELECT run_id, {self._liveness('runs')} FROM runs WHERE status = 'running'"):
            if is_dead(pid, host, beat, cutoff, here):
                self.finish_run(run_id, "interrupted", "the process running it stopped before it finished")
        for sweep_id, pid, host, beat, done in self._rows(
                f"SELECT sweep_id, {self._liveness('sweeps')}, completed FROM sweeps WHERE status = 'running'"):
            if is_dead(pid, host, beat, cutoff, here):
                self.finish_sweep(sweep_id, "interrupted", done)

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
            "sweep_id, visitor) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, now, base["ref"], base["content_hash"], unlearned["ref"], unlearned["content_hash"],
             reference, facts_source, facts_hash, ",".join(audits), to_json(config), to_json(environment),
             socket.gethostname(), os.getpid(), now, host_id(), sweep_id, self.visitor],
        )
        return run_id

    def create_sweep(self, sweep_id: str, spec: dict[str, Any], pairs: int) -> None:
        """A sweep starts: its spec, how many pairs it will run (each pair is a run carrying its id), and the
        process driving it (its liveness, as for runs)."""
        now = _now()
        self._exec("INSERT INTO sweeps (sweep_id, created_at, status, spec, pairs, completed, host, pid, host_id, "
                   "heartbeat_at, visitor) VALUES (?, ?, 'running', ?, ?, 0, ?, ?, ?, ?, ?)",
                   [sweep_id, now, to_json(spec), pairs, socket.gethostname(), os.getpid(), host_id(), now,
                    self.visitor])

    def sweep_heartbeat(self, sweep_id: str) -> None:
        """The sweep's driver is still working."""
        self._exec("UPDATE sweeps SET heartbeat_at = ? WHERE sweep_id = ? AND status = 'running'", [_now(), sweep_id])

    def finish_sweep(self, sweep_id: str, status: str, completed: int) -> None:
        self._exec("UPDATE sweeps SET status = ?, completed = ?, finished_at = ? WHERE sweep_id = ?",
                   [status, completed, _now(), sweep_id])

    def sweeps(self) -> pd.DataFrame:
        """All sweeps this view may see, newest last (a dead driver's sweep reads 'interrupted')."""
        if "sweeps" not in self.tables:  # a read-only store of a lab from before sweeps
            return pd.DataFrame(columns=["sweep_id", "created_at", "finished_at", "status", "pairs", "completed"])
        where, params = self._scope("sweeps")
        return self._live(self._frame(f"SELECT sweep_id, created_at, finished_at, status, pairs, completed, "
                                      f"{self._liveness('sweeps')} FROM sweeps WHERE {where} ORDER BY created_at, "
                                      "sweep_id", params))

    def sweep_runs(self, sweep_id: str) -> pd.DataFrame:
        """The runs of one sweep, in the order they started."""
        self._visible_sweep(sweep_id)
        where, params = self._scope()
        return self._live(self._frame(f"SELECT run_id, status, unlearned_ref, unlearned_hash, error, "
                                      f"{self._liveness('runs')} "
                                      f"FROM runs WHERE sweep_id = ? AND {where} ORDER BY created_at, run_id",
                                      [sweep_id, *params]))

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
        # Flat fields read directly (``asdict`` deep-copied every extra, the larger part of a write); extra as JSON.
        rows = [[to_json(item.extra) if c == "extra" else getattr(item, c) for c in ITEM_COLUMNS] for item in items]
        frame = pd.DataFrame(rows, columns=ITEM_COLUMNS).astype(object)
        frame.insert(0, "run_id", run_id)
        casts = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in ITEM_TYPES.items())
        with self.lock, self._io():
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
            with self.lock, self._io():
                self.con.register("new_facts", frame)
                try:
                    self.con.execute("INSERT INTO facts SELECT * FROM new_facts")
                finally:
                    self.con.unregister("new_facts")

    def facts(self, run_id: str) -> pd.DataFrame:
        self._visible(run_id)
        return self._frame(f"SELECT {', '.join(FACT_COLUMNS)} FROM facts WHERE run_id = ?", [run_id])

    def add_metrics(self, run_id: str, audit: str, metrics: dict[str, float]) -> None:
        rows = [[run_id, audit, key, None if value is None or not math.isfinite(float(value)) else float(value)]
                for key, value in metrics.items()]
        if rows:  # one statement: executemany ran a statement per metric (20 ms an audit)
            values = ", ".join(["(?, ?, ?, CAST(? AS DOUBLE))"] * len(rows))
            self._exec(f"INSERT INTO metrics VALUES {values}", [v for row in rows for v in row])

    def add_artifact(self, run_id: str, audit: str, name: str, data: Any) -> None:
        self._exec("INSERT INTO artifacts VALUES (?, ?, ?, ?)", [run_id, audit, name, to_json(data)])

    def run_rows(self, run_id: str) -> dict[str, Any]:
        """Every row one run wrote, per table, as Arrow tables (typed, and cheap to pickle).

        A sweep's worker runs its pair into a store of its own and hands these rows to the driver,
        which alone writes the user's store (:meth:`import_run`)."""
        self.run(run_id)  # raises for an unknown run
        with self.lock, self._io():
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
                self.con.execute("UPDATE runs SET visitor = ? WHERE run_id = ?", [self.visitor, run_id])
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
        """All runs this view may see, newest last (a dead process's run reads 'interrupted')."""
        where, params = self._scope()
        return self._live(self._frame(
            "SELECT run_id, created_at, finished_at, status, base_ref, unlearned_ref, audits, error, "
            f"{self._liveness('runs')} FROM runs WHERE {where} ORDER BY created_at, run_id", params))

    def run(self, run_id: str) -> dict[str, Any]:
        self._visible(run_id)
        frame = self._frame(f"SELECT *, {self._beat('runs')} AS beat FROM runs WHERE run_id = ?", [run_id])
        frame = frame.assign(**{column: None for column in ("pid", "host_id") if column not in frame})
        row = self._live(frame, drop=("beat",)).iloc[0].to_dict()
        for key in ("config", "environment"):
            row[key] = json.loads(row[key]) if row.get(key) else {}
        return row

    def audits(self, run_id: str) -> pd.DataFrame:
        self._visible(run_id)
        return self._frame("SELECT * FROM audits WHERE run_id = ? ORDER BY started_at", [run_id])

    def items(self, run_id: str, audit: str | None = None) -> pd.DataFrame:
        self._visible(run_id)
        if audit:
            return self._frame("SELECT * FROM items WHERE run_id = ? AND audit = ?", [run_id, audit])
        return self._frame("SELECT * FROM items WHERE run_id = ?", [run_id])

    def metrics(self, run_id: str) -> pd.DataFrame:
        self._visible(run_id)
        return self._frame("SELECT audit, key, value FROM metrics WHERE run_id = ?", [run_id])

    def metrics_dict(self, run_id: str) -> dict[str, dict[str, float | None]]:
        out: dict[str, dict[str, float | None]] = {}
        for audit, key, value in self.metrics(run_id).itertuples(index=False):
            out.setdefault(audit, {})[key] = None if pd.isna(value) else float(value)
        return out

    def artifacts(self, run_id: str, audit: str | None = None) -> dict[str, dict[str, Any]]:
        self._visible(run_id)
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
                formula_safe(rows).to_csv(tmp, index=False)
            else:
                payload = {
                    "run": {k: (str(v) if isinstance(v, (datetime, pd.Timestamp)) else v) for k, v in run.items()},
                    "metrics": self.metrics_dict(run_id),
                    "items": json.loads(rows.to_json(orient="records")),
                }
                tmp.write_text(to_json(payload))

        return write_output(out, write, protected=[self.path])
