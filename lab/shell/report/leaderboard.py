"""Several unlearned models side by side: the models x audits verdict grid and the sweep leaderboard.

One base model audited against several unlearned checkpoints (a sweep, or
any runs picked together) gives one :class:`Entry` per checkpoint: its run's
verdict per audit and overall (:mod:`lab.shell.verdict`), the release gate at
a threshold, and its worst recovered facts (the report's kill chain, most
widely recovered first).  The web lab's verdict dashboard and Results tab and
``python -m lab report --sweep ID`` all build a :class:`Leaderboard` here and
lay it out with :mod:`lab.shell.report.grid`.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from lab.core.store import Store
from lab.shell.report.collect import GATE, FactRow, kill_chain
from lab.shell.report.style import styled
from lab.shell.verdict import (FORGOTTEN, HIDDEN, LEAKED, NO_RECOVERY, NOT_ANSWERED, THIN, UNJUDGED, Cell,
                               ModelVerdict, gate, model_verdict, percent, run_label)

WORST = 5  # recovered facts listed per model


def model_label(ref: str) -> str:
    """A model as the grid names it: ``npo`` for ``demo:npo``, the folder name for a path, the id otherwise."""
    ref = str(ref or "")
    if ref.startswith("demo:"):
        return ref[len("demo:"):]
    if "/" in ref and Path(ref).name and (ref.startswith(("/", ".", "~")) or Path(ref).exists()):
        return Path(ref).name
    return ref


@dataclass
class Entry:
    """One checkpoint: its run, what each audit says, the gate, and its worst recovered facts."""

    model: str
    ref: str
    run_id: str
    status: str  # the run's status as people read it (verdict.run_label)
    verdict: ModelVerdict
    gate: list[str]  # why the release gate fails it (verdict.gate; empty: it passes)
    worst: list[FactRow] = field(default_factory=list)
    targets: int = 0

    def cell(self, audit: str) -> Cell | None:
        return self.verdict.cell(audit)

    @property
    def passes(self) -> bool:
        """The release gate, by the verdict's own judgement (:func:`lab.shell.verdict.gate`)."""
        return not self.gate


@dataclass
class Leaderboard:
    """Checkpoints x audits, with the sweep (when there is one) they came from."""

    title: str
    base: str
    control: str | None
    audits: list[str]
    entries: list[Entry]
    threshold: float
    sweep: dict[str, Any] | None = None


def entry(store: Store, run_id: str, threshold: float = GATE, worst: int = WORST) -> Entry:
    """One run as a leaderboard entry (its stored metrics, audit statuses and items)."""
    run = store.run(run_id)
    audits = store.audits(run_id)
    planned = [a for a in (run.get("audits") or "").split(",") if a]
    statuses = {a: "pending" if run["status"] == "running" else "not run" for a in planned}
    statuses.update(dict(zip(audits["audit"], audits["status"])))
    metrics = store.metrics_dict(run_id)
    control = model_label(run["reference_ref"]) if run.get("reference_ref") else None
    label = model_label(run["unlearned_ref"])
    verdict = model_verdict(label, metrics, statuses, control)
    items = store.items(run_id)
    chain = kill_chain(items)
    return Entry(label, run["unlearned_ref"], run_id, run_label(run["status"], statuses), verdict,
                 gate(verdict, threshold), chain.recovered[:worst], len(chain.targets))


def collect_runs(store: Store, run_ids: list[str], threshold: float = GATE, title: str = "") -> Leaderboard:
    """A leaderboard over any runs (the dashboard's, or runs picked together), audits in first-seen order."""
    entries = [entry(store, run_id, threshold) for run_id in run_ids]
    audits: list[str] = []
    for e in entries:
        audits += [c.audit for c in e.verdict.cells if c.audit not in audits]
    runs = [store.run(r) for r in run_ids]
    bases = list(dict.fromkeys(r["base_ref"] for r in runs))
    controls = [r.get("reference_ref") for r in runs if r.get("reference_ref")]
    return Leaderboard(title or f"{len(entries)} unlearned models", ", ".join(bases),
                       model_label(controls[0]) if controls else None, audits, entries, threshold)


def collect_sweep(store: Store, sweep_id: str, threshold: float = GATE) -> Leaderboard:
    """The leaderboard of one stored sweep (``python -m lab sweep``, or the web lab's verdict dashboard)."""
    sweeps = store.sweeps()
    row = sweeps[sweeps["sweep_id"] == sweep_id]
    if row.empty:
        from lab.core.errors import LabError

        raise LabError(f"no sweep '{sweep_id}' in {store.path}")
    sweep = {k: (v.isoformat(sep=" ", timespec="seconds") if hasattr(v, "isoformat") and not pd.isna(v) else
                 (None if pd.api.types.is_scalar(v) and pd.isna(v) else v))
             for k, v in row.iloc[0].to_dict().items()}
    runs = store.sweep_runs(sweep_id)
    board = collect_runs(store, list(runs["run_id"]), threshold, title=f"Sweep {sweep_id}")
    board.sweep = sweep
    return board


# --------------------------------------------------------------- table, heatmap
def _value(c: Cell | None) -> float | None:
    return None if c is None or c.value is None or not c.is_rate else round(100 * c.value, 1)


