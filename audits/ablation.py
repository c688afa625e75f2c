"""Audit ``ablation``: does projecting one direction out of the unlearned model bring its forgotten facts back?

"An Adversarial Perspective on Machine Unlearning for AI Safety" (Łucki et
al., 2024) shows that RMU-style unlearning largely acts along a few
directions of the residual stream: ablating one direction per layer recovers
most of the forgotten WMDP knowledge.  Following them:

1. The targets (forget facts the base knows and the unlearned model misses)
   are split in two halves by a seeded shuffle.
2. On the first half's question prompts, each decoder block's output is
   averaged over the prompt's tokens in the unlearned and in the base model;
   their difference, normalized, is that layer's unlearning direction.
3. That direction is projected out of the unlearned model's residual stream
   after every block (``h - (h . d) d``), and the second half is asked again
   (greedy, the project's scorer).  A target recovered under the ablation
   counts; ``recovery_rate`` is the share of the second half (the headline's
   denominator is that half, never the facts the direction came from).

Per layer, the same ablation at that layer alone gives the figure's
recovery-by-layer.  With ``--reference``, the control runs the whole procedure
on the reference model (its own directions against the base): what ablation
"recovers" in a model that never learned the facts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
import plotly.graph_objects as go
import torch

from audits.base import Answered, Audit, AuditContext, item_for, pct, recovery
from lab.core.backend import Backend
from lab.core.errors import LabError
from lab.core.facts import Fact
from lab.core.models import ModelPair
from lab.core.options import AuditOptions, option
from lab.core.records import AuditResult
from lab.core.scoring import score_answer


@dataclass
class AblationOptions(AuditOptions):
    """The split of the targets and the layer-by-layer curve."""

    seed: int = option(0, "which half of the targets the directions are taken from", low=0, kind="index")
    per_layer: bool = option(True, "also ablate each layer's direction alone (the recovery-by-layer figure)")


def halves(targets: list[Fact], seed: int) -> tuple[list[Fact], list[Fact]]:
    """The targets the directions come from and those asked under the ablation (a seeded shuffle, by id)."""
    shuffled = sorted(targets, key=lambda f: f.id)
    random.Random(seed).shuffle(shuffled)
    cut = len(shuffled) // 2
    return shuffled[:cut], shuffled[cut:]


def directions(model: Backend, base: Backend, prompts: list[str]) -> torch.Tensor:
    """Per layer, the unit difference of mean block outputs, ``model`` minus ``base``: [layers, hidden]."""
    mine = torch.stack(model.mean_block_outputs(prompts, desc="ablation: mean activations")).mean(0)
    theirs = torch.stack(base.mean_block_outputs(prompts, desc="ablation: mean activations (base)")).mean(0)
    diff = mine - theirs
    return diff / diff.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def projection(units: torch.Tensor, layers: set[int] | None = None) -> Callable[[int, torch.Tensor], torch.Tensor | None]:
    """The residual edit that removes each layer's direction (only ``layers``' when given)."""

    def edit(layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
        if layers is not None and layer not in layers:
            return None
        unit = units[layer].to(hidden.device, hidden.dtype)
        return hidden - (hidden @ unit)[..., None] * unit

    return edit


def ablated_answers(model: Backend, units: torch.Tensor, prompts: list[str], max_new_tokens: int,
                    layers: set[int] | None = None) -> list[str]:
    """``model``'s greedy answers with the directions projected out."""
    with model.editing(projection(units, layers)):
        return model.generate(prompts, max_new_tokens, desc="ablation: answers with the directions removed")


