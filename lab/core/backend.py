"""What every model backend offers, and what it can do.

Audits reach models through this interface.  A backend declares its
*capabilities*:

- ``generate``: text out for prompts (greedy or sampled);
- ``logprobs``: teacher-forced log-probs of given tokens after a prefix, with
  whether each was the top prediction (probabilities, truth ratio, LOSS,
  ZLib, Min-K%, exact memorization, extraction strength);
- ``internals``: the weights, activations and gradients (hidden states, the
  logit lens, SAEs, quantization, fine-tuning, full-vocabulary statistics such
  as Min-K%++).

The local transformers engine (:class:`lab.core.engine.Engine`) has all
three; a model behind an OpenAI-compatible server
(:class:`lab.core.remote.RemoteEngine`) has what the server offers.  Each
audit declares what it needs (``Audit.needs``); the shell offers only audits
the loaded models can run.  Prompts and token ids come from the model's
tokenizer either way (:class:`lab.core.prompts.Encoder`), so a served model is
prompted exactly as a local one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from lab.core.errors import LabError
from lab.core.prompts import Encoder, PromptFormat

CAPABILITIES = ("generate", "logprobs", "internals")
CAPABILITY_TEXT = {"generate": "text generation", "logprobs": "token log-probs of given text",
                   "internals": "weights, activations and gradients (a local model)"}


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


class Backend:
    """A model the lab can audit: prompts and ids from its tokenizer, generation, scoring where it can."""

    capabilities: frozenset[str] = frozenset()
    context: int | None = None  # the longest input in tokens, when the model says

    def __init__(self, tokenizer: PreTrainedTokenizerBase, info: ModelInfo, prompt_format: PromptFormat):
        self.tokenizer = tokenizer
        self.info = info
        self.prompt_format = prompt_format
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = tokenizer.pad_token_id
        self.encoder = Encoder(tokenizer, prompt_format)
        self.lock = threading.RLock()  # one model call at a time per backend

    # ------------------------------------------------------------- capabilities
    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def require(self, capability: str, what: str) -> None:
        """A clear error when ``what`` needs a capability this model lacks."""
        if not self.can(capability):
            raise LabError(f"{what} needs {CAPABILITY_TEXT[capability]}, which {self.info.ref} does not offer")

    # ------------------------------------------------------------------ prompts
    def prompt(self, question: str) -> str:
        """The prompt for a question under this model's prompt format."""
        return self.encoder.prompt(question)

    def few_shot_prompt(self, examples: list[tuple[str, str]], question: str) -> str:
        """The prompt for a question after question-answer examples (see :meth:`Encoder.few_shot`)."""
        return self.encoder.few_shot(examples, question)

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt, BOS exactly once (see :mod:`lab.core.prompts`)."""
        return self.encoder.encode(text)

    def fit_prompt(self, text: str, new_tokens: int) -> str:
        """``text`` cut from the left until it and ``new_tokens`` fit the context: lm-evaluation-harness's rule
        for generation (the end of a long passage is what its continuation depends on).  Unchanged when it
        fits or the context is unknown."""
        if not self.context:
            return text
        room = self.context - new_tokens
        if room < 2:
            raise LabError(f"{new_tokens} new tokens leave no room for a prompt in {self.info.ref}'s context of "
                           f"{self.context} tokens")
        ids = self.encode(text)
        keep = room - 1  # tokens of the text kept, beside the BOS that encoding adds again
        while len(ids) > room:  # re-encoding a cut can merge tokens differently: cut one more until it fits
            text = self.tokenizer.decode(ids[-keep:], skip_special_tokens=True)
            ids = self.encode(text)
            keep -= 1
        return text

    def encode_continuation(self, prefix: str, target: str) -> tuple[list[int], list[int]]:
        """Ids of ``prefix`` and of ``target`` as its continuation (cut as :meth:`continuation_rows` cuts)."""
        (row,), (start,) = self.continuation_rows([(prefix, target)])
        return row[:start], row[start:]

    # -------------------------------------------------- what each backend gives
    def generate(self, prompts: Sequence[str], max_new_tokens: int = 24, desc: str | None = None,
                 temperature: float = 0.0, seed: int = 0) -> list[str]:
        raise NotImplementedError

    def token_scores(self, rows: Sequence[Sequence[int]], starts: Sequence[int], distribution: bool = False,
                     desc: str | None = None) -> list[TokenScores]:
        """Teacher-forced log p(row[t] | row[:t]) for t >= starts[i], batched."""
        raise NotImplementedError

    def stream(self, prompt: str, max_new_tokens: int = 48) -> Iterator[str]:
        """A continuation yielded as it grows (the whole text at once where the backend cannot stream)."""
        yield self.generate([prompt], max_new_tokens)[0]

    # ------------------------------------------------- scoring built on tokens
    def answer_scores(self, prompts: Sequence[str], answers: Sequence[str], desc: str | None = None) -> list[TokenScores]:
        """Log-probs of each answer's tokens after its prompt."""
        rows, starts = self.continuation_rows(list(zip(prompts, answers)))
        return self.token_scores(rows, starts, desc=desc)

    def continuation_rows(self, pairs: Sequence[tuple[str, str]], suffix: Sequence[int] = ()) \
            -> tuple[list[list[int]], list[int]]:
        """Ids of each prompt + answer (+ ``suffix``) and where the answer starts, tokenized in one call.

        A row needs a target: where open-unlearning's split leaves an answer no tokens of its own (a one-token
        answer merged with the prompt's trailing space) and no suffix follows, its last token is the target.
        """
        split = self.encoder.continuations(pairs)
        rows = [prefix + target + list(suffix) for prefix, target in split]
        return rows, [min(len(prefix), len(row) - 1) for (prefix, _), row in zip(split, rows)]

    def answer_logprobs(self, prompts: Sequence[str], answers: Sequence[str], desc: str | None = None) -> list[float]:
        """Mean log-prob per answer token (length-normalized answer probability); NaN without log-probs."""
        if not self.can("logprobs"):
            return [float("nan")] * len(prompts)
        return [s.mean for s in self.answer_scores(prompts, answers, desc)]

    def text_scores(self, texts: Sequence[str], distribution: bool = False, desc: str | None = None) -> list[TokenScores]:
        """Log-probs of every token of each text after the first (membership inference)."""
        rows = [self.encode(t) for t in texts]
        return self.token_scores(rows, [1] * len(rows), distribution=distribution, desc=desc)

    def row_losses(self, rows: Sequence[Sequence[int]], desc: str | None = None) -> list[float]:
        """Mean next-token NLL of raw token rows (REMIND's neighbor variants)."""
        return [s.loss for s in self.token_scores(rows, [1] * len(rows), desc=desc)]
