"""Realistic shapes: random-init models with the vocabularies and tokenizers of the families people audit.

The demo model has a 1,024-token vocabulary; the models people audit have 32k-256k (Llama-2 32,000,
Llama-3 128,256, Qwen2.5 151,936, Gemma-2 256,000).  There the cost of the output head and of a log-softmax
over the vocabulary at every position dominates, which the engine avoids (the head only at the positions it
scores) and lm-evaluation-harness's ``HFLM`` does not.  Each :class:`Vocabulary` here is one family's
tokenizer kind (byte-level BPE or SentencePiece-style BPE with byte fallback, BOS as the family adds it),
trained on the demo world's text and padded to the family's real size (:mod:`.tokenizer_kinds`), under a
random-init model of that family's class whose embedding and output head have the real width.  Nothing is
downloaded; weights are random, so the numbers measure cost, not knowledge.

The items are the demo world's (generated, no model trained): multiple-choice questions with lm-eval's
lettered prompt, answers of realistic length (the answer sentence and the person's biography, about as long
as a TOFU answer), and the plain questions for greedy generation.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any, Callable, Sequence

import torch
from transformers import AutoModelForCausalLM, Gemma2Config, LlamaConfig, PretrainedConfig, PreTrainedTokenizerFast, \
    Qwen2Config

from lab.core.backend import ModelInfo
from lab.core.engine import Engine
from lab.core.facts import Fact
from lab.demo.world import make_people, people_to_facts, training_texts
from lab.shell.bench.lm_eval_peer import compare_answers, compare_choices
from lab.shell.bench.loops import compare_generation
from lab.shell.bench.measure import Comparison
from lab.shell.bench.tokenizer_kinds import byte_level, fast_tokenizer, padded, sentencepiece_like
from lab.shell.gpucheck import LLAMA_32_1B

TRAINED_VOCAB = 4096  # entries learned from the demo world's text; the rest of the family's size is unused ids
WORLD_PEOPLE = 200  # the full demo's world: its text trains the tokenizers and gives the items


@dataclass(frozen=True)
class Vocabulary:
    """One family's vocabulary: its size, tokenizer kind, special tokens and model class."""

    family: str  # the released models whose vocabulary this is
    size: int
    kind: str  # "byte" (byte-level BPE) or "sentencepiece" (BPE with byte fallback and the ▁ marker)
    specials: dict[str, str]
    bos: str | None  # put in front of every encoding, as the family's tokenizer does
    config: type[PretrainedConfig]
    config_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.family} vocabulary {self.size:,}"


