"""The Audit tab's work: options tables, fact sources and a run on the session's pair.

A run goes through the same functions as ``python -m lab audit``:
:func:`lab.shell.runner.check` validates the request under the run policy,
:func:`lab.shell.runner.prepare` loads the models (here through the session's
model cache) and names the run, :func:`lab.shell.runner.execute` runs and
stores it.  Each audit's knobs are its ``Options`` class, shown as an
editable table in :func:`lab.core.options.option_text` form and read back by
:func:`lab.core.options.build_options`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from audits import available, get_audit
from lab.core.errors import LabError
from lab.core.facts import FactSet, load_facts
from lab.core.models import ModelPair
from lab.core.options import option_specs
from lab.core.policy import current as current_policy
from lab.demo.build import demo_facts_path
from lab.shell.runner import PreparedRun, check, prepare
from lab.shell.spec import PairSpec, RunSpec, build_spec
from lab.shell.ui.fields import check_limit, check_new_tokens
from lab.shell.ui.session import Lab

DEMO_FACTS, UPLOAD, SERVER_PATH = "Demo facts", "Upload a file", "Server path"
OPTION_COLUMNS = ["audit", "option", "type", "default", "value", "help"]


def available_audits() -> list[str]:
    """Registered audits whose module imports here."""
    return available()


def offered(pair: ModelPair, names: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The audits ``pair`` can run, and for each one it cannot, why (``Audit.unavailable``): a served
    model may offer text only, and an audit that needs log-probs or weights is then not offered."""
    names = available_audits() if names is None else names
    why = {name: reason for name in names if (reason := get_audit(name).unavailable(pair))}
    return [n for n in names if n not in why], why


def unavailable_note(why: dict[str, str]) -> str:
    """Markdown naming the audits not offered for the loaded pair, each with its reason ("" when none)."""
    return "\n".join(["Not offered for these models:"] + [f"- `{n}` {r}" for n, r in why.items()]) if why else ""


def facts_hint(source: str, upload: str | None, server_path: str | None) -> str | None:
    """What to say before a facts source is complete (no file picked, no path typed yet): a hint, never an
    error; None when the source is complete and should be read."""
    if source == UPLOAD and not upload:
        return "Pick a facts file: JSONL, JSON, CSV or Parquet (TOFU, MUSE and RWKU files are read too)."
    if source == SERVER_PATH and not (server_path or "").strip():
        return "Type the path of a facts file or a suite on the server, then press Enter."
    return None


def fact_sources() -> list[str]:
    return [DEMO_FACTS, UPLOAD] + ([SERVER_PATH] if current_policy().server_paths else [])


def options_frame(names: list[str], current: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per option of each chosen audit, keeping values the user already edited."""
    edited = {}
    if current is not None and not current.empty and {"audit", "option", "value"} <= set(current.columns):
        edited = {(r.audit, r.option): r.value for r in current.itertuples()}
    rows = []
    for name in names:
        for spec in option_specs(get_audit(name).Options):
            rows.append({"audit": name, "option": spec.name, "type": spec.type, "default": spec.default_text,
                         "value": edited.get((name, spec.name), spec.default_text), "help": spec.help})
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


def facts_path(source: str, upload: str | None, server_path: str | None) -> str | None:
    """The facts file a run reads; None means the demo's facts."""
    if source == DEMO_FACTS:
        return None
    if source == UPLOAD:
        if not upload:
            raise LabError("upload a facts file (JSONL, JSON, CSV or Parquet) first")
        return upload
    if not current_policy().server_paths:
        raise LabError("server paths are disabled here; upload the facts file instead")
    if not (server_path or "").strip():
        raise LabError("type the path of a facts file on the server")
    return (server_path or "").strip()


def load_source(source: str, upload: str | None, server_path: str | None) -> FactSet:
    """The chosen fact set, fully validated (the same reader as the CLI)."""
    path = facts_path(source, upload, server_path)
    if path:
        current_policy().check_path(path, "the facts file")
    return load_facts(path if path else demo_facts_path())


def run_fields(names: list[str] | None, options: pd.DataFrame | None, limit: float | None,
               max_new_tokens: float | None, reference: str | None, model: str | None = None,
               context: int | None = None) -> dict[str, Any]:
    """A run form's values as run-spec fields (the Audit and the Verdicts tab), checked as their fields check
    them (:mod:`lab.shell.ui.fields`; ``context``: ``model``'s, when known): 0 or nothing for the limit means all
    facts, an empty reference none."""
    limit_ = check_limit(limit)
    tokens = check_new_tokens(max_new_tokens, context, model or "the model")
    if not names:
        raise LabError("pick at least one audit")
    return {"audits": list(names), "options": options_from_frame(options, names), "limit": limit_,
            "max_new_tokens": tokens, "reference": (reference or "").strip() or None}


def run_spec(spec: PairSpec, source: str, upload: str | None, server_path: str | None, names: list[str],
             options: pd.DataFrame | None, limit: float | None, max_new_tokens: float, reference: str,
             context: int | None = None) -> RunSpec:
    """The run the user asked for: the session's pair (its prompt format included) and the form, through the
    run-spec builder (checked by the runner, not here; ``context``: the base model's, bounding the answers)."""
    path = facts_path(source, upload, server_path)
    if path is None and not spec.is_demo:
        raise LabError("the demo facts only fit the demo models: upload a facts file for your models")
    fields = {**spec.to_dict(), **run_fields(names, options, limit, max_new_tokens, reference, spec.base, context),
              "facts": path}
    return build_spec(RunSpec, fields, "the Audit tab")


def prepared_run(lab: Lab, pair_spec: PairSpec, run: RunSpec) -> PreparedRun:
    """Check the request, then take the models from the session's cache; the run id is chosen here."""
    return prepare(run, loader=lab.loader(pair_spec), checked=check(run))


def fact_counts(facts: FactSet, audits: list[str]) -> list[int]:
    """How many facts each audit runs on, in ``audits``' order: the runner gives an audit the facts of the
    kinds it uses (``Audit.uses``), so these are the run's own numbers (the progress bar's fact checks)."""
    return [len(facts.of_kinds(get_audit(name).uses)) for name in audits]


def checks_done(counts: list[int], audits_done: int) -> tuple[int, int]:
    """(fact checks done, in all) once the first ``audits_done`` audits ended (the runner runs them in order)."""
    return sum(counts[:audits_done]), sum(counts)


def default_limit() -> int:
    """Facts per split a run starts with: all (0) locally, the policy's share in a Space."""
    return current_policy().default_limit or 0


def default_new_tokens() -> int:
    """Max new tokens a run form starts with: enough for the demo's short answers, within the policy's cap."""
    return min(24, current_policy().max_new_tokens)
