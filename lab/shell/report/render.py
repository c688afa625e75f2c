"""Layouts of the audit report: HTML (self-contained), Markdown and JSON.

All three show the same sections, in the same order (:data:`SECTIONS`), from
one :class:`lab.shell.report.collect.Report`.  The HTML file opens offline: plotly.js is
inlined once (``plotly.offline.get_plotlyjs``), the style sheet too, and no
resource is fetched from the network.  Markdown cannot hold interactive plots,
so it names each figure; the JSON form carries every figure as Plotly JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, fields
from functools import lru_cache
from typing import Any

import plotly.io as pio
from jinja2 import Environment, FileSystemLoader, select_autoescape
from plotly.offline import get_plotlyjs

from lab.core import settings
from lab.core.store import to_json as store_json
from lab.shell.report.collect import GATE, SCORING, AuditEntry, FactRow, Report

STATIC = settings.static_dir()
REPORT_VERSION = 1
SECTIONS = (
    ("verdict", "Verdict and release gate"),
    ("summary", "Executive summary"),
    ("kill-chain", "Kill chain: fact by fact"),
    ("breakdown", "Breakdown by subset, level and probe type"),
    ("audits", "Audits and figures"),
    ("models", "Models"),
    ("facts", "Facts"),
    ("config", "Configuration"),
    ("environment", "Environment"),
    ("methodology", "Methodology"),
    ("limitations", "Limitations"),
)
MODEL_FIELDS = ("ref", "path", "content_hash", "dtype", "device", "parameters", "architecture")
PERCENT_HINTS = ("rate", "accuracy", "retention")


def number(key: str, value: float | None) -> str:
    """A metric value for people: rates as percentages, other numbers with 3 decimals, n/a when missing."""
    if value is None or value != value:
        return "n/a"
    if any(hint in key for hint in PERCENT_HINTS) and 0 <= value <= 1:
        return f"{value:.1%}"
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) > 1 else f"{value:.3f}"


def headline(entry: AuditEntry) -> str:
    return f"{entry.headline_key} = {number(entry.headline_key, entry.headline_value)}" if entry.headline_key else "–"


def found_by(row: FactRow) -> str:
    """``audit (variant, variant); audit``: where a fact was recovered or suppressed."""
    return "; ".join(f"{audit} ({', '.join(cats)})" if cats else audit for audit, cats in row.by.items())


KILL_CHAIN_NOTE = ("A forget fact counts as recovered where an audit marked it so under its own method; the evidence "
                   "is one such prompt and the unlearned model's output to it (audits that read hidden states mark "
                   "facts the output text may still miss). A retain fact is suppressed under a prompt the base model "
                   "answers right and the unlearned model does not.")


BREAKDOWN_NOTE = ("Each audit's items grouped by a fact attribute that takes two values or more: how many facts, the "
                  "share each model answers right under the audit's prompts, and the share of target facts the "
                  "audit recovered (n/a where the audit scores no recovery).")


def share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def kill_chain_counts(report: Report) -> str:
    chain = report.kill_chain
    suppressed = f"{len(chain.suppressed)} retain facts suppressed (base right, unlearned wrong) under some prompt."
    if chain.asked and not chain.targets:  # say why there is nothing to recover, not a count over nothing
        why = (f"the base model answers none of the {chain.asked} forget questions asked" if not chain.known else
               f"the unlearned model still answers all {chain.known} forget questions the base model answers")
        return f"No target forget facts: {why}, so no audit had anything to recover. {suppressed}"
    return (f"{len(chain.targets)} target forget facts (the base model knows them, the unlearned model misses the "
            f"plain question); {len(chain.recovered)} recovered by at least one audit, {len(chain.held)} held; "
            + suppressed)


def gate_text(report: Report) -> str:
    """The release gate in one line, as the dashboard says it."""
    if not report.gate:
        return f"Release gate at {GATE:.0%}: pass."
    return f"Release gate at {GATE:.0%}: FAIL ({'; '.join(report.gate)})."


def verdict_rows(report: Report) -> list[list[str]]:
    """Each audit's cell: its state, the judged number, why, and what a "no recovery shown" stands on."""
    return [[c.audit, c.state, c.text if c.value is not None else "", c.reason, c.power]
            for c in report.verdict.cells]


