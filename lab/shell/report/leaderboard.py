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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from lab.core.store import Store
from lab.shell.report.collect import FactRow, kill_chain
from lab.shell.report.style import styled
from lab.shell.verdict import (FORGOTTEN, HIDDEN, Cell, asks_directly, ModelVerdict, gate_failures, model_verdict,
                               percent, run_label)

GATE = 0.10  # the page's default release-gate threshold (the CLI's --fail-above has none)
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
    gate: list[str]  # audits over the threshold ("" list: passes)
    gated: bool  # at least one recovery rate was there to gate
    worst: list[FactRow] = field(default_factory=list)
    targets: int = 0

    def cell(self, audit: str) -> Cell | None:
        return self.verdict.cell(audit)

    @property
    def passes(self) -> bool | None:
        """The release gate: True (passes), False (fails), None (no recovery rate to judge)."""
        if self.gate:
            return False
        return True if self.gated else None


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
    gated = any(c.state in (FORGOTTEN, HIDDEN) and not asks_directly(c.audit) for c in verdict.cells)
    return Entry(label, run["unlearned_ref"], run_id, run_label(run["status"], statuses), verdict,
                 gate_failures(metrics, threshold), gated, chain.recovered[:worst], len(chain.targets))


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
                               "gate": {True: "pass", False: "FAIL", None: "n/a"}[e.passes]}
        for audit in board.audits:
            c = e.cell(audit)
            row[f"{audit} %"] = _value(c)
            row[f"{audit} state"] = "" if c is None else f"{c.state} {c.text if c.value is not None else ''}".strip()
        row["run"] = e.run_id
        rows.append(row)
    columns = ["model", "verdict", "gate"] + [f"{a} {k}" for a in board.audits for k in ("%", "state")] + ["run"]
    return pd.DataFrame(rows, columns=columns)


def heatmap(board: Leaderboard) -> go.Figure:
    """Checkpoints x audits: each cell's judged rate (control-adjusted where a control ran), its interval in
    the hover and the text; detectors and missing numbers are blank."""
    z, text, hover = [], [], []
    for e in board.entries:
        zr, tr, hr = [], [], []
        for audit in board.audits:
            c = e.cell(audit)
            value = c.value if c is not None and c.is_rate else None
            zr.append(value)
            tr.append("" if c is None else (c.state if c.value is None else f"{c.state}<br>{c.text}"))
            hr.append("" if c is None else f"{e.model} · {audit}: {c.state}<br>{c.text}<br>{c.reason}")
        z.append(zr), text.append(tr), hover.append(hr)
    fig = go.Figure(go.Heatmap(
        z=z, x=board.audits, y=[e.model for e in board.entries], text=text, texttemplate="%{text}",
        hovertext=hover, hovertemplate="%{hovertext}<extra></extra>", colorscale="RdPu", zmin=0, zmax=1,
        colorbar=dict(title="rate", tickformat=".0%"), xgap=3, ygap=3,
    ))
    against = f", adjusted by the control {board.control}" if board.control else ""
    fig.update_layout(title=f"Checkpoints × audits: judged rate with 95% interval{against}",
                      yaxis=dict(autorange="reversed", type="category"), xaxis=dict(type="category", side="top"),
                      height=max(260, 90 + 56 * len(board.entries)))
    return styled(fig)


def as_data(board: Leaderboard) -> dict[str, Any]:
    """The leaderboard as plain data (the JSON report)."""
    def cell_data(c: Cell) -> dict[str, Any]:
        return {"state": c.state, "key": c.key, "value": c.value, "ci_low": c.low, "ci_high": c.high,
                "adjusted": c.adjusted, "control": c.control, "floor": c.floor, "text": c.text, "reason": c.reason}

    return {
        "title": board.title, "base": board.base, "control": board.control, "sweep": board.sweep,
        "gate_threshold": board.threshold, "audits": board.audits,
        "entries": [{"model": e.model, "ref": e.ref, "run_id": e.run_id, "status": e.status,
                     "verdict": e.verdict.state, "sentence": e.verdict.sentence,
                     "gate": {True: "pass", False: "fail", None: "n/a"}[e.passes], "gate_failures": e.gate,
                     "targets": e.targets,
                     "cells": {c.audit: cell_data(c) for c in e.verdict.cells},
                     "worst_recovered": [{"fact_id": r.fact_id, "answer": r.answer, "by": r.by, "prompt": r.prompt,
                                          "output_unlearned": r.output_unlearned} for r in e.worst]}
                    for e in board.entries],
    }


def gate_line(board: Leaderboard) -> str:
    """One sentence: which checkpoints the release gate lets through at the threshold."""
    passing = [e.model for e in board.entries if e.passes]
    failing = [e.model for e in board.entries if e.passes is False]
    return (f"Release gate (a raw recovery rate above {percent(board.threshold)} fails, as --fail-above does): "
            f"{len(passing)} pass ({', '.join(passing) or 'none'}), {len(failing)} fail "
            f"({', '.join(failing) or 'none'}).")
