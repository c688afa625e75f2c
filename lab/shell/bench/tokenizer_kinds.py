"""Tokenizers of the two kinds the supported model families use, trained here with the tokenizers library
(nothing downloaded), and padded to a family's real vocabulary size.

- byte-level BPE (GPT-2, GPT-NeoX, OPT, OLMo2, Qwen, Llama-3): spaces as ``Ġ``;
- SentencePiece-style BPE with byte fallback and the ``▁`` leading-space marker (Llama-2, Mistral, Phi-3,
  Gemma), the way those families' fast tokenizers are built.

A tokenizer trained on a small corpus stops far short of 32k-256k entries; :func:`padded` fills the rest
with unused entries (as Llama-3's reserved and Gemma's ``<unusedN>`` tokens are), so the tokenizer and the
model's embedding and output head have the family's real width.  The compatibility matrix
(tests/families.py) and the bench's realistic shapes (:mod:`lab.shell.bench.shapes`) both build theirs here.
"""

from __future__ import annotations

import json
from typing import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

FILLER = "<unused_{}>"


def byte_level(texts: Sequence[str], specials: Sequence[str], vocab: int) -> Tokenizer:
    """Byte-level BPE (GPT-2's alphabet of 256 byte characters, spaces as ``Ġ``) trained on ``texts``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def sentencepiece_like(texts: Sequence[str], specials: Sequence[str], vocab: int, unk: str | None) -> Tokenizer:
    """BPE over "▁"-marked text with byte fallback, as Llama-2's and Gemma's fast tokenizers are built."""
    tok = Tokenizer(models.BPE(unk_token=unk, byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[*specials, *bytes_], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def padded(tok: Tokenizer, size: int) -> Tokenizer:
    """``tok`` with unused entries appended to its BPE vocabulary up to ``size`` ids (no merge makes them, so
    nothing encodes to them; a model can still predict them)."""
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    if len(vocab) > size:
        raise ValueError(f"the trained vocabulary has {len(vocab)} entries, more than the {size} asked for")
    vocab.update({FILLER.format(i): i for i in range(len(vocab), size)})
    return Tokenizer.from_str(json.dumps(data))


def fast_tokenizer(tok: Tokenizer, specials: dict[str, str], extra: Sequence[str] = (),
                   bos: str | None = None) -> PreTrainedTokenizerFast:
    """A transformers tokenizer around ``tok``; ``bos`` is put in front of every encoding when given."""
    if bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **specials, additional_special_tokens=list(extra))
