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


@dataclass(frozen=True)
class Grid:
    """Where each row of a group matrix lands: integer ``codes``, the per-row ``scale`` (one step) and ``zero``."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor

    def values(self) -> torch.Tensor:
        return (self.codes - self.zero) * self.scale


def grid_of(groups: torch.Tensor, bits: int, symmetric: bool) -> Grid:
    """Round-to-nearest grid of each row of ``groups`` with its own scale (float32 in)."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = groups.abs().amax(dim=1, keepdim=True) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return Grid(torch.clamp(torch.round(groups / scale), -qmax, qmax), scale, torch.zeros_like(scale))
    levels = 2**bits - 1
    low = groups.amin(dim=1, keepdim=True).clamp(max=0)
    high = groups.amax(dim=1, keepdim=True).clamp(min=0)
    scale = (high - low) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-low / scale)
    return Grid(torch.clamp(torch.round(groups / scale) + zero, 0, levels), scale, zero)


def grouped(weight: torch.Tensor, spec: QuantSpec) -> list[torch.Tensor]:
    """``weight`` ([rows, columns], float32) cut into row-groups of ``group_size`` columns; a ragged tail apart."""
    if weight.dim() != 2:
        raise ValueError("only 2-D weights (linear layers, embeddings) are quantized")
    cols = weight.shape[1]
    group = spec.group_size if 0 < spec.group_size < cols else cols
    full = cols - cols % group
    parts = [weight[:, :full].reshape(-1, group)]
    if full < cols:
        parts.append(weight[:, full:])
    return parts


def fake_quantize(weight: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``weight`` ([rows, columns]) quantized per row-group and dequantized, in its own dtype."""
    rows = weight.shape[0]
    parts = [grid_of(part, spec.bits, spec.symmetric).values().reshape(rows, -1)
             for part in grouped(weight.detach().float(), spec)]
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


@dataclass
class GridAgreement:
    """How far unlearning moved the weights, measured in steps of the quantization grid.

    The paper's mechanism (Zhang et al., ICLR 2025, section 4): an update below
    half a step leaves a weight on the base model's grid point, so the
    quantized unlearned model is the quantized base model there.  ``same_code``
    is the share of weights whose integer code is equal in both models (each
    quantized with its own scales, as deployed); ``within_half_step`` the share
    whose full-precision change is below half of the base model's step;
    ``median_change_steps`` the median change in steps.
    """

    same_code: float
    within_half_step: float
    median_change_steps: float


def grid_agreement(base: dict[str, nn.Parameter], unlearned: dict[str, nn.Parameter],
                   spec: QuantSpec) -> GridAgreement | None:
    """Compare the full-precision weights of two models on ``spec``'s grid; None when no weight pairs up."""
    same = half = total = 0
    changes: list[torch.Tensor] = []
    with torch.no_grad():
        for name, param in base.items():
            other = unlearned.get(name)
            if other is None or other.shape != param.shape:
                continue
            parts_b = grouped(param.detach().float().cpu(), spec)
            parts_u = grouped(other.detach().float().cpu(), spec)
            for part_b, part_u in zip(parts_b, parts_u):
                grid_b = grid_of(part_b, spec.bits, spec.symmetric)
                grid_u = grid_of(part_u, spec.bits, spec.symmetric)
                steps = (part_u - part_b).abs() / grid_b.scale
                same += int((grid_b.codes == grid_u.codes).sum())
                half += int((steps < 0.5).sum())
                total += part_b.numel()
                changes.append(steps.flatten()[:: max(1, steps.numel() // 4096)])
    if not total:
        return None
    return GridAgreement(same / total, half / total, float(torch.cat(changes).median()))
