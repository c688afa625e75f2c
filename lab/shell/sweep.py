"""``python -m lab sweep SPEC``: one base model against many unlearned checkpoints, one stored run per pair.

A spec (JSON or YAML) names ``base``, ``unlearned`` (a list, or a glob of
folders), ``audits`` and optionally ``facts``, ``reference``, ``limit``,
``options`` ({audit: {option: value}}), ``device``, ``max_new_tokens``.
Every pair is checked before any runs (a bad spec stores nothing).

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from lab.core.engine import Engine
from lab.core.errors import LabError
from lab.core.store import Store, new_run_id
from lab.shell.runner import RunOutcome, RunSpec, check, default_loader, execute, heartbeat, memory_plan, prepare


@dataclass
class SweepSpec:
    """What a sweep runs: one base, many unlearned checkpoints, the same audits and options for each."""

    base: str
    unlearned: list[str]
    audits: list[str]
    facts: str | None = None
    reference: str | None = None
    limit: int | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    dtype: str = "auto"
    max_new_tokens: int = 24

    def run_spec(self, unlearned: str) -> RunSpec:
        return RunSpec(base=self.base, unlearned=unlearned, audits=list(self.audits), facts=self.facts,
                       reference=self.reference, device=self.device, dtype=self.dtype, limit=self.limit,
                       max_new_tokens=self.max_new_tokens, options=self.options)


@dataclass
class PairResult:
    """One pair of the sweep: its checkpoint, its run id, and how it ended."""

    unlearned: str
    run_id: str | None
    status: str  # complete | failed (the run's) | error (the pair never ran)
    error: str | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class SweepOutcome:
    sweep_id: str
    status: str  # complete | partial
    pairs: list[PairResult]


PairSource = Callable[[SweepSpec, Store, str, threading.Event | None], Iterator[PairResult]]
"""Runs a sweep's pairs and yields each one's result as it ends (in any order), its run already in the store."""


def _read(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise LabError(f"{path.name}: not valid YAML ({str(exc).splitlines()[0]})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabError(f"{path.name}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise LabError(f"{path.name}: a sweep spec is a mapping with base, unlearned and audits")
    return data


def expand(unlearned: Any, where: str) -> list[str]:
    """The checkpoints: a list of references, or a glob of folders (sorted)."""
    items = [unlearned] if isinstance(unlearned, str) else unlearned
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise LabError(f"{where}: 'unlearned' must be a reference, a list of references or a glob")
    out: list[str] = []
    for item in items:
        if any(c in item for c in "*?[") and not item.startswith(("demo:", "openai+")):
            matches = sorted(p for p in glob.glob(item) if Path(p).is_dir())
            if not matches:
                raise LabError(f"{where}: the glob '{item}' matches no folder")
            out += matches
        else:
            out.append(item.strip())
    return list(dict.fromkeys(out))


def load_spec(path: str | Path) -> SweepSpec:
    """A sweep spec from JSON or YAML, each field checked (one line naming the field on error)."""
    file = Path(path)
    if not file.is_file():
        raise LabError(f"sweep spec not found: {path}")
    data = _read(file)
    known = {f for f in SweepSpec.__dataclass_fields__}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LabError(f"{file.name}: unknown field '{unknown[0]}' (fields: {', '.join(sorted(known))})")
    for key in ("base", "unlearned", "audits"):
        if key not in data:
            raise LabError(f"{file.name}: field '{key}' is missing")
    audits = data["audits"].split(",") if isinstance(data["audits"], str) else data["audits"]
    if not isinstance(audits, list) or not audits:
        raise LabError(f"{file.name}: field 'audits' must be a list of audit names")
    if not isinstance(data.get("options", {}), dict):
        raise LabError(f"{file.name}: field 'options' must map audits to their options")
    return SweepSpec(**{**data, "audits": [str(a).strip() for a in audits],
                        "unlearned": expand(data["unlearned"], file.name)})


class CachedLoader:
    """Loads each model once for the whole sweep; an unlearned checkpoint is dropped once its pair is done."""

    def __init__(self, load: Callable[[str], Engine], keep: set[str]):
        self.load, self.keep = load, keep
        self.engines: dict[str, Engine] = {}

    def __call__(self, ref: str) -> Engine:
        if ref not in self.engines:
            self.engines[ref] = self.load(ref)
        return self.engines[ref]

    def release(self, ref: str) -> None:
        if ref not in self.keep:
            self.engines.pop(ref, None)


def check_sweep(spec: SweepSpec) -> None:
    """Every pair checked before any runs: a bad spec stores nothing."""
    for unlearned in spec.unlearned:
        check(spec.run_spec(unlearned))


def run_pair_local(spec: SweepSpec, unlearned: str, store: Store, loader: CachedLoader, sweep_id: str,
                   stop: threading.Event | None = None) -> PairResult:
    """One pair in this process, into the store; a failure is recorded and the sweep goes on."""
    try:
        prepared = prepare(spec.run_spec(unlearned), loader=loader)
        outcome: RunOutcome = execute(prepared, store, stop=stop, sweep_id=sweep_id)
    except LabError as exc:
        return PairResult(unlearned, None, "error", str(exc))
    finally:
        loader.release(unlearned)
    return PairResult(unlearned, outcome.run_id, outcome.status, "; ".join(outcome.errors.values()) or None,
                      outcome.metrics)


def local_loader(spec: SweepSpec) -> CachedLoader:
    """One loader for every pair: the base (and reference) loaded once, each checkpoint in turn."""
    first = spec.run_spec(spec.unlearned[0])
    checked = check(first)
    load = default_loader(first, checked.policy, memory_plan(first, checked))
    return CachedLoader(load, keep={spec.base, spec.reference or ""})


def local_pairs(spec: SweepSpec, store: Store, sweep_id: str,
                stop: threading.Event | None = None) -> Iterator[PairResult]:
    """Every pair in this process, one after another, straight into the store."""
    loader = local_loader(spec)
    for unlearned in spec.unlearned:
        yield run_pair_local(spec, unlearned, store, loader, sweep_id, stop)


_WORKER_LOADERS: dict[str, CachedLoader] = {}  # per worker process: the loader of the sweep it last served


def worker_loader(spec: SweepSpec) -> CachedLoader:
    """The loader a worker process keeps between pairs of one sweep, so a worker that runs several pairs
    loads the base (and the reference) once; a different sweep replaces it, freeing the old models."""
    key = json.dumps(asdict(replace(spec, unlearned=[])), sort_keys=True, default=str)
    if key not in _WORKER_LOADERS:
        _WORKER_LOADERS.clear()
        _WORKER_LOADERS[key] = local_loader(spec)
    return _WORKER_LOADERS[key]


def run_pair_isolated(spec: SweepSpec, unlearned: str, sweep_id: str) -> tuple[PairResult, dict[str, Any] | None]:
    """One pair in a process that must not write the user's store (a Ray worker, maybe on another machine):
    it runs into a temporary store of its own, and the rows it wrote travel back with its result."""
    with tempfile.TemporaryDirectory(prefix="lab-pair-") as tmp, Store(Path(tmp) / "pair.duckdb") as store:
        result = run_pair_local(spec, unlearned, store, worker_loader(spec), sweep_id)
        return result, (store.run_rows(result.run_id) if result.run_id else None)


def land(store: Store, unlearned: str, value: tuple[PairResult, dict[str, Any] | None] | None,
         error: str | None) -> PairResult:
    """A pair that ran elsewhere, into the store: its rows imported whole, or its one-line error recorded."""
    if value is None:
        return PairResult(unlearned, None, "error", error or "the pair returned nothing")
    result, rows = value
    if rows is not None:
        try:
            store.import_run(rows)
        except LabError as exc:
            return PairResult(unlearned, None, "error", str(exc))
    return result


def ray_pairs(address: str | None = None) -> PairSource:
    """Every pair as a Ray task (on this machine, or on the cluster at ``address``); results as they finish."""

    def pairs(spec: SweepSpec, store: Store, sweep_id: str,
              stop: threading.Event | None = None) -> Iterator[PairResult]:
        from lab.shell.distributed import run_tasks

        jobs = {unlearned: (spec, unlearned, sweep_id) for unlearned in spec.unlearned}
        for end in run_tasks(run_pair_isolated, jobs, spec.device, address, stop):
            yield land(store, end.key, end.value, end.error)

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
    store.create_sweep(sweep_id, asdict(spec), len(spec.unlearned))
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
    status = "complete" if completed(results) == len(spec.unlearned) else "partial"
    store.finish_sweep(sweep_id, status, completed(results))
    order = {unlearned: index for index, unlearned in enumerate(spec.unlearned)}
    return SweepOutcome(sweep_id, status, sorted(results, key=lambda r: order.get(r.unlearned, len(order))))
