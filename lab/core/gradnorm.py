"""Per-example gradient norms of a local model: what the gradient-norm membership attack reads.

A text the model was trained on sits near a minimum of its loss, so the
gradient of its loss is small ("Pandora's White-Box: Precise Training Data
Detection and Extraction in Large Language Models", the attack
open-unlearning reports as ``mia_gradnorm``).  For each row this takes the
mean next-token NLL over its labelled tokens, back-propagates it through the
engine's model, and returns the p-norm of the gradient of every parameter
tensor that received one (the attack averages them,
:func:`lab.core.unlearning_metrics.gradnorm_score`).

The model stays in eval mode (open-unlearning switches to train mode, which
changes nothing on models without dropout and makes the score random on
models with it), its weights are never changed, and every parameter's
``requires_grad`` is put back as it was.  One row per backward pass, as
open-unlearning's batch size of 1, through the lab's one batching path (so a
run can be stopped between rows).  Gradients of integer (quantized) weights
do not exist; only floating-point tensors are differentiated.
"""

from __future__ import annotations

from typing import Sequence

import torch

from lab.core.backend import Backend
from lab.core.batching import BatchPolicy, run_batched


def tensor_gradient_norms(engine: Backend, rows: Sequence[Sequence[int]], starts: Sequence[int],
                          ends: Sequence[int], p: float, desc: str | None = None) -> list[list[float]]:
    """For each row, the p-norm of the gradient of every parameter tensor of the mean NLL of tokens
    ``row[start:end]`` (each predicted from the tokens before it); an empty list when the row labels none."""
    engine.require("internals", "the gradient-norm attack")
    model = engine.model
    params = [param for param in model.parameters() if param.is_floating_point()]

    def one(index: int) -> list[float]:
        row, start, end = rows[index], starts[index], ends[index]
        if end <= start:
            return []
        ids = torch.tensor([list(row)], dtype=torch.long, device=engine.device)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, start - 1: end - 1].float()
        nll = -torch.log_softmax(logits, dim=-1).gather(-1, ids[0, start:end, None]).squeeze(-1)
        grads = torch.autograd.grad(nll.mean(), params, allow_unused=True)
        return [float(g.detach().float().norm(p=p)) for g in grads if g is not None]

    with engine.lock, torch.enable_grad():
        before = [param.requires_grad for param in params]
        try:
            for param in params:
                param.requires_grad_(True)
            widest = max((len(r) for r in rows), default=1)
            return run_batched([len(r) for r in rows], lambda batch: [one(i) for i in batch],
                               BatchPolicy(max_tokens=widest, max_rows=1), desc)
        finally:
            for param, flag in zip(params, before):
                param.requires_grad_(flag)
