"""Log-probs of chosen tokens without the full ``[batch, length, vocabulary]`` logits.

At a 128k-256k vocabulary a float32 logits tensor over a scoring batch is
tens of GB, most of it for positions nobody asks about.  :func:`gather` takes
the final hidden states of only the positions that predict a target token
and applies the output head (and Gemma's final soft-cap) ``chunk`` rows at a
time, keeping per position what the metrics need: the target's log-prob,
whether it is the argmax, and, for Min-K%++, the mean and standard deviation
of log p over the vocabulary.  Peak memory is ``chunk x vocabulary`` floats,
whatever the batch.
"""

from __future__ import annotations

from typing import Callable

import torch

DEFAULT_CHUNK_BYTES = 256 * 2**20  # float32 logits of one chunk, with log-softmax and exp beside them


def chunk_rows(vocab: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Positions per chunk so that a chunk's logits, log-softmax and probabilities fit the budget."""
    return max(1, budget_bytes // (vocab * 4 * 3))


@torch.no_grad()
def gather(hidden: torch.Tensor, targets: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
           chunk: int, distribution: bool = False) -> torch.Tensor:
    """Per position: [log p(target), argmax == target] (+ [mu, sigma] with ``distribution``), float32.

    ``hidden``: [positions, hidden] final states of the positions that predict ``targets`` [positions];
    ``head`` maps states to logits (output head and any soft-cap).
    """
    columns = []
    for states, wanted in zip(hidden.split(chunk), targets.split(chunk)):
        logp = torch.log_softmax(head(states).float(), dim=-1)
        picked = logp.gather(-1, wanted.unsqueeze(-1)).squeeze(-1)
        part = [picked, (logp.argmax(-1) == wanted).float()]
        if distribution:
            probs = logp.exp()
            mu = (probs * logp).sum(-1)
            var = (probs * logp.square()).sum(-1) - mu.square()
            part += [mu, var.clamp(min=0).sqrt()]
        columns.append(torch.stack(part, dim=1))
        del logp
    return torch.cat(columns) if columns else torch.zeros((0, 4 if distribution else 2))
