"""Audit ``remind``: the input loss landscape around each example.

From "REMIND: Input Loss Landscapes Reveal Residual Memorization in
Post-Unlearning LLMs": unlearned examples sit on flat, low-curvature plateaus
of the loss over small input variations, while retained and unseen examples
sit in sharper basins, even where single-point losses overlap.  REMIND is a
detector (query access to losses only), not a recovery attack.

The paper's code is not public (its anonymous repository could not be
reached), so we follow its text: "semantically coherent neighborhoods" from
"an embedding-proximity perturbation".  Our concrete choices:

- example: the fact's question-answer text (the prompt template followed by
  the answer), the unit the model was trained and unlearned on in QA
  benchmarks; a fact's ``text`` field is often shared by several facts (a
  whole biography) and would blur the per-fact landscape;
- variants: ``r`` content-word tokens of the question replaced (r =
  1..max_radius) by nearest neighbors in the unlearned model's own
  input-embedding space that are other words (no casing or sub-word variants;
  never the prompt's scaffold, special tokens or the answer:
  :mod:`audits.remind.neighbors`), ``variants_per_radius`` per radius;
- loss: mean NLL of the answer tokens only (the unperturbed positions), all
  variants in large batches through :meth:`lab.core.engine.Engine.token_scores`;
- features: point loss, mean and spread of neighbor loss, slope of the mean
  loss against radius (least squares over r = 0..R, r = 0 being the example
  itself) and its curvature (twice the quadratic coefficient);
- flatness score = -slope (nats lost per replaced token, negated): high means
  a plateau, the paper's signature of unlearned data.  AUCs treat forget as
  the positive class; 0.5 means the forget set looks like the other split.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from audits.base import ROW_SCORING, Audit, AuditContext, fmt
from audits.remind.neighbors import Variant, make_variants, nearest_tokens
from lab.core.backend import Backend
from lab.core.errors import LabError
from lab.core.facts import SPLITS, Fact
from lab.core.options import AuditOptions, option
from lab.core.records import AuditResult, ItemRecord
from lab.core.unlearning_metrics import auc as members_auc
from lab.core.unlearning_metrics import roc_points

FEATURES = ("point_loss", "neighbor_mean", "neighbor_std", "slope", "curvature")
LOW_FPR = 0.01


@dataclass
class RemindOptions(AuditOptions):
    """Size of each example's neighborhood."""

    max_radius: int = option(4, "largest number of replaced tokens (at least 2, for a curvature)", low=2,
                             kind="size", space_cap=6)
    variants_per_radius: int = option(8, "neighbors drawn per radius", low=1, kind="size", space_cap=8)
    top_k: int = option(8, "a replaced token becomes one of its top_k nearest tokens (cosine, input embeddings)",
                        low=1, kind="size", space_cap=32)
    seed: int = option(0, "seed for the choice of positions and neighbors", kind="index")


@dataclass
class Landscape:
    """One example's loss over its neighborhood, with the derived features."""

    point_loss: float
    neighbor_mean: float
    neighbor_std: float
    slope: float
    curvature: float
    curve: list[float]  # mean loss at radius 0..R (radius 0: the example itself)
    spread: list[float]  # standard deviation of the neighbor losses at each radius (0 at radius 0)

    @property
    def flatness(self) -> float:
        return -self.slope


def landscape(point_loss: float, losses: list[list[float]]) -> Landscape:
    """Features of one example from its point loss and its neighbor losses per radius (1..R)."""
    radii = [r for r, group in enumerate(losses, start=1) if group]
    means = [float(np.mean(losses[r - 1])) for r in radii]
    x, y = np.array([0, *radii], dtype=float), np.array([point_loss, *means])
    every = [v for group in losses for v in group]
    return Landscape(
        point_loss=point_loss,
        neighbor_mean=float(np.mean(every)) if every else math.nan,
        neighbor_std=float(np.std(every)) if every else math.nan,
        slope=float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else math.nan,
        curvature=float(2 * np.polyfit(x, y, 2)[0]) if len(x) >= 3 else math.nan,
        curve=[point_loss] + [float(np.mean(g)) if g else math.nan for g in losses],
        spread=[0.0] + [float(np.std(g)) if g else math.nan for g in losses],
    )


