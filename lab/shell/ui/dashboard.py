"""The verdict dashboard's work: one base against several unlearned models in one action.

It is a sweep (:func:`lab.shell.sweep.run_sweep`, every pair in this process),
so it lands in the store exactly as ``python -m lab sweep`` would: one run per
model, all carrying the sweep's id, and the Results tab's leaderboard and
``python -m lab report --sweep`` reopen it later.

The sweep runner reports whole pairs; the page wants to move on every audit.
The store sees every audit begin and end, so the dashboard hands the sweep an
:class:`Observed` store: the same store, which also tells the page (through
``emit``) when a sweep, a run or an audit starts or ends, and which facts a
run was given.  :class:`Tally` turns those events into "audit k of n" and the
fact checks done over the whole dashboard.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from lab.core.errors import LabError
from lab.core.facts import Fact, FactSet
from lab.core.refs import DEMO_PREFIX
from lab.core.store import Store
from lab.shell.report.leaderboard import model_label
from lab.shell.sweep import PairResult, SweepOutcome, SweepSpec, run_sweep, sweep_spec
from lab.shell.ui.auditing import fact_counts


@dataclass(frozen=True)
class Event:
    """Something the dashboard's sweep did: ``kind`` is sweep, run, facts (the run's facts were stored:
    ``counts`` holds how many each audit runs on), audit (started) or done (an audit ended with ``status``),
    or pair (a pair ended, maybe without ever running)."""

    kind: str
    run_id: str | None = None
    model: str | None = None
    audit: str | None = None
    status: str | None = None
    counts: tuple[int, ...] = ()


class Observed:
    """The store as the sweep uses it, reporting sweeps, runs and audits to ``emit`` as they begin and end."""

    def __init__(self, store: Store, emit: Callable[[Event], None], audits: list[str] | None = None):
        self._store, self._emit, self._audits = store, emit, list(audits or [])
        self._models: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def create_sweep(self, sweep_id: str, *args: Any, **kwargs: Any) -> None:
        self._store.create_sweep(sweep_id, *args, **kwargs)
        self._emit(Event("sweep", run_id=sweep_id))

    def create_run(self, **kwargs: Any) -> str:
        run_id = self._store.create_run(**kwargs)
        self._models[run_id] = model_label(kwargs["unlearned"]["ref"])
        self._emit(Event("run", run_id, self._models[run_id]))
        return run_id

    def add_facts(self, run_id: str, facts: Iterable[Fact]) -> None:
        facts = list(facts)
        self._store.add_facts(run_id, facts)
        counts = tuple(fact_counts(FactSet(facts), self._audits))
        self._emit(Event("facts", run_id, self._models.get(run_id), counts=counts))

    def start_audit(self, run_id: str, audit: str) -> None:
        self._store.start_audit(run_id, audit)
        self._emit(Event("audit", run_id, self._models.get(run_id), audit))

    def finish_audit(self, run_id: str, audit: str, status: str, *args: Any, **kwargs: Any) -> None:
        self._store.finish_audit(run_id, audit, status, *args, **kwargs)
        self._emit(Event("done", run_id, self._models.get(run_id), audit, status))


@dataclass
class Tally:
    """Audits done over the whole dashboard: each model's finished audits, a pair that ended counting whole;
    the same for fact checks once a run named its facts (every pair of a sweep gets the same fact set)."""

    models: int
    audits: int
    finished: dict[str, int] = field(default_factory=dict)  # run id -> audits ended
    pairs_ended: int = 0
    runs_ended: set[str] = field(default_factory=set)
    doing: str = "loading the models"
    counts: tuple[int, ...] | None = None  # facts per audit, in the sweep's audit order

    def _running(self, count: Callable[[int], int]) -> int:
        return sum(count(n) for run, n in self.finished.items() if run not in self.runs_ended)

    @property
    def total(self) -> int:
        return self.models * self.audits

    @property
    def done(self) -> int:
        return min(self.pairs_ended * self.audits + self._running(lambda n: n), self.total)

    @property
    def checks(self) -> tuple[int, int] | None:
        """(fact checks done, in all) over every model, or None before the first run named its facts."""
        if self.counts is None:
            return None
        counts = self.counts
        per_run = sum(counts)
        done = self.pairs_ended * per_run + self._running(lambda n: sum(counts[:n]))
        return min(done, per_run * self.models), per_run * self.models

    def add(self, event: Event) -> None:
        if event.kind == "facts" and self.counts is None:
            self.counts = event.counts
        elif event.kind == "audit":
            self.doing = f"{event.model}: {event.audit}"
        elif event.kind == "done" and event.run_id:
            self.finished[event.run_id] = self.finished.get(event.run_id, 0) + 1
        elif event.kind == "pair":
            self.pairs_ended += 1
            if event.run_id:
                self.runs_ended.add(event.run_id)
            self.doing = f"{event.model} {event.status}"


def model_refs(chosen: list[str] | None, typed: str | None) -> list[str]:
    """The models a form names: the demo models ticked (as ``demo:NAME``) and any typed references (one per
    line or comma-separated), each once, in that order."""
    refs = [f"{DEMO_PREFIX}{name}" for name in chosen or []]
    refs += [part.strip() for line in (typed or "").splitlines() for part in line.split(",") if part.strip()]
    return list(dict.fromkeys(refs))


def control_note(chosen: list[str] | None, typed: str | None, control: str | None) -> str:
    """What to say beside the control field when the control is also picked as an unlearned model: it stays
    the reference and is not audited against itself ("" when it is not picked)."""
    control = (control or "").strip()
    if not control or control not in model_refs(chosen, typed):
        return ""
    return (f"{control} is the control: every model is judged against it, so it is not audited as an unlearned "
            "model (clear the control to audit it)")


def parse_models(chosen: list[str] | None, typed: str | None, control: str | None = None) -> list[str]:
    """The unlearned models to audit (:func:`model_refs`), the control left out: it is the reference every
    model is judged against, never a model audited against itself."""
    control = (control or "").strip()
    refs = [ref for ref in model_refs(chosen, typed) if ref != control]
    if not refs:
        raise LabError("pick at least one unlearned model to audit" +
                       (f" ({control} is the control, not a model to audit)" if control else ""))
    return refs


def dashboard_spec(fields: dict[str, Any], models: list[str]) -> SweepSpec:
    """The sweep the dashboard runs: the form's run-spec fields for every model (checked by the sweep runner
    before anything is stored)."""
    return sweep_spec({**fields, "unlearned": models}, "the dashboard")


def run_dashboard(store: Store, spec: SweepSpec, stop: threading.Event | None,
                  emit: Callable[[Event], None]) -> SweepOutcome:
    """Every model of ``spec`` against its base, in this process, each audit's start and end reported."""

    def on_pair(result: PairResult, done: int, total: int) -> None:
        emit(Event("pair", result.run_id, model_label(result.unlearned), status=result.status))

    return run_sweep(spec, Observed(store, emit, spec.audits), stop=stop, on_pair=on_pair, local=True)  # type: ignore[arg-type]
