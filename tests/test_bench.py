"""``python -m lab bench``: the quick run end to end, and the arithmetic behind its numbers."""

from __future__ import annotations

import json
import math
import mmap
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

import audits
from lab.shell.bench import hardware, lm_eval_peer, loops, measure, report, run, scaling, shapes
from lab.core.facts import load_facts
from lab.shell.cli import main

TINY_SHAPE = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, max_position_embeddings=64, tie_word_embeddings=True)


def llama_parameters(vocab: int, hidden: int, inter: int, layers: int, heads: int, kv_heads: int, head_dim: int) -> int:
    """Parameter count of a tied-embedding Llama, by hand: embeddings + blocks + final norm."""
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o and k, v
    block = attention + 3 * hidden * inter + 2 * hidden  # + gate, up, down and two RMSNorms
    return vocab * hidden + layers * block + hidden


@pytest.fixture()
def cached_tiny(tiny_demo, tmp_path, monkeypatch) -> Path:
    """The user cache points at a folder whose demo-tiny is the already built tiny demo (no rebuild)."""
    cache = tmp_path / "cache"
    (cache / "unlearning-audit-lab").mkdir(parents=True)
    (cache / "unlearning-audit-lab" / "demo-tiny").symlink_to(tiny_demo, target_is_directory=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def check_memory(reading: dict) -> None:
    """A peak-memory reading: a peak no lower than the resident set it started from."""
    assert reading["peak_rss_mb"] > 0 and reading["start_rss_mb"] > 0, reading
    assert reading["peak_rss_mb"] >= reading["start_rss_mb"] - 1, reading
    assert reading["peak_cuda_mb"] is None or torch.cuda.is_available()


def test_quick_bench_end_to_end(cached_tiny, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["quick"] and result["device"] == "cpu" and result["demo"].endswith("demo-tiny")
    assert result["dtype"] == "float32" and result["torch_threads"] == torch.get_num_threads()
    names = [c["name"] for c in result["comparisons"]]
    assert names == ["answer scoring", "greedy generation", "REMIND neighbor losses",
                     "multiple choice vs lm-evaluation-harness", "generation vs generate loop, batch 32"]
    assert result["skipped"] == []
    for c in result["comparisons"]:
        assert c["agrees"], c  # ours and the other side's results must match
        assert c["items"] > 0 and c["batched_s"] > 0 and c["loop_s"] > 0 and c["speedup"] > 0
        assert c["speedup"] == pytest.approx(c["loop_s"] / c["batched_s"])
        assert (c["ours_s"], c["other_s"]) == (c["batched_s"], c["loop_s"])
        assert f"{c['speedup']:.{2 if c['other'] != measure.OWN_LOOP else 1}f}x" in printed
        check_memory(c["memory"]["ours"]), check_memory(c["memory"]["other"])
        assert c["shape"]["shape"] == "demo" and c["shape"]["vocab_size"] == 512  # what it ran on: the tiny demo
        assert c["shape"]["hidden_size"] == 64 and c["shape"]["num_hidden_layers"] == 2
    assert result["shapes"] == []  # the realistic shapes run in the full bench only
    remind = result["comparisons"][2]
    assert remind["items"] == run.QUICK.remind_facts * 4 * 8  # 4 radii x 8 variants each (remind defaults)

    lm_eval = result["comparisons"][3]
    details = lm_eval["details"]
    assert lm_eval["items"] == run.QUICK.multiple_choice
    for model in ("base", "unlearned"):  # identical accuracies, picks and token ids
        assert details["accuracy"][model]["ours"] == details["accuracy"][model]["lm_eval"]
    assert details["identical_picks"] == details["picks"] == 2 * run.QUICK.multiple_choice
    assert details["identical_token_ids"] == details["requests"] == 4 * run.QUICK.multiple_choice
    assert details["max_abs_loglik_diff"] < 1e-4 and details["add_bos_token"] is True
    lines = details["prompt_example"].splitlines()  # lm-eval's WMDP format: question, lettered choices, "Answer:"
    assert len(lines) == 6 and [line[:3] for line in lines[1:5]] == ["A. ", "B. ", "C. ", "D. "]
    assert lines[5] == "Answer:"
    # lm-eval runs one forward per distinct context + continuation[:-1], and so does the engine (one per question
    # where every letter is one token; the tiny demo's tokenizer splits some letters)
    rows = details["rows_scored_per_model"]
    assert run.QUICK.multiple_choice <= rows["ours"] == rows["lm_eval"] < 4 * run.QUICK.multiple_choice
    assert "lm-evaluation-harness" in lm_eval["other"]
    generation = result["comparisons"][4]
    assert generation["items"] == run.QUICK.generation and generation["details"]["differing"] == []
    assert generation["details"]["max_new_tokens"] == run.QUICK.new_tokens

    peak, flop = result["peak"], result["scoring_pass"]
    assert peak["dtype"] == "float32" and peak["n"] == run.QUICK.matmul_n and peak["flops_per_s"] > 0
    assert peak["flops_per_s"] == pytest.approx(max(peak["measurements_gflops"]) * 1e9)
    assert flop["rows"] == run.QUICK.scoring and flop["padded_tokens"] >= flop["tokens"] > flop["rows"]
    assert flop["flops_per_s"] == pytest.approx(2 * flop["parameters"] * flop["tokens"] / flop["seconds"])
    assert flop["share"] == pytest.approx(flop["flops_per_s"] / peak["flops_per_s"])
    check_memory(flop["memory"])

    suite = result["suite"]
    assert set(suite["audits"]) | set(suite["missing"]) == set(scaling.SUITE)
    assert all(row["status"] == "complete" and row["seconds"] > 0 for row in suite["audits"].values()), suite
    assert suite["total_s"] >= sum(row["seconds"] for row in suite["audits"].values()) * 0.99
    def facts_at(limit: int) -> int:
        return len(load_facts(Path(result["demo"]) / "facts.jsonl", per_split=limit))

    assert suite["facts"] == facts_at(run.QUICK.suite_limit)
    for row in suite["audits"].values():
        check_memory(row["memory"])
    assert suite["memory"]["peak_rss_mb"] >= max(row["memory"]["peak_rss_mb"] for row in suite["audits"].values())

    facts = result["scaling"]["facts"]
    assert [p["factor"] for p in facts["points"]] == [1, 2, 4]
    assert [p["facts"] for p in facts["points"]] == [facts_at(run.QUICK.scale_limit * f) for f in (1, 2, 4)]
    assert all(p["seconds"] > 0 and not p["failed"] for p in facts["points"])
    assert math.isfinite(facts["exponent"])
    models = result["scaling"]["model_size"]
    sizes = [p["parameters"] for p in models["points"]]
    for size, target in zip(sizes, (1e6, 1e7, 1e8)):
        assert 0.8 * target < size < 1.2 * target
    assert math.isfinite(models["exponent"])
    for p in models["points"]:
        assert p["tokens"] == models["rows"] * (models["seq_len"] - 1)  # a row's last token is a target, not fed
        assert p["share"] == pytest.approx(p["flops_per_s"] / peak["flops_per_s"])
        check_memory(p["memory"])

    assert result["mfu"] == {"skipped": "needs a CUDA device"} or torch.cuda.is_available()
    assert "VmHWM" in result["memory_method"] or "sampled" in result["memory_method"]
    for target in ("batched >= 10x", "<= 60 s on the full demo", "MFU", "ours >= 2x lm-eval",
                   "ours >= 3x the batch-32 generate loop", ">= 60% of the measured matmul peak", "k <= 1.1"):
        assert target in printed


def test_bad_device_is_a_one_line_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    assert main(["bench", "--quick", "--device", "cuda"]) == 2
    assert capsys.readouterr().err.strip() == "error: device 'cuda' requested but CUDA is not available on this machine"


def test_missing_audit_module_is_reported_not_crashed(tiny_demo, monkeypatch):
    monkeypatch.setitem(audits.REGISTRY, "keywords", "audits.keywords_not_here:KeywordsAudit")
    monkeypatch.setattr(scaling, "SUITE", ("keywords", "quantization"))
    timing = scaling.suite_timing(tiny_demo, "cpu", limit=2)
    assert timing.missing == ["keywords"]
    assert list(timing.audits) == ["quantization"] and timing.audits["quantization"]["status"] == "complete"
    text = report.format_result({"quick": True, "demo": "d", "device": "cpu", "torch_threads": 1,
                                "sizes": {"repeats": 1}, "comparisons": [], "suite": asdict(timing),
                                "mfu": {"skipped": "needs a CUDA device"}})
    [line] = [line for line in text.splitlines() if line.split()[:1] == ["keywords"]]
    assert line.split()[1] == "-" and line.endswith("missing (module not in this checkout)")


def test_loop_baseline_matches_the_engine(demo_pair, demo_facts):
    engine = demo_pair.unlearned
    facts = demo_facts.facts[:5]
    prompts = [engine.prompt(f.question) for f in facts]
    pairs = [engine.encode_continuation(p, f.answer) for p, f in zip(prompts, facts)]
    looped = loops.loop_token_logprobs(engine, [p + t for p, t in pairs], [len(p) for p, _ in pairs])
    batched = engine.answer_scores(prompts, [f.answer for f in facts])
    for row, scores, (_, target) in zip(looped, batched, pairs):
        assert row.shape == (len(target),)
        assert abs(row - scores.logprobs).max() < 1e-4
    assert loops.loop_generate(engine, prompts, 8) == engine.generate(prompts, 8)


def test_batch_32_generate_loop_pads_left_and_matches_the_engine(demo_pair, demo_facts):
    engine = demo_pair.unlearned
    prompts = [engine.prompt(f.question) for f in demo_facts.facts[:7]]
    assert len({len(engine.encode(p)) for p in prompts}) > 1  # padding is exercised
    # Batches of 3 in order (3 + 3 + 1): the same texts as the engine's own batching.
    assert loops.generate_loop_batched(engine, prompts, 8, batch_size=3) == engine.generate(prompts, 8)


def test_text_agreement_needs_every_text_and_the_same_count():
    assert loops.text_agreement(["a", "b"], ["a", "b"]) == ("2/2 identical texts", True)
    assert loops.text_agreement(["a", "b"], ["a", "c"]) == ("1/2 identical texts", False)
    assert loops.text_agreement(["a", "b"], ["a"])[1] is False


def test_generate_loop_comparison_fails_on_different_texts(demo_pair, demo_facts, monkeypatch):
    # The peer loop stops 4 tokens early: its texts differ from ours, and the comparison must say so.
    peer = loops.generate_loop_batched
    monkeypatch.setattr(loops, "generate_loop_batched", lambda engine, prompts, new: peer(engine, prompts, new - 4))
    own, versus = loops.compare_generation(demo_pair.unlearned, demo_facts.facts[:6], 8, repeats=1)
    assert own.agrees and not versus.agrees and versus.details["differing"]
    assert versus.agreement != "6/6 identical texts" and versus.agreement.endswith("/6 identical texts")


def test_lm_eval_comparison_fails_when_lm_eval_scores_another_model(demo_pair, demo_facts, monkeypatch):
    # lm-eval is handed the unlearned model for both roles: the base model's picks and accuracy then differ.
    wrap = lm_eval_peer.lm_eval_model
    monkeypatch.setattr(lm_eval_peer, "lm_eval_model", lambda engine: wrap(demo_pair.unlearned))
    result = lm_eval_peer.compare_multiple_choice(demo_pair, demo_facts.facts, 24, repeats=1)
    assert isinstance(result, measure.Comparison) and not result.agrees
    assert result.details["identical_picks"] < result.details["picks"]
    assert result.details["max_abs_loglik_diff"] > 1e-3


def test_multiple_choice_items_are_fixed_and_spread_the_answer(demo_facts):
    facts = demo_facts.facts
    items = lm_eval_peer.mc_items(facts, 8)
    assert len(items) == 8 and items == lm_eval_peer.mc_items(facts, 8)
    assert [f.answer_index for f in items] == [0, 1, 2, 3, 0, 1, 2, 3]  # 3 perturbed answers + the answer
    for item, fact in zip(items, facts):
        assert item.kind == "mc" and item.id == fact.id and item.question == fact.question
        assert item.choices[item.answer_index] == fact.answer
        assert sorted(item.choices) == sorted([fact.answer, *fact.perturbed_answers])


def test_memory_meter_gives_each_measurement_its_own_peak():
    meter = measure.memory_meter()
    meter.mark()
    # An anonymous mapping, written, then unmapped: its pages surely leave the resident set (a freed tensor's
    # memory may stay with the allocator, and the resident set with it).
    held = mmap.mmap(-1, 200 * 2**20)
    held.write(b"x" * len(held))
    big = meter.mark()
    held.close()
    meter.mark()
    small = meter.mark()  # nothing allocated in this segment
    assert big["peak_rss_mb"] - big["start_rss_mb"] > 150
    if meter.exact:  # the kernel's high-water mark was reset: the earlier peak does not leak into this one
        assert small["peak_rss_mb"] < big["peak_rss_mb"] - 150
    assert small["background_cpu"] is None or 0 <= small["background_cpu"] <= 1


def test_side_by_side_interleaves_the_calls_and_keeps_each_sides_result():
    calls: list[str] = []
    a, b = measure.measured_side_by_side([lambda: calls.append("a") or 1, lambda: calls.append("b") or 2], 3, "cpu")
    assert calls == ["a", "b"] * 3  # round by round, so a burst of load lands on both sides
    assert (a[1], b[1]) == (1, 2) and a[0] > 0 and b[0] > 0
    check_memory(a[2]), check_memory(b[2])


def test_growth_exponent_is_the_log_log_slope():
    x = [1, 2, 4, 8]
    assert measure.growth_exponent(x, [3 * v**1.5 for v in x]) == pytest.approx(1.5)
    assert measure.growth_exponent(x, [5.0] * 4) == pytest.approx(0.0, abs=1e-12)


def test_scale_shapes_are_about_1m_10m_100m_parameters():
    for (label, shape), target in zip(scaling.SCALE_SHAPES.items(), (1e6, 1e7, 1e8)):
        counted = llama_parameters(shape["vocab_size"], shape["hidden_size"], shape["intermediate_size"],
                                   shape["num_hidden_layers"], shape["num_attention_heads"],
                                   shape["num_key_value_heads"], shape["head_dim"])
        assert 0.8 * target < counted < 1.2 * target, label


def test_one_b_shape_has_llama_3_2_1b_parameter_count():
    shape = hardware.LLAMA_32_1B
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**shape))
    counted = sum(p.numel() for p in model.parameters())
    assert counted == llama_parameters(shape["vocab_size"], shape["hidden_size"], shape["intermediate_size"],
                                       shape["num_hidden_layers"], shape["num_attention_heads"],
                                       shape["num_key_value_heads"], shape["head_dim"])
    assert counted == 1_235_814_400  # the published size of Llama-3.2-1B


