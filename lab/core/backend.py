"""What every model backend offers, and what it can do.

Audits reach models through this interface.  A backend declares its
*capabilities*:

- ``generate``: text out for prompts (greedy or sampled);
- ``logprobs``: teacher-forced log-probs of given tokens after a prefix, with
  whether each was the top prediction (probabilities, truth ratio, LOSS,
  ZLib, Min-K%, exact memorization, extraction strength);
- ``exact_tokens``: those log-probs for any token row the lab builds, also
  one that is not how the tokenizer would split its text (an answer followed
  by EOS, a prompt with tokens taken out): a server that takes only text
  prompts splits the text again and cannot give them;
- ``internals``: the weights, activations and gradients (hidden states, the
  logit lens, SAEs, quantization, fine-tuning, full-vocabulary statistics such
  as Min-K%++).

The local transformers engine (:class:`lab.core.engine.Engine`) has them
all; a model behind an OpenAI-compatible server
(:class:`lab.core.remote.RemoteEngine`) has what the server offers.  Each
audit declares what it needs (``Audit.needs``); the shell offers only audits
the loaded models can run.  Prompts and token ids come from the model's
tokenizer either way (:class:`lab.core.prompts.Encoder`), so a served model is
prompted exactly as a local one.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
from transformers import PreTrainedTokenizerBase

from lab.core.errors import LabError
from lab.core.prompts import Encoder, PromptFormat

T = TypeVar("T")

if TYPE_CHECKING:
    import torch

CAPABILITIES = ("generate", "logprobs", "exact_tokens", "internals")
CAPABILITY_TEXT = {"generate": "text generation", "logprobs": "token log-probs of given text",
                   "exact_tokens": "log-probs of exact token rows (answers followed by EOS, prompts with tokens "
                                   "taken out; a server that takes only text prompts splits them again)",
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
        self.lock = threading.RLock()  # one model batch at a time per backend (and an edit throughout)
        self._capped: dict[int, int] = {}  # new tokens asked -> fewest the context left room for (answer_budget)

    def formatted(self, prompt_format: PromptFormat) -> "Backend":
        """This model prompted another way: a view that shares the weights, the tokenizer and the lock (a
        chat template and a plain template on one loaded model cost one copy of the weights)."""
        if prompt_format == self.prompt_format:
            return self
        view = copy.copy(self)
        view.prompt_format, view.encoder = prompt_format, Encoder(self.tokenizer, prompt_format)
        return view

    def preview(self, question: str) -> tuple[str, list[str]]:
        """The exact prompt this model is sent for ``question`` and its tokens as the tokenizer spells them
        (special tokens such as BOS and the chat template's markers included): what the web lab shows."""
        text = self.prompt(question)
        return text, self.tokenizer.convert_ids_to_tokens(self.encode(text))

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

    def answer_budget(self, prompt_tokens: int, asked: int) -> int:
        """New tokens an answer after a prompt of ``prompt_tokens`` may have: ``asked`` when both fit the
        context, else the room left, and a note says so (a 256-token model asked for open-unlearning's 200-token
        answers after a 76-token prompt answers in 180, it does not fail the run).  A prompt that fills the
        context alone keeps ``asked``, for the context check to refuse it."""
        if not self.context or prompt_tokens + asked <= self.context or prompt_tokens >= self.context:
            return asked
        room = self.context - prompt_tokens
        with self.lock:
            self._capped[asked] = min(room, self._capped.get(asked, room))
        return room

    def take_notes(self) -> list[str]:
        """What the calls since the last take changed about what they were asked (the runner adds these notes
        to the audit that made the calls)."""
        with self.lock:
            capped, self._capped = self._capped, {}
        return [f"{self.info.ref}: answers capped to fit the model's context of {self.context} tokens ({asked} new "
                f"tokens were asked; the longest prompt left room for {room})" for asked, room in sorted(capped.items())]

    def encode_continuation(self, prefix: str, target: str) -> tuple[list[int], list[int]]:
        """Ids of ``prefix`` and of ``target`` as its continuation (cut as :meth:`continuation_rows` cuts)."""
        (row,), (start,) = self.continuation_rows([(prefix, target)])
        return row[:start], row[start:]

    # -------------------------------------------------- what each backend gives
    def generate(self, prompts: Sequence[str], max_new_tokens: int = 24, desc: str | None = None,
                 temperature: float = 0.0, seed: int = 0) -> list[str]:
        raise NotImplementedError

    def token_scores(self, rows: Sequence[Sequence[int]], starts: Sequence[int], distribution: bool = False,
                     desc: str | None = None, edit_batch: Any = None) -> list[TokenScores]:
        """Teacher-forced log p(row[t] | row[:t]) for t >= starts[i], batched (``edit_batch``: a residual edit
        per batch, internals only; see :meth:`lab.core.engine.Engine.token_scores`)."""
        raise NotImplementedError

    def sample(self, prompts: Sequence[str], n: int, max_new_tokens: int = 24, temperature: float = 1.0,
               seed: int = 0, desc: str | None = None) -> list[list[str]]:
        """``n`` sampled answers to each prompt at ``temperature``, seeded: the same seed draws the same answers.
        Locally every draw comes from one seeded generator over one batch of repeated prompts."""
        flat = self.generate([p for p in prompts for _ in range(n)], max_new_tokens, desc, temperature, seed)
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]

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

    # ---------------------------------------------- internals (a model loaded here)
    # A served model has none of these; audits that need them declare ``internals`` and are skipped for it.
    model: Any = None  # the torch module: weights an audit reads, quantizes or fine-tunes
    device: Any = None

    def last_token_states(self, prompts: Sequence[str], desc: str | None = None) -> list["torch.Tensor"]:
        """Residual stream at each prompt's last token, all layers: [layers + 1, hidden]."""
        raise self._lacks("reading hidden states")

    def row_states(self, rows: Sequence[Sequence[int]], layer: int, desc: str | None = None) -> list["torch.Tensor"]:
        """Residual stream at every token of raw token rows, hidden-state index ``layer``: [len, hidden]."""
        raise self._lacks("reading hidden states")

    def logit_lens(self, prompts: Sequence[str], answers: Sequence[str], top: int = 5,
                   desc: str | None = None) -> list[Any]:
        """Every layer's reading of each answer token (see :meth:`lab.core.engine.Engine.logit_lens`)."""
        raise self._lacks("the logit lens")

    def editing(self, edit: Any) -> Any:
        """A context in which every decoder block's output passes through ``edit`` (see
        :meth:`lab.core.engine.Engine.editing`)."""
        raise self._lacks("editing the residual stream")

    def remember(self, name: str, inputs: object, compute: "Callable[[], T]") -> "T":
        """An audit's own result derived from this model (a relearning curve), computed once per weights and
        ``inputs`` where the backend can tell its weights apart (see :meth:`lab.core.engine.Engine.remember`);
        a served model cannot, so this computes it every time."""
        return compute()

    def weights_state(self) -> object:
        """What identifies the weights as they are now (see :meth:`lab.core.engine.Engine.weights_state`)."""
        raise self._lacks("changing its weights")

    def derived(self, before: object, how: object) -> None:
        """The weights now are ``before``'s changed by ``how`` alone (see :meth:`lab.core.engine.Engine.derived`)."""
        raise self._lacks("changing its weights")

    def restored_after(self) -> Any:
        """A context for a block that changes the weights in place and restores them bit for bit before it ends
        (fake quantization, full fine-tuning): results kept before it stay valid after it."""
        raise self._lacks("changing its weights")

    def block_outputs(self, ids: Any, mask: Any) -> list["torch.Tensor"]:
        """Each decoder block's output for one padded batch."""
        raise self._lacks("reading hidden states")

    def mean_block_outputs(self, prompts: Sequence[str], desc: str | None = None) -> list["torch.Tensor"]:
        """Each decoder block's output averaged over each prompt's tokens: [layers, hidden] per prompt."""
        raise self._lacks("reading hidden states")

    @property
    def architecture(self) -> Any:
        """Decoder blocks, final norm and output head (see :mod:`lab.core.architecture`)."""
        raise self._lacks("the model's layers")

    def _lacks(self, what: str) -> LabError:
        return LabError(f"{what} needs {CAPABILITY_TEXT['internals']}, which {self.info.ref} does not offer")

    def row_losses(self, rows: Sequence[Sequence[int]], desc: str | None = None) -> list[float]:
        """Mean next-token NLL of raw token rows (REMIND's neighbor variants)."""
        return [s.loss for s in self.token_scores(rows, [1] * len(rows), desc=desc)]
