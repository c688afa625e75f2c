"""The batched engine against loops on the same inputs: our per-example loops and open-unlearning's
batch-32 ``generate`` loop.

The per-example loops (one unpadded forward or one ``generate`` per example) are how research scripts are
usually written; the batch-32 loop is open-unlearning's evaluator (``evals/metrics/utils.py``,
``eval_text_similarity``: the dataloader's batches of 32 in order, left-padded by its collator, greedy
``model.generate``), the loop a user of that framework runs.  Log-probs must agree within a tolerance
(padding reorders float sums), texts exactly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from audits import with_role
from audits.base import ROW_SCORING
from lab.core.batching import plan_batches
from lab.core.engine import Engine
from lab.core.facts import Fact
from lab.shell.bench.measure import Comparison, measured_side_by_side

GENERATE_LOOP = "generation vs generate loop, batch 32"
LOOP_BATCH = 32  # open-unlearning's evaluation batch size (configs/eval/*.yaml: batch_size: 32)


@torch.no_grad()
def loop_token_logprobs(engine: Engine, rows: Sequence[Sequence[int]], starts: Sequence[int]) -> list[np.ndarray]:
    """Baseline: log p(row[t] | row[:t]) for t >= start, one unpadded forward per example."""
    out = []
    for row, start in zip(rows, starts):
        ids = torch.as_tensor([row], device=engine.device)
        logp = torch.log_softmax(engine.model(input_ids=ids).logits[0, start - 1:-1].float(), dim=-1)
        out.append(logp.gather(-1, ids[0, start:, None]).squeeze(-1).cpu().numpy())
    return out


@torch.no_grad()
def loop_generate(engine: Engine, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Baseline: greedy ``generate`` on one prompt at a time, no padding."""
    out = []
    for prompt in prompts:
        ids = torch.as_tensor([engine.encode(prompt)], device=engine.device)
        new = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                    do_sample=False, pad_token_id=engine.pad_id)[0, ids.shape[1]:]
        out.append(engine.tokenizer.decode(new, skip_special_tokens=True).strip())
    return out


