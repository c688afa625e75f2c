"""Audit ``sae``: where each forget entity sits between "known" and "unknown" in SAE latent space.

"Sparse-Autoencoder-Guided Internal Representation Unlearning for Large
Language Models" (Yamashita et al., 2025) defines forgetting internally: the
target entity's activation in SAE latent space is indistinguishable from that
of entities the model does not know.  Suppression methods (gradient ascent
and its kin) mute the answer without moving the entity there.  The
known/unknown latents follow "Do I Know This Entity? Knowledge Awareness and
Hallucinations in Language Models" (Ferrando et al., ICLR 2025): SAE latents
at the entity's last token, the separation score ``s_j = f_known_j -
f_unknown_j`` (share of known, resp. unknown, entity prompts on which latent
j fires), and latents that fire on many generic tokens left out.

Our concrete choices, where the papers leave details open:

- entity prompt: the prompt of each of the entity's questions cut right after
  the entity's name ("Question: Where was Ada Lovelace"), at most
  ``prompts_per_entity`` per entity; the residual stream at its last token,
  at ``layer`` (default: the middle of the stack), encoded by one SAE for
  both models (see :mod:`audits.sae.train` for where the SAE comes from);
- known reference: retain entities of which the base model answers at least
  ``known_min_share`` of the facts; unknown reference: holdout entities of
  which it answers none, plus ``made_up_entities`` invented names put into the
  known entities' question templates;
- latents: those active on more than ``max_density`` of corpus tokens are
  dropped (the paper drops latents frequent on generic text; our SAEs are
  small, so the default threshold is looser than the paper's); then the
  ``top_latents`` highest and lowest separation scores;
- axis: on those latents, w = mean known - mean unknown activation (base
  model); a prompt's position is p = (a - mean unknown) . w / (w . w), so 0 is
  the mean unknown entity and 1 the mean known entity;
- ``known_unknown_shift`` = mean over forget entities of
  (p_base - p_unlearned) / (P_known - P_unknown), where P_known and P_unknown
  are the base model's mean positions of the known and unknown reference
  prompts (1 and 0 by construction) and an entity's position is the mean over
  its prompts.  1.0: the forget entities moved the whole known-to-unknown
  distance (from the known mean, that is indistinguishable from unknown
  entities); 0: they did not move; below 0: they moved toward "known".
- ``known_unknown_shift_retain``: the same over held-out known (retain)
  entities, the control: every second known entity is kept out of latent
  selection and axis fitting (the ``control`` group), so the control is not
  measured on the entities that chose the latents; a shift as large there is
  not specific to forgetting;
- the audit stops (fails with its reason) when the SAE explains less than
  ``min_explained_variance`` of the residual stream's variance on the base
  model's own activations: such latents would not describe the model.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from audits.base import Audit, AuditContext
from audits.sae.train import LoadedSae, TrainSettings, encode, fact_corpus, get_sae, read_corpus
from lab.core.backend import Backend
from lab.core.errors import LabError
from lab.core.facts import Fact, FactSet
from lab.core.models import ModelPair
from lab.core.names import NameMaker
from lab.core.options import AuditOptions, option
from lab.core.records import AuditResult, ItemRecord
from lab.core.scoring import rate, score_answer

GROUP_COLORS = {"forget": "#d62728", "known": "#1f77b4", "control": "#17becf", "unknown": "#7f7f7f",
                "other": "#bcbd22"}
TOP_ACTIVE = 8  # latents kept per prompt and model in the item records
CHANGED = 15  # latents shown in the "changed most" artifact
PLACEHOLDER = "\x00entity\x00"
MIN_KNOWN_FOR_CONTROL = 4  # known entities needed to hold half of them out as the control


@dataclass
class SaeOptions(AuditOptions):
    """Which SAE, which layer, and how the known/unknown axis is built."""

    layer: int | None = option(None, "hidden-state index (0 = embeddings); none = the middle of the stack", low=0,
                               kind="index")
    sae: str = option("train", "train (here, with sae-lens), a directory in sae-lens format, or "
                      "pretrained:<release>:<sae_id>", kind="path", words=("train",), prefixes=("pretrained:",))
    architecture: Literal["topk", "standard"] = option("topk", "training: SAE architecture")
    width: int = option(8, "training: latents per residual dimension", low=1, kind="size", space_cap=16)
    k: int = option(16, "training (topk): active latents per token", low=1, kind="size", space_cap=64)
    l1_coefficient: float = option(5.0, "training (standard): sparsity penalty", low=0.0)
    steps: int = option(2000, "training steps", low=1, kind="size", space_cap=2000)
    batch_size: int = option(256, "training batch (activation rows)", low=1, kind="size", space_cap=1024)
    lr: float = option(1e-3, "training learning rate", low=1e-12)
    corpus: str = option("", "text file, one document per line; default: the facts' texts and QA lines",
                         kind="path", reads=read_corpus)
    prompts_per_entity: int = option(6, "entity prompts per entity", low=1, kind="size", space_cap=10)
    made_up_entities: int = option(10, "invented names added to the unknown reference", low=0, kind="size",
                                   space_cap=20)
    known_min_share: float = option(0.5, "a retain entity is known when the base answers this share of its facts",
                                    low=0.0, high=1.0)
    max_density: float = option(0.1, "drop latents active on more than this share of corpus tokens", low=1e-9,
                                high=1.0)
    top_latents: int = option(8, "latents per side (known / unknown) on the axis", low=1, kind="size",
                              space_cap=32)
    min_explained_variance: float = option(0.5, "stop when the SAE explains less of the residual stream's "
                                           "variance than this (its latents would not describe the model)",
                                           low=0.0, high=1.0)
    seed: int = option(0, "seed for training and made-up names", kind="index")

    def training(self) -> TrainSettings:
        return TrainSettings(self.architecture, self.width, self.k, self.l1_coefficient, self.steps,
                             self.batch_size, self.lr, self.seed)


@dataclass(frozen=True)
class EntityPrompt:
    """One prompt ending with an entity's name, and the entity's role in the audit."""

    entity: str
    group: str  # forget | known | unknown | other
    fact: Fact
    prompt: str
    made_up: bool = False


# --------------------------------------------------------------------------- entity prompts


def entity_prefix(engine: Backend, question: str, entity: str) -> str | None:
    """The prompt of ``question`` cut right after the entity's name (None if the name is absent)."""
    prompt = engine.prompt(question)
    at = prompt.find(entity) if entity else -1
    return prompt[: at + len(entity)] if at >= 0 else None


