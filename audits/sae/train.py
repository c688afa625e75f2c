"""Sparse autoencoders on the base model's residual stream: load one, or train one here.

"Sparse-Autoencoder-Guided Internal Representation Unlearning for Large
Language Models" (Yamashita et al., 2025) defines forgetting inside an SAE's
latent space; this module provides that latent space for any causal LM, from
one of three sources (the ``source`` string):

- ``train``: train a TopK or standard SAE with sae-lens's own ``SAETrainer``
  and training SAE classes, fed by an iterator over activations of the base
  model on a text corpus (no HookedTransformer needed).  The result is saved
  in sae-lens format under the lab cache, keyed by the base model's content
  hash, the layer, the settings and the corpus, and reused on the next run.
- a directory holding an SAE in sae-lens format (``cfg.json`` and
  ``sae_weights.safetensors``, as ``save_inference_model`` writes them).
- ``pretrained:<release>:<sae_id>``: a sae-lens pretrained release (needs
  the Hugging Face Hub, so a machine that is online).

Layers are hidden-state indices: ``layer`` l is ``hidden_states[l]``, the
residual stream after l decoder blocks (0 = embeddings), which is
TransformerLens's ``blocks.{l}.hook_resid_pre``.  Whatever the source, the
reconstruction quality (explained variance, L0) is measured on the base
model's own activations, so an SAE that does not fit the model shows it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

from lab.core import settings
from lab.core.architecture import layer_count, middle_layer, text_config
from lab.core.batching import check_cancelled, report
from lab.core.errors import LabError
from lab.core.facts import Fact
from lab.core.prompts import Encoder

if TYPE_CHECKING:
    from sae_lens import SAE

    from lab.core.backend import Backend

PRETRAINED_PREFIX = "pretrained:"
CACHE_VERSION = 1
INFO_FILE = "lab_sae.json"
TRAINING = "training the SAE"  # what its steps are reported as (lab.core.batching.report)
EVAL_SHARE = 0.1  # texts held out of training to measure reconstruction
MAX_TEXT_TOKENS = 256  # each corpus document is cut here (short contexts suffice; small models have small windows)
_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


@dataclass(frozen=True)
class TrainSettings:
    """How an SAE is trained here (part of the cache key)."""

    architecture: str = "topk"  # topk | standard
    width: int = 8  # latents per residual dimension (d_sae = width * d_model)
    k: int = 16  # active latents per token (topk)
    l1_coefficient: float = 5.0  # sparsity penalty (standard)
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0


@dataclass
class SaeQuality:
    """Reconstruction on the base model's activations, and how often each latent fires."""

    explained_variance: float
    l0: float
    dead_share: float
    tokens: int
    density: np.ndarray  # [d_sae] share of corpus tokens on which each latent is active


@dataclass
class LoadedSae:
    """An SAE ready to encode the residual stream at ``layer`` of the base model."""

    sae: "SAE"
    layer: int
    source: str
    quality: SaeQuality
    path: str = ""  # where it lives on disk ("" when not saved)
    trained: bool = False  # trained in this call (not loaded from the cache)
    notes: tuple[str, ...] = ()

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    def summary(self) -> dict:
        q = self.quality
        return {"source": self.source, "layer": self.layer, "architecture": self.sae.cfg.architecture(),
                "d_in": int(self.sae.cfg.d_in), "d_sae": self.d_sae, "path": self.path,
                "explained_variance": q.explained_variance, "l0": q.l0, "dead_share": q.dead_share,
                "tokens": q.tokens}


# --------------------------------------------------------------------------- corpus


def fact_corpus(engine: "Backend", facts: Sequence[Fact]) -> list[str]:
    """The default corpus: each fact's text (biography) and its question answered, deduplicated."""
    texts = [f.text for f in facts if f.text] + [Encoder.joined(engine.prompt(f.question), f.answer) for f in facts]
    return list(dict.fromkeys(texts))


def read_corpus(path: str) -> list[str]:
    """A user corpus: one document per non-empty line of a text file."""
    file = Path(path)
    if not file.is_file():
        raise LabError(f"SAE corpus file not found: {path}")
    try:
        lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise LabError(f"SAE corpus file {path} is not UTF-8 text at byte {exc.start} (a binary file, or another "
                       "encoding: save it as UTF-8)") from None
    texts = [line for line in lines if line]
    if not texts:
        raise LabError(f"SAE corpus file {path} has no text")
    return texts


