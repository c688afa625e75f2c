"""Neighbor variants of an example for REMIND's input loss landscape.

"REMIND: Input Loss Landscapes Reveal Residual Memorization in Post-Unlearning
LLMs" probes a model's loss on small, *semantically coherent* variations of
each example, built by an embedding-proximity perturbation (the paper's code
is not public; its anonymous repository could not be reached).  Our reading
of that description:

- only content words of the input are perturbed: tokens inside the
  question's own words, never the prompt's scaffold ("Question:", "Answer:",
  a chat template's markers), never special tokens, never the answer;
- a replacement is one of the token's nearest neighbors in the model's own
  input-embedding space (cosine) that is a different word: casing and
  sub-word variants of the same word (" Paris" / "paris" / " Par") are not
  neighbors, nor are tokens without a letter or digit;
- the loss is scored on the unperturbed positions only (the answer after the
  perturbed question), so a variant measures how the answer's likelihood
  moves when the context moves, not the surprise of the swapped token itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def word_key(piece: str) -> str:
    """A token's word, for comparing variants: leading space markers and case removed."""
    return piece.replace("Ġ", "").replace("▁", "").strip().lower()


def same_word(a: str, b: str) -> bool:
    """Casing or sub-word variants of one word (one's letters start the other's)."""
    return bool(a) and bool(b) and (a.startswith(b) or b.startswith(a))


def nearest_tokens(embeddings: torch.Tensor, token_ids: Collection[int], k: int, banned: Collection[int] = (),
                   piece: Callable[[int], str] | None = None, chunk: int = 1024,
                   pool: int = 8) -> dict[int, list[int]]:
    """The ``k`` most cosine-similar different words to each of ``token_ids`` (itself and ``banned`` excluded).

    ``piece`` maps an id to its token string; with it, candidates that are the same word (casing, sub-word)
    or carry no letter or digit are skipped, looking ``pool`` times deeper than ``k``.  Only the queried rows
    of the similarity matrix are computed, ``chunk`` at a time.
    """
    normed = F.normalize(embeddings.detach().float(), dim=1)
    blocked = torch.zeros(normed.shape[0], dtype=torch.bool, device=normed.device)
    blocked[list(banned)] = True
    depth = min(k * (pool if piece else 1), int((~blocked).sum()) - 1)
    queries = sorted(token_ids)
    out: dict[int, list[int]] = {}
    for start in range(0, len(queries), chunk):
        ids = torch.as_tensor(queries[start:start + chunk], device=normed.device)
        sims = normed[ids] @ normed.T
        sims[:, blocked] = -torch.inf
        sims[torch.arange(len(ids), device=normed.device), ids] = -torch.inf
        top = sims.topk(max(depth, 0), dim=1).indices.cpu().tolist()
        for token, candidates in zip(ids.cpu().tolist(), top):
            out[token] = _different_words(token, candidates, k, piece) if piece else candidates[:k]
    return out


def _different_words(token: int, candidates: list[int], k: int, piece: Callable[[int], str]) -> list[int]:
    own = word_key(piece(token))
    kept = []
    for cand in candidates:
        key = word_key(piece(cand))
        if key and any(c.isalnum() for c in key) and not same_word(own, key):
            kept.append(cand)
        if len(kept) == k:
            break
    return kept


@dataclass(frozen=True)
class Variant:
    """One neighbor of an example: its token row and which positions were replaced."""

    row: tuple[int, ...]
    radius: int
    positions: tuple[int, ...]


def make_variants(row: Sequence[int], neighbors: dict[int, list[int]], radius: int, count: int,
                  rng: np.random.Generator, positions: Sequence[int]) -> list[Variant]:
    """``count`` variants of ``row`` that differ from it in exactly ``radius`` of ``positions``.

    Positions are drawn uniformly without replacement among ``positions`` whose
    token has neighbors; each gets a neighbor drawn uniformly from its list.
    Returns no variants when fewer than ``radius`` such positions exist.
    """
    eligible = [i for i in positions if neighbors.get(row[i])]
    if radius < 1 or len(eligible) < radius:
        return []
    variants = []
    for _ in range(count):
        chosen = tuple(sorted(rng.choice(eligible, size=radius, replace=False).tolist()))
        new = list(row)
        for pos in chosen:
            options = neighbors[row[pos]]
            new[pos] = options[int(rng.integers(len(options)))]
        variants.append(Variant(tuple(new), radius, chosen))
    return variants
