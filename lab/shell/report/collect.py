"""The audit report of one stored run: HTML, Markdown or JSON, with the same content.

Everything comes from the store, so a report can be written for any run at
any time, including one that failed or was interrupted part way (the report
says so and shows what was stored).  :func:`collect` gathers the content once;
:mod:`lab.shell.report.render` lays it out.

Sections: executive summary (each audit's verdict and headline number), the
per-fact kill chain (which attack recovered which forget fact, which retain
facts the unlearned model suppresses), each audit's figures, models, facts,
configuration and package versions (to repeat the run), methodology (the paper
behind each audit) and limitations (audit notes, failures).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from audits import get_audit
from lab.core.errors import LabError
from lab.core.scoring import HIT_ROUGE
from lab.core.store import Store
from lab.shell.report.style import styled
from lab.shell.spec import command_line
from lab.shell.verdict import UNJUDGED, ModelVerdict, gate, model_verdict, unknown_to_base

GATE = 0.10  # the default release-gate threshold of the pages and reports (--fail-above sets its own)

if TYPE_CHECKING:
    import plotly.graph_objects as go

FORMATS = ("html", "md", "json")
NOT_RUN = "not run"
SCORING = (
    "One scorer serves every audit: an output hits the gold answer when the normalized answer appears in the "
    f"normalized output as whole words, or when its ROUGE-L recall reaches {HIT_ROUGE}. A model knows a fact when "
    "its greedy answer to the plain question hits. A forget fact is recovered when the base model knows it, the "
    "unlearned model misses it on the plain question, and the unlearned model hits it under the attack; "
    "recovery_rate is the share of those target facts an audit recovers."
)


@dataclass
class AuditEntry:
    """One audit of the run as the report shows it."""

    name: str
    title: str
    paper: str
    summary: str
    status: str  # complete | failed | interrupted | running | not run
    verdict: str
    headline_key: str | None
    headline_value: float | None
    metrics: dict[str, float | None]
    options: dict[str, Any]
    notes: list[str]
    error: str | None
    figures: dict[str, "go.Figure"] = field(default_factory=dict)
    figure_error: str | None = None


@dataclass
class FactRow:
    """One fact in the kill chain: which audits (and variants) hit it, with one piece of evidence."""

    fact_id: str
    answer: str
    question: str
    by: dict[str, list[str]]  # audit -> categories (variants) where it happened
    prompt: str  # one prompt where it happened
    output_unlearned: str  # the unlearned model's output to that prompt


@dataclass
class KillChain:
    """Recovered forget facts, targets no audit brought back, and suppressed retain facts."""

    targets: list[str]
    recovered: list[FactRow]
    held: list[str]
    suppressed: list[FactRow]
    asked: int = 0  # forget facts asked as plain questions (the targets come from these)
    known: int = 0  # of those, the ones the base model answers


@dataclass
class Breakdown:
    """One audit's results per value of a fact attribute (RWKU's level or probe type, a suite's subset)."""

    audit: str
    by: str  # subset | level | probe_type
    rows: list[dict[str, Any]]  # split, value, facts, base, unlearned (hit shares), recovered (of targets)


@dataclass
class Report:
    run: dict[str, Any]
    verdict: "ModelVerdict"  # what the dashboard shows for this run (lab.shell.verdict)
    unknown: str | None  # said before any number when the base model does not know the forget facts
    gate: list[str]  # why the release gate at GATE fails it (empty: it passes)
    partial: str | None  # why the results are incomplete, or None for a complete run
    audits: list[AuditEntry]
    kill_chain: KillChain
    breakdowns: list[Breakdown]
    models: dict[str, dict[str, Any] | None]
    facts: dict[str, Any]
    config: dict[str, Any]
    environment: dict[str, Any]
    repeat_command: str
    limitations: list[str]


