"""SAEs: training on the tiny demo, reloading, loading errors, the known/unknown axis by hand, the audit."""

import json
import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from audits.base import AuditContext
from audits.sae.audit import (
    Axis,
    EntityPrompt,
    SaeAudit,
    SaeOptions,
    analyse,
    known_unknown_shift,
    sae_view_for_entity,
    select_latents,
    separation,
)
from audits.sae.train import TrainSettings, fact_corpus, get_sae, hook_layer, measure_quality
from lab.core.errors import LabError
from lab.core.facts import Fact

FAST = TrainSettings(steps=150, batch_size=128)


@pytest.fixture(scope="module")
def sae_cache(tmp_path_factory):
    """A private lab cache for this module (trained SAEs land there)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def trained(sae_cache, demo_pair, demo_facts):
    return get_sae(demo_pair.base, "train", None, fact_corpus(demo_pair.base, demo_facts.facts), FAST)


def test_sae_trains_on_the_tiny_demo_and_reloads_from_disk(trained, demo_pair, demo_facts):
    assert trained.trained and trained.layer == 1  # the middle of the 2-layer demo model
    assert trained.d_sae == FAST.width * 64 and trained.sae.cfg.architecture() == "topk"
    q = trained.quality
    assert q.explained_variance > 0.5 and 0 < q.l0 <= FAST.k and q.tokens > 1000
    assert q.density.shape == (trained.d_sae,) and math.isclose(float(q.density.sum()), q.l0, rel_tol=0.25)
    texts = fact_corpus(demo_pair.base, demo_facts.facts)
    again = get_sae(demo_pair.base, "train", None, texts, FAST)  # same key: the cache, not a new training
    assert not again.trained and again.path == trained.path
    assert torch.equal(again.sae.W_enc, trained.sae.W_enc)
    from_dir = get_sae(demo_pair.base, trained.path, None, texts)  # sae-lens format on disk
    assert from_dir.layer == 1 and from_dir.source == trained.path
    states = torch.randn(5, 64)
    assert torch.allclose(from_dir.sae.encode(states), trained.sae.encode(states))
    with pytest.raises(LabError, match="reads blocks.1.hook_resid_pre"):
        get_sae(demo_pair.base, trained.path, 0, texts)


def test_other_settings_train_another_sae(sae_cache, demo_pair, demo_facts):
    texts = fact_corpus(demo_pair.base, demo_facts.facts)[:60]
    standard = get_sae(demo_pair.base, "train", 0, texts, TrainSettings("standard", width=2, steps=60, batch_size=64))
    assert standard.trained and standard.layer == 0 and standard.sae.cfg.architecture() == "standard"


def test_bad_sources_give_clear_errors(sae_cache, demo_pair, tmp_path, monkeypatch):
    engine, texts = demo_pair.base, ["Question: Who?\nAnswer: nobody"] * 3
    with pytest.raises(LabError, match="no SAE in sae-lens format"):
        get_sae(engine, str(tmp_path), None, texts)
    with pytest.raises(LabError, match="between 0 and 1"):
        get_sae(engine, "train", 2, texts, FAST)
    with pytest.raises(LabError, match="not a sae-lens pretrained release"):
        get_sae(engine, "pretrained:no-such-release:x", None, texts)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LabError, match="offline"):
        get_sae(engine, "pretrained:gpt2-small-res-jb:blocks.0.hook_resid_pre", None, texts)
    with pytest.raises(LabError, match="unknown SAE architecture"):
        get_sae(engine, "train", None, texts, TrainSettings("gated"))


def test_hook_names_map_to_hidden_state_indices():
    assert hook_layer("blocks.3.hook_resid_pre") == 3
    assert hook_layer("blocks.3.hook_resid_post") == 4
    assert hook_layer("blocks.3.hook_mlp_out") is None and hook_layer(None) is None


def test_quality_of_an_exact_sae_by_hand():
    from sae_lens import StandardSAE, StandardSAEConfig

    sae = StandardSAE(StandardSAEConfig(d_in=2, d_sae=4, apply_b_dec_to_input=False))
    with torch.no_grad():  # latents = relu([x, -x]); decoding [x+, x-] @ [I; -I] gives x back exactly
        sae.W_enc.copy_(torch.tensor([[1.0, 0, -1, 0], [0, 1, 0, -1]]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]]))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    acts = torch.tensor([[1.0, -2.0], [3.0, 0.0], [-1.0, -1.0], [2.0, 5.0]])
    q = measure_quality(sae, acts, acts)
    assert math.isclose(q.explained_variance, 1.0, abs_tol=1e-6)
    assert q.l0 == 7 / 4  # non-zero coordinates: 2 + 1 + 2 + 2
    assert q.density.tolist() == [0.75, 0.25, 0.25, 0.5] and q.dead_share == 0.0


def prompts(groups: list[tuple[str, str]]) -> list[EntityPrompt]:
    return [EntityPrompt(e, g, Fact(id=f"{e}-{i}", question="?", answer=""), e) for i, (e, g) in enumerate(groups)]


def test_known_unknown_axis_on_a_constructed_case():
    # latent 0 fires on known prompts, latent 1 on unknown ones, latent 2 on everything (generic)
    latents = torch.tensor([
        [2.0, 0.0, 1.0], [2.0, 0.0, 1.0],  # known entity K (two prompts)
        [0.0, 1.0, 1.0], [0.0, 1.0, 1.0],  # unknown entity U
        [2.0, 0.0, 1.0], [1.0, 0.5, 1.0],  # forget entity F, base: like K
        [2.0, 0.0, 1.0], [2.0, 0.0, 1.0],  # retained entity R... also the known reference
    ])
    groups = prompts([("K", "known")] * 2 + [("U", "unknown")] * 2 + [("F", "forget")] * 2 + [("R", "known")] * 2)
    known = np.array([p.group == "known" for p in groups])
    unknown = np.array([p.group == "unknown" for p in groups])
    sep = separation(latents, known, unknown)
    assert sep.score.tolist() == [1.0, -1.0, 0.0]
    density = np.array([0.05, 0.05, 0.9])
    assert select_latents(sep, density, max_density=0.1, top=2) == [0, 1]
    assert select_latents(sep, np.array([0.5, 0.05, 0.9]), max_density=0.1, top=2) == [1]  # 0 too generic now
    axis = Axis.fit(latents, known, unknown, [0, 1])
    pos_base = axis.positions(latents)
    assert np.allclose(pos_base[known], 1.0) and np.allclose(pos_base[unknown], 0.0)
    # unlearned: F's prompts land halfway between known and unknown; everyone else unchanged
    unlearned = latents.clone()
    unlearned[4:6] = torch.tensor([[1.0, 0.5, 1.0], [1.0, 0.5, 1.0]])
    pos_unlearned = axis.positions(unlearned)
    assert np.allclose(pos_unlearned[4:6], 0.5)
    # F's base position: mean of 1.0 and 0.5 (second prompt [1, .5]) = 0.75, after: 0.5 -> shift 0.25
    assert math.isclose(known_unknown_shift(pos_base, pos_unlearned, groups, "forget"), 0.25)
    assert math.isclose(known_unknown_shift(pos_base, pos_unlearned, groups, "known"), 0.0)
    assert Axis.fit(latents, known, unknown, []) is None


def test_sae_audit_on_the_tiny_demo(trained, demo_pair, demo_facts):
    items = []
    options = SaeOptions(steps=FAST.steps, batch_size=FAST.batch_size)  # the module's cached SAE
    ctx = AuditContext(pair=demo_pair, facts=demo_facts, options=options, record=items.extend)
    result = SaeAudit().run(ctx)
    m = result.metrics
    assert m["forget_entities"] == 3 and m["known_entities"] + m["control_entities"] == 24
    assert m["known_entities"] == m["control_entities"] == 12  # every second known entity held out as the control
    assert m["unknown_entities"] == 3 + options.made_up_entities
    assert math.isfinite(m["known_unknown_shift"]) and math.isfinite(m["known_unknown_shift_retain"])
    # the axis, fitted on retain and holdout entities only, places the unseen forget entities near "known"
    assert m["forget_position_base"] > 0.5
    assert math.isclose(m["explained_variance"], trained.quality.explained_variance)
    assert {i.category for i in items} == {"forget", "known", "control", "unknown"}  # 24 known: half held out
    assert all(i.prompt.endswith(i.extra["entity"]) for i in items)
    entities = {r["entity"]: r for r in result.artifacts["entities"]}
    forget = [r for r in entities.values() if r["group"] == "forget"]
    assert math.isclose(m["known_unknown_shift"],
                        np.mean([r["position_base"] - r["position_unlearned"] for r in forget]), rel_tol=1e-6)
    figs = SaeAudit().figures(json.loads(json.dumps(result.artifacts)), None)
    assert set(figs) == {"positions", "axis_latents", "changed_latents"}
    assert "known_unknown_shift" in SaeAudit().verdict(m)


def test_entity_view(trained, demo_pair, demo_facts):
    options = SaeOptions(steps=FAST.steps, batch_size=FAST.batch_size, made_up_entities=2)
    analysis = analyse(demo_pair, demo_facts.facts, {f.id for f in demo_facts if f.split == "retain"}, options)
    entity = demo_facts.split("forget")[0].entity
    fig = sae_view_for_entity(demo_pair, demo_facts, entity, analysis=analysis)
    assert isinstance(fig, go.Figure) and any(t.name == entity for t in fig.data)
    with pytest.raises(LabError, match="no prompt names the entity"):
        sae_view_for_entity(demo_pair, demo_facts, "Nobody At All", analysis=analysis)