def _entity_group(facts: list[Fact], known_ids: set[str], options: SaeOptions) -> str:
    """forget | known (retain, answered) | unknown (holdout, never answered) | other (left out of the axis)."""
    splits = {f.split for f in facts}
    share = rate(f.id in known_ids for f in facts)
    if splits == {"forget"}:
        return "forget"
    if splits == {"retain"} and share >= options.known_min_share:
        return "known"
    if splits == {"holdout"} and share == 0:
        return "unknown"
    return "other"


def _prompts_for(engine: Backend, entity: str, group: str, facts: list[Fact], limit: int,
                 made_up: bool = False) -> list[EntityPrompt]:
    """Distinct entity prompts from the entity's questions, at most ``limit``."""
    out: dict[str, EntityPrompt] = {}
    for fact in facts:
        prefix = entity_prefix(engine, fact.question, entity)
        if prefix and prefix not in out and len(out) < limit:
            out[prefix] = EntityPrompt(entity, group, fact, prefix, made_up)
    return list(out.values())


def made_up_prompts(engine: Backend, known: dict[str, list[Fact]], taken: set[str],
                    options: SaeOptions) -> list[EntityPrompt]:
    """Invented names in the known entities' question templates: entities no model can know."""
    templates: list[str] = []
    for entity, facts in known.items():
        for fact in facts:
            template = fact.question.replace(entity, PLACEHOLDER)
            if PLACEHOLDER in template and template not in templates:
                templates.append(template)
    templates = templates[: options.prompts_per_entity]
    names = NameMaker(random.Random(options.seed))
    out: list[EntityPrompt] = []
    made = 0
    while templates and made < options.made_up_entities:
        name = names.full_name()
        if name in taken:
            continue
        made += 1
        facts = [Fact(id=f"made-up-{made}-{i}", question=t.replace(PLACEHOLDER, name), answer="", split="holdout",
                      entity=name) for i, t in enumerate(templates)]
        out += _prompts_for(engine, name, "unknown", facts, options.prompts_per_entity, made_up=True)
    return out


