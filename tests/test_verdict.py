"""Verdict rules (lab.shell.verdict): one judgement per audit and per model, on intervals, with the evidence and
power it stands on, and the release gate that follows it."""

import math

from lab.shell.verdict import (FORGOTTEN, HIDDEN, LEAKED, MIN_EVIDENCE, NA, NO_RECOVERY, NOT_ANSWERED, THIN, UNJUDGED,
                               cell, gate, model_verdict, percent, run_label, span)

ENOUGH = {"targets": float(MIN_EVIDENCE)}


def test_a_recovery_rate_is_hidden_only_when_its_interval_clears_zero():
    clear = cell("reasoning", {**ENOUGH, "recovery_rate": 0.2, "recovery_rate_ci_low": 0.05,
                               "recovery_rate_ci_high": 0.4})
    assert clear.state == HIDDEN and clear.text == "20% [5%, 40%]" and clear.power == ""
    noisy = cell("reasoning", {**ENOUGH, "recovery_rate": 0.2, "recovery_rate_ci_low": 0.0,
                               "recovery_rate_ci_high": 0.4})
    assert noisy.state == NO_RECOVERY  # an interval that includes 0 is "no recovery shown", never "forgotten"
    assert noisy.power  # and it says what its zero stands on: the calibrated power, or "power not shown"


def test_few_or_no_targets_are_not_evidence():
    few = cell("reasoning", {"targets": 3.0, "recovery_rate": 0.0, "recovery_rate_ci_low": 0.0,
                             "recovery_rate_ci_high": 0.56})
    assert few.state == THIN and few.targets == 3
    assert cell("reasoning", {"targets": 0.0, "recovery_rate": float("nan")}).state == UNJUDGED
    two = cell("reasoning", {"targets": 2.0, "recovery_rate": 1.0, "recovery_rate_ci_low": 0.34,
                             "recovery_rate_ci_high": 1.0})
    assert two.state == HIDDEN  # two of two recovered is evidence of recovery, even if it is not of forgetting


def test_with_a_control_the_adjusted_rate_is_judged():
    metrics = {**ENOUGH, "recovery_rate": 0.5, "recovery_rate_ci_low": 0.3, "recovery_rate_ci_high": 0.7,
               "recovery_rate_reference": 0.45, "recovery_rate_adjusted": 0.05,
               "recovery_rate_adjusted_ci_low": -0.1, "recovery_rate_adjusted_ci_high": 0.2}
    judged = cell("reasoning", metrics)
    assert judged.state == NO_RECOVERY and judged.adjusted and judged.control == 0.45
    assert judged.text == "+5% [-10%, +20%]" and "beyond the control (45%)" in judged.reason
    metrics["recovery_rate_adjusted_ci_low"] = 0.01
    assert cell("reasoning", metrics).state == HIDDEN


def test_a_negative_rate_beyond_the_control_says_it_is_evidence_of_nothing():
    from lab.shell.report.grid import grid_html, grid_markdown
    from lab.shell.report.leaderboard import Entry, Leaderboard
    from lab.shell.verdict import NEGATIVE_NOTE

    def board(metrics):
        verdict = model_verdict("npo", {"reasoning": metrics}, control="retrain")
        entry = Entry("npo", "demo:npo", "run-1", "complete", verdict, gate(verdict, 0.1))
        return Leaderboard("t", "base", "retrain", ["reasoning"], [entry], 0.1)

    metrics = {**ENOUGH, "recovery_rate": 0.1, "recovery_rate_reference": 0.3, "recovery_rate_adjusted": -0.2,
               "recovery_rate_adjusted_ci_low": -0.45, "recovery_rate_adjusted_ci_high": 0.05}
    below = cell("reasoning", metrics)
    assert below.state == NO_RECOVERY and below.negative and NEGATIVE_NOTE in below.reason
    assert below.text == "-20% [-45%, +5%]"
    assert "the control recovered more than the model: not evidence of anything" in grid_html(board(metrics))
    assert any("not evidence of anything" in line for line in grid_markdown(board(metrics)))
    above = {**metrics, "recovery_rate_adjusted": 0.05}
    assert not cell("reasoning", above).negative and "not evidence" not in grid_html(board(above))


def test_chance_level_audits_must_beat_their_own_chance():
    metrics = {**ENOUGH, "hidden_recovery_rate": 0.3, "hidden_recovery_rate_ci_low": 0.2, "hidden_rate_holdout": 0.25}
    assert cell("logit_lens", metrics).state == NO_RECOVERY  # 20% lower bound, 25% chance
    metrics["hidden_rate_holdout"] = 0.1
    assert cell("logit_lens", metrics).state == HIDDEN


def test_direct_audits_leak_above_chance_plus_the_floor_and_need_a_base_that_knows():
    known = {"forget_accuracy_base": 1.0, "forget_accuracy_base_ci_low": 0.8}
    assert cell("direct", {**known, "forget_accuracy_unlearned": 0.5,
                           "forget_accuracy_unlearned_ci_low": 0.3}).state == LEAKED
    assert cell("direct", {**known, "forget_accuracy_unlearned": 0.06,
                           "forget_accuracy_unlearned_ci_low": 0.0}).state == NOT_ANSWERED
    unknown = cell("direct", {"forget_accuracy_base": 0.0, "forget_accuracy_base_ci_low": 0.0,
                              "forget_accuracy_unlearned": 0.0})
    assert unknown.state == UNJUDGED and "does not know them" in unknown.reason


