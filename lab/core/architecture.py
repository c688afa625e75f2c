"""Where a causal LM keeps its parts: decoder blocks, final norm, output head, embeddings.

The logit lens reads every layer's residual stream through the model's own
final norm and output head; "Can Sensitive Information Be Deleted From LLMs?
Objectives for Defending Against Extraction Attacks" (Patil, Hase, Bansal,
ICLR 2024) turns it into a whitebox attack on deleted facts.  Model families name these parts differently (Llama
``model.norm``, GPT-2 ``transformer.ln_f``, GPT-NeoX
``gpt_neox.final_layer_norm``), so they are discovered from the module tree
rather than looked up by family:

- the decoder blocks are the ``ModuleList`` whose length is the configured
  number of layers, closest to the root;
- the final norm is a norm-like sibling of that list (the first registered
  after it, else the last before it);
- head and input embeddings come from the standard Hugging Face accessors.

Discovery is then *verified* with one forward pass: the found norm and head
applied to the last block's output must reproduce the model's logits, and
the check also tells whether ``hidden_states[-1]`` already carries the final
norm (the Hugging Face convention) so it is not applied twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lab.core.errors import LabError

LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


@dataclass
class Architecture:
    """The parts of a causal LM that the logit lens and the SAE view need."""

    layers: nn.ModuleList
    final_norm: nn.Module | None
    head: nn.Module
    embeddings: nn.Module
    last_state_normed: bool = True  # hidden_states[-1] already went through the final norm
    softcap: float | None = None  # Gemma-style final logit soft-capping, when configured

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def normalize(self, states: torch.Tensor, index: int) -> torch.Tensor:
        """Residual stream at hidden-state ``index`` as the output head expects it."""
        if self.final_norm is None or (index == self.n_layers and self.last_state_normed):
            return states
        return self.final_norm(states)

    def logits(self, states: torch.Tensor, index: int) -> torch.Tensor:
        """Logit lens of hidden-state ``index``: final norm (where due), head, soft-cap; float32."""
        logits = self.head(self.normalize(states, index)).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


@dataclass
class LensReading:
    """Teacher-forced logit lens of one answer after its prompt (layer index 0 = embeddings).

    ``rank[l, t]`` is the rank of answer token t (0 = the lens's top token) when
    layer l's residual at the position before it is read through the final norm
    and head; ``top_ids[l]`` are the lens's top tokens at the prompt's last
    position (where the answer's first token is predicted).
    """

    rank: np.ndarray  # [layers + 1, answer tokens]
    prob: np.ndarray  # [layers + 1, answer tokens]
    top_ids: np.ndarray  # [layers + 1, top]


def text_config(model: nn.Module):
    """The language-model part of a (possibly multimodal) config."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def layer_count(model: nn.Module) -> int:
    config = text_config(model)
    for key in LAYER_COUNT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise LabError(f"{type(model).__name__}: the config does not say how many layers the model has")


def middle_layer(n_layers: int) -> int:
    """Hidden-state index in the middle of the stack (0 = embeddings, ``n_layers`` = final output)."""
    return max(1, n_layers // 2) if n_layers > 1 else 0


def _find_layers(model: nn.Module, count: int) -> tuple[str, nn.ModuleList]:
    """The ModuleList of ``count`` blocks of one class, nearest the root."""
    found = [
        (name, module) for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == count
        and len({type(block) for block in module}) == 1
    ]
    if not found:
        raise LabError(f"{type(model).__name__}: no list of {count} decoder blocks found in the module tree")
    return min(found, key=lambda item: item[0].count("."))


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "norm" in type(module).__name__.lower()


def _find_final_norm(model: nn.Module, layers_name: str) -> nn.Module | None:
    """A norm that is a sibling of the block list: the first registered after it, else the last before.

    (OPT registers ``final_layer_norm`` before ``layers``; most families after.)
    """
    parent_name, _, attr = layers_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    names = [name for name, _ in parent.named_children()]
    norms = [(names.index(name), child) for name, child in parent.named_children() if _is_norm(child)]
    position = names.index(attr)
    after = [child for index, child in norms if index > position]
    before = [child for index, child in norms if index < position]
    return after[0] if after else before[-1] if before else None


def discover(model: nn.Module, verify: bool = True) -> Architecture:
    """Find the blocks, final norm, head and embeddings of ``model`` (and check them)."""
    name, layers = _find_layers(model, layer_count(model))
    head = model.get_output_embeddings()
    if head is None:
        raise LabError(f"{type(model).__name__}: the model has no output head (not a causal LM?)")
    arch = Architecture(
        layers=layers,
        final_norm=_find_final_norm(model, name),
        head=head,
        embeddings=model.get_input_embeddings(),
        softcap=getattr(text_config(model), "final_logit_softcapping", None),
    )
    if verify:
        verify_lens(model, arch)
    return arch


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = b.abs().max().clamp(min=1e-6)
    return bool(((a.float() - b.float()).abs().max() / scale) < 1e-3)


@torch.no_grad()
def verify_lens(model: nn.Module, arch: Architecture) -> None:
    """One forward pass: the lens of the last block's output must give the model's logits."""
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: tuple, output) -> None:
        captured["out"] = output[0] if isinstance(output, tuple) else output

    device = next(model.parameters()).device
    vocab = int(arch.head.weight.shape[0]) if hasattr(arch.head, "weight") else 2
    ids = torch.arange(min(4, vocab), device=device).unsqueeze(0)
    handle = arch.layers[-1].register_forward_hook(hook)
    try:
        out = model(input_ids=ids, output_hidden_states=True)
    finally:
        handle.remove()
    logits, last_state = out.logits[0, -1], out.hidden_states[-1][0, -1]
    arch.last_state_normed = True
    through_norm = arch.logits(captured["out"][0, -1], index=0)  # index 0: always normalized
    if not _close(through_norm, logits):
        raise LabError(
            f"{type(model).__name__}: the final norm and output head found in the module tree do not "
            "reproduce the model's logits, so the logit lens is unavailable for this architecture"
        )
    arch.last_state_normed = _close(arch.logits(last_state, arch.n_layers), logits)
    if not arch.last_state_normed and not _close(arch.logits(last_state, arch.n_layers), logits):
        raise LabError(
            f"{type(model).__name__}: the last hidden state is neither the last block's output nor its "
            "normalized form, so the logit lens cannot read it"
        )


@torch.no_grad()
def lens_readings(arch: Architecture, states: torch.Tensor, targets: torch.Tensor, top: int,
                  chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank, probability and top tokens of ``targets`` [n] at every layer of ``states`` [n, layers+1, hidden].

    Rows are read ``chunk`` at a time so that the [rows, vocab] logits stay small.
    Returns CPU tensors [n, layers+1], [n, layers+1] and [n, layers+1, top].
    """
    ranks, probs, tops = [], [], []
    for part, wanted in zip(states.split(chunk), targets.split(chunk)):
        rank, prob, top_ids = [], [], []
        for index in range(part.shape[1]):
            logp = torch.log_softmax(arch.logits(part[:, index], index), dim=-1)
            picked = logp.gather(-1, wanted.unsqueeze(-1))
            rank.append((logp > picked).sum(-1))
            prob.append(picked.squeeze(-1).exp())
            top_ids.append(logp.topk(top, dim=-1).indices)
        ranks.append(torch.stack(rank, 1).cpu())
        probs.append(torch.stack(prob, 1).cpu())
        tops.append(torch.stack(top_ids, 1).cpu())
    return torch.cat(ranks), torch.cat(probs), torch.cat(tops)
