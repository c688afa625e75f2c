"""Log-likelihood scoring against lm-evaluation-harness, the tool WMDP and MMLU numbers come from.

Three comparisons, each against lm-evaluation-harness's Hugging Face model (``lm_eval.models.huggingface.HFLM``
wrapped around the same loaded model and tokenizer, BOS set the same way) answering ``loglikelihood``
requests built in code (no task or data set is downloaded):

- :func:`compare_multiple_choice`: the ``multiple_choice`` audit itself, run through
  :class:`audits.base.AuditContext` on both models of the demo pair, against requests of `` A``, `` B``, ...
  after the same lettered prompts (lm-eval's WMDP/MMLU format, ``doc_to_choice: ["A", "B", "C", "D"]``
  with ``target_delimiter=" "``).  The items are demo facts with their perturbed answers as the other
  choices.
- :func:`compare_choices`: the same on one model, through the audit's scoring function (the realistic
  shapes of :mod:`.shapes`).
- :func:`compare_answers`: log-likelihood of multi-token answers after their prompts (what TOFU-style
  probability and truth-ratio metrics need): the engine's teacher-forced scores against lm-eval's
  ``(logprob, is_greedy)``.

Token ids must be identical, picks and greedy flags identical, log-likelihoods equal within float error;
otherwise the comparison says where they are not.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from importlib import metadata
from typing import Any, Sequence

import numpy as np

from audits import with_role
from audits.base import CHOICE_SCORING, AuditContext
from lab.core.backend import Backend
from lab.core.engine import Engine, shared_forwards
from lab.core.errors import LabError
from lab.core.facts import Fact, FactSet
from lab.core.models import ModelPair
from lab.core.records import ItemRecord
from lab.shell.bench.measure import Comparison, measured_side_by_side

LM_EVAL = "multiple choice vs lm-evaluation-harness"
LM_EVAL_ANSWERS = "multi-token log-likelihood vs lm-evaluation-harness"
LM_EVAL_BATCH = 64  # what lm-eval's batch_size=auto settles on when memory is no limit (its max_batch_size)
# On 32k-256k vocabularies memory is the limit: at 64 rows, lm-eval's float32 logits and their log-softmax over
# [rows, length, 256k] alone take 8 GB and more.  16 rows keeps them near 1-3 GB on the realistic shapes.
LM_EVAL_WIDE_BATCH = 16
LETTERS = "ABCDEFGHIJ"  # lm-eval's MMLU/WMDP letters (the multiple_choice audit's too)
LOGLIK_TOLERANCE = 1e-4  # per scored token: float32 sums over differently padded batches


def lm_eval_version() -> str:
    """The installed lm-eval's version; a :class:`LookupError` saying how to install it when it is missing."""
    try:
        version = metadata.version("lm-eval")
        import lm_eval.models.huggingface  # noqa: F401 - fail here, not in the middle of a timing
    except (metadata.PackageNotFoundError, ImportError) as exc:
        raise LookupError(f"lm-eval is not installed ({exc}); pip install -r requirements-bench.txt") from None
    return version


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
    """The multiple-choice audit (default options: lettered prompts) on both models; its item records."""
    audit = with_role(CHOICE_SCORING)
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


def loglikelihood_requests(pairs: Sequence[tuple[str, str]]) -> list[Any]:
    """One ``loglikelihood`` Instance per (context, continuation)."""
    from lm_eval.api.instance import Instance

    return [Instance(request_type="loglikelihood", doc={"context": c, "continuation": x}, arguments=(c, x), idx=i,
                     metadata=("unlearning_audit_bench", i, 1)) for i, (c, x) in enumerate(pairs)]


def letter_pairs(prompts: Sequence[str], sizes: Sequence[int]) -> list[tuple[str, str]]:
    """(lettered prompt, `` A``), (prompt, `` B``), ...: one request per choice letter of each question."""
    return [(prompt, f" {LETTERS[j]}") for prompt, size in zip(prompts, sizes) for j in range(size)]


def same_tokens(lm: Any, engine: Backend, pairs: Sequence[tuple[str, str]]) -> dict[str, int]:
    """How many requests lm-eval and the engine split into identical (context, continuation) ids, and how many
    forward rows each runs for them (lm-eval: one per distinct context + continuation[:-1]; the engine shares
    a forward the same way, :func:`lab.core.engine.shared_forwards`)."""
    theirs = [lm._encode_pair(c, x) for c, x in pairs]
    ours = [engine.encode_continuation(c, x) for c, x in pairs]
    return {"identical_token_ids": sum(tuple(map(list, t)) == tuple(o) for t, o in zip(theirs, ours)),
            "lm_eval_rows": len({tuple(ctx + cont[:-1]) for ctx, cont in theirs}),
            "ours_rows": len(shared_forwards([c + x for c, x in ours], [len(c) for c, _ in ours])[0])}


