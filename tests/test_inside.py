"""Inside the model: residual edits and block outputs through the engine, directional ablation, activation
patching and linear probes on the tiny demo (each fires on the model its paper names and not on the control),
their per-fact views, and results kept per weights state."""

from __future__ import annotations

import json

import pytest
import torch

from lab.shell.cli import main

INSIDE = "direct,ablation,patching,linear_probe"


@pytest.fixture(scope="module")
def inside(tiny_demo, tmp_path_factory):
    """The inside audits on RMU, GA and the retrained model, each against the base with retrain as reference."""
    folder = tmp_path_factory.mktemp("inside")
    out = {}
    for model in ("rmu", "ga", "retrain"):
        path = folder / f"{model}.json"
        code = main(["audit", "--base", str(tiny_demo / "models" / "base"), "--unlearned",
                     str(tiny_demo / "models" / model), "--reference", str(tiny_demo / "models" / "retrain"),
                     "--facts", str(tiny_demo / "facts.jsonl"), "--audits", INSIDE, "--device", "cpu",
                     "--db", str(folder / "inside.duckdb"), "--json", str(path)])
        assert code == 0
        out[model] = {name: audit["metrics"] for name, audit in json.loads(path.read_text())["audits"].items()}
    return out


def test_directional_ablation_recovers_rmu_and_not_the_control(inside):
    """Łucki et al.: one direction per layer carries RMU's unlearning; removing it brings the answers back."""
    rmu, control = inside["rmu"]["ablation"], inside["retrain"]["ablation"]
    assert rmu["recovery_rate_adjusted_ci_low"] > 0, rmu
    assert control["recovery_rate"] == 0.0
    assert rmu["targets"] + rmu["calibration_targets"] == inside["rmu"]["direct"]["targets"]  # halves, no overlap


def test_patching_brings_the_answer_back_from_the_lower_layers_of_rmu_and_ga(inside):
    for model in ("rmu", "ga"):
        assert inside[model]["patching"]["recovery_rate_adjusted_ci_low"] > 0, (model, inside[model]["patching"])
    assert inside["retrain"]["patching"]["recovery_rate"] == 0.0  # the base's states mean nothing to it


def test_linear_probes_report_their_layer_and_controls(inside):
    for metrics in inside.values():
        probe = metrics["linear_probe"]
        assert 1 <= probe["layer"] and 0 <= probe["validation_accuracy"] <= 1
        assert 0 <= probe["holdout_rate"] <= 1 and probe["holdout_rate_ci_low"] <= probe["holdout_rate"]


def test_editing_and_block_outputs_leave_the_model_as_it_was(demo_pair, demo_facts):
    engine = demo_pair.unlearned
    prompts = [engine.prompt(f.question) for f in demo_facts.facts[:6]]
    before = engine.generate(prompts, 8)
    ids, mask = engine._pad([engine.encode(p) for p in prompts])
    blocks = engine.block_outputs(ids, mask)
    hidden = engine.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert torch.allclose(blocks[0], hidden[1], atol=1e-5)  # block l's output is hidden state l + 1 (not the last)
    zeroed = []
    with engine.editing(lambda layer, h: torch.zeros_like(h) if layer == 0 else None):
        zeroed = engine.generate(prompts, 8)
    assert zeroed != before and engine.generate(prompts, 8) == before  # the hooks are gone afterwards


def test_the_inside_views_draw_one_fact(tiny_demo, demo_pair, demo_facts):
    from audits import get_audit
    from lab.core.options import build_options

    fact = next(f for f in demo_facts.facts if f.split == "forget")
    kept: dict = {}

    def memo(key, make):
        return kept.setdefault(key, make()) if key not in kept else kept[key]

    for name in ("ablation", "patching", "linear_probe"):
        cls = get_audit(name)
        fig = cls().fact_view(demo_pair, fact, demo_facts.facts, build_options(cls.Options, name, {}), memo)
        assert fig.data and fact.answer in fig.layout.title.text, name
    assert len(kept) == 2  # the ablation's directions and the probes, kept for the next fact


