"""Neighbor variants of a token row for REMIND's input loss landscape.

"REMIND: Input Loss Landscapes Reveal Residual Memorization in Post-Unlearning
LLMs" probes a model's loss on small variations of each example, built by an
embedding-proximity perturbation.  Our concrete choice (the paper leaves the
details open): a variant at radius ``r`` replaces ``r`` distinct tokens of
the row, each by one of its ``k`` nearest neighbors in the model's own
input-embedding space (cosine similarity), never by itself or by a special
token.  Special tokens (BOS and the like) are never replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def nearest_tokens(embeddings: torch.Tensor, token_ids: Collection[int], k: int, banned: Collection[int] = (),
                   chunk: int = 1024) -> dict[int, list[int]]:
    """The ``k`` most cosine-similar tokens to each of ``token_ids`` (itself and ``banned`` excluded).

    Only the queried rows of the similarity matrix are computed, ``chunk`` at a
    time, so a large vocabulary never needs a vocabulary-squared matrix.
    """
    normed = F.normalize(embeddings.detach().float(), dim=1)
    blocked = torch.zeros(normed.shape[0], dtype=torch.bool, device=normed.device)
    blocked[list(banned)] = True
    k = min(k, int((~blocked).sum()) - 1)
    queries = sorted(token_ids)
    out: dict[int, list[int]] = {}
    for start in range(0, len(queries), chunk):
        ids = torch.as_tensor(queries[start:start + chunk], device=normed.device)
        sims = normed[ids] @ normed.T
        sims[:, blocked] = -torch.inf
        sims[torch.arange(len(ids), device=normed.device), ids] = -torch.inf
        top = sims.topk(max(k, 0), dim=1).indices.cpu().tolist()
        out.update(zip(ids.cpu().tolist(), top))
    return out


@dataclass(frozen=True)
class Variant:
    """One neighbor of an example: its token row and which positions were replaced."""

    row: tuple[int, ...]
    radius: int
    positions: tuple[int, ...]


def make_variants(row: Sequence[int], neighbors: dict[int, list[int]], radius: int, count: int,
                  rng: np.random.Generator, protected: Collection[int] = ()) -> list[Variant]:
    """``count`` variants of ``row`` that differ from it in exactly ``radius`` positions.

    Positions are drawn uniformly without replacement among tokens that are not
    ``protected`` and have neighbors; each gets a neighbor drawn uniformly from
    its list.  Returns no variants when the row has fewer such positions than
    ``radius``.
    """
    eligible = [i for i, t in enumerate(row) if t not in protected and neighbors.get(t)]
    if radius < 1 or len(eligible) < radius:
        return []
    variants = []
    for _ in range(count):
        positions = tuple(sorted(rng.choice(eligible, size=radius, replace=False).tolist()))
        new = list(row)
        for pos in positions:
            options = neighbors[row[pos]]
            new[pos] = options[int(rng.integers(len(options)))]
        variants.append(Variant(tuple(new), radius, positions))
    return variants