# ------------------------------------------------------------------- audits
def _plain(value: Any) -> Any:
    """Timestamps as ISO text, missing values (None, NaN, NaT) as None: what every format can show."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    if isinstance(value, (datetime, pd.Timestamp)):
        return value.isoformat(sep=" ", timespec="seconds")
    return value


def _audit_class(name: str) -> type | None:
    """The registered class of an audit, or None when its module is gone (an old run)."""
    try:
        return get_audit(name)
    except (LabError, ImportError):
        return None


def _first_line(text: str | None) -> str | None:
    return str(text).strip().splitlines()[0] if text and str(text).strip() else None


def _figures(audit: Any, artifacts: dict[str, Any], items: pd.DataFrame) -> tuple[dict[str, Any], str | None]:
    """An audit's figures rebuilt from the store, in the lab's one visual language (:func:`.style.styled`);
    a broken plot is reported, not raised."""
    try:
        return {name: styled(fig) for name, fig in audit.figures(artifacts, items).items()}, None
    except Exception as exc:  # noqa: BLE001 - one audit's broken plot must not lose the report
        return {}, f"{type(exc).__name__}: {exc}"


def audit_entry(name: str, status: str, row: dict[str, Any], metrics: dict[str, float | None],
                options: dict[str, Any], artifacts: dict[str, Any], items: pd.DataFrame) -> AuditEntry:
    """Everything the report says about one audit, from its stored rows."""
    cls = _audit_class(name)
    audit = cls() if cls else None
    key = cls.recovery_key if cls else None
    error = _first_line(row.get("error"))
    if status == "complete" and audit:
        verdict = audit.verdict(metrics)
    elif status == "complete":
        verdict = "completed; its module is no longer installed, so only the stored metrics are shown"
    elif status == NOT_RUN:
        verdict = "not run: the run stopped before this audit started"
    elif status == "skipped":
        verdict = (list(row.get("notes") or []) or ["skipped: nothing in the fact set for this audit"])[0]
    else:
        verdict = f"{status}: {error or 'no result was stored'}"
    figures, figure_error = _figures(audit, artifacts, items) if status == "complete" and audit else ({}, None)
    return AuditEntry(
        name=name, title=cls.title if cls else name, paper=cls.paper if cls else "unknown (module not installed)",
        summary=cls.summary if cls else "", status=status, verdict=verdict, headline_key=key,
        headline_value=metrics.get(key) if key else None, metrics=metrics, options=options,
        notes=list(row.get("notes") or []), error=error, figures=figures, figure_error=figure_error,
    )


def _notes(value: Any) -> list[str]:
    """The audits table keeps notes as JSON text."""
    value = _plain(value)
    return list(json.loads(value)) if isinstance(value, str) else []


def audit_entries(store: Store, run_id: str, run: dict[str, Any], items: pd.DataFrame) -> list[AuditEntry]:
    """Every audit the run asked for, in order, with its stored status (``not run`` if it never started)."""
    rows = {r["audit"]: {**{k: _plain(v) for k, v in r.items()}, "notes": _notes(r.get("notes"))}
            for r in store.audits(run_id).to_dict("records")}
    planned = [a for a in (run.get("audits") or "").split(",") if a]
    names = planned + [a for a in rows if a not in planned]
    metrics, artifacts = store.metrics_dict(run_id), store.artifacts(run_id)
    options = run["config"].get("options") or {}
    return [
        audit_entry(name, rows[name]["status"] if name in rows else NOT_RUN, rows.get(name, {}),
                    metrics.get(name, {}), options.get(name, {}), artifacts.get(name, {}),
                    items[items["audit"] == name].reset_index(drop=True))
        for name in names
    ]


# --------------------------------------------------------------- kill chain
def _plain_questions(items: pd.DataFrame) -> pd.DataFrame:
    """The rows of the audits that ask the plain questions (``asks_directly`` on question items): each fact's
    plain question asked to both models."""
    plain = [name for name in items["audit"].unique() if _asks_plainly(str(name))]
    return items[items["audit"].isin(plain) & items["hit_base"].notna()].drop_duplicates("fact_id")


def _asks_plainly(audit: str) -> bool:
    try:
        cls = get_audit(audit)
    except LabError:  # an audit of an old run that is gone
        return False
    return cls.asks_directly and "qa" in cls.uses


def _fact_rows(hits: pd.DataFrame, questions: dict[str, str]) -> list[FactRow]:
    """One row per fact of ``hits``, the audits and variants that hit it, most widely hit first."""
    rows = []
    for fact_id, group in hits.groupby("fact_id", sort=False):
        by: dict[str, list[str]] = {}
        for audit, category in zip(group["audit"], group["category"].fillna("")):
            cats = by.setdefault(audit, [])
            if category and category not in cats:
                cats.append(category)
        first = group.iloc[0]
        rows.append(FactRow(str(fact_id), str(first["answer"]), questions.get(fact_id, ""), by,
                            str(first["prompt"]), str(first["output_unlearned"] or "")))
    return sorted(rows, key=lambda r: (-len(r.by), r.fact_id))


def kill_chain(items: pd.DataFrame) -> KillChain:
    """Which audit recovered which forget fact, and which retain facts stay suppressed.

    Targets are the forget facts the base model knows and the unlearned model
    misses on the plain question (from the ``direct`` audit when it ran) plus
    every fact an audit scored for recovery.  Suppressed: retain items the
    base model answers right and the unlearned model does not.
    """
    if items.empty:
        return KillChain([], [], [], [])
    plain = _plain_questions(items)
    questions = dict(zip(plain["fact_id"], plain["prompt"]))
    forget = items[items["split"] == "forget"]
    plain_forget = plain[plain["split"] == "forget"]
    direct_targets = plain_forget[plain_forget["hit_base"].astype(bool) & ~plain_forget["hit_unlearned"].astype(bool)]
    scored = forget[forget["recovered"].notna()]
    targets = list(dict.fromkeys([*direct_targets["fact_id"], *scored["fact_id"]]))
    # Evidence for a recovered fact: a prompt whose output text hits, where there is one (audits that
    # read hidden states, such as the logit lens, mark facts the output itself still misses).
    hits = forget[forget["recovered"].eq(True)]
    recovered = _fact_rows(hits.sort_values("hit_unlearned", ascending=False, kind="stable"), questions)
    recovered_ids = {r.fact_id for r in recovered}
    retain = items[(items["split"] == "retain") & items["hit_base"].notna() & items["hit_unlearned"].notna()]
    suppressed = retain[retain["hit_base"].astype(bool) & ~retain["hit_unlearned"].astype(bool)]
    return KillChain(targets, recovered, [t for t in targets if t not in recovered_ids],
                     _fact_rows(suppressed, questions), asked=len(plain_forget),
                     known=int(plain_forget["hit_base"].astype(bool).sum()))


# ----------------------------------------------------------------- breakdown
BREAKDOWN_BY = ("subset", "level", "probe_type")


def _share(flags: pd.Series) -> float | None:
    flags = flags.dropna()
    return float(flags.astype(bool).mean()) if len(flags) else None


def breakdowns(items: pd.DataFrame, facts: pd.DataFrame) -> list[Breakdown]:
    """Per audit, per fact attribute with two values or more: facts, the share each model answers (any prompt
    of the audit), and the share of targets recovered.  A fact counts once per group."""
    if items.empty or facts.empty:
        return []
    out = []
    for by in BREAKDOWN_BY:
        values = facts[by].replace("", pd.NA).dropna()
        if values.nunique() < 2:
            continue
        merged = items.merge(facts[["fact_id", by]], on="fact_id")
        merged = merged[merged[by].fillna("") != ""]
        for audit, group in merged.groupby("audit", sort=False):
            if group["hit_base"].isna().all() and group["recovered"].isna().all():
                continue
            per_fact = group.groupby(["split", by, "fact_id"]).agg(
                base=("hit_base", "max"), unlearned=("hit_unlearned", "max"), recovered=("recovered", "max"))
            rows = [{"split": split, "value": value, "facts": len(part), "base": _share(part["base"]),
                     "unlearned": _share(part["unlearned"]), "recovered": _share(part["recovered"])}
                    for (split, value), part in per_fact.groupby(level=[0, 1], sort=True)]
            out.append(Breakdown(str(audit), by, rows))
    return out


# ------------------------------------------------------- run, models, config
def partial_reason(run: dict[str, Any], audits: list[AuditEntry]) -> str | None:
    """One sentence on why a run's results are incomplete, or None when it completed."""
    if run["status"] == "complete":
        return None
    unfinished = [f"{a.name} ({a.status})" for a in audits if a.status != "complete"]
    head = {"failed": "This run failed part way",
            "interrupted": "This run was interrupted",
            "running": "This run had not finished when the report was written"}.get(run["status"],
                                                                                   f"This run is {run['status']}")
    reason = f": {_first_line(run.get('error'))}" if run.get("error") else ""
    rest = f". Incomplete audits: {', '.join(unfinished)}" if unfinished else ""
    return f"{head}{reason}{rest}. The report shows what was stored."


