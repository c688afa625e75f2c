"""``python -m lab sweep SPEC``: one base model against many unlearned checkpoints, one stored run per pair.

A spec (JSON or YAML) names ``unlearned`` (a list of references, globs of
folders, or mappings with ``unlearned`` and fields of that pair's own) and any
field of a run spec (:mod:`lab.shell.spec`: ``base``, ``audits``, ``facts``,
``reference``, ``limit``, ``options``, ``device``, the prompt format, ...) for
every pair.  Every pair is checked before any runs (a bad spec stores nothing).

Where pairs run: as Ray tasks when Ray is importable or a cluster address is
given (:mod:`lab.shell.distributed` holds everything Ray-specific), else one
after another in this process with the base model loaded once (``--local``
forces that).  Either way only this process writes the store: a Ray worker
runs its pair into a temporary store of its own and hands back the rows, which
land here through :meth:`Store.import_run`.  A sweep row records the spec and
its status (``running``, then ``complete``, ``partial`` when a pair failed,
or ``interrupted`` when the sweep was stopped or its driver died: the driver
beats a heartbeat into the row, as a run does), and every pair's run carries
the sweep's id, so a sweep that dies keeps every finished pair.
"""

from __future__ import annotations

import glob
import json
import tempfile
import threading
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from audits.base import ModelLoader
from lab.core.backend import Backend
from lab.core.errors import LabError
from lab.core.store import Store, new_run_id
from lab.shell.runner import (Checked, RunOutcome, check, default_loader, execute, heartbeat, memory_plan,
                              prepare)
from lab.shell.spec import RunSpec, build_spec


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs: one run spec per unlearned checkpoint, built from the file's shared fields and each
    checkpoint's own (see :func:`sweep_spec`)."""

    pairs: tuple[RunSpec, ...]

    @property
    def unlearned(self) -> list[str]:
        return [p.unlearned for p in self.pairs]

    @property
    def audits(self) -> list[str]:
        """Every audit some pair runs, in first-seen order (the dashboard's progress counts them)."""
        return list(dict.fromkeys(a for p in self.pairs for a in p.audits))

    @property
    def device(self) -> str:
        """The device the pairs ask for (Ray sizes its tasks by it): CUDA when any pair runs on CUDA."""
        devices = [p.device for p in self.pairs]
        return next((d for d in devices if d.startswith("cuda")), devices[0] if devices else "auto")

    def to_dict(self) -> dict[str, Any]:
        """What the store keeps as the sweep's spec: every pair's run spec."""
        return {"pairs": [p.to_dict() for p in self.pairs]}


def sweep_spec(data: Any, where: str = "the sweep") -> SweepSpec:
    """The one way a sweep is defined (a file, the Verdicts tab, calibrate): ``unlearned`` lists the
    checkpoints, each a reference, a glob of folders, or a mapping with ``unlearned`` and fields of its own;
    every other field is a run-spec field for all pairs.  Each pair goes through the run-spec builder, so a
    sweep takes exactly the fields a run takes, checked the same way."""
    if not isinstance(data, Mapping):
        raise LabError(f"{where}: a sweep spec is a mapping with base, unlearned and audits")
    if "unlearned" not in data:
        raise LabError(f"{where}: field 'unlearned' is missing")
    shared = {k: v for k, v in data.items() if k != "unlearned"}
    entries = data["unlearned"] if isinstance(data["unlearned"], list) else [data["unlearned"]]
    if not entries:
        raise LabError(f"{where}: 'unlearned' must be a reference, a glob, or a non-empty list of them")
    pairs = []
    for index, entry in enumerate(entries):
        at = f"{where}: unlearned[{index}]"
        if isinstance(entry, Mapping):
            own = dict(entry)
            pairs += [build_spec(RunSpec, {**shared, **own, "unlearned": ref}, at)
                      for ref in expand(own.get("unlearned"), at)]
        else:
            pairs += [build_spec(RunSpec, {**shared, "unlearned": ref}, where) for ref in expand(entry, at)]
    unique = [p for i, p in enumerate(pairs) if p not in pairs[:i]]  # a checkpoint listed twice runs once
    return SweepSpec(tuple(unique))


@dataclass
class PairResult:
    """One pair of the sweep: its checkpoint, its run id, and how it ended."""

    unlearned: str
    run_id: str | None
    status: str  # complete | failed (the run's) | error (the pair never ran)
    error: str | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    index: int = 0  # the pair's place in the sweep spec (a checkpoint may appear twice, with other fields)


@dataclass
class SweepOutcome:
    sweep_id: str
    status: str  # complete | partial
    pairs: list[PairResult]


