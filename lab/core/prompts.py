"""How a question becomes token ids, the same way for every tokenizer family.

Three rules that only show with real checkpoints:

- BOS exactly once.  A tokenizer that adds BOS by default (Llama, Mistral,
  Gemma, Phi-3) gets it in front of every prompt, raw completions included;
  a chat template that already writes it (``<s>[INST]``, ``<bos>``,
  ``<|begin_of_text|>``) is not given a second one; tokenizers without BOS
  (GPT-2, Qwen, OPT's ``</s>`` aside) get none.
- Answers are tokenized as continuations, the way lm-evaluation-harness does:
  prompt and answer are encoded together and split where the prompt's own
  tokens end, so a SentencePiece tokenizer's leading-space marker is not
  doubled and a byte-level BPE's space stays on the answer.  The scored
  tokens are then exactly the answer's, TOFU's P(answer | question).
  ``PromptFormat.token_split="open-unlearning"`` reproduces open-unlearning's
  split instead, for comparison with its published tables (see
  :class:`PromptFormat`).
- Generation stops at EOS and at the end-of-turn tokens chat models use.

The chat template can carry a system prompt; a template that refuses the
system role (Gemma's) gets it at the head of the user's turn instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal, Sequence, get_args

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"
# End-of-turn tokens of chat families (Llama-3, ChatML/Qwen, Gemma, Phi-3, GPT-style): generation stops at them.
END_OF_TURN = ("<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")
TokenSplit = Literal["lab", "open-unlearning"]
TOKEN_SPLITS: tuple[str, ...] = get_args(TokenSplit)


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a prompt: a plain template, or the tokenizer's chat template (with a system prompt).

    ``token_split`` says where the space between a plain prompt and its answer goes:

    - ``lab`` (default): to the answer.  Prompt and answer are encoded together and cut where the prompt's own
      tokens end (lm-evaluation-harness's rule), so the scored tokens are exactly the answer's and generation
      starts right after ``Answer:``.
    - ``open-unlearning``: to the prompt, as open-unlearning's plain template does (its ``asst_start_tag`` is
      ``"Answer: "``).  The prompt, trailing space included, is encoded on its own and the answer is whatever
      the joint encoding holds after as many tokens.  With a byte-level or Metaspace tokenizer the prompt ends
      in a lone space token that the joint encoding merges into the answer's first word, so the labels start
      one token late and generation starts from that lone space.  Only for comparison with its published
      plain-template numbers.  A chat prompt gets no space, and both splits cut it at the same place
      wherever its own tokens begin the joint encoding.
    """

    template: str = DEFAULT_TEMPLATE
    use_chat_template: bool = False
    system_prompt: str = ""
    token_split: TokenSplit = "lab"
    # Extra variables the chat template reads (name, value): Llama 3.x's templates print ``date_string``, and
    # open-unlearning passes one; without it the template falls back to its own default date.
    chat_vars: tuple[tuple[str, str], ...] = ()


ENCODED_TEXTS = 100_000  # texts whose ids an encoder keeps (see Encoder.encode_many)


