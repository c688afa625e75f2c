"""Audit ``surrogates``: Proximal Surrogate Generation (PSG), from "The Erasure
Illusion: Stress-Testing the Generalization of LLM Forgetting Evaluation".

Standard unlearning metrics look only at the forget set D_u.  PSG builds a
surrogate set from D_u (probes derived in meaning, yet distinct in embedding
space) and computes every metric on both: a model can pass a metric on D_u
and still show the knowledge on the surrogates, so the metric overestimates
forgetting.

Here: an LLM rewriter (the base model unless another is named) writes several
samples per item, and for the items none of whose rewrites is kept the
templates of :mod:`audits.surrogates.generators` stand in (``source=auto``;
``llm`` and ``templates`` use one side only).  A candidate is kept when its
cosine similarity to the source lies in [band_low, band_high]
(:mod:`audits.surrogates.embedder`; the embedder used is recorded), and each
kept probe is scored by both models.  Question items and passage items
(MUSE-style continuations and raw texts: the opening is the source, the
continuation the gold) are reported apart, passage keys prefixed
``passage_``.

Per metric (all oriented "higher = the model shows the knowledge"):
``<metric>_du`` and ``<metric>_surrogate`` for the unlearned model, ``_base``
variants for the base model, ``<metric>_gap`` = surrogate - D_u, and
``<metric>_illusion``: 1 when the metric says "forgotten" on D_u (the unlearned
model keeps at most ``forgotten_below`` of the base model's value) while on
the surrogates it keeps more than that, 0 when not, n/a when the base value is
0.  Values are averaged per item first (an item's surrogates averaged
together), over the forget items that have at least one kept surrogate, so D_u
and surrogate values compare the same items.  The truth ratio here is
value-level, mean max(0, 1 - R) with R = P(perturbed answers) / P(answer)
after the same prompt, for probes whose gold is the answer.  Membership
inference (LOSS, ZLib, Min-K%, Min-K%++; :mod:`lab.core.membership`) is run
on the probes of the forget items against the same kind of probes built for
the holdout items: ``mia_<attack>_du`` / ``_surrogate`` are ROC-AUCs, and
their illusion reads the signal above chance, AUC - 0.5.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

from audits.base import Answered, Audit, AuditContext, answer_both, fit_both, fmt, item_for, recovery
from audits.surrogates.embedder import Embedder, cosine_to_sources, load_embedder
from audits.surrogates.generators import (
    COMPLETION,
    QUESTION,
    TEMPLATE_GENERATORS,
    Source,
    Surrogate,
    candidates,
    llm_rewriter,
    rejection,
    source_of,
)
from lab.core import unlearning_metrics as um
from lab.core.backend import Backend
from lab.core.errors import LabError
from lab.core.facts import Fact
from lab.core.fitting import fits, passage_tokens
from lab.core.membership import MIA_NAMES, MiaText, membership_scores
from lab.core.models import PAIR_ROLES
from lab.core.options import AuditOptions, option
from lab.core.probes import Probe, ProbeScores, score_probes
from lab.core.records import AuditResult, ItemRecord

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

METRICS = ("accuracy", "rouge_l", "prob", "truth_ratio", "exact_memorization", "extraction_strength")
PASSAGE_METRICS = ("rouge_l", "prob", "exact_memorization", "extraction_strength")
MIA_METRICS = tuple(MIA_NAMES.values())
GROUPS = {"": METRICS, "passage_": PASSAGE_METRICS}  # key prefix -> the metrics that apply
VALUE_KEYS = ("du", "surrogate", "gap", "du_base", "surrogate_base", "illusion")

TemplateName = Literal["rephrase", "reverse", "cloze", "narrative", "passage"]


@dataclass
class SurrogatesOptions(AuditOptions):
    """Knobs of the surrogate set."""

    source: Literal["auto", "llm", "templates"] = option(
        "auto", "auto: the LLM rewriter, with the templates for items none of whose rewrites is kept; llm: the "
        "rewriter only; templates: the templates only (offline, deterministic)")
    generators: tuple[TemplateName, ...] = option(("rephrase", "reverse", "cloze", "narrative", "passage"),
                                                  "template generators")
    rewriter: str = option("base", "the LLM rewriter: base, unlearned, reference, or any model reference",
                           kind="model", words=("base", "unlearned", "reference"))
    samples: int = option(4, "rewrites per item (1: greedy; more: sampled at temperature)", low=1, high=32,
                          kind="size", space_cap=8)
    temperature: float = option(0.8, "sampling temperature of the rewrites", low=0.05, high=2.0)
    rewriter_max_new_tokens: int = option(48, "length of a rewrite", low=1, kind="tokens")
    passage_tokens: int = option(64, "answer length for passage probes (continuations)", low=1, kind="tokens")
    band_low: float = option(0.5, "keep candidates whose cosine similarity to the source is at least this",
                             low=-1.0, high=1.0)
    band_high: float = option(0.9, "... and at most this (derived, yet distinct)", low=-1.0, high=1.0)
    embedder: Literal["auto", "minilm", "base"] = option(
        "auto", "sentence embedder: minilm (packaged all-MiniLM-L6-v2), base (mean-pooled hidden states of the base "
        "model), auto (minilm when installed)")
    forgotten_below: float = option(0.5, "forgotten: the unlearned model keeps at most this share of the base's "
                                    "value", low=0.0, high=1.0)
    mia_k: float = option(um.MIN_K, "share of lowest-scoring tokens in Min-K% and Min-K%++", low=1e-9, high=1.0)

    def check(self) -> None:
        if self.band_low > self.band_high:
            raise LabError(f"options surrogates.band_low/band_high must satisfy low <= high, got "
                           f"[{self.band_low}, {self.band_high}]")


@dataclass
class Probed:
    """One probe (an item's plain source or a kept surrogate) with both models' scores."""

    fact: Fact
    prompt: str
    gold: str
    surrogate: Surrogate | None  # None for the D_u probe itself
    similarity: float
    scores: dict[str, ProbeScores]
    membership: dict[str, dict[str, float]]  # model -> attack -> score
    answered: Answered | None = None  # forget items only: holdout probes serve membership inference

    @property
    def group(self) -> str:
        return "" if self.fact.kind == "qa" else "passage_"

    def values(self, model: str) -> dict[str, float]:
        """Every metric of the probe's group for one model, oriented "higher = shows the knowledge"."""
        s = self.scores[model]
        out = {"prob": s.prob, "exact_memorization": s.exact_memorization,
               "extraction_strength": s.extraction_strength}
        if self.answered is not None:
            hit = self.answered.score_base if model == "base" else self.answered.score_unlearned
            out.update(rouge_l=hit.rouge_l, accuracy=float(hit.hit))
        if not self.group:
            out["truth_ratio"] = um.true_better([s.truth_ratio])
        return out


@dataclass
class Screened:
    """Candidates with their similarity to the source and why each was not kept ("" = kept)."""

    cands: list[Surrogate] = dataclasses.field(default_factory=list)
    sims: list[float] = dataclasses.field(default_factory=list)
    reasons: list[str] = dataclasses.field(default_factory=list)

    def add(self, new: list[Surrogate], sources: dict[str, Source], embedder: Embedder, opts: "SurrogatesOptions"
            ) -> None:
        sims = cosine_to_sources(embedder, [c.text for c in new], [sources[c.fact_id].text for c in new])
        self.cands += new
        self.sims += [float(v) for v in sims]
        self.reasons += [rejection(c, sources[c.fact_id].text, v, opts.band_low, opts.band_high)
                         for c, v in zip(new, sims)]

    def kept(self) -> list[tuple[Surrogate, float]]:
        return [(c, v) for c, v, r in zip(self.cands, self.sims, self.reasons) if not r]


def fact_means(probed: Sequence[Probed], model: str, metric: str) -> dict[str, float]:
    """Per item, the mean of one metric over its probes (NaN values skipped)."""
    groups: dict[str, list[float]] = {}
    for p in probed:
        groups.setdefault(p.fact.id, []).append(p.values(model).get(metric, math.nan))
    return {fid: um.mean(values) for fid, values in groups.items()}


def member_means(probed: Sequence[Probed], model: str, attack: str) -> dict[str, float]:
    """Per item, the mean membership score of its probes under one attack."""
    groups: dict[str, list[float]] = {}
    for p in probed:
        groups.setdefault(p.fact.id, []).append(p.membership[model][attack])
    return {fid: um.mean(values) for fid, values in groups.items()}


def paired(du: dict[str, float], sur: dict[str, float]) -> tuple[float, float]:
    """Means over the items where both the D_u and the surrogate value exist."""
    both = [fid for fid in sur if math.isfinite(sur[fid]) and math.isfinite(du.get(fid, math.nan))]
    return um.mean(du[f] for f in both), um.mean(sur[f] for f in both)


def paired_auc(du: dict[str, float], sur: dict[str, float], splits: dict[str, str]) -> tuple[float, float]:
    """Forget-vs-holdout ROC-AUC of D_u and of surrogate scores, over the items that have surrogates."""
    both = [fid for fid in sur if fid in du]

    def auc(values: dict[str, float]) -> float:
        return um.auc([values[f] for f in both if splits[f] == "forget"],
                      [values[f] for f in both if splits[f] == "holdout"])

    return auc(du), auc(sur)


def illusion(du: float, sur: float, du_base: float, sur_base: float, forgotten_below: float) -> float:
    """1 when D_u looks forgotten relative to the base but the surrogates do not; NaN without a base value."""
    if not all(math.isfinite(v) for v in (du, sur, du_base, sur_base)) or du_base <= 0 or sur_base <= 0:
        return math.nan
    return float(du / du_base <= forgotten_below < sur / sur_base)


def chance_signal(auc: float) -> float:
    """An AUC's membership signal above chance (what the illusion rule compares for MIA)."""
    return max(0.0, auc - 0.5) if math.isfinite(auc) else math.nan


class SurrogatesAudit(Audit[SurrogatesOptions]):
    suite = True
    name = "surrogates"
    title = "Surrogate set (PSG)"
    paper = "The Erasure Illusion: Stress-Testing the Generalization of LLM Forgetting Evaluation"
    summary = ("share of the forget facts the unlearned model gives up on the plain question but answers "
               "under a surrogate probe derived from it")
    Options = SurrogatesOptions
    needs = frozenset({"generate", "logprobs", "exact_tokens"})  # membership scores probes followed by EOS
    uses = ("qa", "continuation", "text")
    headline_keys = ("recovery_rate", "accuracy_du", "accuracy_surrogate", "accuracy_gap", "mia_min_k_du",
                     "mia_min_k_surrogate")

    def row_tokens(self, engine: Backend, facts: list[Fact], options: SurrogatesOptions) -> list[int]:
        return passage_tokens(engine, facts)  # passage probes are cut from the left (see _probe)

    def run(self, ctx: AuditContext[SurrogatesOptions]) -> AuditResult:
        opts = ctx.options
        forget = [f for f in ctx.facts.split("forget") if source_of(f) is not None]
        holdout = [f for f in ctx.facts.split("holdout") if source_of(f) is not None]
        if not forget:
            raise LabError("the surrogates audit builds its probes from forget items (questions or passages), and "
                           "there are none")
        items = forget + holdout
        sources = {f.id: source_of(f) for f in items}
        embedder, embedder_note = load_embedder(opts.embedder, ctx.pair.base)
        screened, source_note = self._screen(ctx, opts, items, sources, embedder)
        kept = screened.kept()
        du, surrogates, fit_notes = self._probe(ctx, opts, items, sources, kept)
        targets = ctx.baseline.targets()
        target_ids = {t.id for t in targets}
        answered = [p for p in surrogates if p.answered is not None and p.fact.kind == "qa"]
        self._record(ctx, du, surrogates, target_ids)
        metrics = self._metrics(du, surrogates, opts.forgotten_below)
        metrics.update(recovery("recovery_rate", targets, {p.fact.id for p in answered
                                                            if p.answered.score_unlearned.hit}))
        for name in dict.fromkeys(p.surrogate.generator for p in answered):  # the generators that asked questions
            metrics.update(recovery(f"{name}_recovery_rate", targets, {
                p.fact.id for p in answered if p.surrogate.generator == name and p.answered.score_unlearned.hit}))
        forget_ids = {f.id for f in forget}
        metrics.update(surrogates_generated=float(len(screened.cands)), surrogates_kept=float(len(kept)),
                       facts_with_surrogates=float(len({p.fact.id for p in surrogates if p.fact.id in forget_ids})),
                       llm_kept=float(sum(c.generator == "llm" for c, _ in kept)),
                       mean_similarity=um.mean(s for _, s in kept), targets=float(len(targets)))
        artifacts = {
            "embedder": embedder.describe(),
            "band": [opts.band_low, opts.band_high],
            "source": opts.source,
            "candidates": [{"fact_id": c.fact_id, "split": "forget" if c.fact_id in forget_ids else "holdout",
                            "generator": c.generator, "text": c.text, "kind": c.kind, "gold_field": c.gold_field,
                            "similarity": v, "rejected": r}
                           for c, v, r in zip(screened.cands, screened.sims, screened.reasons)],
            "table": [{"metric": f"{group}{m}", **{k: metrics[f"{group}{m}_{k}"] for k in VALUE_KEYS}}
                      for group, names in GROUPS.items() for m in (*names, *MIA_METRICS)
                      if f"{group}{m}_du" in metrics],
            "per_generator": self._per_generator(surrogates, ("llm", *opts.generators)),
        }
        notes = [embedder_note, source_note,
                 f"{len(kept)} of {len(screened.cands)} candidates kept in the similarity band "
                 f"[{opts.band_low}, {opts.band_high}] for {int(metrics['facts_with_surrogates'])} of "
                 f"{len(forget)} forget items", *fit_notes]
        if not holdout:
            notes.append("no holdout items: membership inference on the surrogates needs them (mia_* are n/a)")
        flagged = [row["metric"] for row in artifacts["table"] if row["illusion"] == 1.0]
        if flagged:
            notes.append("erasure illusion (forgotten on D_u, still there on the surrogates): " + ", ".join(flagged))
        return AuditResult(metrics=metrics, artifacts=artifacts, notes=notes)

    @staticmethod
    def _screen(ctx: AuditContext[SurrogatesOptions], opts: SurrogatesOptions, items: list[Fact], sources: dict[str, Source],
                embedder: Embedder) -> tuple[Screened, str]:
        """The rewriter's candidates, then the templates' for the items left without a kept one (per ``source``)."""
        screened = Screened()
        covered: set[str] = set()
        note = "surrogates: templates only (source=templates)"
        if opts.source != "templates":
            rewrite = llm_rewriter(ctx.model(opts.rewriter), opts.rewriter_max_new_tokens, opts.samples,
                                   opts.temperature)
            screened.add(candidates(items, [rewrite]), sources, embedder, opts)
            covered = {c.fact_id for c, _ in screened.kept()}
            note = (f"surrogates: LLM rewriter '{opts.rewriter}' ({opts.samples} samples per item) kept rewrites "
                    f"for {len(covered)} of {len(items)} items")
        if opts.source != "llm":
            rest = [f for f in items if f.id not in covered]
            screened.add(candidates(rest, [TEMPLATE_GENERATORS[name] for name in opts.generators]), sources,
                         embedder, opts)
            if opts.source == "auto":
                note += f"; templates for the other {len(rest)}"
        return screened, note

    def _probe(self, ctx: AuditContext[SurrogatesOptions], opts: SurrogatesOptions, items: list[Fact], sources: dict[str, Source],
               kept: list[tuple[Surrogate, float]]) -> tuple[list[Probed], list[Probed], list[str]]:
        """Both models on every item's source and kept surrogates: teacher-forced scores and membership scores
        for all, greedy answers for the forget items (batched, one call per kind of work).  A raw-text probe is
        cut from the left to fit the models' context; a question probe longer than it is left out; the notes
        say how many."""
        pair = ctx.pair
        by_id = {f.id: f for f in items}
        slots: list[tuple[Fact, Surrogate | None, float]] = [(f, None, 1.0) for f in items]
        slots += [(by_id[c.fact_id], c, v) for c, v in kept]
        probes = []
        for fact, cand, _ in slots:
            src = sources[fact.id]
            prompt = cand.prompt(pair.base) if cand else (pair.base.prompt(src.text) if src.kind == QUESTION
                                                          else src.text)
            gold = cand.gold if cand else src.gold
            truth = fact.kind == "qa" and (cand is None or cand.gold_field == "answer")
            probes.append(Probe(prompt, gold, gold if truth else "", fact.perturbed_answers if truth else ()))
        raw = [(cand.kind if cand else sources[fact.id].kind) == COMPLETION for fact, cand, _ in slots]
        fit = fits([pair.base, pair.unlearned], [[(p.prompt, a) for a in (p.gold, *p.perturbed)] for p in probes])
        fitting, fitted, cut = [], [], 0
        for slot, probe, is_raw, ok in zip(slots, probes, raw, fit):
            if is_raw:  # raw text: cut from the left, as passages are
                room = max(len(pair.base.encode(a)) for a in (probe.gold, *probe.perturbed)) + 1
                try:
                    prompt = fit_both(pair, probe.prompt, room)
                except LabError:  # the gold alone fills the context
                    continue
                cut += prompt != probe.prompt
                probe = dataclasses.replace(probe, prompt=prompt)
            elif not ok:
                continue
            fitted.append(probe)
            fitting.append(slot)
        probes = fitted
        left_out = len(slots) - len(fitting)
        notes = ([f"{left_out} of {len(slots)} probes left out: longer than the models' context"] if left_out else [])
        notes += [f"{cut} passage prompts cut from the left to fit the models' context (as lm-evaluation-harness "
                  "does)"] if cut else []
        slots = fitting
        scores = {m: score_probes(e, probes, f"surrogate metrics ({m})") for m, e in pair.roles()}
        mia_texts = [MiaText(fact, p.gold, p.prompt) for (fact, _, _), p in zip(slots, probes)]
        membership = {m: membership_scores(e, mia_texts, opts.mia_k, f"surrogate membership ({m})")
                      for m, e in pair.roles()}
        answers = self._answers(ctx, opts, slots, probes)
        probed = [Probed(fact, p.prompt, p.gold, cand, v, {m: scores[m][i] for m in PAIR_ROLES},
                         {m: membership[m][i] for m in PAIR_ROLES}, answers.get(i))
                  for i, ((fact, cand, v), p) in enumerate(zip(slots, probes))]
        return [p for p in probed if p.surrogate is None], [p for p in probed if p.surrogate is not None], notes

    @staticmethod
    def _answers(ctx: AuditContext[SurrogatesOptions], opts: SurrogatesOptions, slots: list[tuple[Fact, Surrogate | None, float]],
                 probes: list[Probe]) -> dict[int, Answered]:
        """Greedy answers of the forget items' probes: the run's length for short golds, passage_tokens for
        continuations; a question's plain answer comes from the run's baseline."""
        out: dict[int, Answered] = {}
        short, long_ = [], []
        for i, (fact, cand, _) in enumerate(slots):
            if fact.split != "forget":
                continue
            if cand is None and fact.kind == "qa":
                out[i] = ctx.baseline.answered[fact.id]
            elif (cand.gold_field if cand else "continuation") == "continuation":
                long_.append(i)
            else:
                short.append(i)
        for chosen, length, desc in ((short, ctx.max_new_tokens, "surrogate probes"),
                                     (long_, opts.passage_tokens, "passage probes")):
            if chosen:
                done = answer_both(ctx.pair, [probes[i].prompt for i in chosen], [probes[i].gold for i in chosen],
                                   length, desc)
                out.update(zip(chosen, done))
        return out

    def _record(self, ctx: AuditContext[SurrogatesOptions], du: list[Probed], surrogates: list[Probed], target_ids: set[str]) -> None:
        items: list[ItemRecord] = []
        for p in [*du, *surrogates]:
            if p.answered is None:
                continue
            extra: dict[str, Any] = {"values": {m: p.values(m) for m in PAIR_ROLES}, "similarity": p.similarity,
                                     "membership": p.membership}
            category, recovered = "du", None
            if p.surrogate:
                category = p.surrogate.generator
                recovered = p.answered.score_unlearned.hit if p.fact.id in target_ids else None
                extra.update(text=p.surrogate.text, kind=p.surrogate.kind, gold_field=p.surrogate.gold_field,
                             source=source_of(p.fact).text)
            item = item_for(self.name, p.fact, p.prompt, p.answered, category=category, recovered=recovered,
                            logprobs=(p.scores["base"].logprob, p.scores["unlearned"].logprob), extra=extra)
            items.append(dataclasses.replace(item, answer=p.gold))
        ctx.record(items)

    @staticmethod
    def _metrics(du: list[Probed], surrogates: list[Probed], forgotten_below: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for group, names in GROUPS.items():
            du_g = [p for p in du if p.group == group]
            sur_g = [p for p in surrogates if p.group == group]
            forget_du = [p for p in du_g if p.fact.split == "forget"]
            if not forget_du:
                continue
            forget_sur = [p for p in sur_g if p.fact.split == "forget"]
            splits = {p.fact.id: p.fact.split for p in du_g}
            for model in PAIR_ROLES:
                suffix = "" if model == "unlearned" else f"_{model}"
                for metric in names:
                    d, s = paired(fact_means(forget_du, model, metric), fact_means(forget_sur, model, metric))
                    out[f"{group}{metric}_du{suffix}"], out[f"{group}{metric}_surrogate{suffix}"] = d, s
                for attack, name in MIA_NAMES.items():
                    d, s = paired_auc(member_means(du_g, model, attack), member_means(sur_g, model, attack), splits)
                    out[f"{group}{name}_du{suffix}"], out[f"{group}{name}_surrogate{suffix}"] = d, s
            for metric in (*names, *MIA_METRICS):
                key = f"{group}{metric}"
                out[f"{key}_gap"] = out[f"{key}_surrogate"] - out[f"{key}_du"]
                values = [out[f"{key}_{k}"] for k in ("du", "surrogate", "du_base", "surrogate_base")]
                if metric in MIA_METRICS:
                    values = [chance_signal(v) for v in values]
                out[f"{key}_illusion"] = illusion(*values, forgotten_below)
        return out

    @staticmethod
    def _per_generator(surrogates: list[Probed], generators: Sequence[str]) -> list[dict[str, Any]]:
        rows = []
        for name in generators:
            group = [p for p in surrogates if p.surrogate.generator == name and p.answered is not None]
            rows.append({"generator": name, "kept": len(group),
                         "accuracy_base": um.mean(p.values("base").get("accuracy", math.nan) for p in group),
                         "accuracy_unlearned": um.mean(p.values("unlearned").get("accuracy", math.nan)
                                                       for p in group),
                         "rouge_l_unlearned": um.mean(p.values("unlearned")["rouge_l"] for p in group),
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
        flagged = [key[: -len("_illusion")] for key, value in metrics.items()
                   if key.endswith("_illusion") and value == 1.0]
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