def test_scoring_throughput_arithmetic_on_a_tiny_random_model():
    engine = hardware.random_engine(TINY_SHAPE, "cpu", torch.float32)
    engine.policy.max_tokens = 256  # 16 rows of 16 tokens per batch
    params = llama_parameters(97, 32, 48, 2, 4, 2, 8)
    assert engine.info.parameters == params
    result = hardware.scoring_throughput(engine, seq_len=16, batches=2, peak=1e12)
    assert (result["rows"], result["tokens"]) == (32, 32 * 15)
    assert result["tokens_per_s"] == pytest.approx(result["tokens"] / result["seconds"])
    assert result["model_flops_per_s"] == pytest.approx(2 * params * result["tokens_per_s"])
    assert result["mfu"] == pytest.approx(result["model_flops_per_s"] / 1e12)
    assert hardware.scoring_throughput(engine, seq_len=16, batches=1, peak=None)["mfu"] is None
    rows = [[1 + (i * 7 + j) % 90 for j in range(10 + i % 5)] for i in range(20)]
    one = hardware.scoring_pass(engine, rows, [1] * len(rows), peak=1e12, repeats=1, label="tiny")
    assert one["tokens"] == sum(len(r) - 1 for r in rows) and one["padded_tokens"] >= one["tokens"]
    assert one["flops_per_s"] == pytest.approx(2 * params * one["tokens"] / one["seconds"])
    hardware.rebase_shares([one], 2e12)
    assert one["share"] == pytest.approx(one["flops_per_s"] / 2e12) and one["peak_flops_per_s"] == 2e12


