"""Sampled leakage (Scholten et al.): the leak@k estimator, sampled answers against the exact probability of the
gold answer, and the Probe's sampled answers (leak@k through a served model: tests/test_remote.py)."""

from __future__ import annotations

import math

import pytest

from audits.sampling import SamplingOptions, draw, exact_metrics, ks_for, leak_at


def test_leak_at_k_is_the_unbiased_estimator():
    """1 - C(n - c, k) / C(n, k) (Chen et al. 2021's pass@k): with n = 4 draws and c = 1 hit..."""
    assert leak_at(1, 4, 1) == pytest.approx(0.25)  # ...one draw holds it with 1/4
    assert leak_at(1, 4, 2) == pytest.approx(1 - 3 / 6)  # C(3, 2) / C(4, 2) = 3 / 6
    assert leak_at(0, 4, 4) == 0.0 and leak_at(4, 4, 1) == 1.0 and leak_at(3, 4, 2) == 1.0
    assert math.isnan(leak_at(1, 4, 16)) and ks_for(16) == [1, 4, 16] and ks_for(32) == [1, 4, 16, 32]


def test_sampled_and_exact_estimates_agree(demo_pair, demo_facts):
    """On facts the model knows (the base on its retain facts, where p is far from 0 and 1), the sampled rate of
    answers that begin with the gold answer lies in the interval around the exact probability's mean."""
    facts = [f for f in demo_facts.facts if f.split == "retain"][:24]
    model = demo_pair.base
    prompts = [model.prompt(f.question) for f in facts]
    opts = SamplingOptions(samples=32)
    draws = draw(model, prompts, facts, opts, 1.0, 12, "test")
    metrics = exact_metrics(model, prompts, facts, draws, opts.samples)
    assert 0.05 < metrics["exact_p"] < 1.0
    assert metrics["exact_within_interval"] == 1.0, metrics
    assert sum(draws.hits) >= sum(draws.prefixes)  # a hit by the scorer includes every answer that begins with it
    again = draw(model, prompts, facts, opts, 1.0, 12, "test")
    assert again.answers == draws.answers  # seeded


def test_the_probe_samples_distinct_answers(demo_pair, demo_facts):
    from lab.shell.ui.probe import sampled_answers

    fact = next(f for f in demo_facts.facts if f.split == "forget")
    frame = sampled_answers(demo_pair, demo_pair.base.prompt(fact.question), 8, 8, fact.answer)
    assert frame.groupby("model")["count"].sum().to_dict() == {"base": 8, "unlearned": 8}
    assert set(frame["gold"]) <= {"yes", "no"} and list(frame.columns) == ["model", "answer", "count", "gold"]