def test_kept_results_are_identical_and_never_outlive_a_weights_change(demo_pair, demo_facts, monkeypatch):
    from audits.quantization.rtn import QuantSpec, quantized, target_weights

    engine = demo_pair.base
    prompts = [engine.prompt(f.question) for f in demo_facts.facts[:8]]
    first = engine.generate(prompts, 8)
    monkeypatch.setenv("LAB_MEMO", "0")
    assert engine.generate(prompts, 8) == first  # computed again: the same
    monkeypatch.setenv("LAB_MEMO", "1")
    state = engine.weights_state()
    with engine.lock, quantized(target_weights(engine.model, False, False), QuantSpec(bits=2, group_size=8)):
        assert engine.weights_state() != state  # quantizing in place changes the key: nothing is reused
        during = engine.generate(prompts, 8)
    assert engine.generate(prompts, 8) == first
    assert engine.weights_state() != state  # restored weights have a new version: they are recomputed
    assert len(during) == len(prompts)


def test_a_benchmark_repeat_does_the_work_again(demo_pair, demo_facts, monkeypatch):
    """Kept results serve a repeated call; a benchmark's timed repeats never get one (settings.memo_off)."""
    from lab.shell.bench.measure import timed

    engine = demo_pair.base
    prompts = [engine.prompt(f.question) for f in demo_facts.facts[8:12]]
    calls: list[int] = []
    batched = engine._batched
    monkeypatch.setattr(engine, "_batched", lambda *a, **k: calls.append(1) or batched(*a, **k))
    engine.generate(prompts, 5)
    engine.generate(prompts, 5)
    assert len(calls) == 1  # the second call was given the kept result
    timed(lambda: engine.generate(prompts, 5), 3, "cpu")
    assert len(calls) == 4  # each timed repeat computed it


