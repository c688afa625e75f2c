"""Keyword emphasis: the transforms and keyword selection by hand, and the audit end to end on the tiny demo."""

import json

import numpy as np
import pytest

from audits.base import Answered
from audits.keywords.audit import (
    KeyFact,
    KeywordsAudit,
    KeywordsOptions,
    TransformRun,
    key_tokens,
    metrics,
    question_features,
)
from audits.keywords.emphasis import TRANSFORMS, emphasize, keyword_phrases
from lab.core.attribution import Contributions, PromptTokens
from lab.core.errors import LabError
from lab.core.facts import Fact
from lab.core.scoring import score_answer
from lab.core.store import Store
from lab.shell.spec import RunSpec, build_spec
from lab.shell.runner import run_audits

QUESTION = "Where was Ada Vel born?"


@pytest.mark.parametrize("transform, expected", [
    ("repeat", "Where was Ada Vel Ada Vel born?"),
    ("upper", "Where was ADA VEL born?"),
    ("quote", 'Where was "Ada Vel" born?'),
    ("focus", "Focus on: Ada Vel. Where was Ada Vel born?"),
])
def test_each_transform_by_hand(transform, expected):
    assert emphasize(QUESTION, ["Ada Vel"], transform) == expected


def test_transform_details():
    assert emphasize(QUESTION, ["born"], "repeat", repeats=3) == "Where was Ada Vel born born born?"
    # whole words only, longest phrase first, every occurrence
    assert emphasize("Ada met Adams; Ada Vel left Ada.", ["Ada", "Ada Vel"], "quote") == \
        '"Ada" met Adams; "Ada Vel" left "Ada".'
    assert emphasize(QUESTION, ["year", "Vel"], "focus") == "Focus on: year, Vel. Where was Ada Vel born?"
    assert emphasize(QUESTION, [], "upper") == QUESTION
    with pytest.raises(LabError, match="unknown emphasis transform"):
        emphasize(QUESTION, ["Ada"], "bold")
    with pytest.raises(LabError, match="repeats"):
        emphasize(QUESTION, ["Ada"], "repeat", repeats=1)


def test_keyword_phrases_from_token_spans():
    # "Where was Ada Vel born?": Ada = 10..13, Vel = 14..17, born = 18..22
    assert keyword_phrases(QUESTION, [(10, 11), (15, 17)]) == ["Ada Vel"]  # word pieces, adjacent words merged
    assert keyword_phrases(QUESTION, [(0, 2), (18, 20)]) == ["Where", "born"]
    assert keyword_phrases(QUESTION, [(22, 23)]) == []  # punctuation is no keyword
    assert keyword_phrases("Ada Vel, Ada Vel", [(0, 2), (9, 11)]) == ["Ada"]  # duplicates dropped


def contributions(prompt: str, spans, values) -> Contributions:
    tokens = PromptTokens(ids=[], target=[], positions=list(range(len(spans))), spans=list(spans),
                          labels=[prompt[s:e] for s, e in spans])
    return Contributions(tokens, 0.0, np.asarray(values, dtype=float))


PROMPT = f"Question: {QUESTION}\nAnswer:"
# byte-level BPE style: a token's span includes its leading space (" Where" = 9..15)
#          Question  :       " Where"  " was"    " Ada"    " Vel"    " born"    ?      "\nAnswer"  :
SPANS = [(0, 8), (8, 9), (9, 15), (15, 19), (19, 23), (23, 27), (27, 32), (32, 33), (33, 40), (40, 41)]


def test_key_tokens_are_the_top_question_words():
    c = contributions(PROMPT, SPANS, [0.9, 0.1, 0.2, 0.0, 0.5, 0.7, 0.05, 0.8, 0.9, 3.0])
    question = question_features(c, PROMPT, QUESTION)
    assert question == [2, 3, 4, 5, 6]  # " Where" counts; not "Question:", "?", "Answer:"
    assert key_tokens(c, question, 2) == [4, 5]  # Ada, Vel (in prompt order)
    assert key_tokens(c, question, 1) == [5]


def test_focus_and_shift_by_hand():
    fact = Fact("f", QUESTION, "Korin")
    base = contributions(PROMPT, SPANS[2:6], [0.1, 0.6, 0.2, -0.5])
    unlearned = contributions(PROMPT, SPANS[2:6], [0.3, 0.1, -0.2, 0.4])
    key = KeyFact(fact, PROMPT, base, unlearned, question=[0, 1, 2, 3], key=[1, 2], phrases=["was Ada"])
    assert key.focus(base) == pytest.approx(0.8 / 0.9)
    assert key.focus(unlearned) == pytest.approx(0.1 / 0.8)
    assert key.shift == pytest.approx((0.8 / 0.9 - 0.125) / (0.8 / 0.9))
    silent = KeyFact(fact, PROMPT, contributions(PROMPT, SPANS[2:4], [-0.1, 0.0]), unlearned, [0, 1], [0], [])
    assert np.isnan(silent.shift)  # no positive mass in the base model: undefined, left out of the mean


