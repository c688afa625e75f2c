"""Audit ``surrogates``: Proximal Surrogate Generation (PSG), from "The Erasure
Illusion: Stress-Testing the Generalization of LLM Forgetting Evaluation".

Standard unlearning metrics look only at the forget set D_u.  PSG builds a
surrogate set from D_u (probes derived in meaning, yet distinct in embedding
space) and computes every metric on both: a model can pass a metric on D_u
and still show the knowledge on the surrogates, so the metric overestimates
forgetting.

Here: candidates come from pluggable generators (:mod:`audits.surrogates.generators`),
are kept when their cosine similarity to the source question lies in
[band_low, band_high] (:mod:`audits.surrogates.embedder`; the embedder used is recorded),
and each kept probe is answered and scored by both models.  Per metric (all
oriented "higher = the model shows the knowledge"): ``<metric>_du`` and
``<metric>_surrogate`` for the unlearned model, ``_base`` variants for the
base model, ``<metric>_gap`` = surrogate - D_u, and ``<metric>_illusion``: 1
when the metric says "forgotten" on D_u (the unlearned model keeps at most
``forgotten_below`` of the base model's value) while on the surrogates it keeps
more than that, 0 when not, n/a when the base value is 0.  Values are averaged
per fact first (a fact's surrogates averaged together), over the forget facts
that have at least one kept surrogate, so D_u and surrogate values compare the
same facts.  The truth ratio here is value-level, mean max(0, 1 - R) with
R = P(perturbed answers) / P(answer) after the same prompt, for probes whose
gold is the answer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

from audits.base import Answered, Audit, AuditContext, answer_both, fmt, item_for, recovery
from audits.surrogates.embedder import cosine_to_sources, load_embedder
from audits.surrogates.generators import TEMPLATE_GENERATORS, Generator, Surrogate, candidates, llm_rewriter, rejection
from lab.core import unlearning_metrics as um
from lab.core.errors import LabError
from lab.core.facts import Fact
from lab.core.models import PAIR_ROLES
from lab.core.options import AuditOptions, option
from lab.core.probes import Probe, ProbeScores, score_probes
from lab.core.records import AuditResult, ItemRecord

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

METRICS = ("accuracy", "rouge_l", "prob", "truth_ratio", "exact_memorization", "extraction_strength")


GeneratorName = Literal["rephrase", "reverse", "cloze", "narrative", "llm"]


@dataclass
class SurrogatesOptions(AuditOptions):
    """Knobs of the surrogate set."""

    generators: tuple[GeneratorName, ...] = option(("rephrase", "reverse", "cloze", "narrative"),
                                               "candidate generators (add llm for the LLM rewriter)")
    band_low: float = option(0.5, "keep candidates whose cosine similarity to the source question is at least this",
                             low=-1.0, high=1.0)
    band_high: float = option(0.9, "... and at most this (derived, yet distinct)", low=-1.0, high=1.0)
    embedder: Literal["auto", "minilm", "base"] = option(
        "auto", "sentence embedder: minilm (packaged all-MiniLM-L6-v2), base (mean-pooled hidden states of the base "
        "model), auto (minilm when installed)")
    rewriter: str = option("base", "the LLM of the llm generator: base, or any model reference", kind="model",
                           words=("base",))
    forgotten_below: float = option(0.5, "forgotten: the unlearned model keeps at most this share of the base's "
                                    "value", low=0.0, high=1.0)

    def check(self) -> None:
        if self.band_low > self.band_high:
            raise LabError(f"options surrogates.band_low/band_high must satisfy low <= high, got "
                           f"[{self.band_low}, {self.band_high}]")


@dataclass
class Probed:
    """One probe (D_u question or kept surrogate) with both models' metric values."""

    fact: Fact
    prompt: str
    surrogate: Surrogate | None  # None for the D_u question itself
    similarity: float
    answered: Answered
    scores: dict[str, ProbeScores]

    def values(self, model: str) -> dict[str, float]:
        """Every metric for one model, oriented "higher = shows the knowledge"."""
        hit = self.answered.score_base if model == "base" else self.answered.score_unlearned
        s = self.scores[model]
        return {"accuracy": float(hit.hit), "rouge_l": hit.rouge_l, "prob": s.prob,
                "truth_ratio": um.true_better([s.truth_ratio]), "exact_memorization": s.exact_memorization,
                "extraction_strength": s.extraction_strength}


