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

import functools
import inspect
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from lab.core.architecture import Architecture, LensReading, discover, layer_count, lens_readings, text_config
from lab.core.batching import BatchPolicy, run_batched
from lab.core.backend import CAPABILITIES, Backend, ModelInfo, TokenScores
from lab.core.logprobs import chunk_rows, gather
from lab.core.errors import LabError
from lab.core.kept import Results, frozen, keeping, kept, key_of, tensor_uid
from lab.core.prompts import DEFAULT_TEMPLATE, PromptFormat

__all__ = ["DEFAULT_TEMPLATE", "Engine", "PromptFormat", "batch_policy"]
CPU_MAX_TOKENS = 8_192  # larger CPU batches measured no faster (compute-bound)
GPU_MAX_TOKENS = 262_144
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
T = TypeVar("T")
Edit = Callable[[int, torch.Tensor], "torch.Tensor | None"]  # (block index, its output) -> the new output or None
BatchEdit = Callable[[torch.Tensor, torch.Tensor, list[int]], Edit]  # (ids, mask, row indices) -> that batch's edit


def _edit_hook(edit: Edit, index: int) -> Callable[..., object]:
    """A forward hook that passes block ``index``'s hidden output through ``edit`` (blocks return a tensor, or a
    tuple whose first item is it)."""

    def hook(module: torch.nn.Module, inputs: tuple, output: object) -> object:
        hidden = output[0] if isinstance(output, tuple) else output
        new = edit(index, hidden)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook


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


