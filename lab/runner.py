"""Running audits: facts in, models loaded once, results into the store.

The CLI and the UI both call :func:`run_audits`.  Each audit's items are
written as they are produced; a failing audit is marked failed with its
partial rows kept while the others still run; Ctrl-C marks the run
interrupted.
"""

from __future__ import annotations

import platform
import sys
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import torch

from audits import get_audit
from audits.base import AuditContext
from lab import settings
from lab.engine import Engine, PromptFormat
from lab.errors import LabError
from lab.facts import FactSet, load_facts
from lab.models import DEMO_PREFIX, ModelPair, load_engine, load_pair
from lab.options import build_options, options_dict
from lab.records import ItemRecord
from lab.store import Store

SPACE_MAX_FACTS = 400  # per run, in Space mode (LAB_SPACE=1)
PACKAGES = ("torch", "transformers", "gradio", "captum", "sae-lens", "duckdb", "pandas", "plotly", "rouge-score")


@dataclass
class RunSpec:
    """Everything that defines a run (stored as its config)."""

    base: str
    unlearned: str
    audits: list[str]
    facts: str | None = None
    reference: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    limit: int | None = None
    max_new_tokens: int = 24
    options: dict[str, dict[str, str]] = field(default_factory=dict)
    trust_remote_code: bool = False
    prompt_template: str = PromptFormat.template
    chat_template: bool = False


@dataclass
class RunOutcome:
    run_id: str
    status: str
    metrics: dict[str, dict[str, float]]
    errors: dict[str, str]


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


def resolve_facts(spec: RunSpec) -> FactSet:
    """The facts file given, else the demo's facts when both models are demo models."""
    if spec.facts:
        facts = load_facts(spec.facts)
    elif spec.base.startswith(DEMO_PREFIX) and spec.unlearned.startswith(DEMO_PREFIX):
        from lab.demo.build import demo_facts_path

        facts = load_facts(demo_facts_path())
    else:
        raise LabError("--facts is required unless both models are demo models (demo:<name>)")
    facts = facts.limited(spec.limit)
    if settings.space_mode() and len(facts) > SPACE_MAX_FACTS:
        raise LabError(f"Space mode allows at most {SPACE_MAX_FACTS} facts per run; use a smaller limit")
    return facts


def prepare_audits(spec: RunSpec) -> tuple[FactSet, dict[str, Any]]:
    """Validate audits, options, facts and template: all of :func:`prepare` but the models.

    The web lab calls this with a pair it already holds, so a run does not load the models twice.
    """
    audit_options = {}
    for name in spec.audits:
        cls = get_audit(name)
        audit_options[name] = build_options(cls.Options, name, spec.options.get(name, {}))
    unknown = set(spec.options) - set(spec.audits)
    if unknown:
        raise LabError(f"options given for audits not in this run: {', '.join(sorted(unknown))}")
    facts = resolve_facts(spec)
    if "{question}" not in spec.prompt_template:
        raise LabError("the prompt template must contain {question}")
    return facts, audit_options


def prepare(spec: RunSpec) -> tuple[ModelPair, Engine | None, FactSet, dict[str, Any]]:
    """Validate audits and options, load facts and models (bad input fails here, before a run exists)."""
    facts, audit_options = prepare_audits(spec)
    fmt = PromptFormat(spec.prompt_template, spec.chat_template)
    pair = load_pair(spec.base, spec.unlearned, spec.device, spec.dtype, spec.trust_remote_code, fmt)
    reference = None
    if spec.reference:
        reference = load_engine(spec.reference, spec.device, spec.dtype, spec.trust_remote_code, fmt)
    return pair, reference, facts, audit_options


def run_audits(spec: RunSpec, store: Store, loaded: tuple | None = None) -> RunOutcome:
    """Run every audit of ``spec`` on one loaded pair and store everything."""
    pair, reference, facts, audit_options = loaded or prepare(spec)
    config = {**spec.__dict__, "options": {n: options_dict(o) for n, o in audit_options.items()},
              "facts_counts": facts.counts(),
              "models": {"base": pair.base.info.__dict__, "unlearned": pair.unlearned.info.__dict__,
                         "reference": reference.info.__dict__ if reference else None}}
    run_id = store.create_run(
        base=pair.base.info.__dict__, unlearned=pair.unlearned.info.__dict__, reference=spec.reference,
        facts_source=facts.source, facts_hash=facts.sha256, audits=spec.audits, config=config,
        environment=environment(),
    )
    shared: dict[str, Any] = {}
    metrics: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    try:
        for name in spec.audits:
            store.start_audit(run_id, name)

            def record(items: list[ItemRecord]) -> None:
                store.add_items(run_id, items)

            ctx = AuditContext(pair=pair, facts=facts, options=audit_options[name], record=record,
                               reference=reference, max_new_tokens=spec.max_new_tokens, _shared=shared)
            try:
                result = get_audit(name)().run(ctx)
            except LabError as exc:
                errors[name] = str(exc)
                store.finish_audit(run_id, name, "failed", str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - one broken audit must not lose the others
                errors[name] = f"{type(exc).__name__}: {exc}"
                store.finish_audit(run_id, name, "failed", errors[name] + "\n" + traceback.format_exc())
                continue
            store.add_metrics(run_id, name, result.metrics)
            for art_name, data in result.artifacts.items():
                store.add_artifact(run_id, name, art_name, data)
            store.finish_audit(run_id, name, "complete", notes=result.notes)
            metrics[name] = result.metrics
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted", "stopped by the user")
        raise
    status = "failed" if errors else "complete"
    store.finish_run(run_id, status, "; ".join(f"{k}: {v}" for k, v in errors.items()) or None)
    return RunOutcome(run_id, status, metrics, errors)
