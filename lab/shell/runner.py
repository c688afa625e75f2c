"""Running audits: a request checked, models loaded once, results into the store.

Two steps, the same for the CLI, the web lab, the API and the sweep:

1. :func:`prepare` checks the whole request under the run policy (audits,
   every option, sizes, model references, facts) before anything is stored,
   loads the models through a loader (the CLI's loads afresh, the web lab
   passes its cache) and returns a :class:`PreparedRun` whose ``run_id`` is
   known before the first batch, so Stop never has to guess.
2. :func:`execute` runs every audit and writes as it goes: items as they are
   produced, a failing audit marked failed while the others still run, a
   heartbeat in the run's row while it works, and Ctrl-C or Stop marks the
   run interrupted with every row kept (also when it comes during the last
   audit's final, unbatched work: a stop is never stored as a complete run).
"""

from __future__ import annotations

import dataclasses
import platform
import string
import sys
import threading
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterator

import torch

from audits import get_audit
from audits.base import Audit, AuditContext, ModelLoader, control_adjusted
from lab.core.batching import Cancelled, cancellable, check_cancelled
from lab.core.engine import Engine
from lab.core.errors import LabError
from lab.core.facts import Fact, FactSet, load_facts
from lab.core.fitting import Fit, fitting
from lab.core.engine import free_memory
from lab.core.memory import Placement, plan, weights_bytes
from lab.core.memory import describe as describe_plan
from lab.core.models import ModelPair, load_engine, pick_device, pick_dtype
from lab.core.options import AuditOptions, build_options, check_inputs, option_specs, option_text, options_dict
from lab.core.policy import Policy
from lab.core.policy import current as current_policy
from lab.core.records import AuditResult, ItemRecord
from lab.core.stats import few_targets_note
from lab.core.store import HEARTBEAT_S, Store, new_run_id
from lab.shell.spec import RunSpec, cli_flag

PACKAGES = ("torch", "transformers", "gradio", "captum", "sae-lens", "duckdb", "pandas", "plotly", "rouge-score")


@dataclass
class Checked:
    """A request that passed every check that needs no model."""

    spec: RunSpec
    facts: FactSet
    options: dict[str, AuditOptions]
    policy: Policy


@dataclass
class PreparedRun:
    """A checked request with its models loaded and its run id chosen; nothing is stored yet."""

    run_id: str
    spec: RunSpec
    pair: ModelPair
    reference: Engine | None
    facts: FactSet
    options: dict[str, AuditOptions]
    loader: ModelLoader
    placements: list[Placement] = field(default_factory=list)


@dataclass
class RunOutcome:
    run_id: str
    status: str
    metrics: dict[str, dict[str, float]]
    errors: dict[str, str]
    statuses: dict[str, str] = field(default_factory=dict)  # audit -> complete | skipped | failed


@dataclass(frozen=True)
class RunEvent:
    """Progress of a run: audit ``index`` of ``total`` started or finished (with its metrics)."""

    run_id: str
    audit: str
    index: int
    total: int
    status: str  # running | complete | failed | skipped
    metrics: dict[str, float] | None = None


def environment() -> dict[str, Any]:
    """Versions of every package that shapes a result, so a run can be repeated."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "packages": versions,
    }


def resolve_facts(spec: RunSpec, policy: Policy) -> FactSet:
    """The facts file given, else the demo's facts when both models are demo models; capped by the policy."""
    if spec.facts:
        path = spec.facts
    elif spec.is_demo:
        from lab.demo.build import demo_facts_path

        path = str(demo_facts_path())
    else:
        raise LabError("--facts is required unless both models are demo models (demo:<name>)")
    limit = spec.limit if spec.limit is not None else policy.default_limit
    facts = load_facts(path, per_split=limit)
    policy.check_facts(len(facts))
    return facts