@pytest.mark.parametrize("name, expected", [
    ("NVIDIA H200", ("H200", 989e12)), ("NVIDIA H100 80GB HBM3", ("H100", 989e12)),
    ("NVIDIA A100-SXM4-80GB", ("A100", 312e12)), ("NVIDIA L40S", ("L40S", 362e12)), ("NVIDIA L4", ("L4", 121e12)),
    ("Tesla T4", None),
])
def test_assumed_peaks_by_gpu_name(name, expected):
    assert hardware.peak_flops(name) == expected


def test_full_mode_uses_the_demo_dir_and_judges_the_suite_target(demo_env, monkeypatch, capsys):
    # The full demo's sizes would take minutes; the path is the same.  The scaling times one cheap audit.
    monkeypatch.setattr(run, "FULL", replace(run.QUICK, repeats=1, scale_limit=1, scale_audits=("quantization",),
                                               scale_rows=1, scale_seq=8, matmul_n=256))
    result = run.run_bench(quick=False, device="cpu")
    assert result["demo"] == str(demo_env) and not result["quick"]
    met = result["suite"]["total_s"] <= report.TARGET_SUITE_S and not result["suite"]["missing"]
    printed = capsys.readouterr().out
    assert f"on the full demo pair on 2 CPU cores: {'met' if met else 'NOT met'}" in printed
    assert result["scaling"]["facts"]["audits"] == ["quantization"]
    assert [p["limit"] for p in result["scaling"]["facts"]["points"]] == [1, 2, 4]