def control_entities(known: list[str]) -> set[str]:
    """Every second known entity, held out of latent selection as the control (none with fewer than 4 known)."""
    return set(known[1::2]) if len(known) >= MIN_KNOWN_FOR_CONTROL else set()


def entity_prompts(engine: Backend, facts: list[Fact], known_ids: set[str], options: SaeOptions) -> list[EntityPrompt]:
    """Prompts for every entity of the facts, grouped, plus the made-up unknown entities."""
    by_entity: dict[str, list[Fact]] = {}
    for fact in facts:
        if fact.entity:
            by_entity.setdefault(fact.entity, []).append(fact)
    prompts: list[EntityPrompt] = []
    known: dict[str, list[Fact]] = {}
    groups = {entity: _entity_group(group_facts, known_ids, options) for entity, group_facts in by_entity.items()}
    held_out = control_entities([e for e, g in groups.items() if g == "known"])
    for entity, group_facts in by_entity.items():
        group = "control" if entity in held_out else groups[entity]
        prompts += _prompts_for(engine, entity, group, group_facts, options.prompts_per_entity)
        if group in ("known", "control"):
            known[entity] = group_facts
    prompts += made_up_prompts(engine, known, set(by_entity), options)
    counts = {g: len({p.entity for p in prompts if p.group == g}) for g in GROUP_COLORS}
    if counts["forget"] == 0:
        raise LabError("the sae audit needs forget facts whose 'entity' field names the subject in the question")
    if counts["known"] < 2 or counts["unknown"] < 2:
        raise LabError(f"the sae audit needs at least 2 known and 2 unknown reference entities, found "
                       f"{counts['known'] + counts['control']} known (retain entities the base model answers) and "
                       f"{counts['unknown']} unknown (holdout entities it does not answer, plus made_up_entities)")
    return prompts


# --------------------------------------------------------------------------- known / unknown axis


@dataclass
class Separation:
    """Per-latent firing shares on known and unknown reference prompts, and their difference."""

    f_known: np.ndarray
    f_unknown: np.ndarray

    @property
    def score(self) -> np.ndarray:
        return self.f_known - self.f_unknown


def separation(latents: torch.Tensor, known: np.ndarray, unknown: np.ndarray) -> Separation:
    """Shares of known and unknown prompts on which each latent fires (activation > 0)."""
    fires = (latents > 0).float().numpy()
    return Separation(fires[known].mean(0), fires[unknown].mean(0))


def select_latents(sep: Separation, density: np.ndarray, max_density: float, top: int) -> list[int]:
    """The ``top`` most known-specific and ``top`` most unknown-specific latents, generic ones dropped."""
    score = np.where(density <= max_density, sep.score, 0.0)
    order = np.argsort(-score, kind="stable")
    known_side = [int(j) for j in order[:top] if score[j] > 0]
    unknown_side = [int(j) for j in order[::-1][:top] if score[j] < 0]
    return known_side + unknown_side


@dataclass
class Axis:
    """Known <-> unknown axis on chosen latents: 0 = mean unknown prompt, 1 = mean known prompt."""

    latents: list[int]
    weights: np.ndarray  # mean known - mean unknown activation on ``latents``
    origin: np.ndarray  # mean unknown activation on ``latents``

    @classmethod
    def fit(cls, latents: torch.Tensor, known: np.ndarray, unknown: np.ndarray, chosen: list[int]) -> "Axis | None":
        if not chosen:
            return None
        acts = latents[:, chosen].numpy().astype(np.float64)
        origin = acts[unknown].mean(0)
        weights = acts[known].mean(0) - origin
        return cls(chosen, weights, origin) if float(weights @ weights) > 0 else None

    def positions(self, latents: torch.Tensor) -> np.ndarray:
        acts = latents[:, self.latents].numpy().astype(np.float64)
        return (acts - self.origin) @ self.weights / float(self.weights @ self.weights)


