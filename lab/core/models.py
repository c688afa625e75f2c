"""Loading models: Hugging Face ids, local directories and ``demo:<name>``.

The same path serves the demo and a user's model: a demo reference is only a
shortcut for a local directory written with ``save_pretrained``.
``trust_remote_code`` stays off unless the caller asks for it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from lab.core import settings
from lab.core.backend import Backend, ModelInfo
from lab.core.engine import Engine, PromptFormat
from lab.core.errors import LabError, is_oom
from lab.core.policy import Policy
from lab.core.policy import current as current_policy
from lab.core.refs import ModelRef, require_local

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
# The lab draws its own progress bars; transformers' per-load bars and advisory
# warnings would break the one-line error contract of the CLI.
hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PAIR_ROLES = ("base", "unlearned")  # the two models of every audited pair, in display order


def pick_device(requested: str = "auto") -> str:
    """``auto`` prefers CUDA, then Apple MPS, then CPU; anything else is checked."""
    if requested in ("", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise LabError(f"device '{requested}' requested but CUDA is not available on this machine")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LabError("device 'mps' requested but Apple MPS is not available on this machine")
    if requested not in ("cpu", "mps") and not requested.startswith("cuda"):
        raise LabError(f"unknown device '{requested}' (use auto, cpu, cuda, cuda:N or mps)")
    return requested


def pick_dtype(requested: str, device: str) -> torch.dtype:
    """``auto``: bfloat16 on a CUDA device that supports it, float32 elsewhere."""
    if requested in ("", "auto"):
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if requested not in DTYPES:
        raise LabError(f"unknown dtype '{requested}' (use auto, {', '.join(DTYPES)})")
    return DTYPES[requested]


def content_hash(path: str) -> str:
    """SHA-256 over the weight files of a local model, cached by size and mtime."""
    folder = Path(path)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        return ""
    key = json.dumps([[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files])
    cache_file = settings.cache_dir() / "hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, json.JSONDecodeError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    value = digest.hexdigest()
    cache[key] = value
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache))
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return value


def _local_snapshot(ref: str) -> str:
    """The folder a model was loaded from: the path itself or the hub cache snapshot."""
    if Path(ref).is_dir():
        return ref
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(ref, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: no local files to hash
        return ""


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (offline flags say no without asking)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def check_hub_model(ref: ModelRef, marker: str = "config.json") -> None:
    """A hub id must be in the local cache or the hub reachable: fail in seconds, not after a retry storm."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(ref.location, marker)
    if isinstance(cached, str):
        return
    if not _hub_reachable():
        raise LabError(f"model '{ref.text}' is not found locally and the hub is unreachable "
                       "(offline): download it on a connected machine, or give a local directory")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_coverage(ref: str, loading: dict[str, object]) -> None:
    """The weights hold exactly the tensors the config asks for.  Transformers fills a missing tensor with
    random values (a config that declares more layers than the weights hold) and drops an unexpected one,
    so either would audit a model nobody trained: refused before any audit runs."""
    missing = sorted(loading.get("missing_keys") or ())
    unexpected = sorted(loading.get("unexpected_keys") or ())
    if missing or unexpected:
        parts = [f"{len(names)} {what} ({', '.join(names[:2])}{', ...' if len(names) > 2 else ''})"
                 for names, what in ((missing, "tensors the config needs are missing"),
                                     (unexpected, "tensors are not in the config")) if names]
        raise LabError(f"could not load model '{ref}': its weights do not match its config: {'; '.join(parts)}; "
                       "the config and the weights are of different models")


def _tokenizer_path(path: str, adapter: str | None) -> str:
    """The adapter's own tokenizer when it ships one (an adapter may add tokens), else the base model's."""
    if adapter and Path(adapter).is_dir() and any(Path(adapter).glob("tokenizer*")):
        return adapter
    return path


