"""Batched inference for one causal LM: the only way audits touch a model.

Four primitives cover every audit: greedy generation (left padding),
teacher-forced token log-probs of a target after a prefix (right padding),
per-example losses of raw token rows (REMIND's neighbors), and the residual
stream at the last prompt token (SAE, logit lens, embeddings).  All of them
batch through :func:`lab.core.batching.run_batched`.  This class is also the seam
where another backend (a remote inference server) would plug in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterator, Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextIteratorStreamer

from lab.core.architecture import Architecture, LensReading, discover, lens_readings
from lab.core.batching import BatchPolicy, run_batched

DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a prompt: a plain template, or the chat template."""

    template: str = DEFAULT_TEMPLATE
    use_chat_template: bool = False


@dataclass
class TokenScores:
    """Log-probs of the target tokens, with the vocabulary statistics Min-K%++ needs."""

    logprobs: np.ndarray
    mu: np.ndarray | None = None  # E_{z~p}[log p(z)] at each target position
    sigma: np.ndarray | None = None  # its standard deviation
    # Whether the argmax prediction equals the target token at each position
    # (exact memorization and extraction strength need nothing more).
    greedy_match: np.ndarray | None = None

    @property
    def mean(self) -> float:
        return float(self.logprobs.mean()) if self.logprobs.size else float("nan")

    @property
    def loss(self) -> float:
        return -self.mean


@dataclass
class ModelInfo:
    """What the store and the report say about a loaded model."""

    ref: str
    path: str
    content_hash: str
    device: str
    dtype: str
    parameters: int
    architecture: str
    trust_remote_code: bool = False
    extra: dict = field(default_factory=dict)


class Engine:
    """Batched generation and scoring for one model on one device."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        info: ModelInfo,
        prompt_format: PromptFormat = PromptFormat(),
        policy: BatchPolicy | None = None,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.info = info
        self.prompt_format = prompt_format
        self.policy = policy or BatchPolicy.for_device(info.device)
        self.device = torch.device(info.device)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = tokenizer.pad_token_id
        self.lock = threading.RLock()  # one model call at a time per engine

    # ------------------------------------------------------------------ prompts
    def prompt(self, question: str) -> str:
        """The prompt for a question under this engine's prompt format."""
        fmt = self.prompt_format
        if fmt.use_chat_template and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )
        return fmt.template.format(question=question)

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt; special tokens are added unless a chat template already did."""
        add = not self.prompt_format.use_chat_template
        return self.tokenizer(text, add_special_tokens=add)["input_ids"]

    def encode_continuation(self, prefix: str, target: str) -> tuple[list[int], list[int]]:
        """Ids of ``prefix`` and of ``target`` as its continuation (space-joined)."""
        joiner = "" if not prefix or prefix[-1].isspace() or target[:1].isspace() else " "
        prefix_ids = self.encode(prefix)
        target_ids = self.tokenizer(joiner + target, add_special_tokens=False)["input_ids"]
        return prefix_ids, target_ids

    # --------------------------------------------------------------- primitives
    def _pad_right(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def token_scores(
        self,
        rows: Sequence[Sequence[int]],
        starts: Sequence[int],
        distribution: bool = False,
        desc: str | None = None,
    ) -> list[TokenScores]:
        """Teacher-forced log p(row[t] | row[:t]) for t >= starts[i], batched."""
        for row, start in zip(rows, starts):
            if not 1 <= start < len(row):
                raise ValueError("every row needs a non-empty prefix and a non-empty target")

        def batch_fn(indices: list[int]) -> list[TokenScores]:
            ids, mask = self._pad_right([rows[i] for i in indices])
            logits = self.model(input_ids=ids, attention_mask=mask).logits
            # All target positions of the batch at once: position t predicts token t + 1.
            wanted = torch.zeros_like(mask, dtype=torch.bool)
            for j, i in enumerate(indices):
                wanted[j, starts[i] : len(rows[i])] = True
            logp = torch.log_softmax(logits[:, :-1][wanted[:, 1:]].float(), dim=-1)
            targets = ids[wanted]
            columns = [logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1), (logp.argmax(-1) == targets).float()]
            if distribution:
                probs = logp.exp()
                mu = (probs * logp).sum(-1)
                var = (probs * logp.square()).sum(-1) - mu.square()
                columns += [mu, var.clamp(min=0).sqrt()]
            table = torch.stack(columns, dim=1).cpu().numpy()
            bounds = np.cumsum([0] + [len(rows[i]) - starts[i] for i in indices])
            out = []
            for a, b in zip(bounds[:-1], bounds[1:]):
                part = table[a:b]
                scores = TokenScores(part[:, 0], greedy_match=part[:, 1].astype(bool))
                if distribution:
                    scores.mu, scores.sigma = part[:, 2], part[:, 3]
                out.append(scores)
            return out

        with self.lock:
            return run_batched([len(r) for r in rows], batch_fn, self.policy, desc)

    def answer_scores(self, prompts: Sequence[str], answers: Sequence[str], desc: str | None = None) -> list[TokenScores]:
        """Log-probs of each answer's tokens after its prompt."""
        rows, starts = [], []
        for prompt, answer in zip(prompts, answers):
            prefix, target = self.encode_continuation(prompt, answer)
            rows.append(prefix + target)
            starts.append(len(prefix))
        return self.token_scores(rows, starts, desc=desc)

    def answer_logprobs(self, prompts: Sequence[str], answers: Sequence[str], desc: str | None = None) -> list[float]:
        """Mean log-prob per answer token (length-normalized answer probability)."""
        return [s.mean for s in self.answer_scores(prompts, answers, desc)]

    def text_scores(self, texts: Sequence[str], distribution: bool = False, desc: str | None = None) -> list[TokenScores]:
        """Log-probs of every token of each text after the first (membership inference)."""
        rows = [self.tokenizer(t)["input_ids"] for t in texts]
        return self.token_scores(rows, [1] * len(rows), distribution=distribution, desc=desc)

    def row_losses(self, rows: Sequence[Sequence[int]], desc: str | None = None) -> list[float]:
        """Mean next-token NLL of raw token rows (REMIND's neighbor variants)."""
        return [s.loss for s in self.token_scores(rows, [1] * len(rows), desc=desc)]

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int = 24, desc: str | None = None) -> list[str]:
        """Greedy continuations, batched with left padding."""
        encoded = [self.encode(p) for p in prompts]

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
                do_sample=False,
                pad_token_id=self.pad_id,
            )
            return [t.strip() for t in self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]

        lengths = [len(r) + max_new_tokens for r in encoded]
        with self.lock:
            return run_batched(lengths, batch_fn, self.policy, desc)

    def stream(self, prompt: str, max_new_tokens: int = 48) -> Iterator[str]:
        """Greedy continuation of one prompt, yielded as the text grows."""
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        ids = torch.as_tensor([self.encode(prompt)], device=self.device)
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                      do_sample=False, pad_token_id=self.pad_id, streamer=streamer)
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
            states = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            stacked = torch.stack(states, dim=1)  # [batch, layers + 1, seq, hidden]
            return [stacked[j, :, len(encoded[i]) - 1].float().cpu() for j, i in enumerate(indices)]

        with self.lock:
            return run_batched([len(r) for r in encoded], batch_fn, self.policy, desc)

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
            states = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
            return [states[j, : len(rows[i])].float().cpu() for j, i in enumerate(indices)]

        with self.lock:
            return run_batched([len(r) for r in rows], batch_fn, self.policy, desc)

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
            hidden = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
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
        with self.lock:
            return run_batched([len(r) for r in rows], batch_fn, self.policy, desc)