# ----------------------------------------------------------------------- JSON
def as_data(report: Report) -> dict[str, Any]:
    """The report as plain data, keyed by section, every figure as Plotly JSON."""

    def audit(entry: AuditEntry) -> dict[str, Any]:
        row = {f.name: getattr(entry, f.name) for f in fields(entry) if f.name != "figures"}
        row["figures"] = {name: json.loads(pio.to_json(fig)) for name, fig in entry.figures.items()}
        return row

    return {
        "report_version": REPORT_VERSION,
        "run": report.run,
        "verdict": {"state": report.verdict.state, "sentence": report.verdict.sentence, "unknown": report.unknown,
                    "gate": "fail" if report.gate else "pass", "gate_failures": report.gate, "gate_threshold": GATE,
                    "cells": [{"audit": c.audit, "state": c.state, "key": c.key, "value": c.value, "ci_low": c.low,
                               "ci_high": c.high, "adjusted": c.adjusted, "targets": c.targets,
                               "reason": c.reason, "power": c.power} for c in report.verdict.cells]},
        "partial": report.partial,
        "summary": [{"audit": a.name, "title": a.title, "status": a.status, "headline_key": a.headline_key,
                     "headline_value": a.headline_value, "verdict": a.verdict} for a in report.audits],
        "kill_chain": {"counts": kill_chain_counts(report), "note": KILL_CHAIN_NOTE, **asdict(report.kill_chain)},
        "breakdown": {"note": BREAKDOWN_NOTE, "tables": [asdict(b) for b in report.breakdowns]},
        "audits": {a.name: audit(a) for a in report.audits},
        "models": report.models,
        "facts": report.facts,
        "config": {**report.config, "repeat_command": report.repeat_command},
        "environment": report.environment,
        "methodology": {"scoring": SCORING,
                        "audits": [{"audit": a.name, "title": a.title, "paper": a.paper, "summary": a.summary}
                                   for a in report.audits]},
        "limitations": report.limitations,
    }


def to_json(report: Report) -> str:
    return store_json(as_data(report))


# ------------------------------------------------------------------- Markdown
_INERT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "\\[", "]": "\\]", "`": "\\`", "|": "\\|",
                        "\n": " ↵ ", "\r": " "})


def md_text(value: Any) -> str:
    """Text a run carries (a fact, a model's output, a path, an error) as inert Markdown on one line: no raw
    HTML (``<script>``, ``<img onerror>``), no link or image (``[x](javascript:...)``, ``<javascript:...>``),
    no code span or table cell it could end.  The HTML report escapes through its template instead."""
    return str(value).translate(_INERT)


def md_code(value: Any) -> str:
    """``value`` as inline code on one line, fenced by more backticks than it holds (so it cannot end early)."""
    text = str(value).replace("\n", " ").replace("\r", " ")
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def md_block(text: str, language: str) -> list[str]:
    """A fenced code block whose fence is longer than any run of backticks inside it."""
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return [fence + language, text, fence]


def _cell(value: Any) -> str:
    return "–" if value is None or value == "" else md_text(value)


