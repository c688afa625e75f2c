"""Audit ``patching``: from which layer on does the unlearned model still carry a forgotten answer through?

Activation patching (Meng et al., "Locating and Editing Factual Associations
in GPT", 2022) applied to unlearning as "unlearning depth" (open-unlearning's
pull request 197): the base model's residual stream after decoder block l (at
every position of the question and its answer, teacher-forced) is patched
into the unlearned model, whose own blocks above l then finish the
computation.  If the unlearned model
now gives the answer (every answer token its top prediction, teacher-forced:
exactly what greedy decoding would produce), its layers above l still read
the fact out: what unlearning changed lies at or below l, and an attacker who
restores the representation there gets the fact back.

- Per target (a forget fact the base knows and the unlearned model misses),
  every layer is patched in turn; its **depth** is the shallowest layer from
  which the answer comes back (none: it never does).
- A target is **recovered** when its depth is at most ``max_layer`` (default:
  the middle block): restoring the lower half of the network is enough.
  ``recovery_rate`` is their share.
- The depth profile (share of targets answered when patching at each layer) is
  the figure; with ``--reference``, the control patches the base into the
  reference model (which never learned the facts) the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from audits.base import Audit, AuditContext, pct, recovery
from lab.core.architecture import middle_layer
from lab.core.backend import Backend
from lab.core.errors import LabError
from lab.core.facts import Fact
from lab.core.models import ModelPair
from lab.core.options import AuditOptions, option
from lab.core.records import AuditResult, ItemRecord


@dataclass
class PatchingOptions(AuditOptions):
    """How deep a patch may go and still count as recovering the fact."""

    max_layer: int | None = option(None, "deepest decoder block whose patch counts as a recovery (none: the "
                                   "middle block)", low=0, kind="index")


def patch_from(donor: Backend, layer: int) -> Callable[..., Any]:
    """A batch edit: ``donor``'s output of block ``layer`` (every position of the same padded rows) replaces the
    patched model's there; the blocks above run as the patched model's own."""

    def for_batch(ids: torch.Tensor, mask: torch.Tensor, rows: list[int]) -> Callable[[int, torch.Tensor], Any]:
        states = donor.block_outputs(ids.to(donor.device), mask.to(donor.device))[layer]

        def edit(index: int, hidden: torch.Tensor) -> torch.Tensor | None:
            return states.to(hidden.device, hidden.dtype) if index == layer else None

        return edit

    return for_batch


def answered_by_layer(model: Backend, donor: Backend, facts: list[Fact], layers: range) -> np.ndarray:
    """[facts, layers]: whether ``model`` gives each fact's answer (every answer token its top prediction) with
    ``donor``'s states patched in after each layer, one layer at a time."""
    rows, starts = model.continuation_rows([(model.prompt(f.question), f.answer) for f in facts])
    out = np.zeros((len(facts), len(layers)), dtype=bool)
    for column, layer in enumerate(layers):
        scores = model.token_scores(rows, starts, desc=f"patching after block {layer}",
                                    edit_batch=patch_from(donor, layer))
        out[:, column] = [bool(s.greedy_match.all()) for s in scores]
    return out


def depth(answered: np.ndarray) -> int | None:
    """The shallowest layer from which the answer comes back, or None."""
    hits = np.flatnonzero(answered)
    return int(hits[0]) if hits.size else None


