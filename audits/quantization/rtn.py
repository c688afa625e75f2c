"""Weight quantization for the quantization audit, in plain torch (CPU and GPU).

"Catastrophic Failure of LLM Unlearning via Quantization" (ICLR 2025) shows
that quantizing an unlearned model can bring the forgotten knowledge back:
unlearning with a small learning rate moves weights by less than one
quantization step, so base and unlearned weights land on the same grid points.
This module quantizes a model's weights *in place* with round-to-nearest
(RTN) fake quantization (quantize, then dequantize to the model's dtype, the
way RTN is evaluated in that paper) and restores them afterwards from a CPU
copy of only the quantized tensors: no second model is ever held.

Grid conventions follow the GPTQ/AWQ RTN quantizers: weights are grouped
along the input dimension (``group_size`` columns per group, one group per
row when 0 or when the row is shorter); a ragged last group gets its own
scale.  Symmetric: ``scale = max|w| / (2^(b-1) - 1)``, codes in
``[-(2^(b-1) - 1), 2^(b-1) - 1]``.  Asymmetric: the range ``[min(w, 0),
max(w, 0)]`` is split into ``2^b - 1`` steps with an integer zero point.  In
both cases every weight inside the range is within half a step of its
quantized value.

The bitsandbytes path the paper's own code takes is :mod:`audits.quantization.bnb`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from lab.core.errors import LabError



@dataclass(frozen=True)
class QuantSpec:
    """One RTN setting: bit width, group size (0: one group per row), symmetry."""

    bits: int
    group_size: int = 128
    symmetric: bool = False

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise LabError(f"quantization bits must be between 2 and 8, got {self.bits}")
        if self.group_size < 0:
            raise LabError(f"group size must be 0 (per channel) or positive, got {self.group_size}")


def quantize_groups(groups: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Round-to-nearest fake quantization of each row of ``groups`` with its own scale (float32 in, out)."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = groups.abs().amax(dim=1, keepdim=True) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.clamp(torch.round(groups / scale), -qmax, qmax) * scale
    levels = 2**bits - 1
    low = groups.amin(dim=1, keepdim=True).clamp(max=0)
    high = groups.amax(dim=1, keepdim=True).clamp(min=0)
    scale = (high - low) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-low / scale)
    codes = torch.clamp(torch.round(groups / scale) + zero, 0, levels)
    return (codes - zero) * scale


def fake_quantize(weight: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``weight`` ([rows, columns]) quantized per row-group and dequantized, in its own dtype."""
    if weight.dim() != 2:
        raise ValueError("only 2-D weights (linear layers, embeddings) are quantized")
    rows, cols = weight.shape
    group = spec.group_size if 0 < spec.group_size < cols else cols
    full = cols - cols % group
    w = weight.detach().float()
    parts = [quantize_groups(w[:, :full].reshape(-1, group), spec.bits, spec.symmetric).reshape(rows, full)]
    if full < cols:
        parts.append(quantize_groups(w[:, full:], spec.bits, spec.symmetric))
    return torch.cat(parts, dim=1).to(weight.dtype)


def target_weights(model: nn.Module, embeddings: bool = False, head: bool = False) -> dict[str, nn.Parameter]:
    """The weights to quantize: every linear layer, plus the input embeddings and the output head if asked.

    A parameter shared by two modules (tied embeddings and head) appears once,
    under its first name; it is quantized when either module is selected.
    """
    head_module = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    embed_module = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    chosen: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        is_head, is_embed = module is head_module, module is embed_module
        wanted = (head if is_head else isinstance(module, nn.Linear)) or (embeddings and is_embed)
        weight = getattr(module, "weight", None)
        if wanted and isinstance(weight, nn.Parameter) and weight.dim() == 2 and id(weight) not in seen:
            seen.add(id(weight))
            chosen[f"{name}.weight" if name else "weight"] = weight
    return chosen


def tied_head(model: nn.Module) -> bool:
    """True when the output head shares its weight with the input embeddings."""
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    return head is not None and embed is not None and head.weight is embed.weight


@contextmanager
def quantized(weights: dict[str, nn.Parameter], spec: QuantSpec) -> Iterator[None]:
    """Fake-quantize ``weights`` in place for the ``with`` block, then restore them exactly.

    The originals wait on the CPU (only these tensors, not the whole model), so
    GPU memory holds a single copy of the model throughout.
    """
    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, param in weights.items():
                saved[name] = param.detach().to("cpu", copy=True)
                param.copy_(fake_quantize(param, spec))
        yield
    finally:
        with torch.no_grad():
            for name, original in saved.items():
                weights[name].copy_(original)


def identical_share(a: dict[str, nn.Parameter], b: dict[str, nn.Parameter]) -> float:
    """Share of weight entries equal in ``a`` and ``b`` (same names and shapes); NaN when none compare.

    Applied to two quantized models it measures the paper's mechanism: how many
    weights unlearning left on the base model's grid point.
    """
    equal = total = 0
    for name, param in a.items():
        other = b.get(name)
        if other is None or other.shape != param.shape:
            continue
        equal += int((param.detach() == other.detach().to(param.device)).sum())
        total += param.numel()
    return equal / total if total else float("nan")