VOCABULARIES = {
    "llama2-32k": Vocabulary("Llama-2", 32_000, "sentencepiece",
                             {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, "<s>", LlamaConfig),
    "llama3-128k": Vocabulary("Llama-3", 128_256, "byte",
                              {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
                              "<|begin_of_text|>", LlamaConfig, {"tie_word_embeddings": True}),
    "qwen2.5-152k": Vocabulary("Qwen2.5", 151_936, "byte", {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
                               None, Qwen2Config, {"tie_word_embeddings": True}),
    "gemma2-256k": Vocabulary("Gemma-2", 256_000, "sentencepiece",
                              {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
                              "<bos>", Gemma2Config, {"tie_word_embeddings": True, "final_logit_softcapping": 30.0,
                                                      "attn_logit_softcapping": 50.0, "query_pre_attn_scalar": 64}),
}
SMALL = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, head_dim=64, max_position_embeddings=2048)
ONE_B = {k: v for k, v in LLAMA_32_1B.items() if k not in ("vocab_size", "tie_word_embeddings")}


@dataclass(frozen=True)
class Shape:
    """A vocabulary under a model width, and how many items each comparison on it takes."""

    name: str  # "small" or the released model whose depth and width it has
    vocabulary: str  # key of VOCABULARIES
    width: dict[str, Any]
    choices: int  # multiple-choice questions
    answers: int  # multi-token answers scored
    prompts: int  # prompts answered greedily
    repeats: int | None = None  # best of this many runs (None: the bench's)
    new_tokens: int | None = None  # tokens each prompt's greedy answer runs to (None: the bench's)

    @property
    def label(self) -> str:
        hidden, layers = self.width["hidden_size"], self.width["num_hidden_layers"]
        return f"{VOCABULARIES[self.vocabulary].label}, {self.name} ({hidden} hidden x {layers} layers)"


FULL_SHAPES = (
    # Calls of a fraction of a second to a few seconds on 2 cores: best of 5 interleaved runs against the load.
    *(Shape("small", key, SMALL, choices=48, answers=32, prompts=32, repeats=5) for key in VOCABULARIES),
    # 5 GB of float32 weights: one lm-eval batch of questions and of answers (fewer would understate its memory),
    # best of three runs, a handful of short greedy answers (every decode step reads all the weights).
    Shape("Llama-3.2-1B", "llama3-128k", ONE_B, choices=16, answers=16, prompts=4, repeats=3, new_tokens=8),
)


def world_facts() -> list[Fact]:
    """The demo world's question-answer facts (generated from its seed; no model is built)."""
    return people_to_facts(make_people(0, WORLD_PEOPLE, 0.1, 0.1), 0)


@lru_cache(maxsize=None)
def world_texts() -> tuple[str, ...]:
    return tuple(training_texts(make_people(0, WORLD_PEOPLE, 0.1, 0.1)))


def build_tokenizer(vocabulary: Vocabulary, texts: Sequence[str], trained: int = TRAINED_VOCAB) -> PreTrainedTokenizerFast:
    """The vocabulary's tokenizer kind trained on ``texts`` (``trained`` entries), padded to its size."""
    specials = list(dict.fromkeys(vocabulary.specials.values()))
    learn = min(trained, vocabulary.size)
    tok = (byte_level(texts, specials, learn) if vocabulary.kind == "byte"
           else sentencepiece_like(texts, specials, learn, vocabulary.specials.get("unk_token")))
    return fast_tokenizer(padded(tok, vocabulary.size), vocabulary.specials, bos=vocabulary.bos)


def random_engine(shape: Shape, device: str, texts: Sequence[str] = (), seed: int = 0) -> Engine:
    """An engine around a random-init model of the shape's family class and width, with its tokenizer."""
    vocabulary = VOCABULARIES[shape.vocabulary]
    tokenizer = build_tokenizer(vocabulary, texts or world_texts())
    ids = {f"{key}_id": tokenizer.convert_tokens_to_ids(token) for key, token in
           (("bos_token", vocabulary.bos), ("eos_token", vocabulary.specials["eos_token"]),
            ("pad_token", vocabulary.specials.get("pad_token"))) if token}
    config = vocabulary.config(vocab_size=len(tokenizer), **{**shape.width, **vocabulary.config_extra, **ids})
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config)
    info = ModelInfo(ref=f"random {shape.label}", path="", content_hash="", device=device, dtype="float32",
                     parameters=sum(p.numel() for p in model.parameters()), architecture=type(model).__name__)
    return Engine(model, tokenizer, info)


def model_shape(engine: Engine) -> dict[str, Any]:
    """What a comparison ran on: vocabulary (output head width), depth, width and parameters."""
    config = engine.model.config
    head = engine.model.get_output_embeddings()
    return {"vocab_size": int(head.weight.shape[0]) if head is not None else config.vocab_size,
            "hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "num_key_value_heads": getattr(config, "num_key_value_heads", config.num_attention_heads),
            "intermediate_size": getattr(config, "intermediate_size", None), "parameters": engine.info.parameters,
            "architecture": engine.info.architecture, "tokenizer": type(engine.tokenizer).__name__}


def long_answers(facts: Sequence[Fact]) -> tuple[list[str], list[str]]:
    """(question, answer) of realistic length: the answer as a sentence, then the person's biography."""
    return [f.question for f in facts], [f"{f.paraphrased_answer} {f.text}" for f in facts]


def shape_comparisons(engine: Engine, shape: Shape, facts: Sequence[Fact], new_tokens: int,
                      repeats: int) -> list[Comparison]:
    """Multiple choice and multi-token log-likelihood against lm-eval, generation against the batch-32 loop."""
    questions, answers = long_answers(facts[: shape.answers])
    described = {**model_shape(engine), "shape": shape.name, "vocabulary": VOCABULARIES[shape.vocabulary].label,
                 "label": shape.label}
    repeats = shape.repeats or repeats
    found = [compare_choices(engine, facts, shape.choices, repeats),
             compare_answers(engine, [engine.prompt(q) for q in questions], answers, repeats),
             compare_generation(engine, list(facts[: shape.prompts]), shape.new_tokens or new_tokens, repeats,
                                own_loop=False)[1]]
    return [replace(c, name=f"{c.name}, {shape.label}", shape=described) for c in found]


def realistic_comparisons(shapes: Sequence[Shape], device: str, new_tokens: int, repeats: int,
                          progress: Callable[[str], None] = lambda _: None) -> list[Comparison]:
    """Every shape's comparisons, one random model in memory at a time."""
    facts = world_facts()
    out: list[Comparison] = []
    for shape in shapes:
        progress(shape.label)
        engine = random_engine(shape, device)
        out += shape_comparisons(engine, shape, facts, new_tokens, repeats)
        del engine
        gc.collect()
    return out


def shapes_json(shapes: Sequence[Shape]) -> list[dict[str, Any]]:
    return [{**asdict(s), "label": s.label, "vocab_size": VOCABULARIES[s.vocabulary].size} for s in shapes]