class PatchingAudit(Audit[PatchingOptions]):
    name = "patching"
    title = "Activation patching depth"
    paper = "Locating and Editing Factual Associations in GPT (Meng et al.); unlearning depth (open-unlearning)"
    summary = ("share of the forgotten facts the unlearned model answers once the base's states of the lower "
               "layers are patched in")
    Options = PatchingOptions
    headline_keys = ("recovery_rate", "max_layer", "never_rate")
    needs = frozenset({"generate", "logprobs", "internals"})
    has_fact_view = True
    view_id, view_label = "patching", "Patching depth"
    view_reads = ("question", "answer")

    @staticmethod
    def deepest(model: Backend, opts: PatchingOptions) -> int:
        blocks = model.architecture.n_layers
        return min(opts.max_layer, blocks - 1) if opts.max_layer is not None else middle_layer(blocks) - 1

    def run(self, ctx: AuditContext[PatchingOptions]) -> AuditResult:
        pair, targets = ctx.pair, ctx.baseline.targets()
        layers = range(pair.unlearned.architecture.n_layers)
        limit = self.deepest(pair.unlearned, ctx.options)
        grid = answered_by_layer(pair.unlearned, pair.base, targets, layers) if targets else np.zeros((0, 0))
        depths = [depth(row) for row in grid]
        recovered = {t.id for t, d in zip(targets, depths) if d is not None and d <= limit}
        ctx.record([self.item(pair.unlearned, t, d, limit) for t, d in zip(targets, depths)])
        metrics: dict[str, float] = {"targets": float(len(targets)), "max_layer": float(limit)}
        metrics.update(recovery("recovery_rate", targets, recovered))
        metrics.update(recovery("never_rate", targets, {t.id for t, d in zip(targets, depths) if d is None}))
        profile = grid.mean(axis=0).tolist() if targets else []
        return AuditResult(metrics=metrics, artifacts={"profile": profile, "max_layer": limit},
                           notes=[f"{len(targets)} targets patched after each of {len(layers)} blocks; recovered "
                                  f"when the answer comes back from block {limit} or below"])

    def item(self, model: Backend, fact: Fact, found: int | None, limit: int) -> ItemRecord:
        """One target: its depth (the shallowest block whose patch brings the answer back)."""
        return ItemRecord(audit=self.name, fact_id=fact.id, split=fact.split, prompt=model.prompt(fact.question),
                          answer=fact.answer, category="depth", hit_unlearned=found is not None,
                          recovered=found is not None and found <= limit, extra={"depth": found})

    def reference_recovered(self, ctx: AuditContext[PatchingOptions], items: list[ItemRecord]) -> set[str]:
        """The base patched into the reference model the same way."""
        reference, targets = ctx.model("reference"), ctx.baseline.targets()
        limit = self.deepest(reference, ctx.options)
        grid = answered_by_layer(reference, ctx.pair.base, targets, range(limit + 1))
        return {t.id for t, row in zip(targets, grid) if row.any()}

    def fact_view(self, pair: ModelPair, fact: Fact, facts: list[Fact], options: AuditOptions,
                  memo: Callable[[Any, Callable[[], Any]], Any]) -> go.Figure:
        """One fact patched after every block: the answer's mean log-prob in the unlearned model, and where it
        comes back (every answer token its top prediction)."""
        if not fact.question.strip() or not fact.answer.strip():
            raise LabError("patching needs a question and its answer (pick a fact or type both)")
        model = pair.unlearned
        rows, starts = model.continuation_rows([(model.prompt(fact.question), fact.answer)])
        layers = list(range(model.architecture.n_layers))
        scores = [model.token_scores(rows, starts, edit_batch=patch_from(pair.base, layer))[0] for layer in layers]
        plain = model.token_scores(rows, starts)[0]
        answered = ["answered" if s.greedy_match.all() else "not answered" for s in scores]
        fig = go.Figure(go.Bar(x=layers, y=[s.mean for s in scores], text=answered, textposition="outside",
                               name="patched after the block"))
        fig.add_hline(y=plain.mean, line_dash="dash", annotation_text="unlearned, no patch")
        fig.update_layout(title=f"Patching the base into the unlearned model: {fact.answer}",
                          xaxis_title="decoder block patched", yaxis_title="mean log-prob of the answer")
        return fig

    def figures(self, artifacts: dict[str, Any], items: pd.DataFrame) -> dict[str, go.Figure]:
        profile = artifacts.get("profile") or []
        if not profile:
            return {}
        fig = go.Figure(go.Bar(x=list(range(len(profile))), y=profile, name="answered after the patch"))
        fig.add_vline(x=artifacts["max_layer"] + 0.5, line_dash="dash", annotation_text="recovery counts up to here")
        fig.update_layout(title="Activation patching: forgotten facts answered when the base's states are "
                                "patched in after each block", xaxis_title="decoder block patched",
                          yaxis_title="share of the targets", yaxis_range=[0, 1])
        return {"depth_profile": fig}

    def verdict(self, metrics: dict[str, float | None]) -> str:
        return (f"{pct(metrics, 'recovery_rate')} of the forgotten facts come back when the base's lower layers "
                f"are patched in; {pct(metrics, 'never_rate')} never do")