def entity_means(values: np.ndarray, prompts: list[EntityPrompt]) -> dict[str, float]:
    """Mean of per-prompt values for each entity."""
    groups: dict[str, list[float]] = {}
    for value, prompt in zip(values, prompts):
        groups.setdefault(prompt.entity, []).append(float(value))
    return {entity: float(np.mean(v)) for entity, v in groups.items()}


def known_unknown_shift(pos_base: np.ndarray, pos_unlearned: np.ndarray, prompts: list[EntityPrompt],
                        group: str) -> float:
    """Mean over ``group``'s entities of (p_base - p_unlearned) / (P_known - P_unknown), base references."""
    mask = lambda g: np.array([p.group == g for p in prompts])  # noqa: E731
    span = pos_base[mask("known")].mean() - pos_base[mask("unknown")].mean()
    chosen = [i for i, p in enumerate(prompts) if p.group == group]
    if not chosen or span <= 0:
        return float("nan")
    sub = [prompts[i] for i in chosen]
    before, after = entity_means(pos_base[chosen], sub), entity_means(pos_unlearned[chosen], sub)
    return float(np.mean([before[e] - after[e] for e in before]) / span)


# --------------------------------------------------------------------------- analysis


@dataclass
class SaeAnalysis:
    """Everything the audit and the per-entity view read: prompts, latents, separation, axis."""

    loaded: LoadedSae
    prompts: list[EntityPrompt]
    latents_base: torch.Tensor
    latents_unlearned: torch.Tensor
    separation: Separation
    chosen: list[int]
    axis: Axis | None

    def mask(self, group: str) -> np.ndarray:
        return np.array([p.group == group for p in self.prompts])

    def positions(self, model: str) -> np.ndarray:
        latents = self.latents_base if model == "base" else self.latents_unlearned
        return self.axis.positions(latents) if self.axis else np.full(len(self.prompts), np.nan)


def read_latents(engine: Backend, loaded: LoadedSae, prompts: list[EntityPrompt], desc: str) -> torch.Tensor:
    """SAE latents at each prompt's last token (batched through the engine)."""
    states = engine.last_token_states([p.prompt for p in prompts], desc=desc)
    return encode(loaded.sae, torch.stack([s[loaded.layer] for s in states]))


def analyse(pair: ModelPair, facts: list[Fact], known_ids: set[str], options: SaeOptions) -> SaeAnalysis:
    """Get the SAE, read every entity prompt in both models, and fit the known/unknown axis on the base."""
    prompts = entity_prompts(pair.base, facts, known_ids, options)
    texts = read_corpus(options.corpus) if options.corpus else fact_corpus(pair.base, facts)
    loaded = get_sae(pair.base, options.sae, options.layer, texts, options.training())
    quality = loaded.quality.explained_variance
    if not quality >= options.min_explained_variance:
        raise LabError(f"the SAE reconstructs the base model's residual stream poorly (explained variance "
                       f"{quality:.2f} < {options.min_explained_variance}): its latents would not describe the model; "
                       "train it longer (sae.steps), wider (sae.width), or give a better SAE")
    lat_b = read_latents(pair.base, loaded, prompts, "entity latents (base)")
    lat_u = read_latents(pair.unlearned, loaded, prompts, "entity latents (unlearned)")
    known = np.array([p.group == "known" for p in prompts])
    unknown = np.array([p.group == "unknown" for p in prompts])
    sep = separation(lat_b, known, unknown)
    chosen = select_latents(sep, loaded.quality.density, options.max_density, options.top_latents)
    return SaeAnalysis(loaded, prompts, lat_b, lat_u, sep, chosen, Axis.fit(lat_b, known, unknown, chosen))


def base_known_ids(engine: Backend, facts: list[Fact], max_new_tokens: int = 24) -> set[str]:
    """Ids of the retain and holdout facts the base model answers (what the reference groups need)."""
    asked = [f for f in facts if f.split in ("retain", "holdout") and f.entity]
    outputs = engine.generate([engine.prompt(f.question) for f in asked], max_new_tokens, desc="base answers")
    return {f.id for f, out in zip(asked, outputs) if score_answer(out, f.answer).hit}


# --------------------------------------------------------------------------- records