def flatness_score(scape: Landscape) -> float:
    """REMIND's direction: flat neighborhoods (high score) suggest unlearned data."""
    return scape.flatness


def membership_score(scape: Landscape) -> float:
    """The single-point baseline (LOSS attack direction): a low loss suggests seen data."""
    return -scape.point_loss


def finite(values: list[float]) -> list[float]:
    """The values that are numbers (an example whose curve is too short has NaN features)."""
    return [v for v in values if math.isfinite(v)]


def tpr_at_fpr(positive: list[float], negative: list[float], fpr: float = LOW_FPR) -> float:
    """Highest true-positive rate reached with a false-positive rate at most ``fpr`` (NaN without both sides)."""
    points = roc_points(finite(positive), finite(negative))
    reached = [t for f, t in zip(points["fpr"], points["tpr"]) if f <= fpr]
    return max(reached) if reached else math.nan


def auc(positive: list[float], negative: list[float]) -> float:
    """ROC-AUC with the positives as members; NaN scores are dropped."""
    return members_auc(finite(positive), finite(negative))


def classifier_auc(features: np.ndarray, labels: list[str], seed: int) -> float:
    """Cross-validated macro one-vs-rest ROC-AUC of a logistic regression over the splits (NaN if too few)."""
    keep = ~np.isnan(features).any(axis=1)
    x, y = features[keep], np.asarray(labels)[keep]
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < 2:
        return math.nan
    folds = StratifiedKFold(n_splits=min(5, int(counts.min())), shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    proba = cross_val_predict(model, x, y, cv=folds, method="predict_proba")
    if len(classes) == 2:
        return float(roc_auc_score(y == classes[1], proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes))


@dataclass(frozen=True)
class Example:
    """One fact's question-answer row, where its answer starts, and its question's content-word positions."""

    row: tuple[int, ...]
    start: int
    positions: tuple[int, ...]


def content_positions(engine: Backend, prompt: str, question: str, prefix_len: int, text: str) -> list[int]:
    """Positions of the prompt's tokens that lie inside the question's words (no scaffold, no special token)."""
    at = prompt.find(question)
    low, high = (at, at + len(question)) if at >= 0 else (0, len(prompt))
    special = set(engine.tokenizer.all_special_ids)
    ids = engine.encode(text)
    return [i for i, span in enumerate(engine.encoder.offsets(text)[:prefix_len])
            if span and low <= span[0] and span[1] <= high and ids[i] not in special
            and any(c.isalnum() for c in text[span[0]:span[1]])]


def examples(engine: Backend, facts: list[Fact]) -> list[Example]:
    """Each fact's question-answer row under the engine's prompt format, with its perturbable positions."""
    out = []
    for fact in facts:
        prompt = engine.prompt(fact.question)
        prefix, target = engine.encode_continuation(prompt, fact.answer)
        text = engine.encoder.joined(prompt, fact.answer)
        positions = content_positions(engine, prompt, fact.question, len(prefix), text)
        out.append(Example(tuple(prefix + target), len(prefix), tuple(positions)))
    return out


def neighborhood(engine: Backend, items: list[Example], opts: RemindOptions) -> list[list[list[Variant]]]:
    """Variants of every example, per radius, from the engine's own input embeddings (other words only)."""
    special = set(engine.tokenizer.all_special_ids)
    used = {ex.row[i] for ex in items for i in ex.positions}
    piece = engine.tokenizer.convert_ids_to_tokens
    neighbors = nearest_tokens(engine.model.get_input_embeddings().weight, used, opts.top_k, special, piece=piece)
    rng = np.random.default_rng(opts.seed)
    return [[make_variants(ex.row, neighbors, r, opts.variants_per_radius, rng, ex.positions)
             for r in range(1, opts.max_radius + 1)] for ex in items]


def answer_losses(engine: Backend, rows: list[tuple[int, ...]], starts: list[int], desc: str) -> list[float]:
    """Mean NLL of each row's answer tokens (from ``start`` on), one batched engine call."""
    return [s.loss for s in engine.token_scores(rows, starts, desc=desc)]


def variant_losses(engine: Backend, items: list[Example], variants: list[list[list[Variant]]]) -> list[list[list[float]]]:
    """Answer loss of every variant, computed in one batched engine call and regrouped per example and radius."""
    flat = [(v.row, ex.start) for ex, per_example in zip(items, variants) for per_radius in per_example
            for v in per_radius]
    losses = iter(answer_losses(engine, [r for r, _ in flat], [s for _, s in flat], "REMIND neighbor losses"))
    return [[[next(losses) for _ in per_radius] for per_radius in per_example] for per_example in variants]


def direction_note(metrics: dict[str, float]) -> list[str]:
    """Which way the measured flatness points, beside the paper's claim (unlearned data flatter)."""
    value = metrics.get("auc_forget_vs_holdout", math.nan)
    if not math.isfinite(value):
        return []
    side = "flatter than" if value > 0.5 else "steeper than" if value < 0.5 else "as flat as"
    agrees = "as the paper reports" if value > 0.5 else "the opposite of the paper's finding" if value < 0.5 else ""
    return [f"measured direction: forget examples sit on landscapes {side} holdout ones "
            f"(AUC {value:.2f}){', ' + agrees if agrees else ''}"]


class RemindAudit(Audit[RemindOptions]):
    suite = True
    bench_role = ROW_SCORING
    name = "remind"
    title = "REMIND loss landscape"
    paper = "REMIND: Input Loss Landscapes Reveal Residual Memorization in Post-Unlearning LLMs"
    summary = ("how well the flatness of the loss around each example separates forget examples from holdout "
               "and retain ones (ROC-AUC, forget positive; 0.5: indistinguishable)")
    Options = RemindOptions
    needs = frozenset({"logprobs", "internals"})
    headline_keys = ("auc_forget_vs_holdout", "auc_forget_vs_retain", "tpr_at_1fpr")
    recovery_key = None

    def run(self, ctx: AuditContext[RemindOptions]) -> AuditResult:
        opts = ctx.options
        facts = ctx.facts.facts
        if not facts:
            raise LabError("remind needs at least one fact")
        engine = ctx.pair.unlearned
        items = examples(engine, facts)
        variants = neighborhood(engine, items, opts)
        rows, starts = [ex.row for ex in items], [ex.start for ex in items]
        points = answer_losses(engine, rows, starts, "REMIND point losses (unlearned)")
        points_base = answer_losses(ctx.pair.base, rows, starts, "REMIND point losses (base)")
        losses = variant_losses(engine, items, variants)
        scapes = [landscape(p, group) for p, group in zip(points, losses)]
        ctx.record(self.items(engine, facts, rows, variants, losses, scapes, points_base))
        metrics = self.metrics(facts, scapes, opts.seed)
        return AuditResult(
            metrics=metrics,
            artifacts={"examples": [{"fact_id": f.id, "split": f.split, "flatness": s.flatness, **asdict(s)}
                                    for f, s in zip(facts, scapes)],
                       "settings": asdict(opts)},
            notes=self.notes(facts, variants) + direction_note(metrics),
        )

    def workload(self, engine: Backend, facts: list[Fact]) -> list[tuple[int, ...]]:
        """Every neighbor variant this audit scores for ``facts`` with its default options."""
        variants = neighborhood(engine, examples(engine, facts), RemindOptions())
        return [v.row for per_fact in variants for per_radius in per_fact for v in per_radius]

    def items(self, engine: Backend, facts: list[Fact], rows: list[tuple[int, ...]], variants: list[list[list[Variant]]],
              losses: list[list[list[float]]], scapes: list[Landscape], points_base: list[float]) -> list[ItemRecord]:
        """One item per example: its text, both models' point losses, features, and every variant with its loss."""
        decode = engine.tokenizer.batch_decode
        texts = decode(rows, skip_special_tokens=True)
        items = []
        for fact, text, per_example, per_losses, scape, base_loss in zip(facts, texts, variants, losses, scapes,
                                                                          points_base):
            items.append(ItemRecord(
                audit=self.name, fact_id=fact.id, split=fact.split, prompt=text, answer=fact.answer,
                category="landscape", logprob_base=-base_loss, logprob_unlearned=-scape.point_loss,
                extra={**asdict(scape), "flatness": scape.flatness, "losses": per_losses,
                       "variants": [decode([v.row for v in group], skip_special_tokens=True) for group in per_example]},
            ))
        return items

    @staticmethod
    def metrics(facts: list[Fact], scapes: list[Landscape], seed: int) -> dict[str, float]:
        def scores(split: str, score: Callable[[Landscape], float]) -> list[float]:
            return [score(s) for f, s in zip(facts, scapes) if f.split == split]

        out = {}
        for prefix, score in (("", flatness_score), ("point_", membership_score)):
            out[f"{prefix}auc_forget_vs_holdout"] = auc(scores("forget", score), scores("holdout", score))
            out[f"{prefix}auc_forget_vs_retain"] = auc(scores("forget", score), scores("retain", score))
            out[f"{prefix}tpr_at_1fpr"] = tpr_at_fpr(scores("forget", score), scores("holdout", score))
        labels = [f.split for f in facts]
        table = np.array([[getattr(s, name) for name in FEATURES] for s in scapes], dtype=float)
        out["classifier_auc"] = classifier_auc(table, labels, seed)
        out["point_classifier_auc"] = classifier_auc(table[:, :1], labels, seed)
        for split in SPLITS:
            for name, score in (("flatness", flatness_score), ("point_loss", lambda s: s.point_loss)):
                values = scores(split, score)
                out[f"{name}_{split}"] = float(np.nanmean(values)) if values else math.nan
        return out

    @staticmethod
    def notes(facts: list[Fact], variants: list[list[list[Variant]]]) -> list[str]:
        notes = []
        short = sum(1 for per_example in variants if not all(per_example))
        if short:
            notes.append(f"{short} example(s) have fewer replaceable tokens than max_radius: their largest radii "
                         "are left out of their curves")
        missing = [s for s in ("forget", "holdout", "retain") if not any(f.split == s for f in facts)]
        if missing:
            notes.append(f"no {', '.join(missing)} facts: the AUCs that need them are n/a")
        return notes

    def figures(self, artifacts: dict[str, Any], items: pd.DataFrame) -> dict[str, go.Figure]:
        examples = pd.DataFrame(artifacts.get("examples") or [])
        if examples.empty:
            return {}
        figs = {}
        curves = go.Figure()
        for split, group in examples.groupby("split", sort=False):
            table = np.array(group["curve"].tolist(), dtype=float)
            curves.add_scatter(x=list(range(table.shape[1])), y=np.nanmean(table, axis=0), name=split,
                               mode="lines+markers", error_y=dict(type="data", array=np.nanstd(table, axis=0)))
        curves.update_layout(title="Input loss landscape: mean loss vs tokens replaced (unlearned model)",
                             xaxis_title="radius (tokens replaced)", yaxis_title="mean NLL per token")
        figs["landscape"] = curves
        figs["flatness"] = go.Figure(
            [go.Box(y=group["flatness"], name=split, boxpoints="all")
             for split, group in examples.groupby("split", sort=False)],
            layout=dict(title="Flatness (-slope of loss vs radius) per split", yaxis_title="flatness"),
        )
        forget, holdout = examples[examples["split"] == "forget"], examples[examples["split"] == "holdout"]
        if len(forget) and len(holdout):
            roc = go.Figure(layout=dict(title="Forget vs holdout ROC (unlearned model)",
                                        xaxis_title="false positive rate", yaxis_title="true positive rate"))
            for name, column, sign in (("landscape flatness", "flatness", 1), ("point loss", "point_loss", -1)):
                pos, neg = finite(list(sign * forget[column])), finite(list(sign * holdout[column]))
                points = roc_points(pos, neg)
                roc.add_scatter(x=points["fpr"], y=points["tpr"], name=f"{name} (AUC {fmt(auc(pos, neg))})",
                                mode="lines")
            roc.add_scatter(x=[0, 1], y=[0, 1], name="chance", mode="lines", line=dict(dash="dot"))
            figs["roc"] = roc
        return figs

    def verdict(self, metrics: dict[str, float | None]) -> str:
        m = metrics.get
        return (f"auc_forget_vs_holdout = {fmt(m('auc_forget_vs_holdout'))} from the loss landscape vs "
                f"{fmt(m('point_auc_forget_vs_holdout'))} from the point loss alone (0.5: the forget set looks "
                f"unseen); 3-split classifier AUC {fmt(m('classifier_auc'))} vs {fmt(m('point_classifier_auc'))}")