def test_realistic_shape_comparisons_run_on_small_vocabularies(monkeypatch):
    # The realistic shapes' code path on vocabularies small enough for CI: one of each tokenizer kind, one with
    # Gemma's final soft-cap and BOS, one byte-level without BOS; the full bench runs 32k-256k and the 1B width.
    gemma, qwen = shapes.VOCABULARIES["gemma2-256k"], shapes.VOCABULARIES["qwen2.5-152k"]
    monkeypatch.setitem(shapes.VOCABULARIES, "gemma-like", replace(gemma, family="Gemma-like", size=3000))
    monkeypatch.setitem(shapes.VOCABULARIES, "qwen-like", replace(qwen, family="Qwen-like", size=2500))
    width = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=16, max_position_embeddings=512)
    tiny = [shapes.Shape("tiny", key, width, choices=5, answers=4, prompts=3, repeats=1, new_tokens=4)
            for key in ("gemma-like", "qwen-like")]
    found = shapes.realistic_comparisons(tiny, "cpu", new_tokens=24, repeats=3)
    assert len(found) == 6
    for c, shape in zip(found, [s for s in tiny for _ in range(3)]):
        assert c.name.endswith(f", {shape.label}") and shape.label.startswith(shapes.VOCABULARIES[shape.vocabulary].label)
        assert c.agrees, (c.name, c.agreement)
        assert c.shape["vocab_size"] == shapes.VOCABULARIES[shape.vocabulary].size and c.shape["hidden_size"] == 32
        assert c.batched_s > 0 and c.loop_s > 0
        check_memory(c.memory["ours"]), check_memory(c.memory["other"])
    choices, answers, generation = found[:3]
    assert choices.name.startswith(lm_eval_peer.LM_EVAL) and choices.items == 5
    assert choices.details["identical_token_ids"] == choices.details["requests"] == 20
    assert answers.name.startswith(lm_eval_peer.LM_EVAL_ANSWERS) and answers.items == 4
    assert answers.details["within_tolerance"] == answers.details["identical_greedy"] == 4
    assert answers.details["answer_tokens"]["min"] > 20  # answers of realistic length, many tokens each
    assert generation.name.startswith(loops.GENERATE_LOOP) and generation.details["max_new_tokens"] == 4
    assert found[0].details["add_bos_token"] is True and found[3].details["add_bos_token"] is False

    printed = report.format_result({"quick": False, "realistic_only": True, "device": "cpu", "torch_threads": 1,
                                    "sizes": {"repeats": 1}, "comparisons": [asdict(c) | {"speedup": c.speedup}
                                                                             for c in found]})
    assert all(s.label in printed for s in tiny)
    assert "ours faster than lm-eval on multiple choice and multi-token log-likelihood" in printed
    assert printed.rstrip().endswith("identical results: not measured")  # no vocabulary of 32k here


