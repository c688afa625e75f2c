"""A few fine-tuning steps on an engine's model, in place, then the model put back exactly.

Relearning attacks ("Unlearning or Obfuscating? Jogging the Memory of
Unlearned LLMs via Benign Relearning", Hu et al. 2024; "An Adversarial
Perspective on Machine Unlearning for AI Safety", Łucki et al. 2024) fine-tune
an unlearned model briefly and ask again.  The lab never writes a model to
disk and never holds a second copy on the accelerator:

- ``lora``: LoRA adapters (peft, every linear layer but the output head) are
  injected into the engine's own model, trained, and removed again; the
  original weights are never touched;
- ``full``: every weight is trained in place; a CPU copy of the weights taken
  before puts them back bit for bit afterwards.

Both hold the engine's lock throughout, so no other call sees the tuned model.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from lab.core.engine import Engine
from lab.core.errors import LabError

METHODS = ("lora", "full")
Row = tuple[list[int], int]  # token ids and the index where the loss starts


@dataclass(frozen=True)
class Schedule:
    """How to fine-tune: steps, optimizer settings, and LoRA's shape."""

    steps: int
    lr: float
    batch_size: int = 4
    method: str = "lora"
    rank: int = 16
    alpha: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LabError(f"fine-tuning method must be one of {', '.join(METHODS)}, got '{self.method}'")


def pad_batch(rows: Sequence[Row], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and labels: -100 on padding and before each row's loss start."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, _) in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    for i, (_, start) in enumerate(rows):
        labels[i, :start] = -100
    return ids, mask, labels


def batches(rows: Sequence[Row], batch_size: int, seed: int) -> Iterator[list[Row]]:
    """Endless shuffled batches (a fresh order each pass)."""
    rng = random.Random(seed)
    order = list(range(len(rows)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield [rows[i] for i in order[start: start + batch_size]]


@contextmanager
def trainable(engine: Engine, schedule: Schedule) -> Iterator[list[nn.Parameter]]:
    """The engine's model made trainable for the block (under its lock); exactly as before afterwards."""
    model = engine.model
    with engine.lock, engine.restored_after():
        if schedule.method == "lora":
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(r=schedule.rank, lora_alpha=schedule.alpha, lora_dropout=0.0,
                                target_modules="all-linear", bias="none")
            # The adapters' initial weights from the schedule's seed, not from whatever the global generator
            # holds after earlier work (which kept results or another audit order would change).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(schedule.seed)
                wrapped = get_peft_model(model, config)
            try:
                yield [p for p in wrapped.parameters() if p.requires_grad]
            finally:
                wrapped.unload()
                for param in model.parameters():
                    param.requires_grad_(False)
                model.eval()
            return
        saved = {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()}
        params = list(model.parameters())
        for param in params:
            param.requires_grad_(True)
        try:
            yield params
        finally:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    param.copy_(saved[name])
                    param.requires_grad_(False)
            model.eval()


def finetune(engine: Engine, rows: Sequence[Row], schedule: Schedule, checkpoints: Sequence[int],
             at_checkpoint: Callable[[int], None]) -> None:
    """Train ``engine``'s model on ``rows`` (AdamW, constant learning rate) for ``schedule.steps`` steps and call
    ``at_checkpoint(step)`` at each listed step (0 = before any training) with the model in eval mode; the
    model is restored when this returns or raises."""
    if not rows:
        raise LabError("nothing to fine-tune on: the relearning set is empty")
    wanted = sorted(set(checkpoints))
    with trainable(engine, schedule) as params:
        model = engine.model
        optimizer = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=0.0)
        feed = batches(rows, schedule.batch_size, schedule.seed)
        if 0 in wanted:
            at_checkpoint(0)
        for step in range(1, schedule.steps + 1):
            model.train()
            ids, mask, labels = pad_batch(next(feed), engine.pad_id)
            loss = model(input_ids=ids.to(engine.device), attention_mask=mask.to(engine.device),
                         labels=labels.to(engine.device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step in wanted:
                model.eval()
                with torch.no_grad():
                    at_checkpoint(step)
        model.eval()