def build_generators(ctx: AuditContext, opts: SurrogatesOptions) -> list[Generator]:
    """The generators named in the options; ``llm`` gets its rewriter model through the run (base by default)."""
    return [llm_rewriter(ctx.model(opts.rewriter), max(ctx.max_new_tokens, 32)) if name == "llm"
            else TEMPLATE_GENERATORS[name] for name in opts.generators]


def fact_means(probed: Sequence[Probed], model: str, metric: str) -> dict[str, float]:
    """Per fact, the mean of one metric over its probes (NaN values skipped)."""
    groups: dict[str, list[float]] = {}
    for p in probed:
        groups.setdefault(p.fact.id, []).append(p.values(model)[metric])
    return {fid: um.mean(values) for fid, values in groups.items()}


def paired(du: dict[str, float], sur: dict[str, float]) -> tuple[float, float]:
    """Means over the facts where both the D_u and the surrogate value exist."""
    both = [fid for fid in sur if math.isfinite(sur[fid]) and math.isfinite(du.get(fid, math.nan))]
    return um.mean(du[f] for f in both), um.mean(sur[f] for f in both)


def illusion(du: float, sur: float, du_base: float, sur_base: float, forgotten_below: float) -> float:
    """1 when D_u looks forgotten relative to the base but the surrogates do not; NaN without a base value."""
    if not all(math.isfinite(v) for v in (du, sur, du_base, sur_base)) or du_base <= 0 or sur_base <= 0:
        return math.nan
    return float(du / du_base <= forgotten_below < sur / sur_base)