def test_padded_tokenizers_have_the_family_width():
    for key in ("llama2-32k", "llama3-128k"):
        vocabulary = shapes.VOCABULARIES[key]
        tokenizer = shapes.build_tokenizer(vocabulary, shapes.world_texts()[:200], trained=600)
        assert len(tokenizer) == vocabulary.size
        ids = tokenizer("Where was Thondbrar Shaexzhodan born?")["input_ids"]
        assert max(ids) < 600 and (ids[0] == tokenizer.bos_token_id) == (vocabulary.bos is not None)


def test_wide_vocabulary_target_needs_speed_memory_and_agreement():
    def row(speedup: float, ours_mb: float, theirs_mb: float, agrees: bool = True, ours_start: float = 100.0) -> dict:
        reading = lambda mb, start=100.0: {"peak_rss_mb": mb, "start_rss_mb": start, "peak_cuda_mb": None}  # noqa: E731
        return {"speedup": speedup, "agrees": agrees,
                "memory": {"ours": reading(ours_mb, ours_start), "other": reading(theirs_mb)}}

    assert report.wide_vocabulary_met(row(1.2, 500, 800))
    assert not report.wide_vocabulary_met(row(0.9, 500, 800))
    assert not report.wide_vocabulary_met(row(1.2, 900, 800))
    assert not report.wide_vocabulary_met(row(1.2, 500, 800, agrees=False))
    assert not report.wide_vocabulary_met(row(1.2, 500, 520, ours_start=50.0))  # lower peak, but it added more