def _top_active(row: torch.Tensor, n: int = TOP_ACTIVE) -> list[list[float]]:
    values, index = row.topk(min(n, row.shape[0]))
    return [[int(j), round(float(v), 4)] for v, j in zip(values, index) if v > 0]


def prompt_items(analysis: SaeAnalysis) -> list[ItemRecord]:
    """One record per entity prompt: its positions and most active latents in both models."""
    pos_b, pos_u = analysis.positions("base"), analysis.positions("unlearned")
    return [
        ItemRecord(audit="sae", fact_id=p.fact.id, split=p.fact.split, prompt=p.prompt, answer=p.fact.answer,
                   category=p.group, extra={
                       "entity": p.entity, "made_up": p.made_up,
                       "position_base": float(pos_b[i]), "position_unlearned": float(pos_u[i]),
                       "top_latents_base": _top_active(analysis.latents_base[i]),
                       "top_latents_unlearned": _top_active(analysis.latents_unlearned[i])})
        for i, p in enumerate(analysis.prompts)
    ]


def entity_rows(analysis: SaeAnalysis) -> list[dict[str, Any]]:
    """Per entity: group and mean position on the axis in both models."""
    before = entity_means(analysis.positions("base"), analysis.prompts)
    after = entity_means(analysis.positions("unlearned"), analysis.prompts)
    first = {p.entity: p for p in reversed(analysis.prompts)}
    return [{"entity": e, "group": first[e].group, "made_up": first[e].made_up,
             "position_base": before[e], "position_unlearned": after[e]} for e in before]


def latent_rows(analysis: SaeAnalysis, latents: list[int]) -> list[dict[str, Any]]:
    """Separation statistics and mean activations (forget and known entities, both models) of latents."""
    forget, known = analysis.mask("forget"), analysis.mask("known")
    density = analysis.loaded.quality.density
    rows = []
    for j in latents:
        column_b, column_u = analysis.latents_base[:, j].numpy(), analysis.latents_unlearned[:, j].numpy()
        rows.append({
            "latent": int(j), "score": float(analysis.separation.score[j]),
            "f_known": float(analysis.separation.f_known[j]), "f_unknown": float(analysis.separation.f_unknown[j]),
            "density": float(density[j]),
            "forget_base": float(column_b[forget].mean()), "forget_unlearned": float(column_u[forget].mean()),
            "known_base": float(column_b[known].mean()), "known_unlearned": float(column_u[known].mean()),
        })
    return rows


def changed_latents(analysis: SaeAnalysis, n: int = CHANGED) -> list[int]:
    """Latents whose mean activation on forget-entity prompts changed most from base to unlearned."""
    forget = torch.as_tensor(analysis.mask("forget"))
    change = (analysis.latents_base[forget] - analysis.latents_unlearned[forget]).mean(0).abs()
    return [int(j) for j in change.topk(min(n, change.shape[0])).indices if change[j] > 0]


# --------------------------------------------------------------------------- figures


def positions_figure(entities: list[dict[str, Any]], highlight: str | None = None) -> go.Figure:
    """Each entity's position before (x) and after (y) unlearning; below the diagonal = toward unknown."""
    fig = go.Figure()
    for group, color in GROUP_COLORS.items():
        rows = [r for r in entities if r["group"] == group]
        if rows:
            fig.add_scatter(x=[r["position_base"] for r in rows], y=[r["position_unlearned"] for r in rows],
                            mode="markers", name=group, marker=dict(color=color, size=8, opacity=0.75),
                            text=[r["entity"] for r in rows], hovertemplate="%{text}<br>base %{x:.2f} -> "
                            "unlearned %{y:.2f}<extra></extra>")
    finite = [v for r in entities for v in (r["position_base"], r["position_unlearned"]) if math.isfinite(v)]
    low, high = min(finite + [0.0]) - 0.1, max(finite + [1.0]) + 0.1
    fig.add_scatter(x=[low, high], y=[low, high], mode="lines", name="no change",
                    line=dict(color="black", dash="dot", width=1))
    for row in entities:
        if row["entity"] == highlight:
            fig.add_scatter(x=[row["position_base"]], y=[row["position_unlearned"]], mode="markers+text",
                            name=row["entity"], text=[row["entity"]], textposition="top center",
                            marker=dict(size=16, symbol="star", color="black"))
    fig.update_layout(title="Entities on the known (1) <-> unknown (0) axis, base vs unlearned",
                      xaxis=dict(title="position in the base model", range=[low, high]),
                      yaxis=dict(title="position in the unlearned model", range=[low, high]))
    return fig


