"""The bench driver: every measurement in one run, on one model pair and one set of items, then the tables.

The full bench also runs the comparisons on realistic shapes (:mod:`.shapes`: 32k-256k vocabularies and
Llama-3.2-1B's depth and width); ``--quick`` leaves them out (minutes on CPU), ``--realistic`` runs only them.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from lab.core import settings
from lab.core.facts import load_facts
from lab.core.files import write_text
from lab.core.models import ModelPair, load_pair, pick_device
from lab.core.store import to_json
from lab.shell.bench.hardware import (
    demo_scoring_pass,
    matmul_peak,
    mfu_probe,
    rebase_shares,
)
from lab.shell.bench.lm_eval_peer import LM_EVAL, compare_multiple_choice
from lab.shell.bench.loops import compare_generation, compare_remind, compare_scoring
from lab.shell.bench.measure import Comparison, memory_meter
from lab.shell.bench.report import TARGETS, format_result
from lab.shell.bench.scaling import facts_scaling, model_scaling, suite_timing
from lab.shell.bench.shapes import FULL_SHAPES, Shape, model_shape, realistic_comparisons, shapes_json


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    scoring: int  # facts scored (question -> answer log-probs)
    generation: int  # prompts answered greedily
    remind_facts: int  # facts whose neighbor variants are scored
    repeats: int  # each timing is the best of this many runs
    suite_limit: int | None  # facts per split in the attack suite (None: all)
    new_tokens: int = 24
    multiple_choice: int = 48  # demo facts turned into multiple-choice questions (both models score them)
    scale_limit: int = 3  # facts per split of the suite at 1x (then 2x and 4x)
    scale_rows: int = 4  # rows of the model-size scoring pass (random token ids)
    scale_seq: int = 64  # tokens per row of the model-size scoring pass
    scale_repeats: int = 1  # the model-size timings are the best of this many runs
    scale_audits: tuple[str, ...] | None = None  # the suite's audits the facts scaling times (None: all five)
    matmul_n: int = 2048  # the peak is torch.matmul of two n x n matrices
    shapes: tuple[Shape, ...] = ()  # realistic vocabularies and widths (random weights), each against the peers


QUICK = Sizes(scoring=96, generation=24, remind_facts=12, repeats=3, suite_limit=3, multiple_choice=48,
              scale_limit=3, scale_rows=4, scale_seq=64, scale_repeats=1)
FULL = Sizes(scoring=1200, generation=200, remind_facts=100, repeats=3, suite_limit=None, multiple_choice=1200,
             scale_limit=30, scale_rows=16, scale_seq=256, scale_repeats=2, shapes=FULL_SHAPES)


def demo_for(quick: bool) -> Path:
    """The tiny demo in the cache (``--quick``) or the full demo, built first if missing."""
    from lab.demo.build import build_demo, read_manifest

    if quick:
        return build_demo("tiny", settings.cache_dir() / "demo-tiny")
    root = settings.demo_dir("full")
    if read_manifest(root) is None:
        print(f"building the full demo in {root} (first use)...", file=sys.stderr)
        build_demo("full", root)
    return root


def _comparison_json(c: Comparison) -> dict[str, Any]:
    return {**asdict(c), "speedup": c.speedup, "ours_s": c.batched_s, "other_s": c.loop_s}


def run_bench(quick: bool = False, device: str = "auto", json_out: str | None = None,
              realistic_only: bool = False) -> dict[str, Any]:
    """Every measurement, printed as tables and returned (and written to ``json_out``) as data.

    ``realistic_only``: only the comparisons on realistic shapes (their full sizes; no demo needed).
    """
    started = time.perf_counter()
    sizes = QUICK if quick and not realistic_only else FULL
    dev = pick_device(device)
    meter = memory_meter()
    if realistic_only:
        result: dict[str, Any] = {"quick": False, "realistic_only": True, "device": dev,
                                  "torch_threads": torch.get_num_threads(), "dtype": "float32",
                                  "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                                  "memory_method": meter.method, "sizes": asdict(sizes), "comparisons": [],
                                  "skipped": []}
    else:
        result = demo_measurements(sizes, dev, quick)
    result["shapes"] = shapes_json(sizes.shapes)
    result["comparisons"] += [_comparison_json(c) for c in realistic_comparisons(
        sizes.shapes, dev, sizes.new_tokens, sizes.repeats, lambda label: print(f"bench: {label}", file=sys.stderr))]
    result["targets"] = TARGETS
    result["bench_seconds"] = time.perf_counter() - started
    print(format_result(result))
    if json_out:
        write_json(result, Path(json_out))
    return result


def demo_measurements(sizes: Sizes, dev: str, quick: bool) -> dict[str, Any]:
    """Everything measured on the demo: comparisons, hardware share, suite, scaling, MFU."""
    root = demo_for(quick)
    facts = load_facts(root / "facts.jsonl").facts
    meter = memory_meter()
    pair: ModelPair = load_pair(str(root / "models" / "base"), str(root / "models" / "npo"), device=dev)
    engine = pair.unlearned
    dtype = engine.model.dtype
    first_peak = matmul_peak(dev, dtype, sizes.matmul_n, sizes.repeats + 2)
    scoring = compare_scoring(engine, facts[: sizes.scoring], sizes.repeats)
    generation, versus_loop = compare_generation(engine, facts[: sizes.generation], sizes.new_tokens, sizes.repeats)
    remind = compare_remind(engine, facts[: sizes.remind_facts], sizes.repeats)
    versus_lm_eval = compare_multiple_choice(pair, facts, sizes.multiple_choice, sizes.repeats)
    skipped = [] if isinstance(versus_lm_eval, Comparison) else [{"name": LM_EVAL, "reason": versus_lm_eval}]
    demo_shape = {**model_shape(engine), "shape": "demo"}
    comparisons = [replace(c, shape=demo_shape) for c in
                   (scoring, generation, remind, *([versus_lm_eval] if not skipped else []), versus_loop)]
    flop_share = demo_scoring_pass(engine, facts[: sizes.scoring], first_peak["flops_per_s"], sizes.repeats)
    del pair, engine
    gc.collect()
    suite = suite_timing(root, dev, sizes.suite_limit)
    facts_scale = facts_scaling(root, dev, sizes.scale_limit, [suite], sizes.scale_audits)
    model_scale = model_scaling(dev, dtype, sizes.scale_rows, sizes.scale_seq, first_peak["flops_per_s"],
                                sizes.scale_repeats)
    # The peak again at the end: a background burst during the first measurement must not inflate shares.
    last_peak = matmul_peak(dev, dtype, sizes.matmul_n, sizes.repeats + 2)
    peak = max(first_peak, last_peak, key=lambda p: p["flops_per_s"])
    peak["measurements_gflops"] = [first_peak["flops_per_s"] / 1e9, last_peak["flops_per_s"] / 1e9]
    rebase_shares([flop_share, *model_scale["points"]], peak["flops_per_s"])
    return {
        "quick": quick, "demo": str(root), "device": dev, "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "dtype": str(dtype).replace("torch.", ""), "memory_method": meter.method,
        "sizes": asdict(sizes),
        "comparisons": [_comparison_json(c) for c in comparisons],
        "skipped": skipped,
        "suite": asdict(suite),
        "peak": peak,
        "scoring_pass": flop_share,
        "scaling": {"facts": facts_scale, "model_size": model_scale},
        "mfu": mfu_probe(dev),
    }


def write_json(result: dict[str, Any], path: Path) -> None:
    """The results as indented JSON (NaN and infinities as null)."""
    write_text(path, json.dumps(json.loads(to_json(result)), indent=2))
