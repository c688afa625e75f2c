"""``python -m lab bench``: how much the batched engine buys, and how long the attack suite takes.

Three measurements, each on the same inputs both ways:

- answer scoring (:meth:`Engine.answer_scores`) against a per-example loop,
- greedy generation (:meth:`Engine.generate`) against a per-example loop,
- REMIND neighbor losses (:meth:`Engine.row_losses` on the variants that
  :mod:`audits.remind.neighbors` builds, as the ``remind`` audit does) against a loop.

The loops are written the way research scripts usually are: one model forward
(or one ``generate``) per example, no padding, no batching.  They are the
only place in the lab that calls a model outside the engine, on purpose: they
are the baseline being measured.  Results must agree (log-probs within a
tolerance, identical greedy text), and the speedup of each path is printed.

Then the wall time of the five-attack suite (reasoning, keywords,
quantization, remind, surrogates) through :func:`lab.shell.runner.run_audits` on
the demo pair, per audit; an audit whose module is missing is reported as
missing.  On CUDA, a randomly initialized model with Llama-3.2-1B's shape
gives tokens per second and the model FLOP utilization of the scoring pass.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch

from audits import available, get_audit
from lab.core import settings
from lab.core.engine import Engine, ModelInfo
from lab.core.facts import Fact, load_facts
from lab.core.files import write_text
from lab.core.models import ModelPair, load_pair, pick_device
from lab.core.store import Store, to_json

T = TypeVar("T")
SUITE = ("reasoning", "keywords", "quantization", "remind", "surrogates")
TARGET_SPEEDUP = 10.0  # batched vs loop, scoring and REMIND, 2 CPU cores
TARGET_SUITE_S = 60.0  # five-attack suite on the full demo pair, 2 CPU cores
TARGET_MFU = 0.40  # scoring pass of the 1B-shaped model on an H200
# Peak dense bf16 tensor throughput from the vendors' datasheets (an assumption: clocks, power
# limits and SKU variants move the real peak).  Longer names first: "L40S" must not match "L4".
PEAK_BF16_FLOPS = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12))
# Llama-3.2-1B's config.json values, written here so nothing is downloaded (random weights; the
# llama3 rope scaling is left out: it changes no FLOP count).
LLAMA_32_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                   num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                   rope_theta=500000.0, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=True)


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    scoring: int  # facts scored (question -> answer log-probs)
    generation: int  # prompts answered greedily
    remind_facts: int  # facts whose neighbor variants are scored
    repeats: int  # each timing is the best of this many runs
    suite_limit: int | None  # facts per split in the attack suite (None: all)
    new_tokens: int = 24


QUICK = Sizes(scoring=96, generation=24, remind_facts=12, repeats=3, suite_limit=3)
FULL = Sizes(scoring=1200, generation=200, remind_facts=100, repeats=3, suite_limit=None)


@dataclass
class Comparison:
    """One path measured batched and as a per-example loop, on the same inputs."""

    name: str
    items: int
    batched_s: float
    loop_s: float
    agreement: str
    agrees: bool

    @property
    def speedup(self) -> float:
        return self.loop_s / self.batched_s if self.batched_s > 0 else math.inf


@dataclass
class SuiteTiming:
    """Wall time of the attack suite through the runner, per audit."""

    facts: int
    load_s: float
    total_s: float
    audits: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> seconds, status, error
    missing: list[str] = field(default_factory=list)


# ------------------------------------------------------------------- timing
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], T], repeats: int, device: str) -> tuple[float, T]:
    """Best wall time of ``repeats`` calls (the first also pays any warm-up) and the last result."""
    best, result = math.inf, None
    for _ in range(max(1, repeats)):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result  # type: ignore[return-value]


# ------------------------------------------------------ per-example loops
@torch.no_grad()
def loop_token_logprobs(engine: Engine, rows: Sequence[Sequence[int]], starts: Sequence[int]) -> list[np.ndarray]:
    """Baseline: log p(row[t] | row[:t]) for t >= start, one unpadded forward per example."""
    out = []
    for row, start in zip(rows, starts):
        ids = torch.as_tensor([row], device=engine.device)
        logp = torch.log_softmax(engine.model(input_ids=ids).logits[0, start - 1:-1].float(), dim=-1)
        out.append(logp.gather(-1, ids[0, start:, None]).squeeze(-1).cpu().numpy())
    return out


@torch.no_grad()
def loop_generate(engine: Engine, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Baseline: greedy ``generate`` on one prompt at a time, no padding."""
    out = []
    for prompt in prompts:
        ids = torch.as_tensor([engine.encode(prompt)], device=engine.device)
        new = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                    do_sample=False, pad_token_id=engine.pad_id)[0, ids.shape[1]:]
        out.append(engine.tokenizer.decode(new, skip_special_tokens=True).strip())
    return out