def latents_figure(rows: list[dict[str, Any]], title: str) -> go.Figure:
    """Mean activation of latents on forget-entity prompts, base vs unlearned, with separation scores."""
    names = [f"{r['latent']} (s={r['score']:+.2f})" for r in rows]
    fig = go.Figure()
    fig.add_bar(name="base", x=names, y=[r["forget_base"] for r in rows])
    fig.add_bar(name="unlearned", x=names, y=[r["forget_unlearned"] for r in rows])
    fig.update_layout(title=title, barmode="group", xaxis_title="latent (separation score known - unknown)",
                      yaxis_title="mean activation")
    return fig


def sae_view_for_entity(pair: ModelPair, facts: FactSet | list[Fact], entity: str,
                        options: SaeOptions | None = None, analysis: SaeAnalysis | None = None) -> go.Figure:
    """The Internals view of one entity: its place on the axis and its axis latents in both models.

    Pass ``analysis`` (from :func:`analyse`) to reuse one SAE and axis across entities.
    """
    fact_list = list(facts)
    if analysis is None:
        analysis = analyse(pair, fact_list, base_known_ids(pair.base, fact_list), options or SaeOptions())
    rows = [i for i, p in enumerate(analysis.prompts) if p.entity == entity]
    if not rows:
        raise LabError(f"no prompt names the entity '{entity}' (is it the 'entity' field of its facts?)")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], subplot_titles=(
        "known (1) <-> unknown (0): base vs unlearned", f"axis latents at '{entity}'"))
    for trace in positions_figure(entity_rows(analysis), highlight=entity).data:
        fig.add_trace(trace, row=1, col=1)
    names = [f"{j} (s={analysis.separation.score[j]:+.2f})" for j in analysis.chosen]
    for model, latents in (("base", analysis.latents_base), ("unlearned", analysis.latents_unlearned)):
        values = latents[rows][:, analysis.chosen].mean(0).numpy() if analysis.chosen else []
        fig.add_bar(name=f"{model} activation", x=names, y=values, row=1, col=2)
    fig.update_layout(title=f"SAE view of {entity} (layer {analysis.loaded.layer})", barmode="group")
    fig.update_xaxes(title_text="position in the base model", row=1, col=1)
    fig.update_yaxes(title_text="position in the unlearned model", row=1, col=1)
    return fig


# --------------------------------------------------------------------------- audit


def _mean_position(values: np.ndarray, prompts: list[EntityPrompt], group: str) -> float:
    chosen = [i for i, p in enumerate(prompts) if p.group == group]
    means = entity_means(values[chosen], [prompts[i] for i in chosen]) if chosen else {}
    return float(np.mean(list(means.values()))) if means else float("nan")