def check(spec: RunSpec, policy: Policy | None = None) -> Checked:
    """Every check of a request that needs no model: audits, options, sizes, references, facts."""
    policy = policy or current_policy()
    options = check_request(spec, policy)
    for name, chosen in options.items():
        check_inputs(name, chosen)  # the models and files options name exist and read
    return Checked(spec, resolve_facts(spec, policy), options, policy)


def check_request(spec: RunSpec, policy: Policy) -> dict[str, AuditOptions]:
    """The checks that read no file: audits, their options, sizes, references, the prompt format (before the
    demo is built for a request, or a facts file read); the validated options by audit."""
    if not spec.audits:
        raise LabError("pick at least one audit")
    options: dict[str, AuditOptions] = {}
    for name in spec.audits:
        given = spec.options.get(name, {})
        options[name] = policy.check_options(name, build_options(get_audit(name).Options, name, given), given)
    unknown = set(spec.options) - set(spec.audits)
    if unknown:
        raise LabError(f"options given for audits not in this run: {', '.join(sorted(unknown))}")
    policy.check_options("run", spec, name=lambda field: cli_flag(field))  # models, facts, lengths, texts
    policy.check_remote_code(spec.trust_remote_code)
    check_template(spec.prompt_template)
    return options


def check_template(template: str) -> None:
    """A prompt template fills exactly ``{question}``, a plain field: anything else is a user error, said in one
    line.  Attribute and index access (``{question.__class__}``), conversions and format specs (which may hold
    fields of their own) are refused, since ``str.format`` would evaluate them on the filled object."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        raise LabError(f"the prompt template is malformed ({exc}); write {{{{ and }}}} for literal braces") from None
    for name, spec, conversion in fields:
        if name == "question" and not spec and not conversion:
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if name.split(".")[0].split("[")[0] == "question":
            raise LabError(f"the prompt template has the field {shown}: only the plain field {{question}} is "
                           "allowed (no attributes, indexes, conversions or formats)")
        raise LabError(f"the prompt template has a field {shown} that nothing fills: only {{question}} "
                       "is filled (write {{ and }} for literal braces)")
    if not fields:
        raise LabError("the prompt template must contain {question}")


def memory_plan(spec: RunSpec, checked: Checked) -> list[Placement]:
    """Where each model of the run goes (lab.core.memory): the pair, the reference, and option-named models."""
    device = pick_device(spec.device)
    extra = [(f"{audit}.{s.name}", option_text(getattr(options, s.name)))
             for audit, options in checked.options.items() for s in option_specs(type(options))
             if s.kind == "model" and s.names_reference(getattr(options, s.name))]
    models = [("base", spec.base), ("unlearned", spec.unlearned)]
    models += ([("reference", spec.reference)] if spec.reference else []) + extra
    dtype = str(pick_dtype(spec.dtype, device)).replace("torch.", "")
    sized = [(role, ref, weights_bytes(checked.policy.check_ref(ref).local_folder, dtype)) for role, ref in models]
    free = free_memory(torch.device(device)) if device.startswith("cuda") else None
    return plan(sized, device, free)


def default_loader(spec: RunSpec, policy: Policy, placements: list[Placement]) -> ModelLoader:
    """Models loaded afresh where the memory plan puts them, in the spec's dtype, under the policy."""
    where = {p.ref: p.device for p in placements}

    def load(ref: str) -> Engine:
        return load_engine(ref, device=where.get(ref, spec.device), dtype=spec.dtype,
                           trust_remote_code=spec.trust_remote_code, prompt_format=spec.prompt_format, policy=policy,
                           device_map=spec.device_map)

    return load


def prepare(spec: RunSpec, loader: ModelLoader | None = None, checked: Checked | None = None) -> PreparedRun:
    """Check the request (unless ``checked`` already is), plan memory, load its models, choose its run id."""
    checked = checked or check(spec)
    placements = memory_plan(spec, checked)
    load = loader or default_loader(spec, checked.policy, placements)
    pair = ModelPair(load(spec.base), load(spec.unlearned))
    reference = load(spec.reference) if spec.reference else None
    return PreparedRun(new_run_id(), spec, pair, reference, checked.facts, checked.options, load, placements)