PairSource = Callable[[SweepSpec, Store, str, threading.Event | None], Iterator[PairResult]]
"""Runs a sweep's pairs and yields each one's result as it ends (in any order), its run already in the store."""


def _read(path: Path) -> Any:
    """The file's data (JSON, or YAML by its suffix); what it holds is checked by :func:`sweep_spec`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"{path.name}: cannot read the sweep spec ({type(exc).__name__})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            try:
                return yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise LabError(f"{path.name}: not valid YAML ({str(exc).splitlines()[0]})") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabError(f"{path.name}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise LabError(f"{path.name}: nested too deeply to be a sweep spec") from None


def expand(unlearned: Any, where: str) -> list[str]:
    """The checkpoints of one entry: a reference, or a glob of folders (sorted)."""
    if not isinstance(unlearned, str) or not unlearned.strip():
        raise LabError(f"{where}: expected a model reference or a glob of folders, got "
                       f"{type(unlearned).__name__ if unlearned is not None else 'nothing'}")
    item = unlearned.strip()
    if any(c in item for c in "*?[") and not item.startswith(("demo:", "openai+")):
        matches = sorted(p for p in glob.glob(item) if Path(p).is_dir())
        if not matches:
            raise LabError(f"{where}: the glob '{item}' matches no folder")
        return matches
    return [item]


def load_spec(path: str | Path) -> SweepSpec:
    """A sweep spec from JSON or YAML, each field checked (one line naming the field on error)."""
    file = Path(path)
    if not file.is_file():
        raise LabError(f"sweep spec not found: {path}")
    return sweep_spec(_read(file), file.name)


class CachedLoader:
    """Loads each model once for the whole sweep: the base and the reference stay, an unlearned checkpoint is
    dropped once its pair is done.  Engines are kept by reference and by what decides their weights (device,
    precision, placement, remote code), since pairs of one sweep may differ in those; each pair sees them in
    its own prompt format (:meth:`lab.core.backend.Backend.formatted`)."""

    def __init__(self) -> None:
        self.engines: dict[tuple[str, tuple], Backend] = {}
        self.keep: set[str] = set()

    def for_pair(self, spec: RunSpec, checked: Checked) -> ModelLoader:
        """The loader of one pair: cached engines where they match, new ones placed by the pair's memory plan."""
        load = default_loader(spec, checked.policy, memory_plan(spec, checked))
        how = (spec.device, spec.dtype, spec.device_map, spec.trust_remote_code)
        self.keep |= {spec.base, spec.reference or ""}

        def get(ref: str) -> Backend:
            key = (ref, how)
            if key not in self.engines:
                self.engines[key] = load(ref)
            return self.engines[key].formatted(spec.prompt_format)

        return get

    def release(self, ref: str) -> None:
        if ref not in self.keep:
            for key in [k for k in self.engines if k[0] == ref]:
                del self.engines[key]


def check_sweep(spec: SweepSpec) -> None:
    """Every pair checked before any runs: a bad spec stores nothing."""
    for pair in spec.pairs:
        check(pair)


def run_pair_local(spec: RunSpec, index: int, store: Store, loader: CachedLoader, sweep_id: str,
                   stop: threading.Event | None = None) -> PairResult:
    """One pair in this process, into the store; a failure is recorded and the sweep goes on."""
    try:
        checked = check(spec)
        prepared = prepare(spec, loader=loader.for_pair(spec, checked), checked=checked)
        outcome: RunOutcome = execute(prepared, store, stop=stop, sweep_id=sweep_id)
    except LabError as exc:
        return PairResult(spec.unlearned, None, "error", str(exc), index=index)
    finally:
        loader.release(spec.unlearned)
    return PairResult(spec.unlearned, outcome.run_id, outcome.status, "; ".join(outcome.errors.values()) or None,
                      outcome.metrics, index)


def local_pairs(spec: SweepSpec, store: Store, sweep_id: str,
                stop: threading.Event | None = None) -> Iterator[PairResult]:
    """Every pair in this process, one after another, straight into the store (the base loaded once)."""
    loader = CachedLoader()
    for index, pair in enumerate(spec.pairs):
        yield run_pair_local(pair, index, store, loader, sweep_id, stop)


_WORKER_LOADERS: dict[str, CachedLoader] = {}  # per worker process: the loader of the sweep it last served


def worker_loader(sweep_id: str) -> CachedLoader:
    """The loader a worker process keeps between pairs of one sweep, so a worker that runs several pairs
    loads the base (and the reference) once; a different sweep replaces it, freeing the old models."""
    if sweep_id not in _WORKER_LOADERS:
        _WORKER_LOADERS.clear()
        _WORKER_LOADERS[sweep_id] = CachedLoader()
    return _WORKER_LOADERS[sweep_id]