class SaeAudit(Audit[SaeOptions]):
    view_id, view_label = "sae", "SAE entity view"
    view_reads = ("entity",)
    view_options = ("sae", "layer")
    check_options = {"steps": "300"}  # a short SAE for the GPU check
    name = "sae"
    title = "SAE view: known vs unknown entities"
    paper = ("Sparse-Autoencoder-Guided Internal Representation Unlearning for Large Language Models; "
             "Do I Know This Entity? Knowledge Awareness and Hallucinations in Language Models")
    summary = ("how far forget entities moved from 'known' toward 'unknown' in SAE latent space "
               "(1.0 = the whole known-to-unknown distance, 0 = not at all)")
    Options = SaeOptions
    needs = frozenset({"generate", "internals"})
    headline_keys = ("known_unknown_shift", "known_unknown_shift_retain")
    recovery_key = None
    has_fact_view = True

    def fact_view(self, pair: ModelPair, fact: Fact, facts: list[Fact], options: AuditOptions,
                  memo: Callable[[Any, Callable[[], Any]], Any]) -> go.Figure:
        """The fact's entity on the known <-> unknown axis; one SAE and axis per pair, facts and options."""
        if not fact.entity.strip():
            raise LabError("the SAE view needs the fact's entity (pick a fact with an entity, or type one)")
        facts = [f for f in facts if f.kind in self.uses]
        if not facts:
            raise LabError("the SAE view needs a fact set with entities known and unknown to the base model")
        key = ("sae", pair.base.info.ref, pair.unlearned.info.ref, len(facts), repr(options))
        analysis = memo(key, lambda: analyse(pair, facts, base_known_ids(pair.base, facts), options))
        return sae_view_for_entity(pair, facts, fact.entity.strip(), options, analysis)

    def run(self, ctx: AuditContext[SaeOptions]) -> AuditResult:
        base = ctx.baseline
        known_ids = {f.id for f in base.facts if base.knows_base(f)}
        analysis = analyse(ctx.pair, ctx.facts.facts, known_ids, ctx.options)
        ctx.record(prompt_items(analysis))
        prompts, pos_b, pos_u = analysis.prompts, analysis.positions("base"), analysis.positions("unlearned")
        entities = entity_rows(analysis)
        quality = analysis.loaded.quality
        metrics = {
            "known_unknown_shift": known_unknown_shift(pos_b, pos_u, prompts, "forget"),
            "known_unknown_shift_retain": known_unknown_shift(pos_b, pos_u, prompts, "control"),
            "forget_position_base": _mean_position(pos_b, prompts, "forget"),
            "forget_position_unlearned": _mean_position(pos_u, prompts, "forget"),
            "unknown_position_unlearned": _mean_position(pos_u, prompts, "unknown"),
            "explained_variance": quality.explained_variance,
            "l0": quality.l0,
            "axis_latents": float(len(analysis.axis.latents) if analysis.axis else 0),
            **{f"{g}_entities": float(sum(r["group"] == g for r in entities))
               for g in ("forget", "known", "control", "unknown")},
        }
        return AuditResult(metrics=metrics, artifacts={
            "sae": analysis.loaded.summary(),
            "entities": entities,
            "axis_latents": latent_rows(analysis, analysis.chosen),
            "changed_latents": latent_rows(analysis, changed_latents(analysis)),
        }, notes=self._notes(analysis))

    @staticmethod
    def _notes(analysis: SaeAnalysis) -> list[str]:
        loaded, q = analysis.loaded, analysis.loaded.quality
        how = "trained here" if loaded.trained else f"loaded from {loaded.path or loaded.source}"
        notes = [f"SAE {how}: {loaded.sae.cfg.architecture()}, {loaded.d_sae} latents at layer {loaded.layer}; "
                 f"explained variance {q.explained_variance:.3f}, L0 {q.l0:.1f} on {q.tokens} corpus tokens",
                 "positions: 1 = mean known reference entity, 0 = mean unknown one (base model, one SAE for both)",
                 *loaded.notes]
        if analysis.axis is None:
            notes.append("no SAE latent separates known from unknown entities at this layer: the shift is undefined")
        if not analysis.mask("control").any():
            notes.append(f"fewer than {MIN_KNOWN_FOR_CONTROL} known entities: none could be held out as the control, "
                         "so known_unknown_shift_retain is n/a")
        return notes

    def figures(self, artifacts: dict[str, Any], items: pd.DataFrame) -> dict[str, go.Figure]:
        figs = {}
        if artifacts.get("entities"):
            figs["positions"] = positions_figure(artifacts["entities"])
        if artifacts.get("axis_latents"):
            figs["axis_latents"] = latents_figure(
                artifacts["axis_latents"], "Known/unknown latents on forget-entity prompts")
        if artifacts.get("changed_latents"):
            figs["changed_latents"] = latents_figure(
                artifacts["changed_latents"], "Latents that changed most on forget-entity prompts")
        return figs

    def verdict(self, metrics: dict[str, float | None]) -> str:
        shift = metrics.get("known_unknown_shift")
        if shift is None or not math.isfinite(shift):
            return "no known/unknown axis could be fitted in SAE latent space: " + self.summary
        control = metrics.get("known_unknown_shift_retain")
        control = float("nan") if control is None else control
        return (f"known_unknown_shift = {shift:.2f} (retain control {control:.2f}): forget entities moved "
                f"{shift:.0%} of the way from 'known' to 'unknown' in SAE latent space")