class Encoder:
    """A tokenizer and a prompt format: prompts, ids, continuations and stop tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_format: PromptFormat):
        self.tokenizer = tokenizer
        self.format = prompt_format
        self._ids: dict[str, list[int]] = {}  # text -> its ids (encode_many), up to ENCODED_TEXTS texts

    # ------------------------------------------------------------------ prompts
    def prompt(self, question: str) -> str:
        """The prompt for a question under this format."""
        fmt = self.format
        if fmt.use_chat_template and getattr(self.tokenizer, "chat_template", None):
            return self._chat(question)
        return self._plain(question)

    def _plain(self, question: str) -> str:
        """The question in the plain template; under open-unlearning's split the space before the answer ends
        the prompt (see :class:`PromptFormat`)."""
        text = self.format.template.format(question=question)
        if self.format.token_split == "open-unlearning" and text and not text[-1].isspace():
            text += " "
        return text

    def few_shot(self, examples: list[tuple[str, str]], question: str) -> str:
        """A prompt that shows question-answer ``examples`` before ``question``: earlier chat turns under a chat
        template, else each example in the template followed by its answer, one blank line apart."""
        fmt = self.format
        if fmt.use_chat_template and getattr(self.tokenizer, "chat_template", None):
            turns = [m for q, a in examples for m in ({"role": "user", "content": q},
                                                      {"role": "assistant", "content": a})]
            return self._chat(question, turns)
        shown = "".join(f"{fmt.template.format(question=q)} {a}\n\n" for q, a in examples)
        return shown + self._plain(question)

    def _chat(self, question: str, turns: list[dict[str, str]] | None = None) -> str:
        system = self.format.system_prompt.strip()
        messages = ([{"role": "system", "content": system}] if system else []) + (turns or []) + [
            {"role": "user", "content": question}]
        variables = dict(self.format.chat_vars)
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                      **variables)
        except Exception:  # noqa: BLE001 - jinja raises TemplateError for a refused system role
            if not system:
                raise
            first, *rest = (turns or []) + [{"role": "user", "content": question}]
            merged = [{"role": "user", "content": f"{system}\n\n{first['content']}"}, *rest]
            return self.tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True,
                                                      **variables)

    # ---------------------------------------------------------------------- ids
    @cached_property
    def adds_bos(self) -> bool:
        """Whether this tokenizer puts BOS in front of an encoded text by default."""
        bos = self.tokenizer.bos_token_id
        if bos is None:
            return False
        plain = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        default = self.tokenizer("a")["input_ids"]
        return bool(default) and default[0] == bos and (not plain or plain[0] != bos)

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt with BOS exactly once (when the tokenizer uses one), no EOS."""
        return self.encode_many([text])[0]

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of many texts in one tokenizer call, each distinct text once (a multiple-choice
        prompt repeats once per choice): tokenizing one at a time was a third of a scoring pass on CPU.  Ids
        are kept per text: every audit of a run, and every pair of a sweep, measures and asks about the same
        facts (tokenizing them again was 5% of a ``calibrate``)."""
        known = {text: self._ids[text] for text in dict.fromkeys(texts) if text in self._ids}
        unique = [text for text in dict.fromkeys(texts) if text not in known]
        encoded = self.tokenizer(unique, add_special_tokens=False)["input_ids"] if unique else []
        bos = self.tokenizer.bos_token_id
        new = {text: [bos, *ids] if self.adds_bos and (not ids or ids[0] != bos) else ids
               for text, ids in zip(unique, encoded)}
        if len(self._ids) + len(new) > ENCODED_TEXTS:
            self._ids.clear()
        self._ids.update(new)
        known.update(new)
        return [list(known[text]) for text in texts]

    def continuations(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """Ids of each ``prefix`` and of its ``target`` as its continuation (joined by a space when neither
        has one), tokenized in one call.

        Encoded together and split at the prefix's own tokens (lm-evaluation-harness's rule); trailing
        spaces of the prefix move to the target.  Where a token spans the boundary, the split follows
        the character offsets: tokens that start in the target belong to it.  Under open-unlearning's
        split the cut is :meth:`_counted`'s instead (the target may then be empty).
        """
        if self.format.token_split == "open-unlearning":
            return self._counted(pairs)
        contexts = [prefix.rstrip(" ") for prefix, _ in pairs]
        texts = [self.joined(prefix, target) for prefix, target in pairs]
        return [self._split(context, text, context_ids, whole) for context, text, context_ids, whole
                in zip(contexts, texts, self.encode_many(contexts), self.encode_many(texts))]

    def _counted(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """open-unlearning's cut: the joint encoding of prefix and target, cut after as many tokens as the
        prefix has when encoded on its own (its trailing space included), whether or not they match."""
        prefixes = self.encode_many([prefix for prefix, _ in pairs])
        wholes = self.encode_many([self.joined(prefix, target) for prefix, target in pairs])
        return [(whole[:len(prefix)], whole[len(prefix):]) for prefix, whole in zip(prefixes, wholes)]

    def _split(self, context: str, text: str, context_ids: list[int], whole: list[int]) -> tuple[list[int], list[int]]:
        """``whole`` (the ids of ``text``) cut where ``context`` ends."""
        if len(whole) > len(context_ids) and whole[:len(context_ids)] == context_ids:
            return context_ids, whole[len(context_ids):]
        offsets = self.offsets(text)
        cut = next((i for i, span in enumerate(offsets) if span and span[1] > len(context)), len(whole))
        cut = min(max(cut, 1), len(whole) - 1)
        return whole[:cut], whole[cut:]

    @staticmethod
    def joined(prefix: str, target: str) -> str:
        """The text a prompt and its answer make together: a space between, unless either side has one."""
        joiner = "" if not prefix or prefix[-1].isspace() or target[:1].isspace() else " "
        return prefix + joiner + target

    def offsets(self, text: str) -> list[tuple[int, int] | None]:
        """Character span of every id :meth:`encode` gives for ``text`` (None for a BOS put in front)."""
        spans = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        extra = len(self.encode(text)) - len(spans)
        return [None] * extra + [tuple(s) for s in spans]

    @cached_property
    def stop_ids(self) -> list[int]:
        """EOS and every end-of-turn token this vocabulary has."""
        ids = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        vocab = self.tokenizer.get_vocab()
        ids += [vocab[t] for t in END_OF_TURN if t in vocab]
        return list(dict.fromkeys(ids))