@contextmanager
def heartbeat(touch: Callable[[], None], name: str) -> Iterator[None]:
    """Call ``touch`` (a run's or a sweep's heartbeat in the store) every ``HEARTBEAT_S`` seconds while the
    block runs, so a reader can tell a working process from a dead one."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(HEARTBEAT_S):
            try:
                touch()
            except Exception:  # noqa: BLE001 - a closed store ends the beat, the run's own writes report errors
                return

    worker = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{name}")
    worker.start()
    try:
        yield
    finally:
        done.set()
        worker.join(timeout=HEARTBEAT_S)


def run_config(prepared: PreparedRun) -> dict[str, Any]:
    """What the store keeps as the run's config: the spec, validated options, facts and models."""
    return {**prepared.spec.to_dict(), "options": {n: options_dict(o) for n, o in prepared.options.items()},
            "facts_counts": prepared.facts.counts(), "memory_plan": describe_plan(prepared.placements),
            "models": {"base": prepared.pair.base.info.__dict__, "unlearned": prepared.pair.unlearned.info.__dict__,
                       "reference": prepared.reference.info.__dict__ if prepared.reference else None}}


def model_notes(ctx: AuditContext) -> list[str]:
    """What the run's models changed about what the audit asked of them (answers capped to the context),
    taken from them, so each note lands on the audit whose calls made it."""
    return [note for engine in (ctx.pair.base, ctx.pair.unlearned, ctx.reference) if engine is not None
            for note in engine.take_notes()]


def reviewed(audit: Audit, ctx: AuditContext, result: AuditResult, items: list[ItemRecord]) -> AuditResult:
    """A result with what every rate needs beside it: the models' notes (:func:`model_notes`); for a recovery
    audit a warning when it rests on fewer than 20 targets, and with ``--reference`` the reference model's rate
    under the same attack and the control-adjusted rate (:meth:`audits.base.Audit.reference_recovered`)."""
    result = dataclasses.replace(result, notes=[*result.notes, *model_notes(ctx)])
    key = audit.recovery_key
    if key is None or key not in result.metrics:
        return result
    targets = [f.id for f in audit.targets(ctx)]
    notes = [*result.notes, *few_targets_note(audit.name, len(targets))]
    metrics = dict(result.metrics)
    if ctx.reference is not None and targets:
        metrics.update(control_adjusted(key, targets, audit.recovered_ids(items), audit.reference_recovered(ctx, items)))
        notes.append(f"control: the reference model recovers {metrics[f'{key}_reference']:.1%} of the targets "
                     f"under the same attack; {key}_adjusted = {metrics[f'{key}_adjusted']:+.1%}")
    return dataclasses.replace(result, metrics=metrics, notes=notes)