def _tolerance(engine: Engine) -> float:
    """How far batched and loop log-probs may differ: padding reorders float sums (wider in half precision)."""
    return 1e-4 if engine.info.dtype == "float32" else 5e-2


def _logprob_agreement(engine: Engine, batched: Sequence[float], loop: Sequence[float]) -> tuple[str, bool]:
    worst = float(np.max(np.abs(np.asarray(batched) - np.asarray(loop)))) if len(batched) else 0.0
    return f"max |diff| {worst:.1e} (tol {_tolerance(engine):.0e})", worst <= _tolerance(engine)


# ------------------------------------------------------------ measurements
def compare_scoring(engine: Engine, facts: list[Fact], repeats: int) -> Comparison:
    """Mean answer log-prob of each fact after its plain question."""
    prompts, answers = [engine.prompt(f.question) for f in facts], [f.answer for f in facts]

    def loop() -> list[float]:
        pairs = [engine.encode_continuation(p, a) for p, a in zip(prompts, answers)]
        scores = loop_token_logprobs(engine, [p + t for p, t in pairs], [len(p) for p, _ in pairs])
        return [float(s.mean()) for s in scores]

    batched_s, batched = timed(lambda: engine.answer_logprobs(prompts, answers), repeats, engine.info.device)
    loop_s, looped = timed(loop, repeats, engine.info.device)
    return Comparison("answer scoring", len(facts), batched_s, loop_s, *_logprob_agreement(engine, batched, looped))


def compare_generation(engine: Engine, facts: list[Fact], new_tokens: int, repeats: int) -> Comparison:
    """Greedy answers to the plain questions."""
    prompts = [engine.prompt(f.question) for f in facts]
    batched_s, batched = timed(lambda: engine.generate(prompts, new_tokens), repeats, engine.info.device)
    loop_s, looped = timed(lambda: loop_generate(engine, prompts, new_tokens), repeats, engine.info.device)
    same = sum(a == b for a, b in zip(batched, looped))
    return Comparison("greedy generation", len(prompts), batched_s, loop_s, f"{same}/{len(prompts)} identical texts",
                      same == len(prompts))


def compare_remind(engine: Engine, facts: list[Fact], repeats: int) -> Comparison:
    """Mean NLL of each REMIND neighbor variant (nearest input-embedding token swaps, audits.remind.neighbors)."""
    rows = get_audit("remind")().workload(engine, facts)

    def loop() -> list[float]:
        return [-float(s.mean()) for s in loop_token_logprobs(engine, rows, [1] * len(rows))]

    batched_s, batched = timed(lambda: engine.row_losses(rows), repeats, engine.info.device)
    loop_s, looped = timed(loop, repeats, engine.info.device)
    return Comparison("REMIND neighbor losses", len(rows), batched_s, loop_s,
                      *_logprob_agreement(engine, batched, looped))


def suite_timing(demo: Path, device: str, limit: int | None) -> SuiteTiming:
    """The five attacks through the runner on the demo pair (base vs NPO) into a throwaway store."""
    from lab.shell.runner import RunSpec, execute, prepare

    present = [a for a in SUITE if a in available()]
    spec = RunSpec(base=str(demo / "models" / "base"), unlearned=str(demo / "models" / "npo"), audits=present,
                   facts=str(demo / "facts.jsonl"), device=device, limit=limit)
    start = time.perf_counter()
    prepared = prepare(spec)
    load_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
        start = time.perf_counter()
        outcome = execute(prepared, store) if present else None
        total_s = time.perf_counter() - start
        rows = store.audits(outcome.run_id).to_dict("records") if outcome else []
    audits = {r["audit"]: {"seconds": (r["finished_at"] - r["started_at"]).total_seconds(), "status": r["status"],
                           "error": (str(r["error"]).splitlines()[0] if isinstance(r["error"], str) else None)}
              for r in rows}
    return SuiteTiming(len(prepared.facts), load_s, total_s, audits, [a for a in SUITE if a not in present])