def choice_agreement(ours: dict[str, list[list[float]]], theirs: dict[str, list[list[float]]],
                     gold: Sequence[int]) -> dict[str, Any]:
    """Per model (role): both sides' accuracy, how many picks are identical and the largest log-likelihood gap."""
    accuracy, identical, worst = {}, 0, 0.0
    for role in ours:
        ours_pick = [int(np.argmax(s)) for s in ours[role]]
        theirs_pick = [int(np.argmax(s)) for s in theirs[role]]
        accuracy[role] = {"ours": float(np.mean([p == g for p, g in zip(ours_pick, gold)])),
                          "lm_eval": float(np.mean([p == g for p, g in zip(theirs_pick, gold)]))}
        identical += sum(a == b for a, b in zip(ours_pick, theirs_pick))
        worst = max([worst, *(float(np.max(np.abs(np.asarray(o) - np.asarray(t))))
                              for o, t in zip(ours[role], theirs[role]))])
    return {"accuracy": accuracy, "identical_picks": identical, "picks": len(gold) * len(ours),
            "max_abs_loglik_diff": worst}


def per_question(answers: list[tuple[float, bool]], sizes: Sequence[int]) -> list[list[float]]:
    """lm-eval's flat (loglik, is_greedy) answers cut back into each question's choices."""
    bounds = np.cumsum([0, *sizes])
    return [[a for a, _ in answers[lo:hi]] for lo, hi in zip(bounds[:-1], bounds[1:])]


def choice_comparison(name: str, items: int, timing: Sequence[tuple[float, Any, dict]], agreement: dict[str, Any],
                      tokens: dict[str, int], requests: int, batch_size: int, version: str, adds_bos: bool,
                      prompt_example: str) -> Comparison:
    """A multiple-choice comparison: agreed when accuracies, picks and token ids are all identical."""
    (ours_s, _, ours_mem), (theirs_s, _, theirs_mem) = timing
    accuracy = agreement["accuracy"]
    same_accuracy = all(a["ours"] == a["lm_eval"] for a in accuracy.values())
    text = (", ".join(f"{role} acc {a['ours']:.1%} vs {a['lm_eval']:.1%}" for role, a in accuracy.items())
            + f"; {agreement['identical_picks']}/{agreement['picks']} identical picks; "
            f"{tokens['identical_token_ids']}/{requests} identical token ids; "
            f"max |diff| {agreement['max_abs_loglik_diff']:.1e}")
    agrees = (same_accuracy and agreement["identical_picks"] == agreement["picks"]
              and tokens["identical_token_ids"] == requests)
    return Comparison(
        name, items, ours_s, theirs_s, text, agrees,
        other=f"lm-evaluation-harness {version} HFLM(batch_size={batch_size}), loglikelihood requests",
        memory={"ours": ours_mem, "other": theirs_mem},
        details={"lm_eval_version": version, "lm_eval_batch_size": batch_size, "add_bos_token": adds_bos,
                 "models": list(accuracy), **agreement, "identical_token_ids": tokens["identical_token_ids"],
                 "requests": requests,
                 "rows_scored_per_model": {"ours": tokens["ours_rows"], "lm_eval": tokens["lm_eval_rows"]},
                 "prompt_example": prompt_example})


def compare_multiple_choice(pair: ModelPair, facts: Sequence[Fact], count: int, repeats: int) -> Comparison | str:
    """The multiple-choice audit against lm-eval's HFLM on both models and the same items (or why not)."""
    try:
        with_role(CHOICE_SCORING)
    except LabError as exc:
        return str(exc)
    try:
        version = lm_eval_version()
    except LookupError as exc:
        return str(exc)
    items = mc_items(facts, count)
    if not items:
        return "no question-answer facts with perturbed answers to turn into multiple-choice items"
    device = pair.unlearned.info.device
    records = run_multiple_choice(pair, items)  # once untimed: lm-eval's requests take the audit's own prompts
    engines = {"base": pair.base, "unlearned": pair.unlearned}
    models = {role: lm_eval_model(engine) for role, engine in engines.items()}
    sizes = [len(r.extra["choices"]) for r in records]
    pairs = letter_pairs([r.prompt for r in records], sizes)
    requests = loglikelihood_requests(pairs)
    timing = measured_side_by_side(
        [lambda: run_multiple_choice(pair, items),
         lambda: {role: lm.loglikelihood(requests, disable_tqdm=True) for role, lm in models.items()}],
        repeats, device)
    records, answers = timing[0][1], timing[1][1]
    ours = {role: [r.extra[f"scores_{role}"] for r in records] for role in engines}
    theirs = {role: per_question(answers[role], sizes) for role in engines}
    agreement = choice_agreement(ours, theirs, [r.extra["answer_index"] for r in records])
    return choice_comparison(LM_EVAL, len(records), timing, agreement, same_tokens(models["base"], pair.base, pairs),
                             len(pairs), LM_EVAL_BATCH, version, pair.base.encoder.adds_bos, records[0].prompt)