def execute(prepared: PreparedRun, store: Store, stop: threading.Event | None = None,
            on_event: Callable[[RunEvent], None] | None = None, sweep_id: str | None = None) -> RunOutcome:
    """Run every audit of a prepared run and store everything; ``stop`` ends it before its next batch.
    A run that is one pair of a sweep carries the sweep's id."""
    spec, run_id = prepared.spec, prepared.run_id
    if stop is not None and stop.is_set():
        raise Cancelled("stopped before the run started")
    store.create_run(
        run_id=run_id, base=prepared.pair.base.info.__dict__, unlearned=prepared.pair.unlearned.info.__dict__,
        reference=spec.reference, facts_source=prepared.facts.source, facts_hash=prepared.facts.sha256,
        audits=spec.audits, config=run_config(prepared), environment=environment(), sweep_id=sweep_id,
    )
    store.add_facts(run_id, prepared.facts.facts)
    notify = on_event or (lambda event: None)
    shared: dict[str, Any] = {}
    metrics: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    total = len(spec.audits)
    statuses: dict[str, str] = {}
    try:
        with heartbeat(lambda: store.heartbeat(run_id), run_id), (cancellable(stop) if stop is not None else nullcontext()):
            for index, name in enumerate(spec.audits, start=1):
                store.start_audit(run_id, name)
                notify(RunEvent(run_id, name, index, total, "running"))
                status, result, note = run_one(prepared, name, store, shared)
                statuses[name] = status
                if result is not None:
                    store.add_metrics(run_id, name, result.metrics)
                    for art_name, data in result.artifacts.items():
                        store.add_artifact(run_id, name, art_name, data)
                    store.finish_audit(run_id, name, status, notes=result.notes)
                    metrics[name] = result.metrics
                elif status == "skipped":
                    store.finish_audit(run_id, name, status, notes=[note or ""])
                else:
                    errors[name] = (note or "").split("\n", 1)[0]
                    store.finish_audit(run_id, name, status, note)
                notify(RunEvent(run_id, name, index, total, status, result.metrics if result else None))
            check_cancelled()  # a stop asked for while the run was ending is a stop, never a complete run
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted", "stopped by the user")
        raise
    status = "failed" if errors else "complete"
    store.finish_run(run_id, status, "; ".join(f"{k}: {v}" for k, v in errors.items()) or None)
    return RunOutcome(run_id, status, metrics, errors, statuses)


def fits(audit: Audit, prepared: PreparedRun, facts: list[Fact], shared: dict[str, Any]) -> Fit:
    """The audit's items split into those that fit every model's context and those left out (measured by the
    audit, once per model and item in a run: :mod:`lab.core.fitting`)."""
    options = prepared.options[audit.name]
    return fitting(facts, [prepared.pair.base, prepared.pair.unlearned, prepared.reference],
                   lambda engine, facts: audit.row_tokens(engine, facts, options), shared.setdefault("fitting", {}),
                   how=type(audit).row_tokens)


def run_one(prepared: PreparedRun, name: str, store: Store,
            shared: dict[str, Any]) -> tuple[str, AuditResult | None, str | None]:
    """One audit of a run: (complete, its reviewed result, None), (skipped, None, why) when the models or the
    facts cannot serve it, or (failed, None, the error; a traceback follows for a bug) -- one broken audit
    never loses the others.  Its items are stored as it produces them."""
    recorded: list[ItemRecord] = []

    def record(items: list[ItemRecord]) -> None:
        store.add_items(prepared.run_id, items)
        recorded.extend(items)

    try:
        audit = get_audit(name)
        facts = prepared.facts.of_kinds(audit.uses)
        missing = audit.unavailable(prepared.pair)
        if missing:
            return "skipped", None, f"skipped: {name} {missing}"
        if not facts.facts:
            return "skipped", None, (f"skipped: {name} runs on {', '.join(audit.uses)} items and this fact set has "
                                     f"none (it holds {', '.join(prepared.facts.breakdown()) or 'nothing'})")
        runner = audit()
        fit = fits(runner, prepared, facts.facts, shared)
        if not fit.kept:
            return "skipped", None, f"skipped: {name}: {fit.note}"
        ctx = AuditContext(pair=prepared.pair, facts=facts.with_facts(fit.kept), options=prepared.options[name],
                           record=record, reference=prepared.reference, max_new_tokens=prepared.spec.max_new_tokens,
                           load_model=prepared.loader, _shared=shared)
        model_notes(ctx)  # dropped: notes of calls before this audit (a cached model's earlier run)
        result = reviewed(runner, ctx, runner.run(ctx), recorded)
        return "complete", dataclasses.replace(result, notes=[fit.note, *result.notes]) if fit.skipped else result, None
    except LabError as exc:
        return "failed", None, str(exc)
    except Exception as exc:  # noqa: BLE001 - one broken audit must not lose the others
        return "failed", None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"


def run_audits(spec: RunSpec, store: Store) -> RunOutcome:
    """Check, load and run ``spec`` (the CLI's one call)."""
    return execute(prepare(spec), store)
