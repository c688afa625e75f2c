"""The Audit tab's work: options tables, fact sources and a run on the session's pair.

A run goes through the same functions as ``python -m lab audit``:
:func:`lab.runner.prepare_audits` validates audits, options and facts, and
:func:`lab.runner.run_audits` runs and stores everything; only the models come
from the session's already loaded pair instead of being loaded again.  Each
audit's knobs are its ``Options`` dataclass, shown as an editable table whose
values are converted and validated by :func:`lab.options.build_options`.
"""

from __future__ import annotations

import dataclasses
import threading
import typing
from pathlib import Path
from typing import Any

import pandas as pd

from audits import audit_names, get_audit
from lab import settings
from lab.batching import cancellable
from lab.demo.build import demo_facts_path
from lab.errors import LabError
from lab.facts import FactSet, load_facts
from lab.runner import RunOutcome, RunSpec, prepare_audits, run_audits
from lab.ui.session import Lab, PairSpec, limits

DEMO_FACTS, UPLOAD, SERVER_PATH = "Demo facts", "Upload a file", "Server path"
OPTION_COLUMNS = ["audit", "option", "type", "default", "value"]


def available_audits() -> list[str]:
    """Registered audits whose module imports (an audit still being written is left out)."""
    names = []
    for name in audit_names():
        try:
            get_audit(name)
        except ImportError:
            continue
        names.append(name)
    return names


def fact_sources() -> list[str]:
    return [DEMO_FACTS, UPLOAD] + ([SERVER_PATH] if limits().server_paths else [])


def show_value(value: Any) -> str:
    """An option value as the text ``build_options`` reads back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def options_frame(names: list[str], current: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per option of each chosen audit, keeping values the user already edited."""
    edited = {}
    if current is not None and not current.empty and set(OPTION_COLUMNS) <= set(current.columns):
        edited = {(r.audit, r.option): r.value for r in current.itertuples()}
    rows = []
    for name in names:
        cls = get_audit(name).Options
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            shown = show_value(default)
            rows.append({"audit": name, "option": field.name, "type": type_name(hints[field.name]),
                         "default": shown, "value": edited.get((name, field.name), shown)})
    return pd.DataFrame(rows, columns=OPTION_COLUMNS)


def options_from_frame(frame: pd.DataFrame | None, names: list[str]) -> dict[str, dict[str, str]]:
    """The ``--set``-style options that differ from their defaults, for the chosen audits only."""
    if frame is None or frame.empty:
        return {}
    out: dict[str, dict[str, str]] = {}
    for row in frame.itertuples():
        value = "" if row.value is None else str(row.value).strip()
        if row.audit in names and value != str(row.default):
            out.setdefault(row.audit, {})[row.option] = value
    return out


def facts_path(source: str, upload: str | None, server_path: str) -> str | None:
    """The facts file a run reads; None means the demo's facts."""
    if source == DEMO_FACTS:
        return None
    if source == UPLOAD:
        if not upload:
            raise LabError("upload a facts file (JSONL, JSON, CSV or Parquet) first")
        return upload
    if not limits().server_paths:
        raise LabError("server paths are disabled here; upload the facts file instead")
    if not server_path.strip():
        raise LabError("type the path of a facts file on the server")
    return server_path.strip()


def load_source(source: str, upload: str | None, server_path: str) -> FactSet:
    """The chosen fact set, fully validated (the same reader as the CLI)."""
    path = facts_path(source, upload, server_path)
    return load_facts(path if path else demo_facts_path())


def check_option_paths(options: dict[str, dict[str, str]]) -> None:
    """In a Space no option may name a file or folder on the server (an SAE folder, a corpus, a local model)."""
    if limits().server_paths:
        return
    for audit, values in options.items():
        for key, value in values.items():
            if value.startswith(("/", ".", "~")) or (value and Path(value).expanduser().exists()):
                raise LabError(f"option {audit}.{key}: '{value}' names a server path, and those are disabled here")


def run_spec(spec: PairSpec, source: str, upload: str | None, server_path: str, names: list[str],
             options: pd.DataFrame | None, limit: float | None, max_new_tokens: float, reference: str) -> RunSpec:
    """The run the user asked for, in the CLI's terms."""
    if not names:
        raise LabError("pick at least one audit")
    path = facts_path(source, upload, server_path)
    if path is None and not spec.is_demo:
        raise LabError("the demo facts only fit the demo models: upload a facts file for your models")
    chosen = options_from_frame(options, names)
    check_option_paths(chosen)
    return RunSpec(
        base=spec.base, unlearned=spec.unlearned, audits=list(names), facts=path,
        reference=reference.strip() or None, device=spec.device, dtype=spec.dtype,
        limit=int(limit) if limit else None, max_new_tokens=int(min(max_new_tokens, limits().max_new_tokens)),
        options=chosen, trust_remote_code=spec.trust_remote_code,
    )


def execute(lab: Lab, pair_spec: PairSpec, run: RunSpec, stop: threading.Event) -> RunOutcome:
    """Validate, then run every audit on the session's pair; ``stop`` ends it before the next batch."""
    facts, audit_options = prepare_audits(run)
    pair = lab.pair(pair_spec)
    reference = None
    if run.reference:
        reference = lab.engine(run.reference, run.device, run.dtype, run.trust_remote_code)
    with cancellable(stop):
        return run_audits(run, lab.store, (pair, reference, facts, audit_options))


def default_limit() -> int:
    """Facts per split a run starts with: all (0) locally, a Space-sized share in a Space."""
    return 50 if settings.space_mode() else 0
