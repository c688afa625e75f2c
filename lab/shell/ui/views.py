"""Tables, figures and text the tabs show, built from stored results and loaded models.

Everything here is a pure function of the store or the engines, so the Audit
tab (right after a run) and the Results tab (any run, any time later) show
exactly the same things.  Audit figures come from each audit's own
``figures(artifacts, items)``; an audit without figures of its own (``direct``)
gets a generic one: the hit rates of both models by split.
"""

from __future__ import annotations

import html
import json
import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from audits import get_audit
from lab.core.engine import Engine
from lab.core.facts import FactSet
from lab.core.models import ModelPair, tokenizer_mismatch
from lab.core.store import Store
from lab.shell.report.style import styled
from lab.shell.ui.diff import Scored, compare_outputs
from lab.shell.verdict import run_label

log = logging.getLogger("lab.shell.ui")
PLOT_HEIGHT = 360


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


# ---------------------------------------------------------------------- models
MODEL_COLUMNS = ["role", "model", "architecture", "parameters", "device", "dtype", "vocabulary", "content hash"]


def engine_row(role: str, engine: Engine) -> dict[str, Any]:
    info = engine.info
    return {"role": role, "model": info.ref, "architecture": info.architecture,
            "parameters": human_count(info.parameters), "device": info.device, "dtype": info.dtype,
            "vocabulary": len(engine.tokenizer), "content hash": info.content_hash[:12] or "-"}


def models_frame(pair: ModelPair) -> pd.DataFrame:
    return pd.DataFrame([engine_row("base", pair.base), engine_row("unlearned", pair.unlearned)], columns=MODEL_COLUMNS)


def tokenizer_check(pair: ModelPair) -> str:
    """One line: do both models map text to the same tokens?"""
    problem = tokenizer_mismatch(pair.base, pair.unlearned)
    if problem:
        return f"✗ tokenizer check: {problem}"
    return f"✓ tokenizer check: identical vocabularies ({len(pair.base.tokenizer)} tokens) and special tokens"


MANIFEST_COLUMNS = ["model", "forget", "retain", "holdout"]


def manifest_frame(manifest: dict[str, Any] | None) -> pd.DataFrame:
    """The demo's measured greedy accuracy per model and split (what the build recorded), in percent."""
    rows = [{"model": name, **{s: f"{v:.0%}" for s, v in acc.items()}}
            for name, acc in (manifest or {}).get("accuracy", {}).items()]
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def facts_summary(facts: FactSet) -> str:
    """What a loaded fact set or suite holds: items per kind and split, its subsets, and what is missing."""
    counts = ", ".join(f"{n} {split}" for split, n in facts.counts().items())
    source = facts.source.rsplit("/", 1)[-1] if not facts.suite else facts.source
    lines = [f"**{len(facts)} facts** ({counts}) from `{source}`" + (f" · suite **{facts.suite}**" if facts.suite
                                                                       else "")]
    breakdown = facts.breakdown()
    if len(breakdown) > 1 or facts.suite:
        lines += ["", "| kind | forget | retain | holdout |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {kind} | {row['forget']} | {row['retain']} | {row['holdout']} |" for kind, row in breakdown.items()]
    subsets = facts.subsets()
    if len(subsets) > 1:
        lines += ["", "Subsets: " + ", ".join(f"{name} ({n})" for name, n in subsets.items())]
    lines += [f"- ⚠ {w}" for w in facts.warnings]
    return "\n".join(lines)


# --------------------------------------------------------------------- metrics
def metrics_frame(metrics: dict[str, dict[str, float | None]]) -> pd.DataFrame:
    """Each audit's headline keys with their 95% intervals (every key is in the report and the export)."""
    def rounded(value: float | None) -> float | None:
        return None if value is None or not math.isfinite(value) else round(value, 4)

    rows = [{"audit": audit, "metric": key, "value": rounded(value), "95% low": rounded(low), "95% high": rounded(high)}
            for audit, values in metrics.items() for key, value, low, high in get_audit(audit)().headline(values)]
    return pd.DataFrame(rows, columns=["audit", "metric", "value", "95% low", "95% high"])


def audit_statuses(store: Store, run_id: str) -> dict[str, str]:
    """Every audit the run planned, with its stored status (``not run`` for one it never reached)."""
    run = store.run(run_id)
    planned = [a for a in str(run.get("audits") or "").split(",") if a]
    statuses = {a: "not run" for a in planned}
    statuses.update(zip(store.audits(run_id)["audit"], store.audits(run_id)["status"]))
    return statuses


def run_summary(store: Store, run_id: str) -> str:
    """The run's status as people read it (a run where 8 of 9 audits finished is partial, not failed),
    what failed and why (an audit cut short by the run's end gives the run's reason: "interrupted: stopped by
    the user"), and each finished audit's own one-line verdict."""
    run = store.run(run_id)
    audits = store.audits(run_id)
    lines = [f"### Run `{run_id}`: {run_label(run['status'], audit_statuses(store, run_id))}",
             f"{run['base_ref']} → {run['unlearned_ref']} · {len(store.items(run_id))} items stored"]
    for r in audits[~audits["status"].isin(["complete", "skipped"])].itertuples():
        reason = (r.error if isinstance(r.error, str) and r.error else None) or run.get("error") or ""
        lines.append(f"- ✗ **{r.audit}** {r.status}" + (f": {reason.splitlines()[0]}" if reason.strip() else ""))
    lines += [f"- **{audit}**: {get_audit(audit)().verdict(values)}"
              for audit, values in store.metrics_dict(run_id).items()]
    return "\n".join(lines)