@torch.no_grad()
def generate_loop_batched(engine: Engine, prompts: Sequence[str], max_new_tokens: int,
                          batch_size: int = LOOP_BATCH) -> list[str]:
    """Peer: open-unlearning's evaluator loop (``eval_text_similarity``) on the same prompt ids.

    Batches of ``batch_size`` in the given order, left padding (its collator's pad id), greedy
    ``model.generate`` with ``pad_token_id=eos`` and the model's own stopping, the new tokens decoded
    with ``skip_special_tokens`` and ``clean_up_tokenization_spaces``, stripped.
    """
    tokenizer = engine.tokenizer
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    out: list[str] = []
    for at in range(0, len(prompts), batch_size):
        rows = [engine.encode(p) for p in prompts[at: at + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, row in enumerate(rows):
            ids[j, width - len(row):] = torch.as_tensor(row, dtype=torch.long)
            mask[j, width - len(row):] = 1
        output = engine.model.generate(ids.to(engine.device), attention_mask=mask.to(engine.device),
                                       max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                       pad_token_id=eos)
        texts = tokenizer.batch_decode(output[:, width:], skip_special_tokens=True, clean_up_tokenization_spaces=True)
        out += [t.strip() for t in texts]
    return out


def _tolerance(engine: Engine) -> float:
    """How far batched and loop log-probs may differ: padding reorders float sums (wider in half precision)."""
    return 1e-4 if engine.info.dtype == "float32" else 5e-2


def text_agreement(ours: Sequence[str], theirs: Sequence[str]) -> tuple[str, bool]:
    """How many texts are identical; agreement means every one, and as many on both sides."""
    same = sum(a == b for a, b in zip(ours, theirs))
    return f"{same}/{len(ours)} identical texts", same == len(ours) == len(theirs)


def _logprob_agreement(engine: Engine, batched: Sequence[float], loop: Sequence[float]) -> tuple[str, bool]:
    worst = float(np.max(np.abs(np.asarray(batched) - np.asarray(loop)))) if len(batched) else 0.0
    return f"max |diff| {worst:.1e} (tol {_tolerance(engine):.0e})", worst <= _tolerance(engine)


def compare_scoring(engine: Engine, facts: list[Fact], repeats: int) -> Comparison:
    """Mean answer log-prob of each fact after its plain question."""
    prompts, answers = [engine.prompt(f.question) for f in facts], [f.answer for f in facts]

    def loop() -> list[float]:
        pairs = [engine.encode_continuation(p, a) for p, a in zip(prompts, answers)]
        scores = loop_token_logprobs(engine, [p + t for p, t in pairs], [len(p) for p, _ in pairs])
        return [float(s.mean()) for s in scores]

    device = engine.info.device
    (batched_s, batched, batched_mem), (loop_s, looped, loop_mem) = measured_side_by_side(
        [lambda: engine.answer_logprobs(prompts, answers), loop], repeats, device)
    return Comparison("answer scoring", len(facts), batched_s, loop_s, *_logprob_agreement(engine, batched, looped),
                      memory={"ours": batched_mem, "other": loop_mem})


def compare_generation(engine: Engine, facts: list[Fact], new_tokens: int, repeats: int,
                       own_loop: bool = True) -> tuple[Comparison | None, Comparison]:
    """Greedy answers to the plain questions: against our per-example loop (unless ``own_loop`` is False: on a
    1B model it alone would take minutes) and the batch-32 peer loop."""
    prompts = [engine.prompt(f.question) for f in facts]
    device = engine.info.device
    sides = [lambda: engine.generate(prompts, new_tokens), lambda: generate_loop_batched(engine, prompts, new_tokens)]
    if own_loop:
        sides.append(lambda: loop_generate(engine, prompts, new_tokens))
    (batched_s, batched, batched_mem), (peer_s, peer, peer_mem), *own_side = measured_side_by_side(
        sides, repeats, device)

    own = None
    if own_side:
        loop_s, looped, loop_mem = own_side[0]
        own = Comparison("greedy generation", len(prompts), batched_s, loop_s, *text_agreement(batched, looped),
                         memory={"ours": batched_mem, "other": loop_mem})
    differing = [i for i, (a, b) in enumerate(zip(batched, peer)) if a != b]
    engine_batches = len(plan_batches([len(engine.encode(p)) + new_tokens for p in prompts], engine.policy))
    versus = Comparison(
        GENERATE_LOOP, len(prompts), batched_s, peer_s, *text_agreement(batched, peer),
        other=f"model.generate loop, batches of {LOOP_BATCH} in order (open-unlearning's evaluator settings)",
        memory={"ours": batched_mem, "other": peer_mem},
        details={"max_new_tokens": new_tokens, "batch_size": LOOP_BATCH, "engine_batches": engine_batches,
                 "differing": [{"prompt": prompts[i], "ours": batched[i], "loop": peer[i]} for i in differing[:3]]})
    return own, versus


def compare_remind(engine: Engine, facts: list[Fact], repeats: int) -> Comparison:
    """Mean NLL of each REMIND neighbor variant (nearest input-embedding token swaps, audits.remind.neighbors)."""
    rows = with_role(ROW_SCORING)().workload(engine, facts)

    def loop() -> list[float]:
        return [-float(s.mean()) for s in loop_token_logprobs(engine, rows, [1] * len(rows))]

    device = engine.info.device
    (batched_s, batched, batched_mem), (loop_s, looped, loop_mem) = measured_side_by_side(
        [lambda: engine.row_losses(rows), loop], repeats, device)
    return Comparison("REMIND neighbor losses", len(rows), batched_s, loop_s,
                      *_logprob_agreement(engine, batched, looped), memory={"ours": batched_mem, "other": loop_mem})
