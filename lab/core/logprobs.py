"""Log-probs of chosen tokens without the full ``[batch, length, vocabulary]`` logits.

At a 128k-256k vocabulary a float32 logits tensor over a scoring batch is
tens of GB, most of it for positions nobody asks about.  :func:`gather` takes
the final hidden states of only the positions that predict a target token
(each position once, however many targets it scores: the letters of a
multiple-choice question share one) and applies the output head (and Gemma's
final soft-cap) ``chunk`` positions at a time, keeping per target what the
metrics need: its log-prob, whether it is the argmax, and, for Min-K%++, the
mean and standard deviation of log p over the vocabulary.  Peak memory is
``chunk x vocabulary`` floats, whatever the batch.

Without the distribution, log p(target) is ``logit - logsumexp(logits)``
computed in place on the chunk's logits: no log-softmax tensor beside them
(the same number up to float rounding, a few 1e-7 per token).
"""

from __future__ import annotations

from typing import Callable

import torch

DEFAULT_CHUNK_BYTES = 256 * 2**20  # a chunk's float32 logits (and, for the distribution, log-softmax and exp)


def chunk_rows(vocab: int, distribution: bool, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Positions per chunk so that what a chunk holds fits the budget: its logits, worked on in place, or with
    the distribution its logits, log-softmax and probabilities.  Larger chunks keep the head's matrix product
    efficient (on 2 CPU cores a [174, 256] x [256, 128k] product ran about 25% slower per row than [1024, 256])."""
    return max(1, budget_bytes // (vocab * 4 * (3 if distribution else 1)))


def _columns(logits: torch.Tensor, owner: torch.Tensor, wanted: torch.Tensor, distribution: bool) -> torch.Tensor:
    """[log p(target), argmax == target, (mu, sigma)] for targets ``wanted`` read at rows ``owner`` of ``logits``
    (float32, one row per position; overwritten)."""
    if distribution:
        logp = torch.log_softmax(logits, dim=-1)
        probs = logp.exp()
        mu = (probs * logp).sum(-1)
        var = (probs * logp.square()).sum(-1) - mu.square()
        picked = logp[owner, wanted]
        top = logp.argmax(-1)
        return torch.stack([picked, (top[owner] == wanted).float(), mu[owner], var.clamp(min=0).sqrt()[owner]], dim=1)
    picked = logits[owner, wanted]
    peak, top = logits.max(-1)
    total = logits.sub_(peak.unsqueeze(-1)).exp_().sum(-1)
    logsumexp = peak + total.log()
    return torch.stack([picked - logsumexp[owner], (top[owner] == wanted).float()], dim=1)


@torch.no_grad()
def gather(hidden: torch.Tensor, targets: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
           chunk: int, distribution: bool = False, owners: torch.Tensor | None = None) -> torch.Tensor:
    """Per target: [log p(target), argmax == target] (+ [mu, sigma] with ``distribution``), float32.

    ``hidden``: [positions, hidden] final states of the positions that predict ``targets`` [targets];
    ``owners`` [targets]: the position (row of ``hidden``) each target is read at (default: one target per
    position, in order); ``head`` maps states to logits (output head and any soft-cap).
    """
    owners = torch.arange(len(targets), device=targets.device) if owners is None else owners
    table = torch.zeros((len(targets), 4 if distribution else 2), device=hidden.device)
    for start in range(0, len(hidden), chunk):
        mine = ((owners >= start) & (owners < start + chunk)).nonzero().squeeze(-1)
        if len(mine):
            logits = head(hidden[start: start + chunk]).float()
            table[mine] = _columns(logits, owners[mine] - start, targets[mine], distribution)
            del logits
    return table
