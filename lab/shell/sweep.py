"""``python -m lab sweep SPEC``: one base model against many unlearned checkpoints, one stored run per pair.

A spec (JSON or YAML) names ``base``, ``unlearned`` (a list, or a glob of
folders), ``audits`` and optionally ``facts``, ``reference``, ``limit``,
``options`` ({audit: {option: value}}), ``device``, ``max_new_tokens``.
Every pair is checked before any runs (a bad spec stores nothing).

Pairs run one after another in this process, the base model loaded once.
Only this process writes the store: a sweep row records the spec and its
status (``running``, then ``complete``, or ``partial`` when a pair failed or
the sweep was stopped), and every pair's run carries the sweep's id, so a
sweep that dies keeps every finished pair.
"""

from __future__ import annotations

import glob
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from lab.core.engine import Engine
from lab.core.errors import LabError
from lab.core.store import Store, new_run_id
from lab.core.batching import Cancelled
from lab.shell.runner import RunOutcome, RunSpec, check, default_loader, execute, memory_plan, prepare


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


def run_sweep(spec: SweepSpec, store: Store, stop: threading.Event | None = None,
              on_pair: Callable[[PairResult, int, int], None] | None = None) -> SweepOutcome:
    """Every pair of the sweep, one after another; the store records the sweep and each pair's run."""
    check_sweep(spec)
    sweep_id = new_run_id().replace("run-", "sweep-", 1)
    store.create_sweep(sweep_id, asdict(spec), len(spec.unlearned))
    notify = on_pair or (lambda result, done, total: None)
    results: list[PairResult] = []
    loader = local_loader(spec)
    try:
        for unlearned in spec.unlearned:
            results.append(run_pair_local(spec, unlearned, store, loader, sweep_id, stop))
            notify(results[-1], len(results), len(spec.unlearned))
    except (KeyboardInterrupt, Cancelled):
        store.finish_sweep(sweep_id, "partial", sum(r.status == "complete" for r in results))
        raise
    return finish(store, sweep_id, spec, results)


def finish(store: Store, sweep_id: str, spec: SweepSpec, results: list[PairResult]) -> SweepOutcome:
    """The sweep's final status: complete when every pair completed, else partial."""
    completed = sum(r.status == "complete" for r in results)
    status = "complete" if completed == len(spec.unlearned) else "partial"
    store.finish_sweep(sweep_id, status, completed)
    return SweepOutcome(sweep_id, status, results)
