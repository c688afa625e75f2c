"""Multiple-choice scoring against lm-evaluation-harness, the tool WMDP and MMLU numbers come from.

The ``multiple_choice`` audit itself, run through :class:`audits.base.AuditContext` on both models, against
lm-evaluation-harness's Hugging Face model (``lm_eval.models.huggingface.HFLM`` wrapped around the same
loaded model and tokenizer, BOS set the same way) answering ``loglikelihood`` requests of `` A``, `` B``, ...
after the same lettered prompts (lm-eval's WMDP/MMLU format, ``doc_to_choice: ["A", "B", "C", "D"]`` with
``target_delimiter=" "``).  The requests are built in code, so no task or data set is downloaded.  The items
are demo facts with their perturbed answers as the other choices.  Picks, accuracies and token ids must be
identical, or the comparison says where they are not.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from importlib import metadata
from typing import Any, Sequence

import numpy as np

from audits import available, get_audit
from audits.base import AuditContext
from lab.core.engine import Engine, shared_forwards
from lab.core.facts import Fact, FactSet
from lab.core.models import ModelPair
from lab.core.records import ItemRecord
from lab.shell.bench.measure import Comparison, measured_side_by_side

LM_EVAL = "multiple choice vs lm-evaluation-harness"
LM_EVAL_BATCH = 64  # what lm-eval's batch_size=auto settles on when memory is no limit (its max_batch_size)
LETTERS = "ABCDEFGHIJ"  # lm-eval's MMLU/WMDP letters (the multiple_choice audit's too)


def mc_items(facts: Sequence[Fact], count: int) -> list[Fact]:
    """Demo question-answer facts as multiple-choice items: the answer among its perturbed answers.

    The right answer of the i-th item goes to position i mod (number of choices): a fixed order that
    spreads the right letter over A, B, C, ... instead of always putting it first.
    """
    items: list[Fact] = []
    for fact in facts:
        if len(items) >= count:
            break
        if fact.kind != "qa" or not fact.perturbed_answers or fact.answer in fact.perturbed_answers:
            continue
        choices = list(fact.perturbed_answers[: len(LETTERS) - 1])
        at = len(items) % (len(choices) + 1)
        choices.insert(at, fact.answer)
        items.append(replace(fact, kind="mc", choices=tuple(choices), answer_index=at))
    return items


def run_multiple_choice(pair: ModelPair, items: list[Fact]) -> list[ItemRecord]:
    """The ``multiple_choice`` audit (default options: lettered prompts) on both models; its item records."""
    audit = get_audit("multiple_choice")
    records: list[ItemRecord] = []
    ctx = AuditContext(pair=pair, facts=FactSet(items, source="bench"), options=audit.Options(),
                       record=records.extend)
    audit().run(ctx)
    return records


def lm_eval_model(engine: Engine, batch_size: int = LM_EVAL_BATCH) -> Any:
    """lm-evaluation-harness's ``HFLM`` around an engine's loaded model and tokenizer (nothing downloaded).

    ``add_bos_token`` is set to what our encoder does (BOS once when the tokenizer uses one), so both
    sides score the same token ids; the bench checks that they do.
    """
    from lm_eval.models.huggingface import HFLM

    quiet = logging.getLogger("lm_eval")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "pretrained is not a str": that is the point here
    try:
        return HFLM(pretrained=engine.model, tokenizer=engine.tokenizer, batch_size=batch_size,
                    add_bos_token=engine.encoder.adds_bos)
    finally:
        quiet.setLevel(level)


def lm_eval_requests(records: list[ItemRecord]) -> list[Any]:
    """One ``loglikelihood`` Instance per choice letter: (lettered prompt, `` A``), (prompt, `` B``), ..."""
    from lm_eval.api.instance import Instance

    return [Instance(request_type="loglikelihood", doc={"question": r.prompt, "choices": r.extra["choices"],
                                                        "answer": r.extra["answer_index"]},
                     arguments=(r.prompt, f" {LETTERS[j]}"), idx=j, metadata=("unlearning_audit_bench", q, 1))
            for q, r in enumerate(records) for j in range(len(r.extra["choices"]))]


def compare_multiple_choice(pair: ModelPair, facts: Sequence[Fact], count: int, repeats: int) -> Comparison | str:
    """The multiple_choice audit against lm-eval's HFLM on both models and the same items (or why not)."""
    if "multiple_choice" not in available():
        return "the multiple_choice audit is not in this checkout"
    try:
        version = metadata.version("lm-eval")
        import lm_eval.models.huggingface  # noqa: F401 - fail here, not in the middle of a timing
    except (metadata.PackageNotFoundError, ImportError) as exc:
        return f"lm-eval is not installed ({exc}); pip install -r requirements-bench.txt"
    items = mc_items(facts, count)
    if not items:
        return "no question-answer facts with perturbed answers to turn into multiple-choice items"
    device = pair.unlearned.info.device
    records = run_multiple_choice(pair, items)  # once untimed: lm-eval's requests take the audit's own prompts
    engines = {"base": pair.base, "unlearned": pair.unlearned}
    models = {role: lm_eval_model(engine) for role, engine in engines.items()}
    requests = lm_eval_requests(records)
    (ours_s, records, ours_mem), (theirs_s, answers, theirs_mem) = measured_side_by_side(
        [lambda: run_multiple_choice(pair, items),
         lambda: {role: lm.loglikelihood(requests, disable_tqdm=True) for role, lm in models.items()}],
        repeats, device)

    # Same token ids both ways (lm-eval's own split of context and continuation against ours).
    pairs = [(r.args[0], r.args[1]) for r in requests]
    theirs_ids = [models["base"]._encode_pair(c, x) for c, x in pairs]
    ours_ids = [pair.base.encode_continuation(c, x) for c, x in pairs]
    same_ids = sum(tuple(map(list, t)) == tuple(o) for t, o in zip(theirs_ids, ours_ids))
    # lm-eval runs one forward per distinct context + continuation[:-1]: one per question for letters;
    # the engine shares a forward the same way (shared_forwards).
    forwards = len({tuple(ctx + cont[:-1]) for ctx, cont in theirs_ids})
    ours_forwards = len(shared_forwards([c + x for c, x in ours_ids], [len(c) for c, _ in ours_ids])[0])

    accuracy, identical, worst = {}, 0, 0.0
    sizes = [len(r.extra["choices"]) for r in records]
    bounds = np.cumsum([0, *sizes])
    for role in engines:
        loglik = [a for a, _ in answers[role]]
        theirs = [loglik[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        ours = [r.extra[f"scores_{role}"] for r in records]
        ours_pick = [int(np.argmax(s)) for s in ours]
        theirs_pick = [int(np.argmax(s)) for s in theirs]
        gold = [r.extra["answer_index"] for r in records]
        accuracy[role] = {"ours": float(np.mean([bool(getattr(r, f"hit_{role}")) for r in records])),
                          "lm_eval": float(np.mean([p == g for p, g in zip(theirs_pick, gold)]))}
        identical += sum(a == b for a, b in zip(ours_pick, theirs_pick))
        worst = max([worst, *(float(np.max(np.abs(np.asarray(o) - np.asarray(t)))) for o, t in zip(ours, theirs))])
    picks = len(records) * len(engines)
    same_accuracy = all(a["ours"] == a["lm_eval"] for a in accuracy.values())
    text = (", ".join(f"{role} acc {a['ours']:.1%} vs {a['lm_eval']:.1%}" for role, a in accuracy.items())
            + f"; {identical}/{picks} identical picks; {same_ids}/{len(pairs)} identical token ids; "
            f"max |diff| {worst:.1e}")
    return Comparison(
        LM_EVAL, len(records), ours_s, theirs_s, text, same_accuracy and identical == picks and same_ids == len(pairs),
        other=f"lm-evaluation-harness {version} HFLM(batch_size={LM_EVAL_BATCH}), loglikelihood requests",
        memory={"ours": ours_mem, "other": theirs_mem},
        details={"lm_eval_version": version, "lm_eval_batch_size": LM_EVAL_BATCH,
                 "add_bos_token": pair.base.encoder.adds_bos, "models": list(engines), "accuracy": accuracy,
                 "identical_picks": identical, "picks": picks, "identical_token_ids": same_ids,
                 "requests": len(pairs), "max_abs_loglik_diff": worst,
                 "rows_scored_per_model": {"ours": ours_forwards, "lm_eval": forwards},
                 "prompt_example": records[0].prompt})
