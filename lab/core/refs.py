"""Model references: what a user may write wherever a model is named, parsed in one place.

A reference is one of

- ``demo:<name>``: a model of the demo world (a plain name: letters, digits,
  ``-`` and ``_``; nothing that could leave the demo folder);
- ``openai+http(s)://HOST:PORT/v1#MODEL``: a model behind an
  OpenAI-compatible inference server (vLLM, SGLang, llama.cpp, TGI);
- a Hugging Face hub id (``owner/name`` or ``name``);
- anything else is a path on this machine (a ``save_pretrained`` folder);
- ``BASE+ADAPTER``: a PEFT adapter (a folder with ``adapter_config.json``, or
  a hub id) on a base model of any of the local forms above.  Many unlearned
  checkpoints are published as LoRA adapters; the lab merges the adapter into
  the base weights at load, so every audit sees one ordinary model.

:func:`parse_ref` only reads the text; which kinds a request may use is the
run policy's decision (:meth:`lab.core.policy.Policy.check_ref`), and loading
is :mod:`lab.core.models`'s.  Every entry point (models, reference,
attacker, judge, rewriter, any option that names a model) goes through both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lab.core import settings
from lab.core.errors import LabError

DEMO_PREFIX = "demo:"
REMOTE_PREFIX = "openai+"
ADAPTER_JOIN = "+"
_DEMO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_REMOTE = re.compile(r"^openai\+(https?://[^\s#]+)#(\S+)$")

RefKind = Literal["demo", "hub", "path", "remote"]


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference: its kind and where the model lives."""

    text: str
    kind: RefKind
    location: str  # demo and path: the folder; hub: the id; remote: the server's base URL
    model: str = ""  # remote: the model name the server serves
    adapter: "ModelRef | None" = None  # a PEFT adapter merged into this model at load

    @property
    def local_folder(self) -> Path | None:
        return Path(self.location).expanduser() if self.kind in ("demo", "path") else None

    def parts(self) -> list["ModelRef"]:
        """This reference and its adapter's, for checks that apply to every part."""
        return [self, *([self.adapter] if self.adapter else [])]


def demo_model_dir(name: str) -> Path:
    """The folder of demo model ``name`` (the name is checked by :func:`parse_ref`)."""
    return settings.demo_dir() / "models" / name


def is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and ".." not in text


def parse_ref(text: str) -> ModelRef:
    """Read a model reference (see the module docstring); malformed ones are a :class:`LabError`."""
    text = (text or "").strip()
    if not text:
        raise LabError("empty model reference: give a Hugging Face id, a local directory or demo:<name>")
    if ADAPTER_JOIN in text and not text.startswith(REMOTE_PREFIX):
        base_text, adapter_text = text.rsplit(ADAPTER_JOIN, 1)
        base, adapter = parse_ref(base_text), parse_ref(adapter_text)
        if base.adapter or adapter.adapter or base.kind == "remote" or adapter.kind == "remote":
            raise LabError(f"'{text}': an adapter reference is BASE+ADAPTER, one local or hub base and one adapter "
                           "folder or hub id")
        return ModelRef(text, base.kind, base.location, adapter=adapter)
    if text.startswith(DEMO_PREFIX):
        name = text[len(DEMO_PREFIX):]
        if not _DEMO_NAME.match(name):
            raise LabError(f"'{text}': a demo model is demo:<name> with a plain name such as demo:npo")
        return ModelRef(text, "demo", str(demo_model_dir(name)))
    if text.startswith(REMOTE_PREFIX):
        match = _REMOTE.match(text)
        if not match:
            raise LabError(f"'{text}': a served model is openai+http://HOST:PORT/v1#MODEL")
        return ModelRef(text, "remote", match.group(1).rstrip("/"), match.group(2))
    if text.startswith(("/", ".", "~")) or Path(text).expanduser().exists() or not is_hub_id(text):
        return ModelRef(text, "path", text)
    return ModelRef(text, "hub", text)


def require_local(text: str) -> ModelRef:
    """``text`` parsed, and its model there when it lives on this machine (a folder, a built demo model), and
    its adapter's folder holding an adapter; hub ids and served models are checked when they load."""
    ref = parse_ref(text)
    for part, marker in ((ref, "config.json"), (ref.adapter, "adapter_config.json")):
        folder = part.local_folder if part else None
        if part is None or folder is None:
            continue
        if part.kind == "demo" and not (folder / marker).is_file():
            raise LabError(f"demo model '{part.text}' not found in {settings.demo_dir()}; build the demo first "
                           "with: python -m lab demo build")
        if part.kind == "path" and not folder.exists():
            raise LabError(f"model directory not found: {part.text}")
        if part is ref.adapter and not (folder / marker).is_file():
            raise LabError(f"'{part.text}' is not a PEFT adapter folder (it has no {marker})")
    return ref


def demo_names() -> list[str]:
    """The models of the demo world that exist on disk now."""
    root = settings.demo_dir() / "models"
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []
