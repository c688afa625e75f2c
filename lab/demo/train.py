"""Training the demo model and unlearning it with real methods.

The base model is a small Llama-architecture causal LM trained from scratch on
the demo biographies and QA pairs.  ``retrain`` is the same recipe without the
forget people (exact unlearning, the reference every audit is judged against).
The unlearned models follow the published objectives:

- gradient ascent (GA): maximize the NLL of the forget answers;
- gradient difference ("Who's Harry Potter?" line of work, TOFU baseline):
  GA on forget plus ordinary NLL on retain;
- NPO ("Negative Preference Optimization: From Catastrophic Collapse to
  Effective Unlearning", Zhang et al. 2024), loss
  ``-(2/beta) * log sigmoid(-beta * (log p_theta(y|x) - log p_ref(y|x)))``
  with beta = 0.1 and the base model as reference, plus retain NLL.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
Progress = Callable[[int], None]


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the demo corpus."""
    tok = Tokenizer(models.BPE(unk_token=SPECIALS["unk_token"]))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = SPECIALS["bos_token"]
    # Like Llama's tokenizer: BOS is added on encode, EOS is not.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIALS)
    fast.padding_side = "left"
    return fast


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int = 256


def make_model(tokenizer: PreTrainedTokenizerFast, shape: ModelShape, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=shape.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def encode(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, BOS ... EOS (the model learns to stop)."""
    ids = tokenizer(list(texts))["input_ids"]
    return [[*row, tokenizer.eos_token_id] for row in ids]


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and labels with -100 on padding."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def length_buckets(rows: list[list[int]], batch_size: int, rng: random.Random) -> list[list[list[int]]]:
    """Batches of similar length in random order: little padding, still shuffled."""
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i]), rng.random()))
    batches = [[rows[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def train_lm(
    model: LlamaForCausalLM,
    rows: list[list[int]],
    pad_id: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    progress: Progress | None = None,
) -> None:
    """Plain next-token training with AdamW and a cosine schedule."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, total // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))),
    )
    model.train()
    for _ in range(epochs):
        for batch in length_buckets(rows, batch_size, rng):
            ids, mask, labels = pad_batch(batch, pad_id)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if progress:
                progress(1)
    model.eval()


# --------------------------------------------------------------------------- #
# Unlearning objectives
# --------------------------------------------------------------------------- #


def answer_rows(
    tokenizer: PreTrainedTokenizerFast, prompts: Sequence[str], answers: Sequence[str]
) -> list[tuple[list[int], int]]:
    """(ids, answer start) for prompt + " answer" + EOS; loss goes on the answer only."""
    out = []
    for prompt, answer in zip(prompts, answers):
        p_ids = tokenizer(prompt)["input_ids"]
        a_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append((p_ids + a_ids, len(p_ids)))
    return out


def _answer_batch(rows: Sequence[tuple[list[int], int]], pad_id: int):
    ids, mask, labels = pad_batch([r for r, _ in rows], pad_id)
    for i, (_, start) in enumerate(rows):
        labels[i, :start] = -100
    return ids, mask, labels


def sequence_logprob(model: LlamaForCausalLM, ids, mask, labels) -> torch.Tensor:
    """Sum of log p(label) over labelled positions, one value per row."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    targets = labels[:, 1:]
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (targets != -100)).sum(-1)


def unlearn(
    model: LlamaForCausalLM,
    method: str,
    forget: list[tuple[list[int], int]],
    retain: list[tuple[list[int], int]],
    pad_id: int,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    beta: float = 0.1,
    retain_weight: float = 1.0,
    progress: Progress | None = None,
) -> None:
    """Run ``steps`` optimizer steps of GA, GradDiff or NPO in place."""
    if method not in {"ga", "graddiff", "npo"}:
        raise ValueError(f"unknown unlearning method {method}")
    rng = random.Random(seed)
    reference = None
    if method == "npo":
        reference = {}
        with torch.no_grad():
            for i in range(0, len(forget), batch_size):
                chunk = forget[i : i + batch_size]
                lp = sequence_logprob(model, *_answer_batch(chunk, pad_id))
                for j, value in enumerate(lp):
                    reference[i + j] = value.item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        f_idx = rng.sample(range(len(forget)), min(batch_size, len(forget)))
        f_batch = _answer_batch([forget[i] for i in f_idx], pad_id)
        if method == "npo":
            logp = sequence_logprob(model, *f_batch)
            ref = torch.tensor([reference[i] for i in f_idx])
            loss = -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref)).mean()
        else:
            loss = -model(input_ids=f_batch[0], attention_mask=f_batch[1], labels=f_batch[2]).loss
        if method in {"graddiff", "npo"} and retain:
            r_batch = _answer_batch(rng.sample(retain, min(batch_size, len(retain))), pad_id)
            loss = loss + retain_weight * model(
                input_ids=r_batch[0], attention_mask=r_batch[1], labels=r_batch[2]
            ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if progress:
            progress(1)
    model.eval()