def pick_tokens(logits: torch.Tensor, temperature: float, sampler: torch.Generator | None) -> torch.Tensor:
    """The next token of each row: the argmax, or a draw from softmax(logits / temperature)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=sampler).squeeze(-1)


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
        self.results = Results()  # shared with this engine's formatted views (Backend.formatted copies it)

    def weights_state(self) -> tuple[tuple[int, int], ...]:
        """Each parameter's identity and in-place version: changes whenever the weights do (see :func:`kept`).
        The identity is a number given to the tensor once (:func:`lab.core.kept.tensor_uid`), never its address: adapters
        (the relearn audit's LoRA) come and go, and a new tensor may reuse a freed one's address and version."""
        return tuple((tensor_uid(p), p._version) for p in self.model.parameters())

    # --------------------------------------------------------------- primitives
    def _batched(self, lengths: list[int], batch_fn: Callable[[list[int]], list[T]], desc: str | None,
                 new_tokens: int = 0) -> list[T]:
        """Every batched model call goes through here: the rows are checked against the model's context, then
        run in batches sized by its token budget, each batch under the engine's lock: calls from several threads
        (web-lab sessions sharing the weights) take turns batch by batch, and an edit holds the lock for its whole
        block (:meth:`editing`), so no other call sees the edited model."""
        longest = max(lengths, default=0)
        if self.context and longest > self.context:
            asked = f"{longest - new_tokens} tokens + {new_tokens} new" if new_tokens else f"{longest} tokens"
            raise LabError(f"an input of {asked} exceeds {self.info.ref}'s context of {self.context} tokens "
                           "(shorten the prompts or the answer length, or use a longer-context model)")
        def locked(indices: list[int]) -> list[T]:
            with self.lock:
                return batch_fn(indices)

        return run_batched(lengths, locked, self.policy, desc)

    def _pad(self, rows: Sequence[Sequence[int]], left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids and attention mask of ``rows`` padded to one width: on the right for scoring, on the left for
        generation (every row's last token in the last column)."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            cols = slice(width - len(row), width) if left else slice(0, len(row))
            ids[i, cols] = torch.as_tensor(row, dtype=torch.long)
            mask[i, cols] = 1
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
        """The output head (and Gemma's final soft-cap, in place) on final states."""
        logits = self.model.get_output_embeddings()(states)
        softcap = getattr(text_config(self.model), "final_logit_softcapping", None)
        return logits.div_(softcap).tanh_().mul_(softcap) if softcap else logits

    @functools.cached_property
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
        target each: the head runs once per distinct position), never the full logits in float32."""
        flat = at[0] * ids.shape[1] + at[1]
        positions, owners = torch.unique(flat, return_inverse=True)
        rows, cols = positions // ids.shape[1], positions % ids.shape[1]
        if self.chunked_scoring:
            vocab = int(self.model.get_output_embeddings().weight.shape[0])
            states = self._backbone_states(ids, mask)[rows, cols]
            return gather(states, targets, self._logits, chunk_rows(vocab, distribution), distribution, owners)
        logits = self.model(input_ids=ids, attention_mask=mask).logits[rows, cols]
        return gather(logits, targets, lambda x: x, chunk_rows(logits.shape[-1], distribution), distribution,
                      owners)

    @torch.no_grad()
    @kept(rows=("rows", "starts"))
    def token_scores(
        self,
        rows: Sequence[Sequence[int]],
        starts: Sequence[int],
        distribution: bool = False,
        desc: str | None = None,
        edit_batch: BatchEdit | None = None,
    ) -> list[TokenScores]:
        """Teacher-forced log p(row[t] | row[:t]) for t >= starts[i], batched.

        Rows that differ only in their last token (multiple-choice letters) share one forward pass, as
        lm-evaluation-harness groups continuations by context: the same numbers, computed once per context.
        ``edit_batch(ids, mask, rows)`` gives the residual edit of one padded batch (``rows``: the indices of its
        rows; see :meth:`editing`), for edits that depend on the batch, such as activation patching.
        """
        for row, start in zip(rows, starts):
            if not 1 <= start < len(row):
                raise ValueError("every row needs a non-empty prefix and a non-empty target")
        forward, members = shared_forwards(rows, starts)

        def batch_fn(indices: list[int]) -> list[list[TokenScores]]:
            # A row's last token is only read (a target), never fed: the forward runs on the rest.
            ids, mask = self._pad([rows[forward[u]][:-1] for u in indices])
            where, targets, spans = [], [], []
            for j, u in enumerate(indices):
                for i in members[u]:
                    positions = range(starts[i], len(rows[i]))  # position t - 1 predicts token t
                    where += [(j, t - 1) for t in positions]
                    targets += [rows[i][t] for t in positions]
                    spans.append(len(positions))
            at = tuple(torch.tensor(c, device=ids.device) for c in zip(*where))
            edit = edit_batch(ids, mask, [forward[u] for u in indices]) if edit_batch else None
            if edit:
                _ = self.chunked_scoring  # its one-time check forward runs unedited, before the hooks go in
            with self.editing(edit) if edit else nullcontext():
                table = self._target_columns(ids, mask, at, torch.tensor(targets, device=ids.device),
                                             distribution).cpu().numpy()
            bounds = np.cumsum([0, *spans])
            scores = [scores_of(table[a:b], distribution) for a, b in zip(bounds[:-1], bounds[1:])]
            out, k = [], 0
            for u in indices:
                out.append(scores[k : k + len(members[u])])
                k += len(members[u])
            return out

        grouped = self._batched([len(rows[f]) - 1 for f in forward], batch_fn, desc)
        result: list[TokenScores | None] = [None] * len(rows)
        for group, scores in zip(members, grouped):
            for i, score in zip(group, scores):
                result[i] = score
        return result  # type: ignore[return-value]

    @torch.no_grad()
    @kept(decodes=True, rows=("prompts",))
    def generate(self, prompts: Sequence[str], max_new_tokens: int = 24, desc: str | None = None,
                 temperature: float = 0.0, seed: int = 0) -> list[str]:
        """Continuations, batched with left padding: greedy, or sampled at ``temperature`` > 0 (seeded)."""
        encoded = self.encoder.encode_many(prompts)
        sampler = torch.Generator(device=self.device).manual_seed(seed) if temperature > 0 else None

        def batch_fn(indices: list[int]) -> list[str]:
            ids, mask = self._pad([encoded[i] for i in indices], left=True)
            budget = self.answer_budget(ids.shape[1], max_new_tokens)
            new = self._decode(ids, mask, budget, temperature, sampler)
            return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

        lengths = [len(r) + (max_new_tokens if not self.context or len(r) >= self.context
                             else min(max_new_tokens, self.context - len(r))) for r in encoded]
        return self._batched(lengths, batch_fn, desc, new_tokens=max_new_tokens)

    def _decode(self, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, temperature: float,
                sampler: torch.Generator | None) -> list[list[int]]:
        """New tokens of each left-padded row, until a stop token or the length (see :meth:`_steps`)."""
        produced: list[list[int]] = [[] for _ in range(len(ids))]
        for alive, picked in self._steps(ids, mask, max_new_tokens, temperature, sampler):
            for row, token in zip(alive, picked):
                produced[row].append(token)
        return produced

    @torch.no_grad()  # wraps the generator: grad mode is off only while a step runs
    def _steps(self, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, temperature: float,
               sampler: torch.Generator | None) -> Iterator[tuple[list[int], list[int]]]:
        """One KV-cached decode step at a time: the rows still running and the token each picked.

        A row that has stopped leaves the batch (its cache rows are dropped), so the last steps cost only the
        rows still running; ``model.generate`` keeps finished rows in the batch, padded, to the end.  The
        picks are the plain argmax (or a draw at ``temperature``): a checkpoint's generation_config penalties
        are not applied, as on the remote backend.  Batch generation and the Probe's streaming both step
        through here, so a streamed answer is the audited one.
        """
        stops = torch.tensor(self.encoder.stop_ids, dtype=torch.long, device=ids.device)
        alive = list(range(len(ids)))
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate: pads at 1, tokens from 0
        cache = DynamicCache(config=self.model.config)
        step_ids = ids
        for step in range(max_new_tokens):
            logits = self.model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                                past_key_values=cache, use_cache=True, **self._last_logits).logits[:, -1]
            picked = pick_tokens(logits, temperature, sampler)
            yield alive, picked.tolist()
            running = ~torch.isin(picked, stops)
            if step == max_new_tokens - 1 or not bool(running.any()):
                break
            if not bool(running.all()):
                keep = running.nonzero().squeeze(-1)
                cache.reorder_cache(keep)
                alive = [alive[k] for k in keep.tolist()]
                picked, mask, positions = picked[keep], mask[keep], positions[keep]
            mask = torch.cat([mask, mask.new_ones((len(mask), 1))], dim=1)
            positions = positions[:, -1:] + 1
            step_ids = picked[:, None]

    @functools.cached_property
    def _last_logits(self) -> dict[str, int]:
        """``logits_to_keep=1`` where the model takes it (the head on the last position only, as generate does)."""
        return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.model.forward).parameters else {}

    def stream(self, prompt: str, max_new_tokens: int = 48) -> Iterator[str]:
        """Greedy continuation of one prompt, yielded as the text grows (the same steps as :meth:`generate`).
        Each step runs under the engine's lock, never held while the text is yielded: a reader that waits (or
        stops reading) holds up no other caller."""
        ids, mask = self._pad([self.encode(prompt)], left=True)
        tokens: list[int] = []
        steps = self._steps(ids, mask, max_new_tokens, 0.0, None)
        while True:
            with self.lock:
                step = next(steps, None)
            if step is None:
                return
            tokens += step[1]
            yield self.tokenizer.decode(tokens, skip_special_tokens=True).strip()

    @torch.no_grad()
    @kept(rows=("prompts",))
    def last_token_states(self, prompts: Sequence[str], desc: str | None = None) -> list[torch.Tensor]:
        """Residual stream at each prompt's last token, all layers: [layers + 1, hidden]."""
        encoded = self.encoder.encode_many(prompts)

        def batch_fn(indices: list[int]) -> list[torch.Tensor]:
            ids, mask = self._pad([encoded[i] for i in indices])
            states = self._backbone_states(ids, mask, all_layers=True)
            stacked = torch.stack(states, dim=1)  # [batch, layers + 1, seq, hidden]
            return [stacked[j, :, len(encoded[i]) - 1].float().cpu() for j, i in enumerate(indices)]

        return self._batched([len(r) for r in encoded], batch_fn, desc)

    @contextmanager
    def editing(self, edit: Edit) -> Iterator[None]:
        """Every decoder block's output passed through ``edit(layer, hidden)`` while the block runs (None keeps
        it): the one place the lab changes a model's residual stream (directional ablation, activation
        patching), for every family (the blocks are found by :mod:`lab.core.architecture`).  The engine's lock
        is held throughout, so no other call sees the edited model."""
        with self.lock:
            handles = [block.register_forward_hook(_edit_hook(edit, index))
                       for index, block in enumerate(self.architecture.layers)]
            self.results.editing += 1
            try:
                yield
            finally:
                self.results.editing -= 1
                for handle in handles:
                    handle.remove()

    def remember(self, name: str, inputs: object, compute: Callable[[], T]) -> T:
        """An audit's own result derived from this model, kept like a :func:`kept` call: keyed by ``name``, the
        ``inputs`` that decide it, the prompt format, the stop tokens and the weights' state.  The relearn audit
        keeps a model's whole relearning curve this way, so a sweep fine-tunes the base (and the reference) once
        rather than once per pair."""
        if not keeping(self):
            return compute()
        return self.results.keep(key_of(self, f"remember: {name}", inputs, decodes=True), compute)

    def derived(self, before: object, how: object) -> None:
        """The weights now are the weights of state ``before`` changed in place by ``how`` alone, deterministically
        (RTN quantization with one spec): results kept for that change of those weights are given again.  A
        sweep fake-quantizes its base in every pair; the quantized base's answers are computed once."""
        self.results.same_weights(self.weights_state(), ("derived", self.results.canonical(before), frozen(how)))

    @contextmanager
    def restored_after(self) -> Iterator[None]:
        """Fake quantization and full fine-tuning change the weights in place and put them back bit for bit (each
        restores from an exact copy), but the restore gives every tensor a new version, which would make
        everything kept before the block look stale: a sweep's quantization audit would end the base's reuse
        across pairs.  So the state after the block is recorded as the same weights as the state before."""
        before = self.weights_state()
        try:
            yield
        finally:
            after = self.weights_state()
            if after != before:
                self.results.same_weights(after, before)

    @torch.no_grad()
    def block_outputs(self, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Each decoder block's output (the residual stream after it, before any final norm) for one padded
        batch: what activation patching hands from one model to another."""
        captured: list[torch.Tensor] = []

        def keep(layer: int, hidden: torch.Tensor) -> None:
            captured.append(hidden)

        with self.editing(keep):
            self._backbone_states(ids, mask)
        return captured

    @torch.no_grad()
    @kept(rows=("prompts",))
    def mean_block_outputs(self, prompts: Sequence[str], desc: str | None = None) -> list[torch.Tensor]:
        """Each decoder block's output averaged over each prompt's tokens: [layers, hidden] per prompt (the
        activations a direction is taken from: directional ablation)."""
        encoded = self.encoder.encode_many(prompts)

        def batch_fn(indices: list[int]) -> list[torch.Tensor]:
            ids, mask = self._pad([encoded[i] for i in indices])
            outputs = torch.stack(self.block_outputs(ids, mask), dim=1).float()  # [batch, layers, seq, hidden]
            weights = mask[:, None, :, None].to(outputs.dtype)
            return list(((outputs * weights).sum(2) / weights.sum(2)).cpu())

        return self._batched([len(r) for r in encoded], batch_fn, desc)

    @functools.cached_property
    def architecture(self) -> Architecture:
        """Decoder blocks, final norm and output head, found in the module tree and checked once."""
        with self.lock:
            return discover(self.model)

    @torch.no_grad()
    @kept(rows=("rows",))
    def row_states(self, rows: Sequence[Sequence[int]], layer: int, desc: str | None = None) -> list[torch.Tensor]:
        """Residual stream at every token of raw token rows, hidden-state index ``layer``: [len, hidden]."""

        def batch_fn(indices: list[int]) -> list[torch.Tensor]:
            ids, mask = self._pad([rows[i] for i in indices])
            states = self._backbone_states(ids, mask, all_layers=True)[layer]
            return [states[j, : len(rows[i])].float().cpu() for j, i in enumerate(indices)]

        return self._batched([len(r) for r in rows], batch_fn, desc)

    @torch.no_grad()
    @kept(rows=("prompts", "answers"))
    def logit_lens(self, prompts: Sequence[str], answers: Sequence[str], top: int = 5,
                   desc: str | None = None) -> list[LensReading]:
        """Teacher-forced logit lens: every layer's residual before each answer token, read through
        the final norm and output head; rank and probability of that token per layer (lab.core.architecture)."""
        arch = self.architecture
        rows, starts = self.continuation_rows(list(zip(prompts, answers)))

        def batch_fn(indices: list[int]) -> list[LensReading]:
            ids, mask = self._pad([rows[i] for i in indices])
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