def table_frame(board: Leaderboard) -> pd.DataFrame:
    """The sortable table: one row per checkpoint; per audit its number in percent (sortable) and its
    state with the 95% interval beside it."""
    rows = []
    for e in board.entries:
        row: dict[str, Any] = {"model": e.model, "verdict": e.verdict.state,
                               "gate": "pass" if e.passes else "FAIL"}
        for audit in board.audits:
            c = e.cell(audit)
            row[f"{audit} %"] = _value(c)
            row[f"{audit} state"] = "" if c is None else f"{c.state} {c.text if c.value is not None else ''}".strip()
        row["run"] = e.run_id
        rows.append(row)
    columns = ["model", "verdict", "gate"] + [f"{a} {k}" for a in board.audits for k in ("%", "state")] + ["run"]
    return pd.DataFrame(rows, columns=columns)


# The heatmap's colours are the states', never the raw rates: "no recovery shown 25%" (a rate the control
# explains) must not look like "hidden 25%".  Ordered from the best reading to the worst.
SHADES = ((NO_RECOVERY, "#d1fadf"), (THIN, "#e4e7ec"), (HIDDEN, "#fcd34d"), (LEAKED, "#f87171"))
SHADE_OF = {FORGOTTEN: 0, NOT_ANSWERED: 0, NO_RECOVERY: 0, UNJUDGED: 1, THIN: 1, HIDDEN: 2, LEAKED: 3}
CELL_LINE = 11  # characters per line of a heatmap cell's state


def cell_text(c: Cell | None) -> str:
    """A heatmap cell's text in short lines (the state's words, the rate, its interval), so it keeps a readable
    size in a phone's narrow cells (Plotly shrinks text that is wider than its cell)."""
    if c is None:
        return ""
    rate, _, interval = c.text.partition(" ")
    return "<br>".join(textwrap.wrap(c.state, CELL_LINE) + ([rate, interval] if c.value is not None else []))


def heatmap(board: Leaderboard) -> go.Figure:
    """Checkpoints x audits coloured by each cell's state (detectors and missing numbers blank), the judged rate
    (control-adjusted where a control ran) and its interval as the text, the rule's reason in the hover."""
    z, text, hover = [], [], []
    for e in board.entries:
        zr, tr, hr = [], [], []
        for audit in board.audits:
            c = e.cell(audit)
            zr.append(SHADE_OF.get(c.state) if c is not None else None)
            tr.append(cell_text(c))
            hr.append("" if c is None else f"{e.model} · {audit}: {c.state}<br>{c.text}<br>{c.reason}")
        z.append(zr), text.append(tr), hover.append(hr)
    steps = len(SHADES)
    scale = [[bound, color] for i, (_, color) in enumerate(SHADES) for bound in (i / steps, (i + 1) / steps)]
    fig = go.Figure(go.Heatmap(
        z=z, x=board.audits, y=[e.model for e in board.entries], text=text, texttemplate="%{text}",
        textfont=dict(size=10),
        hovertext=hover, hovertemplate="%{hovertext}<extra></extra>", colorscale=scale, zmin=-0.5,
        zmax=steps - 0.5, showscale=False, xgap=3, ygap=3,
    ))
    against = f", adjusted by the control {board.control}" if board.control else ""
    fig.update_layout(title=f"Checkpoints × audits: each cell's state and judged rate with 95% interval{against}",
                      yaxis=dict(autorange="reversed", type="category"), xaxis=dict(type="category", side="top"),
                      height=max(260, 90 + 72 * len(board.entries)))
    return styled(fig)


def as_data(board: Leaderboard) -> dict[str, Any]:
    """The leaderboard as plain data (the JSON report)."""
    def cell_data(c: Cell) -> dict[str, Any]:
        return {"state": c.state, "key": c.key, "value": c.value, "ci_low": c.low, "ci_high": c.high,
                "adjusted": c.adjusted, "control": c.control, "floor": c.floor, "text": c.text, "reason": c.reason,
                "targets": c.targets, "power": c.power}

    return {
        "title": board.title, "base": board.base, "control": board.control, "sweep": board.sweep,
        "gate_threshold": board.threshold, "audits": board.audits,
        "entries": [{"model": e.model, "ref": e.ref, "run_id": e.run_id, "status": e.status,
                     "verdict": e.verdict.state, "sentence": e.verdict.sentence,
                     "gate": "pass" if e.passes else "fail", "gate_failures": e.gate,
                     "targets": e.targets,
                     "cells": {c.audit: cell_data(c) for c in e.verdict.cells},
                     "worst_recovered": [{"fact_id": r.fact_id, "answer": r.answer, "by": r.by, "prompt": r.prompt,
                                          "output_unlearned": r.output_unlearned} for r in e.worst]}
                    for e in board.entries],
    }


def gate_line(board: Leaderboard) -> str:
    """One sentence: which checkpoints the release gate lets through at the threshold."""
    passing = [e.model for e in board.entries if e.passes]
    failing = [f"{e.model}: {e.gate[0]}" for e in board.entries if not e.passes]
    return (f"Release gate (fails a model that leaked, one an attack recovers beyond {percent(board.threshold)}, or "
            f"one that cannot be judged, as --fail-above does): {len(passing)} pass ({', '.join(passing) or 'none'}), "
            f"{len(failing)} fail ({'; '.join(failing) or 'none'}).")
