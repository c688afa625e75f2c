"""Tiny random-init models of every Hugging Face family the lab supports, each with a tokenizer of that
family's kind built here with the tokenizers library (nothing downloaded).

Tokenizer kinds (:mod:`lab.shell.bench.tokenizer_kinds`, shared with the bench's realistic shapes):

- byte-level BPE (GPT-2, GPT-NeoX, OPT, OLMo2, Qwen, Llama-3): spaces as ``Ġ``; GPT-2 and Qwen add no BOS,
  Llama-3 adds ``<|begin_of_text|>``, OPT adds ``</s>``;
- SentencePiece-style BPE with byte fallback and the ``▁`` leading-space marker (Llama-2, Mistral, Phi-3,
  Gemma): ``<s>`` / ``<bos>`` added in front.

Chat templates follow each family's layout (Llama-2 ``[INST]``, Llama-3 headers, ChatML, Gemma turns that
refuse a system role, Phi-3 tags).  Each family is saved with ``save_pretrained`` as a base model and an
"unlearned" copy with slightly perturbed weights, so the pair shares its tokenizer like a real pair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import (AutoModelForCausalLM, Gemma2Config, Gemma3TextConfig, GPT2Config, GPTNeoXConfig,
                          LlamaConfig, MistralConfig, Olmo2Config, OPTConfig, Phi3Config, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen3Config)

from lab.shell.bench.tokenizer_kinds import byte_level, fast_tokenizer, sentencepiece_like

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "families"
WIDTH = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
             num_hidden_layers=2, max_position_embeddings=512)

LLAMA2_CHAT = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>>\n{{ m['content'] }}\n"
               "<</SYS>>\n\n{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %} "
               "{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
LLAMA3_CHAT = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
               "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
               "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GEMMA_CHAT = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
              "{{ raise_exception('System role not supported') }}{% endif %}<start_of_turn>"
              "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
              "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
PHI3_CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@dataclass(frozen=True)
class Family:
    name: str
    config: Callable[[int], Any]  # vocabulary size -> config
    tokenizer: str  # byte | sentencepiece
    specials: dict[str, str]  # bos/eos/pad/unk token strings
    extra_tokens: tuple[str, ...] = ()
    adds_bos: bool = False
    chat_template: str | None = None


FAMILIES = {
    "llama2": Family("llama2", lambda v: LlamaConfig(vocab_size=v, **WIDTH), "sentencepiece",
                     {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, (), True, LLAMA2_CHAT),
    "llama3": Family("llama3", lambda v: LlamaConfig(vocab_size=v, **WIDTH), "byte",
                     {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
                     ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), True, LLAMA3_CHAT),
    "qwen2": Family("qwen2", lambda v: Qwen2Config(vocab_size=v, **WIDTH), "byte",
                    {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}, ("<|im_start|>", "<|im_end|>"),
                    False, CHATML),
    "qwen3": Family("qwen3", lambda v: Qwen3Config(vocab_size=v, head_dim=16, **WIDTH), "byte",
                    {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, ("<|im_start|>", "<|endoftext|>"),
                    False, CHATML),
    "mistral": Family("mistral", lambda v: MistralConfig(vocab_size=v, **WIDTH), "sentencepiece",
                      {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, (), True, LLAMA2_CHAT),
    "gemma2": Family("gemma2", lambda v: Gemma2Config(vocab_size=v, head_dim=16, final_logit_softcapping=30.0,
                                                      attn_logit_softcapping=50.0, **WIDTH), "sentencepiece",
                     {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
                     ("<start_of_turn>", "<end_of_turn>"), True, GEMMA_CHAT),
    "gemma3": Family("gemma3", lambda v: Gemma3TextConfig(vocab_size=v, head_dim=16, **WIDTH), "sentencepiece",
                     {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
                     ("<start_of_turn>", "<end_of_turn>"), True, GEMMA_CHAT),
    "phi3": Family("phi3", lambda v: Phi3Config(vocab_size=v, pad_token_id=0, **WIDTH), "sentencepiece",
                   {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<pad>"},
                   ("<|user|>", "<|assistant|>", "<|system|>", "<|end|>"), True, PHI3_CHAT),
    "olmo2": Family("olmo2", lambda v: Olmo2Config(vocab_size=v, pad_token_id=0, **WIDTH), "byte",
                    {"eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}, (), False, None),
    "gpt_neox": Family("gpt_neox", lambda v: GPTNeoXConfig(vocab_size=v, hidden_size=32, intermediate_size=64,
                                                            num_attention_heads=2, num_hidden_layers=2,
                                                            max_position_embeddings=512), "byte",
                       {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}, (), False, None),
    "opt": Family("opt", lambda v: OPTConfig(vocab_size=v, hidden_size=32, ffn_dim=64, num_attention_heads=2,
                                             num_hidden_layers=2, word_embed_proj_dim=32, max_position_embeddings=512,
                                             pad_token_id=1, bos_token_id=2, eos_token_id=2), "byte",
                  {"bos_token": "</s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}, (),
                  True, None),
    "gpt2": Family("gpt2", lambda v: GPT2Config(vocab_size=v, n_embd=32, n_layer=2, n_head=2, n_positions=512),
                   "byte", {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}, (), False, None),
}


def _specials(family: Family) -> list[str]:
    return list(dict.fromkeys([*family.specials.values(), *family.extra_tokens]))


def build_tokenizer(texts: list[str], family: Family, vocab: int = 640) -> PreTrainedTokenizerFast:
    specials = _specials(family)
    tok = (byte_level(texts, specials, vocab) if family.tokenizer == "byte"
           else sentencepiece_like(texts, specials, vocab, family.specials.get("unk_token")))
    fast = fast_tokenizer(tok, family.specials, family.extra_tokens,
                          family.specials["bos_token"] if family.adds_bos else None)
    if family.chat_template:
        fast.chat_template = family.chat_template
    return fast


def corpus(facts) -> list[str]:
    """Tokenizer training text: the facts' passages and their question-answer lines."""
    return list(dict.fromkeys([f.text for f in facts if f.text]
                              + [f"Question: {f.question}\nAnswer: {f.answer}" for f in facts if f.kind == "qa"]))


def build_pair(family: Family, texts: list[str], folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Base and "unlearned" (perturbed) models of ``family`` saved under ``folder``; reused when present."""
    base, unlearned = folder / "base", folder / "unlearned"
    if (unlearned / "config.json").is_file() and (base / "config.json").is_file():
        return base, unlearned
    tokenizer = build_tokenizer(texts, family)
    config = family.config(len(tokenizer))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        token = family.specials.get(key.replace("_id", ""))
        if token is not None:
            setattr(config, key, tokenizer.convert_tokens_to_ids(token))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(unlearned)
    tokenizer.save_pretrained(unlearned)
    (folder / "family.json").write_text(json.dumps({"name": family.name, "tokenizer": family.tokenizer}))
    return base, unlearned