class SurrogatesAudit(Audit):
    name = "surrogates"
    title = "Surrogate set (PSG)"
    paper = "The Erasure Illusion: Stress-Testing the Generalization of LLM Forgetting Evaluation"
    summary = ("share of the forget facts the unlearned model gives up on the plain question but answers "
               "under a surrogate probe derived from it")
    Options = SurrogatesOptions
    headline_keys = ("recovery_rate", "accuracy_du", "accuracy_surrogate", "accuracy_gap")

    def run(self, ctx: AuditContext) -> AuditResult:
        opts: SurrogatesOptions = ctx.options
        facts = ctx.facts.split("forget")
        if not facts:
            raise LabError("the surrogates audit builds its probes from forget facts, and there are none")
        base = ctx.pair.base
        cands = candidates(facts, build_generators(ctx, opts))
        embedder, embedder_note = load_embedder(opts.embedder, base)
        questions = {f.id: f.question for f in facts}
        sims = cosine_to_sources(embedder, [c.text for c in cands], [questions[c.fact_id] for c in cands])
        reasons = [rejection(c, questions[c.fact_id], s, opts.band_low, opts.band_high) for c, s in zip(cands, sims)]
        kept = [(c, float(s)) for c, s, r in zip(cands, sims, reasons) if not r]
        du, surrogates = self._probe(ctx, facts, kept)
        targets = ctx.baseline.targets()
        recovered = {p.fact.id for p in surrogates if p.answered.score_unlearned.hit}
        self._record(ctx, du, surrogates, {t.id for t in targets})
        metrics = self._metrics(du, surrogates, opts.forgotten_below)
        metrics.update(recovery("recovery_rate", targets, recovered))
        for name in opts.generators:
            metrics.update(recovery(f"{name}_recovery_rate", targets, {
                p.fact.id for p in surrogates if p.surrogate.generator == name and p.answered.score_unlearned.hit}))
        metrics.update(surrogates_generated=float(len(cands)), surrogates_kept=float(len(kept)),
                       facts_with_surrogates=float(len({p.fact.id for p in surrogates})),
                       mean_similarity=um.mean(s for _, s in kept), targets=float(len(targets)))
        artifacts = {
            "embedder": embedder.describe(),
            "band": [opts.band_low, opts.band_high],
            "candidates": [{"fact_id": c.fact_id, "generator": c.generator, "text": c.text, "kind": c.kind,
                            "gold_field": c.gold_field, "similarity": float(s), "rejected": r}
                           for c, s, r in zip(cands, sims, reasons)],
            "table": [{"metric": m, **{k: metrics[f"{m}_{k}"] for k in
                                       ("du", "surrogate", "gap", "du_base", "surrogate_base", "illusion")}}
                      for m in METRICS],
            "per_generator": self._per_generator(surrogates, opts.generators),
        }
        notes = [embedder_note, f"{len(kept)} of {len(cands)} candidates kept in the similarity band "
                 f"[{opts.band_low}, {opts.band_high}] for {int(metrics['facts_with_surrogates'])} of "
                 f"{len(facts)} forget facts"]
        flagged = [m for m in METRICS if metrics[f"{m}_illusion"] == 1.0]
        if flagged:
            notes.append("erasure illusion (forgotten on D_u, still there on the surrogates): " + ", ".join(flagged))
        return AuditResult(metrics=metrics, artifacts=artifacts, notes=notes)

    def _probe(self, ctx: AuditContext, facts: list[Fact],
               kept: list[tuple[Surrogate, float]]) -> tuple[list[Probed], list[Probed]]:
        """Both models on the D_u questions and on the kept surrogates, all batched."""
        pair, baseline = ctx.pair, ctx.baseline
        by_id = {f.id: f for f in facts}
        du_probes = [Probe(pair.base.prompt(f.question), f.answer, f.answer, f.perturbed_answers) for f in facts]
        sur_probes = [Probe(c.prompt(pair.base), c.gold, c.gold if c.gold_field == "answer" else "",
                            by_id[c.fact_id].perturbed_answers if c.gold_field == "answer" else ())
                      for c, _ in kept]
        probes = du_probes + sur_probes
        scores = {"base": score_probes(pair.base, probes, "surrogate metrics (base)"),
                  "unlearned": score_probes(pair.unlearned, probes, "surrogate metrics (unlearned)")}
        answered = answer_both(pair, [p.prompt for p in sur_probes], [p.gold for p in sur_probes],
                               ctx.max_new_tokens, "surrogate probes")
        du = [Probed(f, p.prompt, None, 1.0, baseline.answered[f.id], {m: scores[m][i] for m in PAIR_ROLES})
              for i, (f, p) in enumerate(zip(facts, du_probes))]
        offset = len(du_probes)
        sur = [Probed(by_id[c.fact_id], p.prompt, c, s, a, {m: scores[m][offset + i] for m in PAIR_ROLES})
               for i, ((c, s), p, a) in enumerate(zip(kept, sur_probes, answered))]
        return du, sur

    def _record(self, ctx: AuditContext, du: list[Probed], surrogates: list[Probed], target_ids: set[str]) -> None:
        items: list[ItemRecord] = []
        for p in [*du, *surrogates]:
            extra: dict[str, Any] = {"values": {m: p.values(m) for m in PAIR_ROLES}, "similarity": p.similarity}
            category, recovered = "du", None
            if p.surrogate:
                category = p.surrogate.generator
                recovered = p.answered.score_unlearned.hit if p.fact.id in target_ids else None
                extra.update(text=p.surrogate.text, kind=p.surrogate.kind, gold_field=p.surrogate.gold_field,
                             source_question=p.fact.question)
            item = item_for(self.name, p.fact, p.prompt, p.answered, category=category, recovered=recovered,
                            logprobs=(p.scores["base"].logprob, p.scores["unlearned"].logprob), extra=extra)
            items.append(dataclasses.replace(item, answer=p.surrogate.gold) if p.surrogate else item)
        ctx.record(items)

    @staticmethod
    def _metrics(du: list[Probed], surrogates: list[Probed], forgotten_below: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in METRICS:
            for model in PAIR_ROLES:
                d, s = paired(fact_means(du, model, metric), fact_means(surrogates, model, metric))
                suffix = "" if model == "unlearned" else f"_{model}"
                out[f"{metric}_du{suffix}"], out[f"{metric}_surrogate{suffix}"] = d, s
            out[f"{metric}_gap"] = out[f"{metric}_surrogate"] - out[f"{metric}_du"]
            out[f"{metric}_illusion"] = illusion(out[f"{metric}_du"], out[f"{metric}_surrogate"],
                                                 out[f"{metric}_du_base"], out[f"{metric}_surrogate_base"],
                                                 forgotten_below)
        return out

    @staticmethod
    def _per_generator(surrogates: list[Probed], generators: Sequence[str]) -> list[dict[str, Any]]:
        rows = []
        for name in generators:
            group = [p for p in surrogates if p.surrogate.generator == name]
            rows.append({"generator": name, "kept": len(group),
                         "accuracy_base": um.mean(p.values("base")["accuracy"] for p in group),
                         "accuracy_unlearned": um.mean(p.values("unlearned")["accuracy"] for p in group),
                         "mean_similarity": um.mean(p.similarity for p in group)})
        return rows

    def figures(self, artifacts: dict[str, Any], items: "pd.DataFrame") -> dict[str, "go.Figure"]:
        figs = {}
        if artifacts.get("table"):
            figs["du_vs_surrogate"] = du_vs_surrogate_figure(artifacts["table"])
        if artifacts.get("candidates"):
            figs["similarity"] = similarity_figure(artifacts["candidates"], artifacts.get("band") or [0, 1])
        if artifacts.get("per_generator"):
            figs["generators"] = generator_figure(artifacts["per_generator"])
        return figs

    def verdict(self, metrics: dict[str, float | None]) -> str:
        flagged = [m for m in METRICS if metrics.get(f"{m}_illusion") == 1.0]
        line = (f"recovery_rate = {fmt(metrics.get('recovery_rate'), '{:.1%}')} under surrogate probes; "
                f"accuracy on D_u {fmt(metrics.get('accuracy_du'))} vs surrogates "
                f"{fmt(metrics.get('accuracy_surrogate'))} (unlearned)")
        if flagged:
            return line + "; erasure illusion on: " + ", ".join(flagged)
        return line + "; no metric shows an erasure illusion"


# -------------------------------------------------------------------- figures
def du_vs_surrogate_figure(table: list[dict[str, Any]]) -> "go.Figure":
    """Each metric on D_u and on the surrogates, for both models."""
    import plotly.graph_objects as go

    fig = go.Figure(layout=dict(title="Standard metrics on D_u vs on the surrogate set", barmode="group",
                                yaxis_title="value (higher = shows the knowledge)"))
    for key, name in (("du_base", "base, D_u"), ("surrogate_base", "base, surrogates"),
                      ("du", "unlearned, D_u"), ("surrogate", "unlearned, surrogates")):
        fig.add_bar(x=[r["metric"] for r in table], y=[r[key] for r in table], name=name)
    return fig


def similarity_figure(cands: list[dict[str, Any]], band: list[float]) -> "go.Figure":
    """Candidate similarities per generator, with the kept band."""
    import plotly.graph_objects as go

    fig = go.Figure(layout=dict(title="Candidate similarity to the source question (kept inside the band)",
                                xaxis_title="cosine similarity", yaxis_title="candidates", barmode="stack"))
    for name in dict.fromkeys(c["generator"] for c in cands):
        fig.add_histogram(x=[c["similarity"] for c in cands if c["generator"] == name], name=name,
                          xbins=dict(size=0.05))
    for edge in band:
        fig.add_vline(x=edge, line_dash="dash", line_color="gray")
    return fig


def generator_figure(rows: list[dict[str, Any]]) -> "go.Figure":
    """Accuracy of both models on each generator's surrogates."""
    import plotly.graph_objects as go

    names = [f"{r['generator']} ({r['kept']})" for r in rows]
    fig = go.Figure(layout=dict(title="Accuracy on surrogates per generator (kept probes)", barmode="group",
                                yaxis_title="accuracy"))
    fig.add_bar(x=names, y=[r["accuracy_base"] for r in rows], name="base")
    fig.add_bar(x=names, y=[r["accuracy_unlearned"] for r in rows], name="unlearned")
    return fig
