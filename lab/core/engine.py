"""Batched inference for one causal LM: the only way audits touch a local model.

Four primitives cover every audit: greedy generation (left padding),
teacher-forced token log-probs of a target after a prefix (right padding),
per-example losses of raw token rows (REMIND's neighbors), and the residual
stream at the last prompt token (SAE, logit lens, embeddings).  All of them
batch through :func:`lab.core.batching.run_batched` under a token budget sized
from the model and the free memory.  Scoring never builds the full logits
tensor: the backbone's final states of the positions asked about go through
the output head a chunk at a time (:mod:`lab.core.logprobs`), checked once
against the model's own logits.  Prompts and ids come from
:class:`lab.core.prompts.Encoder` (BOS once, continuations, stop tokens).
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextIteratorStreamer

from lab.core.architecture import Architecture, LensReading, discover, layer_count, lens_readings, text_config
from lab.core.batching import BatchPolicy, run_batched
from lab.core.backend import CAPABILITIES, Backend, ModelInfo, TokenScores
from lab.core.logprobs import chunk_rows, gather
from lab.core.errors import LabError
from lab.core.prompts import DEFAULT_TEMPLATE, PromptFormat

__all__ = ["DEFAULT_TEMPLATE", "Engine", "PromptFormat", "batch_policy"]
CPU_MAX_TOKENS = 8_192  # larger CPU batches measured no faster (compute-bound)
GPU_MAX_TOKENS = 262_144
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
T = TypeVar("T")
ACTIVATION_BYTES_PER_HIDDEN = 4 * 40  # float32 activations alive per token and hidden unit in a no-grad forward


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device`` now (CUDA: the allocator's view; CPU: the system's available memory)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def context_length(model: PreTrainedModel) -> int | None:
    """The longest input the model was built for (None when its config does not say)."""
    if not hasattr(model, "config"):
        return None
    config = text_config(model)
    for key in CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def batch_policy(model: PreTrainedModel, device: torch.device) -> BatchPolicy:
    """A token budget from the model's width and depth and the free memory (a quarter of it)."""
    if getattr(model, "config", None) is None:  # a bare torch module (tests): the default budget
        return BatchPolicy()
    hidden = int(getattr(text_config(model), "hidden_size", 0) or 1024)
    per_token = hidden * ACTIVATION_BYTES_PER_HIDDEN * max(1, min(layer_count(model), 4))
    cap = GPU_MAX_TOKENS if device.type == "cuda" else CPU_MAX_TOKENS
    tokens = int(free_memory(device) * 0.25 // per_token)
    return BatchPolicy(max_tokens=max(512, min(cap, tokens)), max_rows=1024 if device.type == "cuda" else 128)


def shared_forwards(rows: Sequence[Sequence[int]], starts: Sequence[int]) -> tuple[list[int], list[list[int]]]:
    """One forward row per distinct context, lm-evaluation-harness's grouping of continuations: rows equal but
    for their last token, with the same target start, need one pass (their last token is read, never fed),
    so four one-token letters after one question cost one row.  Returns the representative row of each pass
    and the rows it scores."""
    forward: list[int] = []
    members: list[list[int]] = []
    seen: dict[tuple, int] = {}
    for i, (row, start) in enumerate(zip(rows, starts)):
        key = (tuple(row[:-1]), start)
        if key not in seen:
            seen[key] = len(forward)
            forward.append(i)
            members.append([])
        members[seen[key]].append(i)
    return forward, members


def scores_of(part: np.ndarray, distribution: bool) -> TokenScores:
    """One row's columns from :func:`lab.core.logprobs.gather` as :class:`TokenScores`."""
    scores = TokenScores(part[:, 0], greedy_match=part[:, 1].astype(bool))
    if distribution:
        scores.mu, scores.sigma = part[:, 2], part[:, 3]
    return scores


class Engine(Backend):
    """Batched generation and scoring for one local causal LM on one device: every capability."""

    capabilities = frozenset(CAPABILITIES)

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        info: ModelInfo,
        prompt_format: PromptFormat = PromptFormat(),
        policy: BatchPolicy | None = None,
    ):
        super().__init__(tokenizer, info, prompt_format)
        self.model = model.eval()
        # Inputs go where the input embeddings live (one device, or the first of a device map).
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        self.device = embeddings.weight.device if embeddings is not None else torch.device(info.device)
        self.policy = policy or batch_policy(model, self.device)
        self.context = context_length(model)

    # --------------------------------------------------------------- primitives
    def _batched(self, lengths: list[int], batch_fn: Callable[[list[int]], list[T]], desc: str | None,
                 new_tokens: int = 0) -> list[T]:
        """Every batched model call goes through here: the rows are checked against the model's context, then
        run under the engine's lock in batches sized by its token budget."""
        longest = max(lengths, default=0)
        if self.context and longest > self.context:
            asked = f"{longest - new_tokens} tokens + {new_tokens} new" if new_tokens else f"{longest} tokens"
            raise LabError(f"an input of {asked} exceeds {self.info.ref}'s context of {self.context} tokens "
                           "(shorten the prompts or the answer length, or use a longer-context model)")
        with self.lock:
            return run_batched(lengths, batch_fn, self.policy, desc)

    def _pad_right(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _backbone_states(self, ids: torch.Tensor, mask: torch.Tensor, all_layers: bool = False):
        """The backbone's output (no output head): the final states, or every layer's with ``all_layers``."""
        backbone = getattr(self.model, self.model.base_model_prefix, None)
        if backbone is None or backbone is self.model:
            out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            return out.hidden_states if all_layers else out.hidden_states[-1]
        out = backbone(input_ids=ids, attention_mask=mask, output_hidden_states=all_layers)
        return out.hidden_states if all_layers else out.last_hidden_state

    def _logits(self, states: torch.Tensor) -> torch.Tensor:
        """The output head (and Gemma's final soft-cap) on final states."""
        logits = self.model.get_output_embeddings()(states)
        softcap = getattr(text_config(self.model), "final_logit_softcapping", None)
        return torch.tanh(logits / softcap) * softcap if softcap else logits

    @cached_property
    def chunked_scoring(self) -> bool:
        """Whether backbone + head reproduce the model's logits (checked once); if not, full logits are used."""
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if head is None or not getattr(self.model, "base_model_prefix", None):
            return False
        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        ids = torch.arange(min(5, vocab), device=self.device).unsqueeze(0)
        mask = torch.ones_like(ids)
        with self.lock, torch.no_grad():
            reference = self.model(input_ids=ids, attention_mask=mask).logits[0].float()
            ours = self._logits(self._backbone_states(ids, mask)[0]).float()
        scale = reference.abs().max().clamp(min=1e-6)
        agrees = bool(((ours - reference).abs().max() / scale) < 2e-2)
        self.info.extra["scoring"] = "chunked head" if agrees else "full logits (backbone + head differ)"
        return agrees

    def _target_columns(self, ids: torch.Tensor, mask: torch.Tensor, at: tuple[torch.Tensor, torch.Tensor],
                        targets: torch.Tensor, distribution: bool) -> torch.Tensor:
        """[log p(target), argmax match, (mu, sigma)] per (row, position) in ``at`` (a position may repeat, one
        target each), never the full logits in float32."""
        if self.chunked_scoring:
            vocab = int(self.model.get_output_embeddings().weight.shape[0])
            states = self._backbone_states(ids, mask)[at]
            return gather(states, targets, self._logits, chunk_rows(vocab), distribution)
        logits = self.model(input_ids=ids, attention_mask=mask).logits[at]
        return gather(logits, targets, lambda x: x, chunk_rows(logits.shape[-1]), distribution)

    @torch.no_grad()
    def token_scores(
        self,
        rows: Sequence[Sequence[int]],
        starts: Sequence[int],
        distribution: bool = False,
        desc: str | None = None,
    ) -> list[TokenScores]:
        """Teacher-forced log p(row[t] | row[:t]) for t >= starts[i], batched.

        Rows that differ only in their last token (multiple-choice letters) share one forward pass, as
        lm-evaluation-harness groups continuations by context: the same numbers, computed once per context.
        """
        for row, start in zip(rows, starts):
            if not 1 <= start < len(row):
                raise ValueError("every row needs a non-empty prefix and a non-empty target")
        forward, members = shared_forwards(rows, starts)

        def batch_fn(indices: list[int]) -> list[list[TokenScores]]:
            ids, mask = self._pad_right([rows[forward[u]] for u in indices])
            where, targets, spans = [], [], []
            for j, u in enumerate(indices):
                for i in members[u]:
                    positions = range(starts[i], len(rows[i]))  # position t - 1 predicts token t
                    where += [(j, t - 1) for t in positions]
                    targets += [rows[i][t] for t in positions]
                    spans.append(len(positions))
            at = tuple(torch.tensor(c, device=ids.device) for c in zip(*where))
            table = self._target_columns(ids, mask, at, torch.tensor(targets, device=ids.device),
                                         distribution).cpu().numpy()
            bounds = np.cumsum([0, *spans])
            scores = [scores_of(table[a:b], distribution) for a, b in zip(bounds[:-1], bounds[1:])]
            out, k = [], 0
            for u in indices:
                out.append(scores[k : k + len(members[u])])
                k += len(members[u])
            return out

        grouped = self._batched([len(rows[f]) for f in forward], batch_fn, desc)
        result: list[TokenScores | None] = [None] * len(rows)
        for group, scores in zip(members, grouped):
            for i, score in zip(group, scores):
                result[i] = score
        return result  # type: ignore[return-value]

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int = 24, desc: str | None = None,
                 temperature: float = 0.0, seed: int = 0) -> list[str]:
        """Continuations, batched with left padding: greedy, or sampled at ``temperature`` > 0 (seeded)."""
        encoded = [self.encode(p) for p in prompts]
        sampling = dict(do_sample=True, temperature=temperature, top_p=1.0) if temperature > 0 else \
            dict(do_sample=False)
        if temperature > 0:
            torch.manual_seed(seed)

        def batch_fn(indices: list[int]) -> list[str]:
            rows = [encoded[i] for i in indices]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, row in enumerate(rows):
                ids[j, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
                mask[j, width - len(row) :] = 1
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_new_tokens,
                pad_token_id=self.pad_id,
                eos_token_id=self.encoder.stop_ids or None,
                **sampling,
            )
            return [t.strip() for t in self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]

        lengths = [len(r) + max_new_tokens for r in encoded]
        return self._batched(lengths, batch_fn, desc, new_tokens=max_new_tokens)

    def stream(self, prompt: str, max_new_tokens: int = 48) -> Iterator[str]:
        """Greedy continuation of one prompt, yielded as the text grows."""
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        ids = torch.as_tensor([self.encode(prompt)], device=self.device)
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                      do_sample=False, pad_token_id=self.pad_id, eos_token_id=self.encoder.stop_ids or None,
                      streamer=streamer)
        with self.lock:
            worker = threading.Thread(target=self.model.generate, kwargs=kwargs, daemon=True)
            worker.start()
            text = ""
            for piece in streamer:
                text += piece
                yield text
            worker.join()

    @torch.no_grad()
    def last_token_states(self, prompts: Sequence[str], desc: str | None = None) -> list[torch.Tensor]:
        """Residual stream at each prompt's last token, all layers: [layers + 1, hidden]."""
        encoded = [self.encode(p) for p in prompts]

        def batch_fn(indices: list[int]) -> list[torch.Tensor]:
            ids, mask = self._pad_right([encoded[i] for i in indices])
            states = self._backbone_states(ids, mask, all_layers=True)
            stacked = torch.stack(states, dim=1)  # [batch, layers + 1, seq, hidden]
            return [stacked[j, :, len(encoded[i]) - 1].float().cpu() for j, i in enumerate(indices)]

        return self._batched([len(r) for r in encoded], batch_fn, desc)

    @cached_property
    def architecture(self) -> Architecture:
        """Decoder blocks, final norm and output head, found in the module tree and checked once."""
        with self.lock:
            return discover(self.model)

    @torch.no_grad()
    def row_states(self, rows: Sequence[Sequence[int]], layer: int, desc: str | None = None) -> list[torch.Tensor]:
        """Residual stream at every token of raw token rows, hidden-state index ``layer``: [len, hidden]."""

        def batch_fn(indices: list[int]) -> list[torch.Tensor]:
            ids, mask = self._pad_right([rows[i] for i in indices])
            states = self._backbone_states(ids, mask, all_layers=True)[layer]
            return [states[j, : len(rows[i])].float().cpu() for j, i in enumerate(indices)]

        return self._batched([len(r) for r in rows], batch_fn, desc)

    @torch.no_grad()
    def logit_lens(self, prompts: Sequence[str], answers: Sequence[str], top: int = 5,
                   desc: str | None = None) -> list[LensReading]:
        """Teacher-forced logit lens: every layer's residual before each answer token, read through
        the final norm and output head; rank and probability of that token per layer (lab.core.architecture)."""
        arch = self.architecture
        rows, starts = [], []
        for prompt, answer in zip(prompts, answers):
            prefix, target = self.encode_continuation(prompt, answer)
            rows.append(prefix + target)
            starts.append(len(prefix))

        def batch_fn(indices: list[int]) -> list[LensReading]:
            ids, mask = self._pad_right([rows[i] for i in indices])
            hidden = self._backbone_states(ids, mask, all_layers=True)
            spans = [slice(starts[i] - 1, len(rows[i]) - 1) for i in indices]
            picked = torch.stack([torch.cat([h[j, span] for j, span in enumerate(spans)]) for h in hidden],
                                 dim=1)  # [answer positions, layers + 1, hidden]
            wanted = torch.cat([ids[j, span.start + 1 : span.stop + 1] for j, span in enumerate(spans)])
            rank, prob, top_ids = lens_readings(arch, picked, wanted, top)
            out, at = [], 0
            for span in spans:
                end = at + span.stop - span.start
                out.append(LensReading(rank[at:end].T.numpy(), prob[at:end].T.numpy(), top_ids[at].numpy()))
                at = end
            return out

        for row, start in zip(rows, starts):
            if not 1 <= start < len(row):
                raise ValueError("every prompt needs a non-empty encoding and every answer at least one token")
        return self._batched([len(r) for r in rows], batch_fn, desc)