def compare_frame(store: Store, run_ids: list[str]) -> pd.DataFrame:
    """Metrics of several runs side by side: one row per audit and metric, one column per run."""
    frames = [store.metrics(run_id).assign(run=run_id) for run_id in run_ids]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["audit", "metric"])
    long = pd.concat(frames).rename(columns={"key": "metric"})
    # unstack keeps only (audit, metric) pairs that exist, and keeps metrics stored as NULL.
    wide = long.groupby(["audit", "metric", "run"], sort=False)["value"].first().unstack("run")
    return wide.reindex(columns=run_ids).round(4).reset_index()


# --------------------------------------------------------------------- figures
def hit_rates_figure(audit: str, items: pd.DataFrame) -> go.Figure | None:
    """Share of items each model answers right, by split (and category where an audit has them)."""
    if items.empty or items["hit_base"].isna().all():
        return None
    group = items["split"].fillna("") + items["category"].fillna("").map(lambda c: f" · {c}" if c else "")
    fig = go.Figure()
    for model in ("base", "unlearned"):
        rates = items[f"hit_{model}"].astype("float").groupby(group).mean()
        fig.add_bar(x=list(rates.index), y=list(rates.values), name=model,
                    text=[f"{v:.0%}" for v in rates.values], textposition="outside")
    fig.update_layout(title=f"{audit}: answers that hit the gold answer", barmode="group",
                      yaxis=dict(title="hit rate", range=[0, 1.12], tickformat=".0%"))
    return fig


def run_figures(store: Store, run_id: str) -> dict[str, list[tuple[str, go.Figure]]]:
    """Every figure of a run, grouped per audit and styled (:func:`lab.shell.report.style.styled`):
    each audit's own, or the generic hit-rate chart for an audit without any."""
    artifacts = store.artifacts(run_id)
    out: dict[str, list[tuple[str, go.Figure]]] = {}
    for audit in store.audits(run_id)["audit"]:
        items = store.items(run_id, audit)
        try:
            figures = get_audit(audit)().figures(artifacts.get(audit, {}), items)
        except Exception:  # noqa: BLE001 - one audit's broken plot must not hide the others
            log.exception("figures of audit %s failed", audit)
            figures = {}
        generic = None if figures else hit_rates_figure(audit, items)
        if generic is not None:
            figures = {"hit rates": generic}
        if figures:
            out[audit] = [(name, styled(fig, PLOT_HEIGHT)) for name, fig in figures.items()]
    return out


# ----------------------------------------------------------------------- items
ITEM_COLUMNS = ["#", "audit", "fact_id", "split", "category", "prompt", "answer", "output_base",
                "output_unlearned", "hit_base", "hit_unlearned", "recovered"]
ITEM_WIDTHS = ["44px", "80px", "130px", "70px", "90px", "260px", "110px", "150px", "150px", "70px", "70px", "80px"]


def show_cell(value: Any) -> str:
    """A stored value as the detail view writes it: dashes for missing, yes/no, 4 decimals."""
    if value is None or (not isinstance(value, (str, list, dict)) and pd.isna(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def item_scores(row: pd.Series) -> dict[str, Scored]:
    """Each model's stored scores of one item, for the diff view's badges."""
    return {model: Scored(None if pd.isna(row[f"hit_{model}"]) else bool(row[f"hit_{model}"]),
                          _number(row[f"rouge_{model}"]), _number(row[f"logprob_{model}"]))
            for model in ("base", "unlearned")}


def item_detail(row: pd.Series) -> str:
    """One stored item in full: prompt, gold answer, both outputs diffed word by word with their scores
    (:func:`lab.shell.ui.diff.compare_outputs`), whether the attack recovered it, and its extra fields."""
    extra = row.get("extra")
    has_extra = isinstance(extra, str) and extra not in ("{}", "")
    extra_text = json.dumps(json.loads(extra), indent=1)[:2000] if has_extra else ""
    recovered = row.get("recovered")
    badge = ("" if recovered is None or pd.isna(recovered) else
             "<span class='badge badge-miss'>recovered by the attack</span>" if recovered else
             "<span class='badge badge-hit'>not recovered</span>")
    parts = [
        f"<div class='item-head'>{show_cell(row['audit'])} · {show_cell(row['fact_id'])} · {show_cell(row['split'])}"
        f"{' · ' + show_cell(row['category']) if row.get('category') else ''} {badge}</div>",
        f"<div class='item-label'>Prompt</div><pre>{show_cell(row['prompt'])}</pre>",
        compare_outputs(str(row["output_base"] or ""), str(row["output_unlearned"] or ""), str(row["answer"] or ""),
                        item_scores(row)),
    ]
    if extra_text:
        parts.append(f"<div class='item-label'>Extra</div><pre>{html.escape(extra_text)}</pre>")
    return "<div class='item-detail'>" + "".join(parts) + "</div>"