def test_metrics_best_of_and_gains_by_hand():
    c = contributions(PROMPT, SPANS[2:4], [0.5, 0.1])
    keyed = [KeyFact(Fact(i, QUESTION, "Korin"), PROMPT, c, c, [0, 1], [0], ["Where"]) for i in ("a", "b", "c")]
    hit, miss = score_answer("Korin", "Korin"), score_answer("no idea", "Korin")

    def answered(*flags):
        return [Answered("Korin", "x", hit, hit if f else miss) for f in flags]

    runs = {"upper": TransformRun("upper", answered(True, False, False), [1.0, 0.0, -0.4]),
            "quote": TransformRun("quote", answered(False, True, False), [0.1, 0.2, 0.3])}
    m = metrics(keyed, runs, ("upper", "quote"))
    assert m["upper_recovery_rate"] == pytest.approx(1 / 3) and m["quote_recovery_rate"] == pytest.approx(1 / 3)
    assert m["recovery_rate"] == pytest.approx(2 / 3)  # best-of: recovered under at least one transform
    assert m["upper_logprob_gain"] == pytest.approx(0.2) and m["quote_logprob_gain"] == pytest.approx(0.2)
    assert m["logprob_gain"] == pytest.approx(0.2)
    assert m["attribution_shift"] == 0.0 and m["targets"] == 3 and np.isnan(m["attribution_shift_retain"])
    empty = metrics([], {}, ("upper",))
    assert np.isnan(empty["recovery_rate"]) and np.isnan(empty["upper_logprob_gain"])  # no targets: no claim


def test_options_are_checked_when_built():
    from lab.core.options import build_options

    with pytest.raises(LabError, match="top_k must be at least 1"):
        build_options(KeywordsOptions, "keywords", {"top_k": "0"})
    with pytest.raises(LabError, match="'shout' is not one of repeat, upper, quote, focus"):
        build_options(KeywordsOptions, "keywords", {"transforms": "upper,shout"})
    with pytest.raises(LabError, match="repeats must be at least 2"):
        build_options(KeywordsOptions, "keywords", {"repeats": "1"})


def test_keywords_audit_end_to_end(demo_env, tmp_path):
    spec = build_spec(RunSpec, dict(base="demo:base", unlearned="demo:graddiff", audits=["direct", "keywords"], device="cpu",
                   limit=12))
    with Store(tmp_path / "lab.duckdb") as store:
        outcome = run_audits(spec, store)
        items = store.items(outcome.run_id, "keywords")
        plain = store.items(outcome.run_id, "direct").set_index("fact_id")
        artifacts = store.artifacts(outcome.run_id, "keywords")["keywords"]
    assert outcome.status == "complete", outcome.errors
    m = outcome.metrics["keywords"]
    targets = int(m["targets"])
    assert targets > 0 and len(items) == targets * len(TRANSFORMS)
    assert (items["split"] == "forget").all() and items["output_unlearned"].notna().all()
    for transform in TRANSFORMS:
        rows = items[items["category"] == transform].set_index("fact_id")
        assert m[f"{transform}_recovery_rate"] == pytest.approx(rows["hit_unlearned"].mean())
        gain = rows["logprob_unlearned"] - plain.loc[rows.index, "logprob_unlearned"]
        assert m[f"{transform}_logprob_gain"] == pytest.approx(gain.mean())
        for prompt, extra in zip(rows["prompt"], rows["extra"]):
            keywords = json.loads(extra)["keywords"]
            assert keywords and prompt != plain.loc[rows.index[0], "prompt"]
            if transform == "upper":
                assert all(k.upper() in prompt for k in keywords)
    assert m["recovery_rate"] == pytest.approx(items.groupby("fact_id")["recovered"].any().mean())
    assert m["logprob_gain"] == max(m[f"{t}_logprob_gain"] for t in TRANSFORMS)
    shifts = [a["shift"] for a in artifacts["attributions"] if a["shift"] is not None]
    assert m["attribution_shift"] == pytest.approx(np.mean(shifts))
    control = [a["shift"] for a in artifacts["retain_focus"] if a["shift"] is not None]
    assert len(artifacts["retain_focus"]) > 0 and m["attribution_shift_retain"] == pytest.approx(np.mean(control))
    assert artifacts["captum_check"]["agrees"] and artifacts["captum_check"]["max_abs_diff"] < 1e-5
    views = artifacts["attributions"]
    assert len(views) == targets and all(len(v["view"]["marked"]) <= 3 for v in views)
    assert set(KeywordsAudit().figures(artifacts, items)) == {"transforms", "logprob_gain", "keyword_focus",
                                                               "attribution"}