# ------------------------------------------------------------------- MFU
def peak_flops(device_name: str) -> tuple[str, float] | None:
    """Assumed peak dense bf16 FLOP/s of a GPU, by name (None when the GPU is not in the table)."""
    return next(((name, peak) for name, peak in PEAK_BF16_FLOPS if name in device_name.upper()), None)


def random_engine(shape: dict[str, Any], device: str, dtype: torch.dtype) -> Engine:
    """An engine around a randomly initialized Llama of ``shape`` (no tokenizer: rows are token ids)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**shape)).to(dtype)
    info = ModelInfo(ref="random", path="", content_hash="", device=device, dtype=str(dtype).replace("torch.", ""),
                     parameters=sum(p.numel() for p in model.parameters()), architecture=type(model).__name__)
    return Engine(model, SimpleNamespace(pad_token_id=0), info)  # type: ignore[arg-type]


def scoring_throughput(engine: Engine, seq_len: int, batches: int, peak: float | None) -> dict[str, Any]:
    """Tokens per second of the batched scoring pass, and MFU = 2 x parameters x tokens/s / peak.

    The 2 x parameters FLOPs per token count the forward matmuls only (attention score FLOPs and the
    log-softmax are left out), the usual convention for model FLOP utilization.
    """
    vocab = engine.model.config.vocab_size
    count = max(1, batches * engine.policy.max_tokens // seq_len)
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(0, vocab, (count, seq_len), generator=generator).tolist()
    engine.token_scores(rows[: max(1, count // batches)], [1] * max(1, count // batches))  # warm-up
    seconds, _ = timed(lambda: engine.token_scores(rows, [1] * count), 1, engine.info.device)
    tokens = count * seq_len
    rate = tokens / seconds
    return {"parameters": engine.info.parameters, "rows": count, "seq_len": seq_len, "tokens": tokens,
            "seconds": seconds, "tokens_per_s": rate, "model_flops_per_s": 2 * engine.info.parameters * rate,
            "peak_flops": peak, "mfu": 2 * engine.info.parameters * rate / peak if peak else None}


def mfu_probe(device: str, seq_len: int = 512, batches: int = 4) -> dict[str, Any]:
    """The scoring pass of a 1B-shaped model (Llama-3.2-1B config, random weights) in bf16 on CUDA."""
    if not device.startswith("cuda"):
        return {"skipped": "needs a CUDA device"}
    name = torch.cuda.get_device_name(torch.device(device))
    known = peak_flops(name)
    engine = random_engine(LLAMA_32_1B, device, torch.bfloat16)
    result = scoring_throughput(engine, seq_len, batches, known[1] if known else None)
    del engine
    torch.cuda.empty_cache()
    return {"device_name": name, "peak_assumed_for": known[0] if known else None, **result}


# ------------------------------------------------------------------ driver
def demo_for(quick: bool) -> Path:
    """The tiny demo in the cache (``--quick``) or the full demo, built first if missing."""
    from lab.demo.build import build_demo, read_manifest

    if quick:
        return build_demo("tiny", settings.cache_dir() / "demo-tiny")
    root = settings.demo_dir()
    if read_manifest(root) is None:
        print(f"building the full demo in {root} (first use)...", file=sys.stderr)
        build_demo("full", root)
    return root


def run_bench(quick: bool = False, device: str = "auto", json_out: str | None = None) -> dict[str, Any]:
    """Every measurement, printed as tables and returned (and written to ``json_out``) as data."""
    sizes = QUICK if quick else FULL
    dev = pick_device(device)
    root = demo_for(quick)
    facts = load_facts(root / "facts.jsonl").facts
    pair: ModelPair = load_pair(str(root / "models" / "base"), str(root / "models" / "npo"), device=dev)
    engine = pair.unlearned
    comparisons = [
        compare_scoring(engine, facts[: sizes.scoring], sizes.repeats),
        compare_generation(engine, facts[: sizes.generation], sizes.new_tokens, sizes.repeats),
        compare_remind(engine, facts[: sizes.remind_facts], sizes.repeats),
    ]
    del pair, engine
    suite = suite_timing(root, dev, sizes.suite_limit)
    result = {
        "quick": quick, "demo": str(root), "device": dev, "torch_threads": torch.get_num_threads(),
        "sizes": asdict(sizes),
        "comparisons": [{**asdict(c), "speedup": c.speedup} for c in comparisons],
        "suite": asdict(suite),
        "mfu": mfu_probe(dev),
        "targets": {"speedup": TARGET_SPEEDUP, "suite_seconds": TARGET_SUITE_S, "mfu": TARGET_MFU},
    }
    print(format_result(result))
    if json_out:
        write_json(result, Path(json_out))
    return result


def write_json(result: dict[str, Any], path: Path) -> None:
    """The results as indented JSON (NaN and infinities as null)."""
    write_text(path, json.dumps(json.loads(to_json(result)), indent=2))


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _comparison_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"batched engine vs per-example loop (same inputs, best of {result['sizes']['repeats']}):",
             f"  {'path':<24}{'items':>7}{'batched s':>11}{'loop s':>10}{'speedup':>9}  agreement"]
    for c in result["comparisons"]:
        lines.append(f"  {c['name']:<24}{c['items']:>7}{c['batched_s']:>11.3f}{c['loop_s']:>10.3f}"
                     f"{c['speedup']:>8.1f}x  {c['agreement']}{'' if c['agrees'] else '  MISMATCH'}")
    gated = [c for c in result["comparisons"] if c["name"] != "greedy generation"]
    return lines + [f"  target: batched >= {TARGET_SPEEDUP:.0f}x the loop for scoring and REMIND on 2 CPU cores: "
                    + ", ".join(f"{c['name']} {_met(c['speedup'] >= TARGET_SPEEDUP)}" for c in gated)]


def _suite_lines(suite: dict[str, Any], quick: bool) -> list[str]:
    lines = [f"five-attack suite via the runner (base vs npo, {suite['facts']} facts; models loaded in "
             f"{suite['load_s']:.1f} s; the plain-question baseline is paid by the first audit):",
             f"  {'audit':<14}{'seconds':>9}  status"]
    for name in SUITE:
        row = suite["audits"].get(name)
        if row:
            error = f": {row['error']}" if row["error"] else ""
            lines.append(f"  {name:<14}{row['seconds']:>9.2f}  {row['status']}{error}")
        else:
            lines.append(f"  {name:<14}{'-':>9}  missing (module not in this checkout)")
    lines.append(f"  {'total':<14}{suite['total_s']:>9.2f}")
    target = f"  target: <= {TARGET_SUITE_S:.0f} s on the full demo pair on 2 CPU cores"
    if quick:
        return lines + [f"{target} (not measured by --quick)"]
    return lines + [f"{target}: {_met(suite['total_s'] <= TARGET_SUITE_S and not suite['missing'])}"]


def _mfu_lines(mfu: dict[str, Any]) -> list[str]:
    if "skipped" in mfu:
        return [f"MFU (1B-shaped model, scoring pass): skipped, {mfu['skipped']}"]
    lines = [f"MFU (Llama-3.2-1B shape, random bf16 weights, {mfu['parameters'] / 1e9:.2f}B parameters, "
             f"{mfu['rows']} rows x {mfu['seq_len']} tokens on {mfu['device_name']}): "
             f"{mfu['tokens_per_s']:,.0f} tokens/s, {mfu['model_flops_per_s'] / 1e12:.1f} TFLOP/s"]
    if mfu["mfu"] is None:
        return lines + ["  MFU: n/a (no assumed peak for this GPU)"]
    return lines + [f"  MFU {mfu['mfu']:.1%} of an assumed {mfu['peak_flops'] / 1e12:.0f} TFLOP/s dense bf16 peak "
                    f"({mfu['peak_assumed_for']} datasheet; an assumption)",
                    f"  target: >= {TARGET_MFU:.0%} on H200: {_met(mfu['mfu'] >= TARGET_MFU)}"]


def format_result(result: dict[str, Any]) -> str:
    """The benchmark as plain-text tables, with each target and whether this run met it."""
    head = (f"Unlearning Audit Lab bench ({'quick: tiny demo' if result['quick'] else 'full demo'} at "
            f"{result['demo']}) on {result['device']}, {result['torch_threads']} torch threads")
    lines = [head, "", *_comparison_lines(result), "", *_suite_lines(result["suite"], result["quick"]), "",
             *_mfu_lines(result["mfu"])]
    return "\n".join(lines)