def compare_choices(engine: Engine, facts: Sequence[Fact], count: int, repeats: int,
                    batch_size: int = LM_EVAL_WIDE_BATCH) -> Comparison:
    """The multiple-choice audit's scoring (lettered prompts) on one model against lm-eval's HFLM."""
    version = lm_eval_version()
    audit = with_role(CHOICE_SCORING)()
    items = mc_items(facts, count)
    lm = lm_eval_model(engine, batch_size)
    sizes = [len(f.choices) for f in items]
    pairs = letter_pairs(audit.choice_prompts(items), sizes)  # lm-eval's requests on the audit's own prompts
    requests = loglikelihood_requests(pairs)
    timing = measured_side_by_side([lambda: audit.choice_scores(engine, items),
                                    lambda: lm.loglikelihood(requests, disable_tqdm=True)],
                                   repeats, engine.info.device)
    ours = {"model": timing[0][1]}
    theirs = {"model": per_question(timing[1][1], sizes)}
    agreement = choice_agreement(ours, theirs, [f.answer_index for f in items])
    return choice_comparison(LM_EVAL, len(items), timing, agreement, same_tokens(lm, engine, pairs), len(pairs),
                             batch_size, version, engine.encoder.adds_bos, pairs[0][0])


def loglik_agreement(ours: Sequence[tuple[float, bool, int]], theirs: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    """Sums within :data:`LOGLIK_TOLERANCE` per token and identical greedy flags, request by request."""
    gaps = [abs(o[0] - t[0]) / o[2] for o, t in zip(ours, theirs)]
    return {"identical_greedy": sum(o[1] == t[1] for o, t in zip(ours, theirs)), "requests": len(ours),
            "max_abs_loglik_diff": max((abs(o[0] - t[0]) for o, t in zip(ours, theirs)), default=0.0),
            "max_abs_diff_per_token": max(gaps, default=0.0), "within_tolerance": sum(g <= LOGLIK_TOLERANCE for g in gaps),
            "greedy_answers": sum(o[1] for o in ours)}


def compare_answers(engine: Engine, prompts: Sequence[str], answers: Sequence[str], repeats: int,
                    batch_size: int = LM_EVAL_WIDE_BATCH) -> Comparison:
    """Log-likelihood of multi-token answers after their prompts: the engine against lm-eval's HFLM.

    Ours is :meth:`Backend.answer_scores` (what the metric audits score answers with): the sum of the answer
    tokens' log-probs and whether every one is the argmax, lm-eval's ``(logprob, is_greedy)``.
    """
    version = lm_eval_version()
    lm = lm_eval_model(engine, batch_size)
    pairs = [(p, f" {a}") for p, a in zip(prompts, answers)]
    requests = loglikelihood_requests(pairs)

    def ours() -> list[tuple[float, bool, int]]:
        scores = engine.answer_scores([c for c, _ in pairs], [x for _, x in pairs])
        return [(float(s.logprobs.astype(np.float64).sum()), bool(s.greedy_match.all()), len(s.logprobs))
                for s in scores]

    timing = measured_side_by_side([ours, lambda: lm.loglikelihood(requests, disable_tqdm=True)], repeats,
                                   engine.info.device)
    (ours_s, mine, ours_mem), (theirs_s, theirs, theirs_mem) = timing
    agreement = loglik_agreement(mine, theirs)
    tokens = same_tokens(lm, engine, pairs)
    n = len(pairs)
    answer_tokens = [m[2] for m in mine]
    text = (f"{agreement['within_tolerance']}/{n} equal log-likelihoods (max |diff| "
            f"{agreement['max_abs_diff_per_token']:.1e} per token, tol {LOGLIK_TOLERANCE:.0e}); "
            f"{agreement['identical_greedy']}/{n} identical greedy flags; {tokens['identical_token_ids']}/{n} "
            "identical token ids")
    agrees = agreement["within_tolerance"] == agreement["identical_greedy"] == tokens["identical_token_ids"] == n
    return Comparison(
        LM_EVAL_ANSWERS, n, ours_s, theirs_s, text, agrees,
        other=f"lm-evaluation-harness {version} HFLM(batch_size={batch_size}), loglikelihood requests",
        memory={"ours": ours_mem, "other": theirs_mem},
        details={"lm_eval_version": version, "lm_eval_batch_size": batch_size, "add_bos_token": engine.encoder.adds_bos,
                 **agreement, "identical_token_ids": tokens["identical_token_ids"],
                 "answer_tokens": {"mean": float(np.mean(answer_tokens)), "min": min(answer_tokens),
                                   "max": max(answer_tokens)},
                 "prompt_tokens_mean": float(np.mean([len(engine.encode(c)) for c, _ in pairs])),
                 "example": {"prompt": pairs[0][0], "answer": pairs[0][1]}})