def corpus_activations(engine: "Backend", texts: Sequence[str], layer: int) -> list[torch.Tensor]:
    """Residual stream at ``layer`` of every non-special token, per text: [tokens, d_model] each."""
    rows = [engine.tokenizer(t)["input_ids"][:MAX_TEXT_TOKENS] or [engine.pad_id] for t in texts]
    states = engine.row_states(rows, layer, desc=f"SAE corpus activations (layer {layer})")
    special = set(engine.tokenizer.all_special_ids)
    return [s[[tok not in special for tok in row]] for s, row in zip(states, rows)]


def split_indices(n_texts: int, seed: int) -> tuple[list[int], list[int]]:
    """Training and held-out text indices (``EVAL_SHARE`` held out; all of them both ways for one text)."""
    order = [int(i) for i in np.random.default_rng(seed).permutation(n_texts)]
    n_eval = min(max(1, round(n_texts * EVAL_SHARE)), n_texts - 1)
    if n_eval < 1:
        return order, order
    return order[n_eval:], order[:n_eval]


def stack(per_text: Sequence[torch.Tensor], indices: Sequence[int]) -> torch.Tensor:
    """The activation rows of the chosen texts, checked to be enough to work with."""
    acts = torch.cat([per_text[i] for i in indices])
    if acts.shape[0] < 2:
        raise LabError("the SAE corpus gave fewer than 2 tokens of activations; give a larger corpus")
    return acts


# --------------------------------------------------------------------------- quality