class AblationAudit(Audit[AblationOptions]):
    name = "ablation"
    title = "Directional ablation"
    paper = "An Adversarial Perspective on Machine Unlearning for AI Safety (Łucki et al.)"
    summary = ("share of the forgotten facts answered once the unlearning direction is projected out of the "
               "unlearned model's residual stream")
    Options = AblationOptions
    headline_keys = ("recovery_rate", "calibration_targets")
    needs = frozenset({"generate", "internals"})
    has_fact_view = True
    view_id, view_label = "ablation", "Directional ablation"
    view_reads = ("question", "answer")

    def targets(self, ctx: AuditContext[AblationOptions]) -> list[Fact]:
        return halves(ctx.baseline.targets(), ctx.options.seed)[1]

    def run(self, ctx: AuditContext[AblationOptions]) -> AuditResult:
        opts, pair = ctx.options, ctx.pair
        calibration, asked = halves(ctx.baseline.targets(), opts.seed)
        metrics: dict[str, float] = {"targets": float(len(asked)), "calibration_targets": float(len(calibration))}
        if not calibration or not asked:
            metrics.update(recovery("recovery_rate", asked, set()))
            return AuditResult(metrics=metrics, notes=["ablation needs at least 2 targets (half give the "
                                                       "directions, half are asked)"])
        units = directions(pair.unlearned, pair.base, [pair.base.prompt(f.question) for f in calibration])
        prompts = [pair.base.prompt(f.question) for f in asked]
        outputs = ablated_answers(pair.unlearned, units, prompts, ctx.max_new_tokens)
        plain = [ctx.baseline.answered[f.id] for f in asked]
        recovered = {f.id for f, out in zip(asked, outputs) if score_answer(out, f.answer).hit}
        ctx.record([item_for(self.name, f, p, Answered(a.output_base, out, a.score_base, score_answer(out, f.answer)),
                             category="all layers", recovered=f.id in recovered)
                    for f, p, a, out in zip(asked, prompts, plain, outputs)])
        metrics.update(recovery("recovery_rate", asked, recovered))
        curve = self.by_layer(pair, units, asked, prompts, ctx.max_new_tokens) if opts.per_layer else []
        return AuditResult(metrics=metrics, artifacts={"by_layer": curve, "norms": self.norms(pair, calibration)},
                           notes=[f"directions from {len(calibration)} targets, recovery asked on the other "
                                  f"{len(asked)}"])

    @staticmethod
    def by_layer(pair: ModelPair, units: torch.Tensor, asked: list[Fact], prompts: list[str],
                 max_new_tokens: int) -> list[float]:
        """The recovery rate when only one layer's direction is removed, for every layer."""
        rates = []
        for layer in range(units.shape[0]):
            outs = ablated_answers(pair.unlearned, units, prompts, max_new_tokens, {layer})
            rates.append(sum(score_answer(o, f.answer).hit for o, f in zip(outs, asked)) / len(asked))
        return rates

    @staticmethod
    def norms(pair: ModelPair, facts: list[Fact]) -> list[float]:
        """How far the unlearned model's mean activations moved from the base's, per layer (the figure's
        second trace: RMU's steering shows as a large shift at its layer)."""
        prompts = [pair.base.prompt(f.question) for f in facts]
        mine = torch.stack(pair.unlearned.mean_block_outputs(prompts)).mean(0)
        theirs = torch.stack(pair.base.mean_block_outputs(prompts)).mean(0)
        return ((mine - theirs).norm(dim=-1) / theirs.norm(dim=-1).clamp(min=1e-12)).tolist()

    def reference_recovered(self, ctx: AuditContext[AblationOptions], items: list[Any]) -> set[str]:
        """The whole procedure on the reference model: its own directions against the base, then the same half."""
        calibration, asked = halves(ctx.baseline.targets(), ctx.options.seed)
        if not calibration or not asked:
            return set()
        reference, base = ctx.model("reference"), ctx.pair.base
        units = directions(reference, base, [base.prompt(f.question) for f in calibration])
        outputs = ablated_answers(reference, units, [base.prompt(f.question) for f in asked], ctx.max_new_tokens)
        return {f.id for f, out in zip(asked, outputs) if score_answer(out, f.answer).hit}

    def fact_view(self, pair: ModelPair, fact: Fact, facts: list[Fact], options: AblationOptions,
                  memo: Callable[[Any, Callable[[], Any]], Any]) -> go.Figure:
        """One question asked with the unlearning directions removed, all layers and one at a time; the
        directions come from the forget facts the base answers (kept for the pair)."""
        if not fact.question.strip() or not fact.answer.strip():
            raise LabError("directional ablation needs a question and its answer (pick a fact or type both)")
        forget = [f for f in facts if f.split == "forget" and f.kind == "qa" and f.question != fact.question]
        if not forget:
            raise LabError("directional ablation needs forget facts to take the directions from")
        key = ("ablation-directions", pair.base.info.ref, pair.unlearned.info.ref, pair.unlearned.prompt_format)
        units = memo(key, lambda: directions(pair.unlearned, pair.base, [pair.base.prompt(f.question)
                                                                         for f in forget]))
        prompt = [pair.base.prompt(fact.question)]
        layers = list(range(units.shape[0]))
        outputs = [ablated_answers(pair.unlearned, units, prompt, 24, {layer})[0] for layer in layers]
        every = ablated_answers(pair.unlearned, units, prompt, 24)[0]
        hits = [float(score_answer(o, fact.answer).hit) for o in outputs]
        fig = go.Figure(go.Bar(x=[str(layer) for layer in layers] + ["all"],
                               y=hits + [float(score_answer(every, fact.answer).hit)],
                               text=[*outputs, every], textposition="outside", name="answer with the direction removed"))
        fig.update_layout(title=f"Directional ablation of {fact.answer}: the answer with each layer's direction "
                                "removed", xaxis_title="decoder block (all: every block)",
                          yaxis=dict(title="answers (1) or not (0)", range=[0, 1.3]))
        return fig

    def figures(self, artifacts: dict[str, Any], items: pd.DataFrame) -> dict[str, go.Figure]:
        curve = artifacts.get("by_layer") or []
        if not curve:
            return {}
        layers = list(range(len(curve)))
        fig = go.Figure([go.Bar(x=layers, y=curve, name="recovery, one layer's direction removed"),
                         go.Scatter(x=layers, y=artifacts.get("norms") or [], name="activation shift (relative)",
                                    mode="lines+markers", yaxis="y2")])
        fig.update_layout(title="Directional ablation: recovery per layer", xaxis_title="decoder block",
                          yaxis={"title": "recovered share", "range": [0, 1]},
                          yaxis2={"title": "shift of mean activations", "overlaying": "y", "side": "right"})
        return {"ablation_by_layer": fig}

    def verdict(self, metrics: dict[str, float | None]) -> str:
        return (f"removing the unlearning direction brings back {pct(metrics, 'recovery_rate')} of the held-out "
                "forgotten facts")
