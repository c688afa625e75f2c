"""Audit ``quantization``: does quantizing the unlearned model bring the forgotten facts back?

From "Catastrophic Failure of LLM Unlearning via Quantization" (ICLR 2025):
unlearning with utility constraints and small learning rates moves weights
by less than one quantization step, so the quantized unlearned model falls
back onto the base model's grid and recalls what it was meant to forget (21%
of the forgotten knowledge kept in full precision, 83% after 4-bit, on MUSE).

Both models are quantized the same way (the base model is the control: what
quantization alone costs), the plain questions of the forget and retain sets
are asked again at int8 and int4, and the answers are scored with the lab's
one scorer.  Quantization is round-to-nearest in plain torch by default
(:mod:`audits.quantization.rtn`), applied in place and undone afterwards; with
``backend=bitsandbytes`` (CUDA only) the models are reloaded through
bitsandbytes as the paper's code does.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import pandas as pd
import plotly.graph_objects as go
import torch

from audits.base import Answered, Audit, AuditContext, answer_and_logprobs, item_for, pct, recovery
from audits.quantization.bnb import bitsandbytes_available, load_bitsandbytes
from audits.quantization.rtn import GridAgreement, QuantSpec, grid_agreement, quantized, target_weights, tied_head
from lab.core.backend import Backend
from lab.core.errors import LabError
from lab.core.facts import TRAINED_SPLITS, Fact
from lab.core.models import ModelPair
from lab.core.options import AuditOptions, option
from lab.core.records import AuditResult, ItemRecord
from lab.core.scoring import rate, score_answer

PRECISIONS = {"int8": 8, "int4": 4}


@dataclass
class QuantizationOptions(AuditOptions):
    """Knobs of the quantizer (the paper's RTN setting by default: asymmetric, group 128)."""

    backend: Literal["auto", "rtn", "bitsandbytes"] = option(
        "auto", "auto: bitsandbytes on CUDA when installed (the paper's code), else rtn; rtn: pure torch, any "
        "device; bitsandbytes: CUDA + bitsandbytes")
    group_size: int = option(128, "RTN columns per scale; 0 or wider than a layer: one scale per output channel",
                             low=0, kind="index")
    symmetric: bool = option(False, "RTN: symmetric grid (max abs) instead of asymmetric with a zero point")
    embeddings: bool = option(False, "RTN: also quantize the input embeddings")
    head: bool = option(False, "RTN: also quantize the output head (tied to the embeddings in many models)")
    bnb_4bit_type: Literal["fp4", "nf4"] = option(
        "fp4", "bitsandbytes 4-bit type (fp4: the BitsAndBytesConfig default the paper's code used)")

    def check(self) -> None:
        if self.backend == "bitsandbytes" and (self.embeddings or self.head or self.symmetric):
            raise LabError("options quantization.embeddings, head and symmetric apply to backend=rtn only")


@dataclass
class Precision:
    """Both models' answers to every question at one precision."""

    name: str
    answered: list[Answered]
    logprob_base: list[float]
    logprob_unlearned: list[float]
    grid: GridAgreement | None = None


def resolved_backend(choice: str) -> str:
    """``auto`` is bitsandbytes where it can run (CUDA and the package: the paper's setting), else RTN."""
    if choice == "auto":
        return "bitsandbytes" if bitsandbytes_available() else "rtn"
    return choice


def accuracy(facts: list[Fact], hits: list[bool], split: str) -> float:
    return rate(hit for fact, hit in zip(facts, hits) if fact.split == split)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when undefined (no facts, or a base model that knows none)."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return float("nan")
    return numerator / denominator


@contextmanager
def fake_quantized(engine: Backend, spec: QuantSpec, opts: QuantizationOptions) -> Iterator[None]:
    """``engine``'s weights RTN-quantized in place for the block (engine locked), then restored bit for bit.
    RTN is deterministic, so the quantized weights count as the same wherever the same spec quantizes the same
    weights (:meth:`lab.core.engine.Engine.derived`): a sweep quantizes its base in every pair, but the answers
    of the quantized base are computed once."""
    before = engine.weights_state()
    with engine.lock, engine.restored_after(), quantized(target_weights(engine.model, opts.embeddings, opts.head),
                                                         spec):
        engine.derived(before, ("rtn", spec, opts.embeddings, opts.head))
        yield


class QuantizationAudit(Audit[QuantizationOptions]):
    suite = True
    name = "quantization"
    title = "Quantization recovery"
    paper = "Catastrophic Failure of LLM Unlearning via Quantization (ICLR 2025)"
    summary = ("share of the forgotten facts that come back when the unlearned model's weights are quantized "
               "(max of int8 and int4)")
    Options = QuantizationOptions
    needs = frozenset({"generate", "logprobs", "internals"})
    headline_keys = ("retention_fp", "retention_int8", "retention_int4", "recovery_rate_int8",
                     "recovery_rate_int4", "recovery_rate")
    recovery_key = "recovery_rate"

    def run(self, ctx: AuditContext[QuantizationOptions]) -> AuditResult:
        opts = ctx.options
        backend = resolved_backend(opts.backend)
        specs = {name: QuantSpec(bits, opts.group_size, opts.symmetric) for name, bits in PRECISIONS.items()}
        base = ctx.baseline
        facts = [f for f in base.facts if f.split in TRAINED_SPLITS]
        prompts = [ctx.pair.base.prompt(f.question) for f in facts]
        targets = base.targets()
        target_ids = {f.id for f in targets}
        fp = Precision("fp", [base.answered[f.id] for f in facts], [base.logprob_base[f.id] for f in facts],
                       [base.logprob_unlearned[f.id] for f in facts])
        results = [fp]
        self.record(ctx, facts, prompts, fp, target_ids)
        for name, spec in specs.items():
            if backend == "rtn":
                result = self.rtn(ctx, facts, prompts, name, spec, opts)
            else:
                result = self.bitsandbytes(ctx, facts, prompts, name, spec.bits, opts.bnb_4bit_type)
            result.grid = self.agreement(ctx, spec, opts)
            self.record(ctx, facts, prompts, result, target_ids)
            results.append(result)
        return AuditResult(
            metrics=self.metrics(facts, results, targets),
            artifacts=self.artifacts(facts, results, target_ids, opts),
            notes=self.notes(ctx, opts, backend),
        )

    def attempts(self, items: list[ItemRecord]) -> list[ItemRecord]:
        """The headline is the worse precision's rate: its items alone decide it."""
        tries = [i for i in items if i.recovered is not None and i.category in PRECISIONS]
        counts = {p: sum(bool(i.recovered) for i in tries if i.category == p) for p in PRECISIONS}
        best = max(PRECISIONS, key=lambda p: counts[p])  # the first on ties, as metrics() picks it
        return [i for i in tries if i.category == best]

    def reference_recovered(self, ctx: AuditContext[QuantizationOptions], items: list[ItemRecord]) -> set[str]:
        """The reference model quantized the same way (the headline's precision) answers the same questions."""
        tries = self.attempts(items)
        if not tries:
            return set()
        opts = ctx.options
        bits = PRECISIONS[tries[0].category]
        prompts = [i.prompt for i in tries]
        reference = ctx.model("reference")
        if resolved_backend(opts.backend) == "rtn":
            with fake_quantized(reference, QuantSpec(bits, opts.group_size, opts.symmetric), opts):
                outputs = reference.generate(prompts, ctx.max_new_tokens, desc="quantization: reference control")
        else:
            outputs = load_bitsandbytes(reference, bits, opts.bnb_4bit_type).generate(
                prompts, ctx.max_new_tokens, desc="quantization: reference control")
        return {i.fact_id for i, out in zip(tries, outputs) if score_answer(out, i.answer).hit}

    def rtn(self, ctx: AuditContext[QuantizationOptions], facts: list[Fact], prompts: list[str], name: str, spec: QuantSpec,
            opts: QuantizationOptions) -> Precision:
        """Both models fake-quantized in place (engines locked), asked, then restored exactly."""
        pair = ctx.pair
        with fake_quantized(pair.base, spec, opts), fake_quantized(pair.unlearned, spec, opts):
            answered, lp_b, lp_u = answer_and_logprobs(pair, prompts, [f.answer for f in facts],
                                                       ctx.max_new_tokens, f"{name} questions")
        return Precision(name, answered, lp_b, lp_u)

    @staticmethod
    def agreement(ctx: AuditContext[QuantizationOptions], spec: QuantSpec, opts: QuantizationOptions) -> GridAgreement | None:
        """The paper's mechanism measured on the full-precision weights, on the RTN grid of ``spec``."""
        return grid_agreement(target_weights(ctx.pair.base.model, opts.embeddings, opts.head),
                              target_weights(ctx.pair.unlearned.model, opts.embeddings, opts.head), spec)

    def bitsandbytes(self, ctx: AuditContext[QuantizationOptions], facts: list[Fact], prompts: list[str], name: str, bits: int,
                     quant_type: str) -> Precision:
        """Both models reloaded through bitsandbytes (CUDA only), asked, then released."""
        pair = ModelPair(load_bitsandbytes(ctx.pair.base, bits, quant_type),
                         load_bitsandbytes(ctx.pair.unlearned, bits, quant_type))
        answered, lp_b, lp_u = answer_and_logprobs(pair, prompts, [f.answer for f in facts],
                                                   ctx.max_new_tokens, f"{name} questions")
        del pair
        torch.cuda.empty_cache()
        return Precision(name, answered, lp_b, lp_u)

    def record(self, ctx: AuditContext[QuantizationOptions], facts: list[Fact], prompts: list[str], result: Precision,
               target_ids: set[str]) -> None:
        """One item per fact and precision; ``recovered`` is set on the target facts only."""
        ctx.record([
            item_for(self.name, fact, prompt, answered, category=result.name,
                     recovered=answered.score_unlearned.hit if fact.id in target_ids else None,
                     logprobs=(lp_b, lp_u))
            for fact, prompt, answered, lp_b, lp_u in zip(facts, prompts, result.answered, result.logprob_base,
                                                           result.logprob_unlearned)
        ])

    @staticmethod
    def metrics(facts: list[Fact], results: list[Precision], targets: list[Fact]) -> dict[str, float]:
        fp_base = accuracy(facts, [a.score_base.hit for a in results[0].answered], "forget")
        out: dict[str, float] = {"targets": float(len(targets))}
        target_ids = {f.id for f in targets}
        for result in results:
            hits_b = [a.score_base.hit for a in result.answered]
            hits_u = [a.score_unlearned.hit for a in result.answered]
            p = result.name
            out[f"forget_accuracy_base_{p}"] = accuracy(facts, hits_b, "forget")
            out[f"forget_accuracy_unlearned_{p}"] = accuracy(facts, hits_u, "forget")
            out[f"retain_accuracy_base_{p}"] = accuracy(facts, hits_b, "retain")
            out[f"retain_accuracy_unlearned_{p}"] = accuracy(facts, hits_u, "retain")
            out[f"retention_{p}"] = ratio(out[f"forget_accuracy_unlearned_{p}"], fp_base)
            if p == "fp":
                continue
            out[f"control_retention_{p}"] = ratio(out[f"forget_accuracy_base_{p}"], fp_base)
            recovered = {f.id for f, hit in zip(facts, hits_u) if hit and f.id in target_ids}
            out.update(recovery(f"recovery_rate_{p}", targets, recovered))
            if result.grid is not None:
                out[f"identical_weights_{p}"] = result.grid.same_code
                out[f"within_half_step_{p}"] = result.grid.within_half_step
                out[f"median_change_steps_{p}"] = result.grid.median_change_steps
        rates = [p for p in PRECISIONS if not math.isnan(out[f"recovery_rate_{p}"])]
        best = max(rates, key=lambda p: out[f"recovery_rate_{p}"]) if rates else None
        out["recovery_rate"] = out[f"recovery_rate_{best}"] if best else float("nan")
        if best:  # the headline is the worse precision's rate, with that precision's interval
            out["recovery_rate_ci_low"], out["recovery_rate_ci_high"] = (out[f"recovery_rate_{best}_ci_low"],
                                                                         out[f"recovery_rate_{best}_ci_high"])
        return out

    @staticmethod
    def artifacts(facts: list[Fact], results: list[Precision], target_ids: set[str],
                  opts: QuantizationOptions) -> dict[str, Any]:
        table = {}
        for result in results:
            row = {}
            for split in TRAINED_SPLITS:
                row[f"{split}_base"] = accuracy(facts, [a.score_base.hit for a in result.answered], split)
                row[f"{split}_unlearned"] = accuracy(facts, [a.score_unlearned.hit for a in result.answered], split)
            table[result.name] = row
        flipped = {r.name: [f.id for f, a in zip(facts, r.answered) if f.id in target_ids and a.score_unlearned.hit]
                   for r in results[1:]}
        return {"accuracy": table, "recovered": flipped, "settings": vars(opts).copy()}

    @staticmethod
    def notes(ctx: AuditContext[QuantizationOptions], opts: QuantizationOptions, backend: str) -> list[str]:
        notes = [f"backend: {backend}" + (" (auto)" if opts.backend == "auto" else "")]
        if backend == "bitsandbytes":
            notes.append("identical_weights and within_half_step are measured on the RTN grid (group "
                         f"{opts.group_size}), not on bitsandbytes' blockwise grid")
        if backend == "rtn":
            model = ctx.pair.unlearned.model
            narrow = sorted({w.shape[1] for w in target_weights(model, opts.embeddings, opts.head).values()
                             if w.shape[1] < opts.group_size})
            if narrow:
                notes.append(f"layers with input width {', '.join(map(str, narrow))} (narrower than the group size "
                             f"{opts.group_size}) use one scale per output channel")
            if tied_head(model) and opts.head != opts.embeddings:
                notes.append("the output head is tied to the input embeddings: quantizing one quantizes both")
        return notes

    def figures(self, artifacts: dict[str, Any], items: pd.DataFrame) -> dict[str, go.Figure]:
        figs = {}
        table = artifacts.get("accuracy") or {}
        if table:
            precisions = list(table)
            fig = go.Figure()
            for key in next(iter(table.values())):
                fig.add_bar(name=key.replace("_", " / "), x=precisions, y=[table[p][key] for p in precisions])
            fig.update_layout(title="Greedy accuracy by precision (base = control)", barmode="group",
                              yaxis=dict(title="accuracy", range=[0, 1]), xaxis_title="weights")
            figs["accuracy"] = fig
        forget = items[items["split"] == "forget"] if len(items) else items
        if len(forget):
            fig = go.Figure()
            for model in ("base", "unlearned"):
                fig.add_box(name=model, x=forget["category"], y=forget[f"logprob_{model}"], boxpoints="all")
            fig.update_layout(title="Forget facts: mean log-prob of the gold answer", boxmode="group",
                              yaxis_title="mean token log-prob", xaxis_title="weights")
            figs["forget_logprob"] = fig
        return figs

    def verdict(self, metrics: dict[str, float | None]) -> str:
        rates = ", ".join(f"{bits} {pct(metrics, f'recovery_rate_{bits}')}" for bits in ("int8", "int4"))
        kept = [pct(metrics, f"retention_{p}") for p in ("fp", "int8", "int4")]
        return (f"recovery_rate = {pct(metrics, 'recovery_rate')} ({rates}); forget knowledge retained "
                f"{kept[0]} in full precision, {kept[1]} at int8, {kept[2]} at int4")
