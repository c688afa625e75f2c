"""REMIND: neighbor tokens, variants, batched landscape losses, features, and the audit end to end."""

import math

import numpy as np
import pytest
import torch

from audits.base import AuditContext
from audits.remind.audit import (
    RemindAudit,
    RemindOptions,
    answer_losses,
    auc,
    examples,
    landscape,
    neighborhood,
    tpr_at_fpr,
    variant_losses,
)
from audits.remind.neighbors import make_variants, nearest_tokens, same_word, word_key
from lab.core.errors import LabError


def unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def test_nearest_tokens_by_cosine_without_self_or_banned():
    angles = [0, 10, 30, 90, 180, 5]
    emb = torch.tensor([unit(a) for a in angles]) * torch.tensor([[1.0], [3.0], [0.5], [2.0], [1.0], [1.0]])
    near = nearest_tokens(emb, [0, 3, 4], k=2, banned=[5])  # lengths differ: cosine ignores them
    assert near == {0: [1, 2], 3: [2, 1], 4: [3, 2]}
    assert nearest_tokens(emb, [0, 3, 4], k=2, banned=[5], chunk=1) == near
    # with token strings, casing and sub-word variants of the same word are not neighbors
    pieces = {0: "ĠParis", 1: "paris", 2: "ĠLondon", 3: "ĠPar", 4: "Ġ,", 5: "ĠRome"}
    assert word_key("ĠParis") == word_key("▁paris") == "paris" and same_word("par", "paris")
    assert nearest_tokens(emb, [0], k=2, piece=pieces.__getitem__) == {0: [5, 2]}  # Rome (5 deg), London (30)


def test_variants_differ_in_exactly_r_allowed_positions():
    row = [1, 10, 11, 12, 13, 14, 15]
    neighbors = {t: [t + 100, t + 200] for t in range(10, 16)}
    rng = np.random.default_rng(0)
    allowed = list(range(1, 7))
    for radius in (1, 2, 4, 6):
        variants = make_variants(row, neighbors, radius, 20, rng, allowed)
        assert len(variants) == 20
        for v in variants:
            changed = [i for i, (a, b) in enumerate(zip(row, v.row)) if a != b]
            assert changed == list(v.positions) and len(changed) == radius and v.radius == radius
            assert 0 not in changed and all(v.row[i] in neighbors[row[i]] for i in changed)
    assert make_variants(row, neighbors, 7, 5, rng, allowed) == []  # only 6 replaceable tokens
    assert all(set(v.positions) <= {2, 3} for v in make_variants(row, neighbors, 2, 5, rng, [2, 3]))
    again = [make_variants(row, neighbors, 2, 5, np.random.default_rng(3), allowed) for _ in range(2)]
    assert again[0] == again[1]  # seeded


def test_landscape_features_by_hand():
    line = landscape(1.0, [[2.0, 2.0], [3.0, 3.0]])
    assert line.curve == [1.0, 2.0, 3.0] and line.spread == [0.0, 0.0, 0.0]
    assert math.isclose(line.slope, 1.0) and abs(line.curvature) < 1e-9 and line.flatness == -line.slope
    assert line.neighbor_mean == 2.5 and line.neighbor_std == 0.5
    parabola = landscape(0.0, [[0.5, 1.5], [4.0], [9.0]])
    assert math.isclose(parabola.curvature, 2.0) and math.isclose(parabola.spread[1], 0.5)
    short = landscape(0.0, [[1.0], []])
    assert math.isclose(short.slope, 1.0) and math.isnan(short.curvature) and math.isnan(short.curve[2])


def test_auc_and_tpr_at_low_fpr_by_hand():
    pos, neg = [3.0, 4.0], [1.0, 2.0, 3.5]
    assert math.isclose(auc(pos, neg), 5 / 6)
    assert tpr_at_fpr(pos, neg, 0.0) == 0.5  # only the 4 clears every negative
    assert tpr_at_fpr(pos, neg, 1 / 3) == 1.0
    assert math.isnan(auc(pos, [])) and math.isnan(auc([math.nan], neg))


def test_variants_touch_only_the_questions_words_and_score_the_answer(demo_pair, demo_facts):
    engine = demo_pair.unlearned
    facts = demo_facts.limited(2).facts
    items = examples(engine, facts)
    variants = neighborhood(engine, items, RemindOptions(max_radius=3, variants_per_radius=3))
    for fact, ex, per_example in zip(facts, items, variants):
        prompt = engine.prompt(fact.question)
        words = {engine.tokenizer.decode([ex.row[i]]).strip() for i in ex.positions}
        assert words and all(w and w in fact.question for w in words)  # content words of the question only
        scaffold = engine.encode(prompt.split(fact.question)[0])  # "Question:" and the BOS stay put
        for v in (v for group in per_example for v in group):
            assert v.row[ex.start:] == ex.row[ex.start:] and v.row[:len(scaffold)] == ex.row[:len(scaffold)]
            assert set(v.positions) <= set(ex.positions)
    batched = variant_losses(engine, items, variants)
    for ex, per_example, losses in zip(items, variants, batched):
        for per_radius, group in zip(per_example, losses):
            looped = [answer_losses(engine, [v.row], [ex.start], "loop")[0] for v in per_radius]
            assert len(group) == len(per_radius) and np.allclose(group, looped, atol=1e-4)


def test_remind_audit_end_to_end(demo_pair, demo_facts):
    facts = demo_facts.limited(5)
    items = []
    ctx = AuditContext(pair=demo_pair, facts=facts, options=RemindOptions(max_radius=2, variants_per_radius=3),
                       record=items.extend)
    audit = RemindAudit()
    result = audit.run(ctx)
    assert len(items) == len(facts) and {i.split for i in items} == {"forget", "retain", "holdout"}
    first = items[0]
    assert len(first.extra["variants"]) == 2 and all(len(g) == 3 for g in first.extra["variants"])
    assert len(first.extra["losses"][1]) == 3 and len(first.extra["curve"]) == 3
    assert math.isclose(first.logprob_unlearned, -first.extra["point_loss"])
    assert first.extra["variants"][0][0] != first.prompt
    m = result.metrics
    for key in ("auc_forget_vs_holdout", "auc_forget_vs_retain", "tpr_at_1fpr", "point_auc_forget_vs_holdout",
                "classifier_auc", "point_classifier_auc"):
        assert 0.0 <= m[key] <= 1.0, key
    # the NPO model never saw the holdout people: their texts cost more than the forget texts
    assert m["point_loss_holdout"] > m["point_loss_forget"]
    assert set(audit.figures(result.artifacts, None)) == {"landscape", "flatness", "roc"}
    assert "auc_forget_vs_holdout" in audit.verdict(m)


def test_bad_options_are_user_errors():
    from lab.core.options import build_options

    for values, message in (({"max_radius": "1"}, "max_radius must be at least 2"),
                            ({"top_k": "0"}, "top_k must be at least 1")):
        with pytest.raises(LabError, match=message):
            build_options(RemindOptions, "remind", values)
