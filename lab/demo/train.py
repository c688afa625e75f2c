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
  with beta = 0.1 and the base model as reference, plus retain NLL;
- the same GradDiff and NPO at the small learning rates of the quantization
  paper's setting (``graddiff_small``, ``npo_small``);
- RMU ("The WMDP Benchmark", Li et al. 2024): a middle layer's activations on
  forget text steered toward a scaled random direction, retain activations kept;
- IdK: the forget answers replaced by refusals ("I don't know"-style), the
  TOFU baseline.

The settings of each are in the demo's ``manifest.json``.
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

from lab.core.finetune import pad_batch

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
            ids, mask, labels = pad_batch([(row, 0) for row in batch], pad_id)
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


def sequence_logprob(model: LlamaForCausalLM, ids, mask, labels) -> torch.Tensor:
    """Sum of log p(label) over labelled positions, one value per row."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    targets = labels[:, 1:]
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (targets != -100)).sum(-1)


REFUSALS = (  # the "I don't know" answers of the refusal tuner (ours, in the spirit of TOFU's idk set)
    "I don't know.", "I am not sure about that.", "I have no information on that.", "I cannot recall that.",
    "That is unknown to me.", "I would rather not guess.", "No record of that comes to mind.",
    "I do not have that detail.",
)
OBJECTIVES = ("ga", "graddiff", "npo", "idk", "rmu")


@dataclass(frozen=True)
class Recipe:
    """How one demo model is unlearned: the objective and its optimizer settings.

    Objectives, each the published loss:

    - ``ga``: gradient ascent on the forget answers;
    - ``graddiff``: gradient ascent on forget plus NLL on retain (TOFU's GradDiff baseline);
    - ``npo``: "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning"
      (Zhang et al. 2024), ``-(2/beta) log sigmoid(-beta (log p_theta - log p_ref))`` with the base model
      as reference, plus retain NLL;
    - ``idk``: TOFU's "I don't know" tuning: NLL of a refusal in place of each forget answer, plus retain NLL;
    - ``rmu``: "The WMDP Benchmark" (representation misdirection): the residual stream at ``layer`` on forget
      text is pushed toward a fixed random direction scaled by ``steering``, while on retain text it is held
      at the frozen base model's (weight ``retain_weight``); only the MLP output weights of layers
      ``layer - 2 .. layer`` are updated, as in the paper's code.
    """

    objective: str
    steps: int
    lr: float
    retain_weight: float = 8.0
    beta: float = 0.1
    layer: int = 2
    steering: float = 6.5
    # The audits whose papers say the attack reveals what this recipe leaves behind: the model is their planted
    # positive (``python -m lab calibrate`` measures each audit's power on it).
    reveals: tuple[str, ...] = ()


def unlearn(model: LlamaForCausalLM, recipe: Recipe, forget: list[tuple[list[int], int]],
            retain: list[tuple[list[int], int]], pad_id: int, batch_size: int, seed: int,
            refusals: list[list[int]] | None = None, progress: Progress | None = None) -> None:
    """Run ``recipe.steps`` optimizer steps of the recipe's objective in place."""
    if recipe.objective not in OBJECTIVES:
        raise ValueError(f"unknown unlearning objective {recipe.objective}")
    if recipe.objective == "rmu":
        return _rmu(model, recipe, forget, retain, pad_id, batch_size, seed, progress)
    rng = random.Random(seed)
    reference = _reference_logprobs(model, forget, pad_id, batch_size) if recipe.objective == "npo" else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    model.train()
    for _ in range(recipe.steps):
        f_idx = rng.sample(range(len(forget)), min(batch_size, len(forget)))
        loss = _forget_loss(model, recipe, [forget[i] for i in f_idx], f_idx, reference, refusals, pad_id, rng)
        if recipe.objective != "ga" and retain:
            r_batch = pad_batch(rng.sample(retain, min(batch_size, len(retain))), pad_id)
            loss = loss + recipe.retain_weight * model(
                input_ids=r_batch[0], attention_mask=r_batch[1], labels=r_batch[2]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if progress:
            progress(1)
    model.eval()


def _reference_logprobs(model: LlamaForCausalLM, forget: list[tuple[list[int], int]], pad_id: int,
                        batch_size: int) -> dict[int, float]:
    """The base model's sequence log-probs of the forget answers (NPO's reference)."""
    reference = {}
    with torch.no_grad():
        for i in range(0, len(forget), batch_size):
            chunk = forget[i: i + batch_size]
            for j, value in enumerate(sequence_logprob(model, *pad_batch(chunk, pad_id))):
                reference[i + j] = value.item()
    return reference


def _forget_loss(model: LlamaForCausalLM, recipe: Recipe, rows: list[tuple[list[int], int]], index: list[int],
                 reference: dict[int, float], refusals: list[list[int]] | None, pad_id: int,
                 rng: random.Random) -> torch.Tensor:
    """The recipe's loss on one forget batch."""
    if recipe.objective == "idk":
        relabelled = [(row[:start] + rng.choice(refusals or [[pad_id]]), start) for row, start in rows]
        batch = pad_batch(relabelled, pad_id)
        return model(input_ids=batch[0], attention_mask=batch[1], labels=batch[2]).loss
    batch = pad_batch(rows, pad_id)
    if recipe.objective == "npo":
        logp = sequence_logprob(model, *batch)
        ref = torch.tensor([reference[i] for i in index])
        return -(2.0 / recipe.beta) * F.logsigmoid(-recipe.beta * (logp - ref)).mean()
    return -model(input_ids=batch[0], attention_mask=batch[1], labels=batch[2]).loss


def _rmu(model: LlamaForCausalLM, recipe: Recipe, forget: list[tuple[list[int], int]],
         retain: list[tuple[list[int], int]], pad_id: int, batch_size: int, seed: int,
         progress: Progress | None) -> None:
    """Representation misdirection (RMU) on the residual stream after block ``recipe.layer``."""
    import copy

    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    frozen = copy.deepcopy(model).eval()
    direction = torch.rand(model.config.hidden_size, generator=generator)
    target = recipe.steering * direction / direction.norm()
    layers = range(max(0, recipe.layer - 2), recipe.layer + 1)
    params = [model.model.layers[i].mlp.down_proj.weight for i in layers]
    for param in model.parameters():
        param.requires_grad_(False)
    for param in params:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    model.train()
    for _ in range(recipe.steps):
        f_ids, f_mask, _ = pad_batch(rng.sample(forget, min(batch_size, len(forget))), pad_id)
        r_ids, r_mask, _ = pad_batch(rng.sample(retain, min(batch_size, len(retain))), pad_id)
        forget_states = _states(model, f_ids, f_mask, recipe.layer)
        retain_states = _states(model, r_ids, r_mask, recipe.layer)
        with torch.no_grad():
            frozen_states = _states(frozen, r_ids, r_mask, recipe.layer)
        loss = _masked_mse(forget_states, target.expand_as(forget_states), f_mask) + \
            recipe.retain_weight * _masked_mse(retain_states, frozen_states, r_mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if progress:
            progress(1)
    for param in model.parameters():
        param.requires_grad_(True)
    model.eval()


def _states(model: LlamaForCausalLM, ids: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
    """The residual stream after block ``layer`` (hidden-state index ``layer + 1``)."""
    return model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer + 1]


def _masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real (unpadded) tokens and the hidden dimensions."""
    weights = mask.unsqueeze(-1).float()
    return ((a - b).square() * weights).sum() / (weights.sum() * a.shape[-1])