def repeat_command(run: dict[str, Any]) -> str:
    """The ``python -m lab audit`` command line that repeats this run (same models, facts, options, format)."""
    config = {**run["config"], "base": run["config"].get("base", run["base_ref"]),
              "unlearned": run["config"].get("unlearned", run["unlearned_ref"]),
              "audits": run.get("audits") or run["config"].get("audits"),
              "facts": run.get("facts_source") or run["config"].get("facts")}
    return shlex.join(command_line(config))


def limitations(run: dict[str, Any], audits: list[AuditEntry]) -> list[str]:
    """What the reader should keep in mind: audit notes, failures, and run-wide caveats."""
    out = [f"{a.name}: {note}" for a in audits for note in a.notes]
    out += [f"{a.name}: the audit {a.status}" + (f" ({a.error})" if a.error else "") + "; its numbers are missing"
            for a in audits if a.status != "complete"]
    out += [f"{a.name}: figures could not be rebuilt ({a.figure_error})" for a in audits if a.figure_error]
    limit = run["config"].get("limit")
    if limit:
        out.append(f"facts were limited to {limit} per split (--limit): rates rest on small samples")
    out.append("recovered and suppressed are judged by the shared answer scorer (containment or ROUGE-L recall); "
               "raw outputs are stored, so another judge can be re-run on them")
    return out


