"""The logit lens: engine readings checked against the model's own scores, the rule by hand, the audit end to end."""

import json
import math
from dataclasses import asdict

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from audits.base import AuditContext
from audits.logit_lens import (
    LogitLensAudit,
    LogitLensOptions,
    layer_curves,
    logit_lens_for_fact,
    middle_layers,
    read_at,
)
from audits.sae.audit import SaeAudit
from lab.core.architecture import LensReading
from lab.core.errors import LabError
from lab.core.store import Store
from lab.demo.world import qa_prompt
from lab.shell.cli import main


def test_last_layer_of_the_lens_is_the_models_own_output(demo_pair, demo_facts):
    engine = demo_pair.base
    facts = demo_facts.facts[:10]
    prompts, answers = [qa_prompt(f.question) for f in facts], [f.answer for f in facts]
    readings = engine.logit_lens(prompts, answers, top=3)
    scores = engine.answer_scores(prompts, answers)
    n_layers = engine.architecture.n_layers
    for reading, score, prompt, answer in zip(readings, scores, prompts, answers):
        assert reading.rank.shape == reading.prob.shape == (n_layers + 1, len(score.logprobs))
        assert np.allclose(np.log(reading.prob[n_layers]), score.logprobs, atol=1e-4)
        first = engine.encode_continuation(prompt, answer)[1][0]
        assert (reading.rank[:, 0] == 0).tolist() == (reading.top_ids[:, 0] == first).tolist()


def test_batched_lens_matches_one_prompt_at_a_time(demo_pair, demo_facts):
    engine = demo_pair.unlearned
    facts = demo_facts.facts[:8]
    prompts, answers = [qa_prompt(f.question) for f in facts], [f.answer for f in facts]
    batched = engine.logit_lens(prompts, answers)
    for reading, prompt, answer in zip(batched, prompts, answers):
        single = engine.logit_lens([prompt], [answer])[0]
        assert (single.rank == reading.rank).all() and np.allclose(single.prob, reading.prob, atol=1e-5)
        assert (single.top_ids == reading.top_ids).all()


def reading(ranks: list[list[int]]) -> LensReading:
    rank = np.array(ranks)
    return LensReading(rank, np.full(rank.shape, 0.1), np.zeros((rank.shape[0], 1), dtype=int))


def test_read_back_rule_by_hand():
    # 4 hidden states (embeddings, 2 middle layers, output) x 2 answer tokens
    r = reading([[50, 50], [3, 9], [0, 4], [7, 0]])
    assert read_at(r, k=5, first_only=False).tolist() == [False, False, True, False]
    assert read_at(r, k=5, first_only=True).tolist() == [False, True, True, False]
    assert read_at(r, k=10, first_only=False).tolist() == [False, True, True, True]
    assert list(middle_layers(3, 1)) == [1, 2]
    with pytest.raises(LabError, match="no middle layers"):
        middle_layers(1, 1)
    other = reading([[50, 50], [60, 1], [9, 9], [0, 0]])
    curves = layer_curves([r, other], k=5, first_only=False)
    assert curves["read_share"] == [0.0, 0.0, 0.5, 0.5]
    assert curves["median_first_rank"] == [50.0, 31.5, 4.5, 3.5]
    assert math.isclose(curves["mean_logprob"][0], math.log(0.1))


def test_audit_on_the_tiny_demo(demo_pair, demo_facts):
    items = []
    ctx = AuditContext(pair=demo_pair, facts=demo_facts, options=LogitLensOptions(), record=items.extend)
    result = LogitLensAudit().run(ctx)
    m = result.metrics
    targets = ctx.baseline.targets()
    assert m["targets"] == len(targets) > 0
    assert len(items) == len(demo_facts)
    flagged = {i.fact_id for i in items if i.recovered}
    assert math.isclose(m["hidden_recovery_rate"], len(flagged) / len(targets))
    assert all(i.category == "target" for i in items if i.recovered is not None)
    for key in ("hidden_rate_holdout", "hidden_rate_targets_base", "output_read_targets"):
        assert 0.0 <= m[key] <= 1.0
    # the base model computes what it knows in its middle layer far above the never-seen control
    assert m["hidden_rate_targets_base"] > m["hidden_rate_holdout"] + 0.3
    curves = result.artifacts["curves"]
    n_states = demo_pair.base.architecture.n_layers + 1
    assert all(len(c["read_share"]) == n_states for c in curves.values())
    figs = LogitLensAudit().figures(json.loads(json.dumps(result.artifacts)), _frame(items))
    assert set(figs) == {"layer_curves", "target_ranks"}
    fig = logit_lens_for_fact(demo_pair, targets[0])
    assert isinstance(fig, go.Figure) and len(fig.data) == 6


def test_bad_options_are_clear():
    from lab.core.options import build_options

    with pytest.raises(LabError, match="'middle' is not one of answer, first_token"):
        build_options(LogitLensOptions, "logit_lens", {"target": "middle"})
    with pytest.raises(LabError, match="logit_lens.k must be at least 1"):
        build_options(LogitLensOptions, "logit_lens", {"k": "0"})


def test_both_internals_audits_through_the_cli(demo_env, tmp_path, capsys):
    db, out = tmp_path / "runs.duckdb", tmp_path / "out.json"
    code = main(["audit", "--base", "demo:base", "--unlearned", "demo:npo", "--audits", "logit_lens,sae",
                 "--db", str(db), "--json", str(out), "--device", "cpu", "--limit", "12",
                 "--set", "sae.steps=150", "--set", "sae.made_up_entities=4"])
    assert code == 0, capsys.readouterr().err
    audits = json.loads(out.read_text())["audits"]
    assert {"hidden_recovery_rate"} <= set(audits["logit_lens"]["metrics"])
    assert {"known_unknown_shift", "known_unknown_shift_retain"} <= set(audits["sae"]["metrics"])
    with Store(db) as store:
        run_id = store.runs().iloc[-1]["run_id"]
        artifacts = store.artifacts(run_id)
        lens_figs = LogitLensAudit().figures(artifacts["logit_lens"], store.items(run_id, "logit_lens"))
        sae_figs = SaeAudit().figures(artifacts["sae"], store.items(run_id, "sae"))
    assert "layer_curves" in lens_figs and {"positions", "axis_latents", "changed_latents"} <= set(sae_figs)


def _frame(items: list) -> pd.DataFrame:
    return pd.DataFrame([asdict(i) for i in items])