def merged(ref: str, model: Any, adapter: str) -> Any:
    """The base ``model`` with the PEFT adapter at ``adapter`` merged into its weights: one ordinary model that
    every audit reads as it reads any other (its outputs equal the adapter applied on the fly, to rounding)."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except Exception as exc:  # noqa: BLE001 - an adapter of another base fails in many ways (shapes, names)
        if is_oom(exc):
            raise
        raise LabError(f"could not apply the adapter of '{ref}': {type(exc).__name__}: "
                       f"{first_line(exc)[:300]}") from None


def location(ref: ModelRef) -> str:
    """Where a model or adapter loads from: its folder, or its hub id."""
    return str(ref.local_folder) if ref.local_folder else ref.location


def weights_hash(path: str, adapter: str | None = None) -> str:
    """The content hash of a model's weights (and its adapter's, when it has one): what a result depends on."""
    base = content_hash(_local_snapshot(path)) if path else ""
    if not adapter:
        return base
    return hashlib.sha256(f"{base}+{content_hash(_local_snapshot(adapter))}".encode()).hexdigest()


def load_engine(
    ref: str,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    prompt_format: PromptFormat = PromptFormat(),
    policy: Policy | None = None,
    device_map: str | None = None,
) -> Backend:
    """Load tokenizer and causal LM behind one engine, under the run policy, with a clear error on failure.

    ``device_map="auto"`` lets accelerate spread a model larger than one GPU over the GPUs (and the CPU).
    """
    policy = policy or current_policy()
    parsed = policy.check_ref(ref)
    policy.check_remote_code(trust_remote_code)
    if parsed.kind == "remote":
        from lab.core.remote import load_remote

        return load_remote(parsed, prompt_format)
    parsed = require_local(ref)
    for part in parsed.parts():
        if part.kind == "hub":
            check_hub_model(part, "adapter_config.json" if part is parsed.adapter else "config.json")
    path = location(parsed)
    adapter = location(parsed.adapter) if parsed.adapter else None
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    try:
        tokenizer = AutoTokenizer.from_pretrained(_tokenizer_path(path, adapter), trust_remote_code=trust_remote_code)
        placement = {"device_map": device_map} if device_map else {}
        model, loading = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype,
                                                              trust_remote_code=trust_remote_code,
                                                              output_loading_info=True, **placement)
    except Exception as exc:  # noqa: BLE001 - a bad folder fails in many ways (config, weights, tokenizer files)
        if is_oom(exc):
            raise
        raise LabError(f"could not load model '{ref}': {type(exc).__name__}: {first_line(exc)[:300]}") from None
    check_coverage(ref, loading)
    if adapter:
        model = merged(ref, model, adapter)
    if not device_map:
        model.to(dev)
    info = ModelInfo(
        ref=ref,
        path=path,
        content_hash=weights_hash(path, adapter),
        device=f"map:{device_map}" if device_map else dev,
        dtype=str(torch_dtype).replace("torch.", ""),
        parameters=sum(p.numel() for p in model.parameters()),
        architecture=type(model).__name__,
        trust_remote_code=trust_remote_code,
        extra={"device_map": {k: str(v) for k, v in getattr(model, "hf_device_map", {"": dev}).items()}}
        if device_map else {},
    )
    return Engine(model, tokenizer, info, prompt_format)


def tokenizer_mismatch(a: Backend, b: Backend) -> str | None:
    """Why two tokenizers disagree, or None when they map text identically."""
    vocab_a, vocab_b = a.tokenizer.get_vocab(), b.tokenizer.get_vocab()
    if vocab_a != vocab_b:
        differing = len(set(vocab_a.items()) ^ set(vocab_b.items()))
        return (
            f"the tokenizers differ ({len(vocab_a)} vs {len(vocab_b)} tokens, "
            f"{differing} token-id pairs not shared): audits compare token-level scores, "
            "so both models must use the same tokenizer"
        )
    for attr in ("bos_token_id", "eos_token_id"):
        if getattr(a.tokenizer, attr) != getattr(b.tokenizer, attr):
            return f"the tokenizers disagree on {attr} ({getattr(a.tokenizer, attr)} vs {getattr(b.tokenizer, attr)})"
    return None


@dataclass
class ModelPair:
    """The base model and its unlearned version, checked to share a tokenizer."""

    base: Backend
    unlearned: Backend

    def __post_init__(self) -> None:
        problem = tokenizer_mismatch(self.base, self.unlearned)
        if problem:
            raise LabError(f"{self.base.info.ref} and {self.unlearned.info.ref}: {problem}")

    def roles(self) -> list[tuple[str, Backend]]:
        """(role, engine) for both models, in :data:`PAIR_ROLES` order."""
        return [("base", self.base), ("unlearned", self.unlearned)]


def load_pair(
    base: str,
    unlearned: str,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    prompt_format: PromptFormat = PromptFormat(),
) -> ModelPair:
    """Both models of a pair, each reference checked before either is loaded."""
    policy = current_policy()
    policy.check_ref(base), policy.check_ref(unlearned)
    kwargs = dict(device=device, dtype=dtype, trust_remote_code=trust_remote_code, prompt_format=prompt_format,
                  policy=policy)
    return ModelPair(load_engine(base, **kwargs), load_engine(unlearned, **kwargs))
