"""Pure view helpers of the web lab (no browser needed)."""

import math

from lab.core.store import Store, new_run_id
from lab.shell.ui.views import compare_frame

MODEL = {"ref": "demo:base", "content_hash": "abc"}


def test_compare_frame_keeps_only_real_metric_pairs(tmp_path):
    with Store(tmp_path / "db.duckdb") as store:
        runs = []
        for value in (0.5, 0.25):
            run = store.create_run(run_id=new_run_id(), base=MODEL, unlearned=MODEL, reference=None, facts_source="f", facts_hash="h",
                                   audits=["direct", "logit_lens"], config={}, environment={})
            store.add_metrics(run, "direct", {"forget_accuracy_base": 1.0, "empty": float("nan")})
            store.add_metrics(run, "logit_lens", {"hidden_recovery_rate": value})
            runs.append(run)
        frame = compare_frame(store, runs)
    pairs = list(zip(frame["audit"], frame["metric"]))
    assert sorted(pairs) == [("direct", "empty"), ("direct", "forget_accuracy_base"),
                             ("logit_lens", "hidden_recovery_rate")]
    row = frame[frame["metric"] == "hidden_recovery_rate"].iloc[0]
    assert list(frame.columns[2:]) == runs and (row[runs[0]], row[runs[1]]) == (0.5, 0.25)
    assert math.isnan(frame[frame["metric"] == "empty"].iloc[0][runs[0]])


def test_probe_emphasis_buttons_emphasize_the_question_keywords(demo_pair, demo_facts):
    from lab.shell.ui.probe import rewrites

    fact = demo_facts.split("forget")[0]

    def emphasized_question(pair, question, answer, transform):
        (variant,) = rewrites("keywords", pair, fact, [], transform)
        assert not variant.raw  # a question: the prompt template goes around it
        return variant.text

    upper = emphasized_question(demo_pair, fact.question, fact.answer, "upper")
    assert upper != fact.question and upper.lower() == fact.question.lower()
    shouted = [w for w in upper.split() if w.isupper() and len(w) > 1]
    assert shouted and all(w.lower().strip("?'s") in fact.question.lower() for w in shouted)
    focus = emphasized_question(demo_pair, fact.question, fact.answer, "focus")
    assert focus.startswith("Focus on:") and focus.endswith(fact.question)