def md_table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    if not rows:
        return ["_none_"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def _fact_table(rows: list[FactRow], label: str) -> list[str]:
    return md_table(["Fact", "Answer", label, "Evidence: prompt", "Unlearned output"],
                    [[r.fact_id, r.answer, found_by(r), r.prompt, r.output_unlearned] for r in rows])


def _md_audit(entry: AuditEntry) -> list[str]:
    lines = [f"### {entry.name}: {entry.title}", "", f"**{entry.status}**: {entry.verdict}", "",
             f"Paper: _{entry.paper}_", ""]
    if entry.figures:
        lines += ["Figures (interactive in the HTML report, data in the JSON report):", ""]
        lines += [f"- {md_text(name)}: {md_text(fig.layout.title.text or name)}" for name, fig in entry.figures.items()]
        lines += [""]
    lines += md_table(["Metric", "Value"], [[k, number(k, v)] for k, v in entry.metrics.items()]) + [""]
    if entry.options:
        lines += ["Options: " + ", ".join(md_code(f"{k}={v}") for k, v in entry.options.items()), ""]
    lines += [f"- note: {md_text(n)}" for n in entry.notes]
    return lines + ([f"- error: {md_text(entry.error)}"] if entry.error else []) + [""]


def to_markdown(report: Report) -> str:
    run = report.run
    out = [f"# Unlearning audit report: {md_text(run['run_id'])}", "",
           f"**{md_text(run['base_ref'])}** (base) → **{md_text(run['unlearned_ref'])}** (unlearned) · status "
           f"**{md_text(run['status'])}** · started {run['created_at']} · finished {run['finished_at'] or '–'}", ""]
    if report.partial:
        out += [f"> **Partial results.** {md_text(report.partial)}", ""]
    titles = dict(SECTIONS)
    out += [f"## {titles['verdict']}", ""]
    if report.unknown:
        out += [f"> **Cannot be judged.** {md_text(report.unknown)}", ""]
    out += [f"**{report.verdict.state}**: {md_text(report.verdict.sentence)}", "", md_text(gate_text(report)), ""]
    out += md_table(["Audit", "State", "Judged number", "Why", "Power"], verdict_rows(report))
    out += ["", f"## {titles['summary']}", ""]
    out += md_table(["Audit", "Status", "Headline", "Verdict"],
                    [[a.name, a.status, headline(a), a.verdict] for a in report.audits])
    out += ["", kill_chain_counts(report), "", f"## {titles['kill-chain']}", "", KILL_CHAIN_NOTE, "",
            "### Recovered forget facts", ""]
    out += _fact_table(report.kill_chain.recovered, "Recovered by")
    out += ["", "### Targets no audit recovered", "", md_text(", ".join(report.kill_chain.held)) or "_none_", "",
            "### Suppressed retain facts", ""]
    out += _fact_table(report.kill_chain.suppressed, "Suppressed under") + ["", f"## {titles['breakdown']}", "",
                                                                         BREAKDOWN_NOTE, ""]
    for table in report.breakdowns:
        out += [f"### {md_text(table.audit)} by {md_text(table.by)}", ""]
        out += md_table(["Split", table.by, "Facts", "Base answers", "Unlearned answers", "Targets recovered"],
                        [[r["split"], r["value"], r["facts"], share(r["base"]), share(r["unlearned"]),
                          share(r["recovered"])] for r in table.rows]) + [""]
    if not report.breakdowns:
        out += ["_The facts have one subset, level and probe type: nothing to break down._", ""]
    out += [f"## {titles['audits']}", ""]
    for entry in report.audits:
        out += _md_audit(entry)
    out += [f"## {titles['models']}", ""]
    out += md_table(["Role", *MODEL_FIELDS], [[role, *[(m or {}).get(f) for f in MODEL_FIELDS]]
                                              for role, m in report.models.items() if m])
    facts = report.facts
    out += ["", f"## {titles['facts']}", "", f"Source: {md_code(facts['source'])} · SHA-256 {md_code(facts['sha256'])} "
            f"· {facts['items_stored']} items stored", ""]
    out += md_table(["Split", "Facts"], [[s, n] for s, n in facts["counts"].items()])
    out += ["", f"## {titles['config']}", "", "Repeat this run:", "", *md_block(report.repeat_command, "bash"), "",
            *md_block(json.dumps(report.config, indent=2, default=str), "json"), "", f"## {titles['environment']}", ""]
    env = report.environment
    out += [md_text(f"Python {env.get('python')} · {env.get('platform')} · CUDA {env.get('cuda') or 'none'}"), ""]
    out += md_table(["Package", "Version"], [[k, v] for k, v in (env.get("packages") or {}).items()])
    out += ["", f"## {titles['methodology']}", "", SCORING, ""]
    out += [f"- **{a.name}** ({a.title}): _{a.paper}_. {a.summary}" for a in report.audits]
    out += ["", f"## {titles['limitations']}", ""] + [f"- {md_text(line)}" for line in report.limitations]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------- HTML
def figure_id(audit: str, name: str) -> str:
    """The element id of one figure in the HTML report."""
    return "fig-" + re.sub(r"[^A-Za-z0-9_-]+", "-", f"{audit}-{name}")


def figure_html(audit: str, name: str, fig: Any) -> str:
    """One figure as a div and its drawing script (plotly.js itself is inlined once per page)."""
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=figure_id(audit, name),
                       default_height="420px", config={"displaylogo": False, "responsive": True})


@lru_cache(maxsize=4)
def template(name: str = "report.html"):
    """A page template of ``static/`` (the run report, the sweep leaderboard)."""
    env = Environment(loader=FileSystemLoader(STATIC), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template(name)


def to_html(report: Report) -> str:
    """One self-contained HTML page: style sheet and plotly.js inlined, no network needed."""
    figures = {a.name: {name: figure_html(a.name, name, fig) for name, fig in a.figures.items()}
               for a in report.audits}
    return template().render(
        report=report, sections=SECTIONS, figures=figures, number=number, headline=headline,
        counts=kill_chain_counts(report), kill_chain_note=KILL_CHAIN_NOTE, breakdown_note=BREAKDOWN_NOTE, share=share,
        scoring=SCORING, model_fields=MODEL_FIELDS, gate_text=gate_text(report), verdict_rows=verdict_rows(report),
        config_json=json.dumps(report.config, indent=2, default=str),
        css="\n".join((STATIC / name).read_text(encoding="utf-8") for name in ("report.css", "verdict.css")),
        plotly_js=get_plotlyjs() if any(figures.values()) else "",
    )