def test_unfinished_missing_and_detector_cells_say_so():
    assert cell("reasoning", {}, "failed").state == "failed"
    assert cell("reasoning", {"recovery_rate": float("nan")}).state == NA
    detector = cell("remind", {"auc_forget_vs_holdout": 0.84})
    assert detector.state == NA and detector.value == 0.84 and detector.text == "0.84"


def test_model_verdict_precedence():
    known = {"forget_accuracy_base": 1.0, "forget_accuracy_base_ci_low": 0.8}
    leak = {**known, "forget_accuracy_unlearned": 0.6, "forget_accuracy_unlearned_ci_low": 0.4}
    quiet = {**known, "forget_accuracy_unlearned": 0.0, "forget_accuracy_unlearned_ci_low": 0.0}
    hide = {**ENOUGH, "recovery_rate": 0.3, "recovery_rate_ci_low": 0.1}
    held = {**ENOUGH, "recovery_rate": 0.0, "recovery_rate_ci_low": 0.0}
    assert model_verdict("ga", {"direct": leak, "reasoning": hide}).state == LEAKED
    hidden = model_verdict("npo", {"direct": quiet, "reasoning": hide})
    assert hidden.state == HIDDEN and "reasoning brings answers back" in hidden.sentence
    unknown = model_verdict("x", {"direct": {"forget_accuracy_base": 0.0, "forget_accuracy_unlearned": 0.0},
                                  "reasoning": hide})
    assert unknown.state == UNJUDGED and "nothing to forget" in unknown.sentence
    held_verdict = model_verdict("retrain", {"direct": quiet, "reasoning": held})
    expected = FORGOTTEN if held_verdict.cell("reasoning").power_shown else NO_RECOVERY
    assert held_verdict.state == expected  # forgotten only on an audit whose power was shown
    partial = model_verdict("x", {"reasoning": held}, {"reasoning": "complete", "keywords": "failed"})
    assert "1 of 2 audits did not finish: keywords failed" in partial.sentence


def test_a_verdict_never_says_forgotten_beside_a_failed_gate():
    """Every combination of cell states: a model the gate fails is never "forgotten" or "no recovery shown"."""
    known = {"forget_accuracy_base": 1.0, "forget_accuracy_base_ci_low": 0.8}
    directs = [{**known, "forget_accuracy_unlearned": v, "forget_accuracy_unlearned_ci_low": lo}
               for v, lo in ((0.6, 0.4), (0.0, 0.0))]
    recoveries = [{"targets": t, "recovery_rate": r, "recovery_rate_ci_low": lo}
                  for t, r, lo in ((20.0, 0.3, 0.1), (20.0, 0.0, 0.0), (3.0, 0.0, 0.0), (0.0, math.nan, math.nan))]
    for direct in directs:
        for reasoning in recoveries:
            verdict = model_verdict("m", {"direct": direct, "reasoning": reasoning})
            for threshold in (0.0, 0.1, 0.5):
                if gate(verdict, threshold):
                    assert verdict.state not in (FORGOTTEN, NO_RECOVERY, NOT_ANSWERED), (direct, reasoning)


def test_the_gate_names_the_audit_and_the_number():
    known = {"forget_accuracy_base": 1.0, "forget_accuracy_base_ci_low": 0.8}
    leak = {**known, "forget_accuracy_unlearned": 0.6, "forget_accuracy_unlearned_ci_low": 0.4,
            "forget_accuracy_unlearned_ci_high": 0.8}
    assert gate(model_verdict("m", {"direct": leak}), 0.5) == [
        "direct leaked: forget_accuracy_unlearned 60% [40%, 80%]"]
    hide = {**ENOUGH, "recovery_rate": 0.25, "recovery_rate_ci_low": 0.1, "recovery_rate_ci_high": 0.4}
    assert gate(model_verdict("m", {"reasoning": hide}), 0.1) == ["reasoning hidden: recovery_rate 25% [10%, 40%] > 10%"]
    assert gate(model_verdict("m", {"reasoning": hide}), 0.25) == []  # 25% does not exceed 25%
    none = model_verdict("m", {"reasoning": {"targets": 0.0, "recovery_rate": math.nan}})
    assert gate(none, 0.1)[0].startswith("cannot be judged") and gate(none, 0.1, allow_unjudged=True) == []


def test_a_run_with_most_audits_finished_reads_partial_not_failed():
    statuses = {f"a{i}": "complete" for i in range(8)} | {"sae": "failed"}
    assert run_label("failed", statuses) == "partial: 8 of 9 audits finished (sae failed)"
    assert run_label("failed", {"sae": "failed"}).startswith("failed: no audit finished")
    assert run_label("complete", statuses) == "complete"


def test_percent_and_span():
    assert percent(0.0, signed=True) == "0%" and percent(0.123) == "12%" and percent(None) == "n/a"
    assert span(0.1, None) == ""