def test_kept_results_never_outlive_an_adapter(demo_pair, demo_facts):
    """Adapters come and go (the relearn audit's LoRA): a new tensor may sit at a freed one's address with the same
    version count, so the key names tensors by a number of their own, never by address."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lab.core.kept import tensor_uid

    seen = [(id(t), tensor_uid(t)) for t in (torch.zeros(3) for _ in range(50))]  # each freed before the next
    assert len({uid for _, uid in seen}) == 50  # unique even where an address came back
    engine = demo_pair.unlearned
    prompts = [engine.prompt(f.question) for f in demo_facts.facts[:6]]
    plain = engine.generate(prompts, 6)
    for scale in (3.0, 0.0):  # a trained adapter, then a fresh one whose B is zero: the plain model's answers
        wrapped = get_peft_model(engine.model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
        with torch.no_grad():
            for name, param in wrapped.named_parameters():
                if "lora_B" in name:
                    param.fill_(scale / param.shape[0])
        answers = engine.generate(prompts, 6)
        wrapped.unload()
        if scale == 0.0:
            assert answers == plain
    assert engine.generate(prompts, 6) == plain


def test_weights_restored_bit_for_bit_keep_what_was_kept(demo_pair, demo_facts, monkeypatch):
    """Fake quantization restores the weights exactly: under restored_after the results kept before it are given
    again after it (a sweep's base keeps its reuse across the quantization audit), never during it."""
    from audits.quantization.rtn import QuantSpec, quantized, target_weights

    engine = demo_pair.base
    prompts = [engine.prompt(f.question) for f in demo_facts.facts[12:16]]
    first = engine.generate(prompts, 7)
    calls: list[int] = []
    batched = engine._batched
    monkeypatch.setattr(engine, "_batched", lambda *a, **k: calls.append(1) or batched(*a, **k))
    with engine.lock, engine.restored_after(), quantized(target_weights(engine.model, False, False),
                                                         QuantSpec(bits=2, group_size=8)):
        engine.generate(prompts, 7)
    assert len(calls) == 1  # computed on the quantized weights
    assert engine.generate(prompts, 7) == first and len(calls) == 1  # the kept result, and it is the same
    monkeypatch.setenv("LAB_MEMO", "0")
    assert engine.generate(prompts, 7) == first  # which computing afresh confirms


def test_kept_rows_compute_only_the_rows_not_asked_before(demo_pair, demo_facts, monkeypatch):
    """A sweep asks the base about each pair's own targets: rows asked before are given again, only the new ones
    are computed, and the answers, states and scores equal an uncached call's (sampled calls are kept whole)."""
    import numpy as np

    engine = demo_pair.base
    prompts = [engine.prompt(f.question) for f in demo_facts.facts[20:32]]
    rows, starts = engine.continuation_rows([(p, f.answer) for p, f in zip(prompts, demo_facts.facts[20:32])])
    sizes: list[int] = []
    batched = engine._batched
    monkeypatch.setattr(engine, "_batched", lambda lengths, *a, **k: sizes.append(len(lengths)) or batched(
        lengths, *a, **k))
    first = engine.generate(prompts[:8], 6)
    both = engine.generate(prompts[4:], 6)  # rows 4-7 were asked: only 8-11 are computed
    assert sizes == [8, 4] and both[:4] == first[4:]
    states = engine.last_token_states(prompts[:6]) + engine.last_token_states(prompts[3:9])
    scores = engine.token_scores(rows[:5], starts[:5]) + engine.token_scores(rows[2:], starts[2:])
    assert sizes[2:] == [6, 3, 5, 7]
    sampled = [engine.generate(prompts[:3], 6, temperature=1.0, seed=3) for _ in range(2)]
    sampled.append(engine.generate(prompts[1:3], 6, temperature=1.0, seed=3))
    assert sizes[6:] == [3, 2] and sampled[0] == sampled[1]  # the same sampled call kept whole; a subset computed
    monkeypatch.setenv("LAB_MEMO", "0")
    assert engine.generate(prompts, 6) == first + both[4:]
    fresh = engine.last_token_states(prompts[:9])
    assert all(torch.equal(a, b) for a, b in zip(states, fresh[:6] + fresh[3:9]))
    again = engine.token_scores(rows, starts)
    for got, want in zip(scores, again[:5] + again[2:]):
        assert np.allclose(got.logprobs, want.logprobs, atol=1e-5)  # float rounding of other batch shapes only


def test_relearning_curves_are_remembered_per_weights(demo_pair, demo_facts, monkeypatch):
    """The relearn audit's curve of a model is fine-tuned once per weights and inputs (a sweep's base and
    reference), again for other weights, and always with LAB_MEMO=0; the remembered curve equals a fresh one."""
    from audits.relearn import RelearnAudit
    from lab.core import finetune as ft
    from lab.core.finetune import Schedule

    runs: list[int] = []
    real = ft.finetune
    monkeypatch.setattr("audits.relearn.finetune", lambda *a, **k: runs.append(1) or real(*a, **k))
    chosen, asked = demo_facts.split("forget")[:4], demo_facts.split("forget")[4:8]
    schedule = Schedule(4, 3e-3, 2, "lora", 4, 8, 0)

    def curve(engine):
        return RelearnAudit.relearn(engine, chosen, asked, schedule, [0, 4], 6, "test").outputs

    first = curve(demo_pair.base)
    assert curve(demo_pair.base) == first and len(runs) == 1
    curve(demo_pair.unlearned)
    assert len(runs) == 2
    monkeypatch.setenv("LAB_MEMO", "0")
    assert curve(demo_pair.base) == first and len(runs) == 3


def test_quantized_weights_count_as_the_same_when_the_same_spec_quantizes_them_again(demo_pair, demo_facts,
                                                                                        monkeypatch):
    """RTN is deterministic: a sweep quantizes its base in every pair, and the quantized base's answers are
    computed once; another spec is other weights, and computing afresh gives the kept answers."""
    from audits.quantization.audit import QuantizationOptions, fake_quantized
    from audits.quantization.rtn import QuantSpec

    engine, opts = demo_pair.base, QuantizationOptions()
    prompts = [engine.prompt(f.question) for f in demo_facts.facts[40:46]]
    calls: list[int] = []
    batched = engine._batched
    monkeypatch.setattr(engine, "_batched", lambda *a, **k: calls.append(1) or batched(*a, **k))
    answers = []
    for bits in (4, 4, 2):
        with fake_quantized(engine, QuantSpec(bits=bits, group_size=8), opts):
            answers.append(engine.generate(prompts, 7))
    assert len(calls) == 2 and answers[0] == answers[1]  # int4 twice: computed once; int2: computed
    monkeypatch.setenv("LAB_MEMO", "0")
    with fake_quantized(engine, QuantSpec(bits=4, group_size=8), opts):
        assert engine.generate(prompts, 7) == answers[0]
