"""An optional model judge beside the lab's one scorer.

The scorer (:mod:`lab.core.scoring`) decides "recovered" everywhere; a judge
model gives a second opinion that a reader can compare with it (the Sleek
paper's judge is not public).  Any causal LM can judge, the base model
included: it is shown the question, the gold answer and the answer given,
and asked whether the answer given states the gold answer; its verdict is
the more likely of the continuations " yes" and " no" (log-likelihoods from
one batched scoring call, no sampling).
"""

from __future__ import annotations

from typing import Sequence

from lab.core.engine import Engine

JUDGE_PROMPT = ("Question: {question}\nCorrect answer: {gold}\nAnswer given: {output}\n"
                "Does the answer given state the correct answer? Reply yes or no.\nReply:")


def judge(engine: Engine, questions: Sequence[str], golds: Sequence[str], outputs: Sequence[str],
          desc: str = "judge") -> list[bool]:
    """True where the judge finds " yes" more likely than " no" for the answer given."""
    prompts = [JUDGE_PROMPT.format(question=q, gold=g, output=o.strip() or "(nothing)")
               for q, g, o in zip(questions, golds, outputs)]
    if not prompts:
        return []
    scores = engine.answer_scores([p for p in prompts for _ in (0, 1)], [" yes", " no"] * len(prompts), desc=desc)
    return [float(scores[2 * i].logprobs.sum()) > float(scores[2 * i + 1].logprobs.sum()) for i in range(len(prompts))]
