"""``python -m lab bench``: the quick run end to end, and the arithmetic behind its numbers."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import audits
from lab.shell import bench
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


def test_quick_bench_end_to_end(cached_tiny, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["quick"] and result["device"] == "cpu" and result["demo"].endswith("demo-tiny")
    names = [c["name"] for c in result["comparisons"]]
    assert names == ["answer scoring", "greedy generation", "REMIND neighbor losses"]
    for c in result["comparisons"]:
        assert c["agrees"], c  # batched and per-example results must match
        assert c["items"] > 0 and c["batched_s"] > 0 and c["loop_s"] > 0
        assert c["speedup"] == pytest.approx(c["loop_s"] / c["batched_s"])
        assert f"{c['speedup']:.1f}x" in printed
    remind = result["comparisons"][2]
    assert remind["items"] == bench.QUICK.remind_facts * 4 * 8  # 4 radii x 8 variants each (remind defaults)
    suite = result["suite"]
    assert set(suite["audits"]) | set(suite["missing"]) == set(bench.SUITE)
    assert all(row["status"] == "complete" and row["seconds"] > 0 for row in suite["audits"].values()), suite
    assert suite["total_s"] >= sum(row["seconds"] for row in suite["audits"].values()) * 0.99
    assert suite["facts"] == 3 * bench.QUICK.suite_limit
    assert result["mfu"] == {"skipped": "needs a CUDA device"} or torch.cuda.is_available()
    for target in ("batched >= 10x", "<= 60 s on the full demo", "MFU"):
        assert target in printed


def test_bad_device_is_a_one_line_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    assert main(["bench", "--quick", "--device", "cuda"]) == 2
    assert capsys.readouterr().err.strip() == "error: device 'cuda' requested but CUDA is not available on this machine"


def test_missing_audit_module_is_reported_not_crashed(tiny_demo, monkeypatch):
    monkeypatch.setitem(audits.REGISTRY, "keywords", "audits.keywords_not_here:KeywordsAudit")
    monkeypatch.setattr(bench, "SUITE", ("keywords", "quantization"))
    timing = bench.suite_timing(tiny_demo, "cpu", limit=2)
    assert timing.missing == ["keywords"]
    assert list(timing.audits) == ["quantization"] and timing.audits["quantization"]["status"] == "complete"
    text = bench.format_result({"quick": True, "demo": "d", "device": "cpu", "torch_threads": 1,
                                "sizes": {"repeats": 1}, "comparisons": [], "suite": asdict(timing),
                                "mfu": {"skipped": "needs a CUDA device"}})
    [line] = [line for line in text.splitlines() if line.split()[:1] == ["keywords"]]
    assert line.split()[1] == "-" and line.endswith("missing (module not in this checkout)")


def test_loop_baseline_matches_the_engine(demo_pair, demo_facts):
    engine = demo_pair.unlearned
    facts = demo_facts.facts[:5]
    prompts = [engine.prompt(f.question) for f in facts]
    pairs = [engine.encode_continuation(p, f.answer) for p, f in zip(prompts, facts)]
    looped = bench.loop_token_logprobs(engine, [p + t for p, t in pairs], [len(p) for p, _ in pairs])
    batched = engine.answer_scores(prompts, [f.answer for f in facts])
    for row, scores, (_, target) in zip(looped, batched, pairs):
        assert row.shape == (len(target),)
        assert abs(row - scores.logprobs).max() < 1e-4
    assert bench.loop_generate(engine, prompts, 8) == engine.generate(prompts, 8)


def test_one_b_shape_has_llama_3_2_1b_parameter_count():
    shape = bench.LLAMA_32_1B
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**shape))
    counted = sum(p.numel() for p in model.parameters())
    assert counted == llama_parameters(shape["vocab_size"], shape["hidden_size"], shape["intermediate_size"],
                                       shape["num_hidden_layers"], shape["num_attention_heads"],
                                       shape["num_key_value_heads"], shape["head_dim"])
    assert counted == 1_235_814_400  # the published size of Llama-3.2-1B


def test_scoring_throughput_arithmetic_on_a_tiny_random_model():
    engine = bench.random_engine(TINY_SHAPE, "cpu", torch.float32)
    engine.policy.max_tokens = 256  # 16 rows of 16 tokens per batch
    params = llama_parameters(97, 32, 48, 2, 4, 2, 8)
    assert engine.info.parameters == params
    result = bench.scoring_throughput(engine, seq_len=16, batches=2, peak=1e12)
    assert (result["rows"], result["tokens"]) == (32, 32 * 16)
    assert result["tokens_per_s"] == pytest.approx(result["tokens"] / result["seconds"])
    assert result["model_flops_per_s"] == pytest.approx(2 * params * result["tokens_per_s"])
    assert result["mfu"] == pytest.approx(result["model_flops_per_s"] / 1e12)
    assert bench.scoring_throughput(engine, seq_len=16, batches=1, peak=None)["mfu"] is None


@pytest.mark.parametrize("name, expected", [
    ("NVIDIA H200", ("H200", 989e12)), ("NVIDIA H100 80GB HBM3", ("H100", 989e12)),
    ("NVIDIA A100-SXM4-80GB", ("A100", 312e12)), ("NVIDIA L40S", ("L40S", 362e12)), ("NVIDIA L4", ("L4", 121e12)),
    ("Tesla T4", None),
])
def test_assumed_peaks_by_gpu_name(name, expected):
    assert bench.peak_flops(name) == expected


def test_full_mode_uses_the_demo_dir_and_judges_the_suite_target(demo_env, monkeypatch, capsys):
    monkeypatch.setattr(bench, "FULL", bench.QUICK)  # the full demo's sizes would take minutes; the path is the same
    result = bench.run_bench(quick=False, device="cpu")
    assert result["demo"] == str(demo_env) and not result["quick"]
    met = result["suite"]["total_s"] <= bench.TARGET_SUITE_S and not result["suite"]["missing"]
    assert f"on the full demo pair on 2 CPU cores: {'met' if met else 'NOT met'}" in capsys.readouterr().out