@torch.no_grad()
def encode(sae: "SAE", states: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Latent activations [n, d_sae] of residual states [n, d_model], on the CPU."""
    dtype = next(sae.parameters()).dtype
    return torch.cat([sae.encode(part.to(sae.device, dtype)).float().cpu() for part in states.split(chunk)])


@torch.no_grad()
def measure_quality(sae: "SAE", acts: torch.Tensor, held_out: torch.Tensor, chunk: int = 4096) -> SaeQuality:
    """Explained variance and L0 on ``held_out``; firing density per latent on all of ``acts``."""
    dtype = next(sae.parameters()).dtype
    err, fired = 0.0, 0.0
    for part in held_out.split(chunk):
        x = part.to(sae.device, dtype)
        z = sae.encode(x)
        err += float((sae.decode(z) - x).float().square().sum())
        fired += float((z > 0).sum())
    total = float((held_out - held_out.mean(0)).square().sum())
    counts = torch.zeros(int(sae.cfg.d_sae))
    for part in acts.split(chunk):
        counts += (sae.encode(part.to(sae.device, dtype)) > 0).float().sum(0).cpu()
    density = (counts / acts.shape[0]).numpy()
    return SaeQuality(
        explained_variance=1.0 - err / total if total > 0 else float("nan"),
        l0=fired / held_out.shape[0],
        dead_share=float((density == 0).mean()),
        tokens=int(acts.shape[0]),
        density=density,
    )


# --------------------------------------------------------------------------- training


def _batches(acts: torch.Tensor, batch_size: int, seed: int, steps: int) -> Iterator[torch.Tensor]:
    """Endless shuffled batches of activation rows (the trainer's data provider).  Each batch is a training step:
    a stop asked for (:func:`lab.core.batching.cancellable`) ends training before it, and a listener
    (:func:`lab.core.batching.reporting`) hears how many of the ``steps`` are done."""
    generator = torch.Generator().manual_seed(seed)
    taken = 0
    while True:
        order = torch.randperm(acts.shape[0], generator=generator)
        for start in range(0, acts.shape[0] - batch_size + 1, batch_size):
            check_cancelled()
            report(TRAINING, min(taken, steps), steps)
            taken += 1
            yield acts[order[start : start + batch_size]]


def _training_sae(d_in: int, train: TrainSettings, device: str, metadata: dict):
    """A fresh sae-lens training SAE of the requested architecture."""
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    d_sae = train.width * d_in
    common = dict(d_in=d_in, d_sae=d_sae, device=device, normalize_activations="expected_average_only_in",
                  metadata=SAEMetadata(**metadata))
    if train.architecture == "topk":
        if not 1 <= train.k <= d_sae:
            raise LabError(f"SAE k must be between 1 and the number of latents ({d_sae}), got {train.k}")
        return TopKTrainingSAE(TopKTrainingSAEConfig(k=train.k, **common))
    if train.architecture == "standard":
        return StandardTrainingSAE(StandardTrainingSAEConfig(l1_coefficient=train.l1_coefficient, **common))
    raise LabError(f"unknown SAE architecture '{train.architecture}' (use topk or standard)")


def train_sae(acts: torch.Tensor, train: TrainSettings, device: str, metadata: dict):
    """Train an SAE on activation rows with sae-lens's SAETrainer (progress bar included)."""
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig

    if train.width < 1 or train.steps < 1 or train.batch_size < 1 or train.lr <= 0:
        raise LabError("SAE width, steps and batch_size must be positive, and lr above 0")
    torch.manual_seed(train.seed)
    batch_size = min(train.batch_size, acts.shape[0])
    sae = _training_sae(acts.shape[1], train, device, metadata)
    config = SAETrainerConfig(
        total_training_samples=train.steps * batch_size, train_batch_size_samples=batch_size, lr=train.lr,
        lr_end=train.lr / 10, lr_decay_steps=train.steps // 5, device=device,
        n_batches_for_norm_estimate=min(100, train.steps),
        dead_feature_window=max(1, train.steps // 4), feature_sampling_window=max(1, train.steps // 2),
    )
    steps = train.steps + config.n_batches_for_norm_estimate  # the norm estimate reads batches first
    return SAETrainer(config, sae, _batches(acts, batch_size, train.seed, steps)).fit()


# --------------------------------------------------------------------------- sources


def hook_layer(hook_name: str | None) -> int | None:
    """Hidden-state index of a TransformerLens residual hook name (None for other hooks)."""
    match = _HOOK.match(hook_name or "")
    if not match:
        return None
    return int(match.group(1)) + (1 if match.group(2) == "post" else 0)


def load_sae_dir(path: str, device: str) -> "SAE":
    """An SAE saved in sae-lens format."""
    from sae_lens import SAE

    folder = Path(path)
    if not (folder / "cfg.json").is_file():
        raise LabError(f"no SAE in sae-lens format at {path} (expected cfg.json and sae_weights.safetensors)")
    try:
        return SAE.load_from_disk(folder, device=device)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise LabError(f"could not load the SAE at {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None


def _offline() -> bool:
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.strip().lower() in {"1", "true", "yes", "on"} for flag in flags)


def load_pretrained(spec: str, device: str) -> "SAE":
    """A sae-lens pretrained release, ``<release>:<sae_id>``; needs the Hub."""
    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    release, _, sae_id = spec.partition(":")
    if not release or not sae_id:
        raise LabError(f"pretrained SAE must be given as pretrained:<release>:<sae_id>, got 'pretrained:{spec}'")
    directory = get_pretrained_saes_directory()
    if release not in directory:
        raise LabError(f"'{release}' is not a sae-lens pretrained release")
    if sae_id not in directory[release].saes_map:
        examples = ", ".join(list(directory[release].saes_map)[:3])
        raise LabError(f"release '{release}' has no SAE '{sae_id}' (e.g. {examples})")
    if _offline():
        raise LabError(f"loading the pretrained SAE {release}:{sae_id} needs the Hugging Face Hub, "
                       "but this machine is offline; train one here (sae=train) or give a directory")
    try:
        return SAE.from_pretrained(release, sae_id, device=device)
    except Exception as exc:  # noqa: BLE001 - every download failure is the user's network, not a bug
        raise LabError(f"could not download the pretrained SAE {release}:{sae_id} "
                       f"(is this machine online?): {type(exc).__name__}") from None


def _cache_folder(engine: "Backend", layer: int, train: TrainSettings, texts: Sequence[str]) -> Path:
    corpus = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    payload = {"version": CACHE_VERSION, "model": engine.info.content_hash or engine.info.ref, "layer": layer,
               "settings": asdict(train), "corpus": corpus}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
    return settings.cache_dir() / "sae" / key


def _train_cached(engine: "Backend", layer: int, texts: list[str], per_text: list[torch.Tensor],
                  train: TrainSettings) -> tuple["SAE", str, bool, list[str]]:
    """The cached SAE for this model, layer, settings and corpus; trained and saved on a miss.

    The cache is read only when the base model has a content hash: a model
    without one (not a local folder) might have changed under the same name.
    """
    folder = _cache_folder(engine, layer, train, texts)
    notes = [] if engine.info.content_hash else [
        "the base model has no content hash (not a local folder): the SAE was trained afresh, not reused"]
    if engine.info.content_hash and (folder / "cfg.json").is_file():
        return load_sae_dir(str(folder), str(engine.device)), str(folder), False, notes
    fit, _ = split_indices(len(texts), train.seed)
    metadata = {"model_name": engine.info.ref, "hook_name": f"blocks.{layer}.hook_resid_pre",
                "lab_settings": asdict(train), "lab_model_hash": engine.info.content_hash}
    trained = train_sae(stack(per_text, fit), train, str(engine.device), metadata)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    trained.save_inference_model(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return load_sae_dir(str(folder), str(engine.device)), str(folder), True, notes


def _layer_for(sae: "SAE", requested: int | None, n_layers: int, source: str) -> int:
    """The layer an SAE reads: its hook name, else the requested layer, else the middle."""
    from_hook = hook_layer(sae.cfg.metadata.hook_name)
    if from_hook is not None and requested is not None and from_hook != requested:
        raise LabError(f"the SAE from {source} reads {sae.cfg.metadata.hook_name} (layer {from_hook}), "
                       f"not layer {requested}")
    return check_layer(from_hook if from_hook is not None else requested, n_layers)


def check_layer(layer: int | None, n_layers: int) -> int:
    """A valid residual-stream index; None means the middle of the stack.

    Index ``n_layers`` is excluded: Hugging Face returns it after the final norm,
    so it is not the raw residual stream an SAE reads.
    """
    if layer is None:
        return middle_layer(n_layers)
    if not 0 <= layer < n_layers:
        raise LabError(f"SAE layer must be between 0 and {n_layers - 1} for this {n_layers}-layer model, got {layer}")
    return layer


def get_sae(engine: "Backend", source: str, layer: int | None, texts: list[str],
            train: TrainSettings = TrainSettings()) -> LoadedSae:
    """An SAE for the base model's residual stream, with its reconstruction quality measured.

    A trained SAE is scored on the held-out share of the corpus; a loaded one
    on all of it.  Firing densities always cover the whole corpus.
    """
    if not texts:
        raise LabError("the SAE needs a text corpus, and this one is empty")
    n_layers = layer_count(engine.model)
    device = str(engine.device)
    source = source.strip() or "train"
    if source == "train":
        layer = check_layer(layer, n_layers)
        per_text = corpus_activations(engine, texts, layer)
        sae, path, trained, notes = _train_cached(engine, layer, texts, per_text, train)
        held_out = stack(per_text, split_indices(len(texts), train.seed)[1])
    else:
        sae, path, notes = _load(source, device)
        layer, trained = _layer_for(sae, layer, n_layers, source), False
        per_text = corpus_activations(engine, texts, layer)
        held_out = stack(per_text, range(len(texts)))
    hidden = int(getattr(text_config(engine.model), "hidden_size", 0) or sae.cfg.d_in)
    if int(sae.cfg.d_in) != hidden:
        raise LabError(f"the SAE reads vectors of size {sae.cfg.d_in} but the model's residual stream has {hidden}")
    quality = measure_quality(sae, stack(per_text, range(len(texts))), held_out)
    return LoadedSae(sae, layer, source, quality, path, trained, tuple(notes))


def _load(source: str, device: str) -> tuple["SAE", str, list[str]]:
    """An SAE from a directory or a pretrained release, with notes on how far to trust it."""
    if not source.startswith(PRETRAINED_PREFIX):
        return load_sae_dir(source, device), source, []
    sae = load_pretrained(source[len(PRETRAINED_PREFIX):], device)
    extra = sae.cfg.metadata.model_from_pretrained_kwargs
    notes = [f"this SAE was trained on TransformerLens activations processed with {extra}; Hugging Face "
             "activations can differ, see the explained variance"] if extra else []
    return sae, "", notes