def run_pair_isolated(spec: RunSpec, index: int, sweep_id: str) -> tuple[PairResult, dict[str, Any] | None]:
    """One pair in a process that must not write the user's store (a Ray worker, maybe on another machine):
    it runs into a temporary store of its own, and the rows it wrote travel back with its result."""
    with tempfile.TemporaryDirectory(prefix="lab-pair-") as tmp, Store(Path(tmp) / "pair.duckdb") as store:
        result = run_pair_local(spec, index, store, worker_loader(sweep_id), sweep_id)
        return result, (store.run_rows(result.run_id) if result.run_id else None)


def land(store: Store, unlearned: str, index: int, value: tuple[PairResult, dict[str, Any] | None] | None,
         error: str | None) -> PairResult:
    """A pair that ran elsewhere, into the store: its rows imported whole, or its one-line error recorded."""
    if value is None:
        return PairResult(unlearned, None, "error", error or "the pair returned nothing", index=index)
    result, rows = value
    if rows is not None:
        try:
            store.import_run(rows)
        except LabError as exc:
            return PairResult(unlearned, None, "error", str(exc), index=index)
    return result


def ray_pairs(address: str | None = None) -> PairSource:
    """Every pair as a Ray task (on this machine, or on the cluster at ``address``); results as they finish."""

    def pairs(spec: SweepSpec, store: Store, sweep_id: str,
              stop: threading.Event | None = None) -> Iterator[PairResult]:
        from lab.shell.distributed import run_tasks

        jobs = {str(index): (pair, index, sweep_id) for index, pair in enumerate(spec.pairs)}
        for end in run_tasks(run_pair_isolated, jobs, spec.device, address, stop):
            index = int(end.key)
            yield land(store, spec.pairs[index].unlearned, index, end.value, end.error)

    return pairs


def ray_importable() -> bool:
    """Ray is installed (``requirements-scale.txt``) and imports."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def pair_source(local: bool = False, ray_address: str | None = None) -> PairSource:
    """Where the pairs run: Ray when it is importable or an address is given (which must answer), in this
    process otherwise (or when ``local`` forces it)."""
    if local and ray_address:
        raise LabError("--local and --ray-address exclude each other: --local runs every pair in this process")
    if local:
        return local_pairs
    if ray_importable():
        if ray_address:
            from lab.shell.distributed import check_reachable

            check_reachable(ray_address)  # seconds, before the CLI opens any store
        return ray_pairs(ray_address)
    if ray_address:
        raise LabError("--ray-address needs Ray: pip install -r requirements-scale.txt (or drop it to run here)")
    return local_pairs


def progress(total: int) -> Any:
    """A progress bar over the pairs (on a terminal only; print beside it with ``tqdm.write``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sweep", unit="pair", disable=None)


def run_sweep(spec: SweepSpec, store: Store, stop: threading.Event | None = None,
              on_pair: Callable[[PairResult, int, int], None] | None = None, local: bool = False,
              ray_address: str | None = None) -> SweepOutcome:
    """Every pair of the sweep (see :func:`pair_source` for where); the store records the sweep and each
    pair's run.  A stop (``stop``, Ctrl-C) marks it interrupted and a failure of the sweep itself partial,
    every finished pair kept, and is raised on."""
    pairs = pair_source(local, ray_address)
    check_sweep(spec)
    sweep_id = new_run_id().replace("run-", "sweep-", 1)
    store.create_sweep(sweep_id, spec.to_dict(), len(spec.pairs))
    notify = on_pair or (lambda result, done, total: None)
    results: list[PairResult] = []
    try:
        with heartbeat(lambda: store.sweep_heartbeat(sweep_id), sweep_id), \
                closing(pairs(spec, store, sweep_id, stop)) as ends, progress(len(spec.unlearned)) as bar:
            for result in ends:
                results.append(result)
                bar.update()
                notify(result, len(results), len(spec.unlearned))
    except BaseException as exc:
        stopped = isinstance(exc, (KeyboardInterrupt, SystemExit))
        store.finish_sweep(sweep_id, "interrupted" if stopped else "partial", completed(results))
        raise
    return finish(store, sweep_id, spec, results)


def completed(results: list[PairResult]) -> int:
    return sum(r.status == "complete" for r in results)


def finish(store: Store, sweep_id: str, spec: SweepSpec, results: list[PairResult]) -> SweepOutcome:
    """The sweep's final status: complete when every pair completed, else partial; pairs in the spec's order."""
    status = "complete" if completed(results) == len(spec.pairs) else "partial"
    store.finish_sweep(sweep_id, status, completed(results))
    return SweepOutcome(sweep_id, status, sorted(results, key=lambda r: r.index))