def judged(audits: list[AuditEntry], verdict: ModelVerdict) -> list[AuditEntry]:
    """Each audit's summary line, told by its verdict cell where the rules cannot judge it (no target facts, or a
    base model that does not know them): that first, never a rate over nothing or "the claim under audit"."""
    out = []
    for entry in audits:
        cell = verdict.cell(entry.name)
        if entry.status == "complete" and cell is not None and cell.state == UNJUDGED:
            entry = replace(entry, verdict=f"{cell.state}: {cell.reason}")
        out.append(entry)
    return out


def unknown_sentence(verdict: ModelVerdict, chain: KillChain) -> str | None:
    """What the report says first when the base model does not know the forget facts (a benchmark it was never
    trained on): there is nothing to forget, so no number below says what unlearning did."""
    cell = unknown_to_base(verdict.cells)
    if cell is None:
        return None
    asked = f" of the {chain.asked} forget questions" if chain.asked else " of the forget questions"
    return (f"The base model does not know the forget facts: it answers {cell.text}{asked} ({cell.audit}). "
            "Nothing it knew can have been forgotten, so this run cannot judge the unlearning: the numbers below "
            "compare two models that never learned these facts. Audit a base model that answers them (the model "
            "before unlearning, trained on the benchmark's facts).")


def collect(store: Store, run_id: str) -> Report:
    """Everything the report shows about one run, read from the store."""
    run = store.run(run_id)
    items = store.items(run_id)
    audits = audit_entries(store, run_id, run, items)
    config = run["config"]
    run_row = {k: _plain(v) for k, v in run.items() if k not in ("config", "environment")}
    verdict = model_verdict(run["unlearned_ref"], store.metrics_dict(run_id), {a.name: a.status for a in audits},
                            run.get("reference_ref"))
    audits = judged(audits, verdict)
    chain = kill_chain(items)
    return Report(
        run=run_row,
        verdict=verdict,
        unknown=unknown_sentence(verdict, chain),
        gate=gate(verdict, GATE),
        partial=partial_reason(run, audits),
        audits=audits,
        kill_chain=chain,
        breakdowns=breakdowns(items, store.facts(run_id)),
        models=config.get("models") or {"base": {"ref": run["base_ref"], "content_hash": run["base_hash"]},
                                         "unlearned": {"ref": run["unlearned_ref"],
                                                       "content_hash": run["unlearned_hash"]}},
        facts={"source": run.get("facts_source"), "sha256": run.get("facts_hash"),
               "counts": config.get("facts_counts") or {}, "items_stored": len(items)},
        config={k: v for k, v in config.items() if k not in ("models", "facts_counts")},
        environment=run["environment"],
        repeat_command=repeat_command(run),
        limitations=limitations(run, audits),
    )
