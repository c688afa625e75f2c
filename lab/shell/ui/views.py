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

log = logging.getLogger("lab.shell.ui")
MODEL_COLORS = {"base": "#4f46e5", "unlearned": "#e11d48"}
PLOT_LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=50, b=40), height=340,
                   font=dict(family="Inter, ui-sans-serif, system-ui, sans-serif", size=12))


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
    """The demo's measured greedy accuracy per model and split (what the build recorded)."""
    rows = [{"model": name, **{s: round(v, 3) for s, v in acc.items()}}
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


def verdicts_markdown(metrics: dict[str, dict[str, float | None]]) -> str:
    """Each audit's one-line verdict (the audit's own ``verdict``)."""
    return "\n".join(f"- **{audit}**: {get_audit(audit)().verdict(values)}" for audit, values in metrics.items())


def run_summary(store: Store, run_id: str) -> str:
    run = store.run(run_id)
    audits = store.audits(run_id)
    failed = audits[audits["status"] != "complete"]
    lines = [f"### Run `{run_id}`: {run['status']}",
             f"{run['base_ref']} → {run['unlearned_ref']} · {len(store.items(run_id))} items stored"]
    lines += [f"- ✗ **{r.audit}** {r.status}: {str(r.error or '').splitlines()[0] if r.error else ''}"
              for r in failed.itertuples()]
    metrics = store.metrics_dict(run_id)
    if metrics:
        lines += ["", verdicts_markdown(metrics)]
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
        fig.add_bar(x=list(rates.index), y=list(rates.values), name=model, marker_color=MODEL_COLORS[model],
                    text=[f"{v:.0%}" for v in rates.values], textposition="outside")
    fig.update_layout(title=f"{audit}: answers that hit the gold answer", barmode="group",
                      yaxis=dict(title="hit rate", range=[0, 1.12], tickformat=".0%"), **PLOT_LAYOUT)
    return fig


def run_figures(store: Store, run_id: str) -> list[tuple[str, go.Figure]]:
    """Every figure of a run: each audit's own, or the generic hit-rate chart for an audit without any."""
    artifacts = store.artifacts(run_id)
    out: list[tuple[str, go.Figure]] = []
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
        out += [(f"{audit} · {name}", fig) for name, fig in figures.items()]
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


def item_detail(row: pd.Series) -> str:
    """One stored item in full: prompt, gold answer, both outputs and every score (HTML-escaped)."""
    extra = row.get("extra")
    has_extra = isinstance(extra, str) and extra not in ("{}", "")
    extra_text = json.dumps(json.loads(extra), indent=1)[:2000] if has_extra else ""
    parts = [
        f"<div class='item-head'>{show_cell(row['audit'])} · {show_cell(row['fact_id'])} · {show_cell(row['split'])}"
        f"{' · ' + show_cell(row['category']) if row.get('category') else ''}</div>",
        f"<div class='item-label'>Prompt</div><pre>{show_cell(row['prompt'])}</pre>",
        f"<div class='item-label'>Gold answer</div><pre>{show_cell(row['answer'])}</pre>",
        "<div class='item-pair'>",
    ]
    for model in ("base", "unlearned"):
        parts.append(
            f"<div class='item-side {model}'><div class='item-label'>{model}</div>"
            f"<pre>{show_cell(row[f'output_{model}'])}</pre>"
            f"<div class='item-scores'>hit {show_cell(row[f'hit_{model}'])}"
            f" · ROUGE-L {show_cell(row[f'rouge_{model}'])}"
            f" · answer log-prob {show_cell(row[f'logprob_{model}'])}</div></div>"
        )
    parts.append("</div>")
    parts.append(f"<div class='item-scores'>recovered by the attack: {show_cell(row['recovered'])}</div>")
    if extra_text:
        parts.append(f"<div class='item-label'>Extra</div><pre>{html.escape(extra_text)}</pre>")
    return "<div class='item-detail'>" + "".join(parts) + "</div>"
