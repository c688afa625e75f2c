"""The bench's results as plain-text tables, each target printed with whether this run met it.

Targets are printed, never enforced (issue 19): timings depend on the machine and on what else runs on it,
so a test checks the identity of results, not speed.
"""

from __future__ import annotations

import math
from typing import Any

from lab.shell.bench.lm_eval_peer import LM_EVAL, LM_EVAL_ANSWERS
from lab.shell.bench.loops import GENERATE_LOOP
from lab.shell.bench.measure import OWN_LOOP
from lab.shell.bench.scaling import SUITE

TARGET_SPEEDUP = 10.0  # batched vs loop, scoring and REMIND, 2 CPU cores
TARGET_SUITE_S = 60.0  # five-attack suite on the full demo pair, 2 CPU cores
TARGET_MFU = 0.40  # scoring pass of the 1B-shaped model on an H200
TARGET_VS_LM_EVAL = 2.0  # ours vs lm-evaluation-harness on the same multiple-choice items, 2 CPU cores
TARGET_VS_GENERATE_LOOP = 3.0  # ours vs a batch-32 generate loop on the same prompts, 2 CPU cores
TARGET_PEAK_SHARE = 0.60  # the scoring pass's FLOP/s over the measured matmul peak
TARGET_FACTS_EXPONENT = 1.1  # suite time ~ facts ** k
WIDE_VOCABULARY = 32_000  # from here on (issue 27): faster than lm-eval and lighter, results identical
TARGETS = {"speedup": TARGET_SPEEDUP, "suite_seconds": TARGET_SUITE_S, "mfu": TARGET_MFU,
           "vs_lm_eval": TARGET_VS_LM_EVAL, "vs_generate_loop": TARGET_VS_GENERATE_LOOP,
           "peak_share": TARGET_PEAK_SHARE, "facts_exponent": TARGET_FACTS_EXPONENT,
           "wide_vocabulary": WIDE_VOCABULARY}


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _mem(reading: dict[str, Any] | None) -> str:
    """``peak (+growth over the measurement's start)`` in MB; CUDA peak after a slash when there is one."""
    if not reading:
        return "-"
    text = f"{reading['peak_rss_mb']:.0f} (+{reading['peak_rss_mb'] - reading['start_rss_mb']:.0f})"
    return text + (f" / cuda {reading['peak_cuda_mb']:.0f}" if reading.get("peak_cuda_mb") is not None else "")


def _table(rows: list[dict[str, Any]], name: tuple[str, int], ours: tuple[str, int], other: tuple[str, int],
           mem_ours: tuple[str, int], mem_other: tuple[str, int], ratio: str) -> list[str]:
    """A comparison table: header and one line per comparison, columns as (title, width)."""
    lines = [f"  {name[0]:<{name[1]}}{'items':>7}{ours[0]:>{ours[1]}}{other[0]:>{other[1]}}{'speedup':>9}  "
             f"{mem_ours[0]:<{mem_ours[1]}}{mem_other[0]:<{mem_other[1]}}agreement"]
    for c in rows:
        memory = c.get("memory") or {}
        lines.append(f"  {c['name']:<{name[1]}}{c['items']:>7}{c['batched_s']:>{ours[1]}.3f}"
                     f"{c['loop_s']:>{other[1]}.3f}{c['speedup']:>8{ratio}}x  "
                     f"{_mem(memory.get('ours')):<{mem_ours[1]}}{_mem(memory.get('other')):<{mem_other[1]}}"
                     f"{c['agreement']}{'' if c['agrees'] else '  MISMATCH'}")
    return lines


def _demo_comparisons(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The comparisons on the demo model (the realistic shapes have their own table)."""
    return [c for c in result["comparisons"] if (c.get("shape") or {}).get("shape", "demo") == "demo"]


def _comparison_lines(result: dict[str, Any]) -> list[str]:
    own = [c for c in _demo_comparisons(result) if c.get("other", OWN_LOOP) == OWN_LOOP]
    if not own:
        return []
    lines = [f"batched engine vs per-example loop (same inputs, best of {result['sizes']['repeats']}; "
             "peak RSS MB with the growth over its start in brackets):",
             *_table(own, ("path", 24), ("batched s", 11), ("loop s", 10), ("peak MB batched", 17),
                     ("peak MB loop", 15), ".1f")]
    gated = [c for c in own if c["name"] != "greedy generation"]
    return lines + [f"  target: batched >= {TARGET_SPEEDUP:.0f}x the loop for scoring and REMIND on 2 CPU cores: "
                    + ", ".join(f"{c['name']} {_met(c['speedup'] >= TARGET_SPEEDUP)}" for c in gated)]


def _peer_lines(result: dict[str, Any]) -> list[str]:
    peers = [c for c in _demo_comparisons(result) if c.get("other", OWN_LOOP) != OWN_LOOP]
    skipped = result.get("skipped", [])
    if not peers and not skipped:
        return []
    lines = [f"against the tools users would pick instead (same model, same items, best of "
             f"{result['sizes']['repeats']}; speedup = their time / ours):",
             *_table(peers, ("comparison", 42), ("ours s", 9), ("theirs s", 10), ("peak MB ours", 14),
                     ("peak MB theirs", 16), ".2f")]
    for c in peers:
        lines.append(f"  {c['name']}: theirs = {c['other']}")
        if c["name"] == LM_EVAL:
            rows = c["details"]["rows_scored_per_model"]
            lines.append(f"    forward rows per model: ours {rows['ours']}, lm-eval {rows['lm_eval']} (both share one "
                         f"forward among one-token continuations of a context: one per question); "
                         f"add_bos_token={c['details']['add_bos_token']} on both sides")
        if c["name"] == GENERATE_LOOP:
            lines.append(f"    max_new_tokens {c['details']['max_new_tokens']} both sides; engine batches "
                         f"{c['details']['engine_batches']} (token budget) vs "
                         f"{math.ceil(c['items'] / c['details']['batch_size'])} of {c['details']['batch_size']}")
    for s in skipped:
        lines.append(f"  {s['name']}: skipped, {s['reason']}")
    targets = {LM_EVAL: TARGET_VS_LM_EVAL, GENERATE_LOOP: TARGET_VS_GENERATE_LOOP}
    lines.append("  target: " + "; ".join(
        f"ours >= {targets[c['name']]:.0f}x {'lm-eval' if c['name'] == LM_EVAL else 'the batch-32 generate loop'} "
        f"with identical results on 2 CPU cores: {_met(c['speedup'] >= targets[c['name']] and c['agrees'])}"
        for c in peers if c["name"] in targets))
    return lines


def lighter(c: dict[str, Any]) -> bool:
    """Ours no heavier than theirs: neither at the peak nor in what the call adds over the memory it started at."""
    memory = c.get("memory") or {}
    ours, theirs = memory.get("ours"), memory.get("other")
    if not ours or not theirs:
        return False
    growth = [r["peak_rss_mb"] - r["start_rss_mb"] for r in (ours, theirs)]
    return ours["peak_rss_mb"] <= theirs["peak_rss_mb"] and growth[0] <= growth[1]


def wide_vocabulary_met(c: dict[str, Any]) -> bool:
    """The realistic-shape target for one comparison against lm-eval: faster, no heavier, identical results."""
    return c["speedup"] > 1 and lighter(c) and c["agrees"]


def _peer_of(c: dict[str, Any]) -> str:
    """A realistic-shape comparison's name without its shape: what it is compared against."""
    return c["name"].removesuffix(f", {c['shape']['label']}")


def _realistic_lines(result: dict[str, Any]) -> list[str]:
    """One block per realistic shape: its comparisons, then whether the wide-vocabulary target was met."""
    realistic = [c for c in result["comparisons"] if (c.get("shape") or {}).get("shape", "demo") != "demo"]
    if not realistic:
        return []
    lines = ["realistic shapes (random weights, float32; each family's tokenizer kind padded to its vocabulary; "
             f"speedup = their time / ours, best of the runs; peak RSS MB with the growth in brackets):"]
    by_shape: dict[str, list[dict[str, Any]]] = {}
    for c in realistic:
        by_shape.setdefault(c["shape"]["label"], []).append(c)
    for label, rows in by_shape.items():
        shape = rows[0]["shape"]
        lines.append(f"  {label}: {shape['parameters'] / 1e6:,.0f}M parameters, vocabulary {shape['vocab_size']:,}")
        lines += _table([{**c, "name": _peer_of(c)} for c in rows], ("comparison", 52),
                        ("ours s", 9), ("theirs s", 10), ("peak MB ours", 14), ("peak MB theirs", 16), ".2f")
    judged = [c for c in realistic if _peer_of(c) in (LM_EVAL, LM_EVAL_ANSWERS)
              and c["shape"]["vocab_size"] >= WIDE_VOCABULARY]
    missed = [c["name"] for c in judged if not wide_vocabulary_met(c)]
    lines.append(f"  target: on every vocabulary of {WIDE_VOCABULARY // 1000}k or more, ours faster than lm-eval on "
                 "multiple choice and multi-token log-likelihood, no heavier (peak and growth), identical results: "
                 + (_met(not missed) if judged else "not measured") + ("" if not missed else
                                                                       f" ({'; '.join(missed)})"))
    return lines


def _hardware_lines(result: dict[str, Any]) -> list[str]:
    peak, flop = result.get("peak"), result.get("scoring_pass")
    if not peak or not flop:
        return []
    return [f"hardware limit ({peak['dtype']}, {peak['threads']} threads): torch.matmul {peak['n']}^3 peak "
            f"{peak['flops_per_s'] / 1e9:.1f} GFLOP/s (best of {peak['repeats']}, measured in this run)",
            f"  scoring pass of the demo model ({flop['parameters'] / 1e6:.2f}M parameters, {flop['rows']} rows, "
            f"{flop['tokens']:,} tokens, {flop['padded_tokens']:,} with padding, {flop['batches']} batches): "
            f"{flop['seconds']:.3f} s, {flop['tokens_per_s']:,.0f} tokens/s, {flop['flops_per_s'] / 1e9:.2f} GFLOP/s "
            f"= {flop['share']:.1%} of the peak; peak MB {_mem(flop['memory'])}",
            f"  target: scoring pass >= {TARGET_PEAK_SHARE:.0%} of the measured matmul peak: "
            f"{_met(flop['share'] >= TARGET_PEAK_SHARE)}"
            + ("" if flop["share"] >= TARGET_PEAK_SHARE else
               " (the size scaling below shows the share a larger model reaches on the same engine)")]


def _scaling_lines(result: dict[str, Any]) -> list[str]:
    scaling = result.get("scaling")
    if not scaling:
        return []
    facts, models = scaling["facts"], scaling["model_size"]
    lines = ["scaling (growth exponent k of time ~ size^k, log-log least squares; 1.0 is linear):",
             f"  attack suite vs facts ({', '.join(facts['audits'])}):",
             f"  {'':<22}{'facts':>8}{'per split':>10}{'seconds':>9}  peak MB"]
    for p in facts["points"]:
        failed = f"  failed: {', '.join(p['failed'])}" if p["failed"] else ""
        lines.append(f"  {'':<22}{p['facts']:>8}{p['limit']:>10}{p['seconds']:>9.2f}  {_mem(p['memory'])}{failed}")
    lines.append(f"  suite exponent in facts k = {facts['exponent']:.2f}; target k <= {TARGET_FACTS_EXPONENT}: "
                 f"{_met(facts['exponent'] <= TARGET_FACTS_EXPONENT)}")
    lines.append(f"  scoring pass vs model size (random Llama shapes, {models['rows']} rows x {models['seq_len']} tokens):")
    lines.append(f"  {'model':<8}{'parameters':>12}{'seconds':>9}{'tokens/s':>11}{'GFLOP/s':>9}{'of peak':>9}  peak MB")
    for p in models["points"]:
        lines.append(f"  {p['model']:<8}{p['parameters']:>12,}{p['seconds']:>9.3f}{p['tokens_per_s']:>11,.0f}"
                     f"{p['flops_per_s'] / 1e9:>9.2f}{p['share']:>9.1%}  {_mem(p['memory'])}")
    lines.append(f"  scoring-pass exponent in parameters k = {models['exponent']:.2f} (below 1: fixed per-batch costs "
                 "dominate the small models)")
    return lines


def _suite_lines(suite: dict[str, Any], quick: bool) -> list[str]:
    lines = [f"five-attack suite via the runner (base vs npo, {suite['facts']} facts; models loaded in "
             f"{suite['load_s']:.1f} s; the plain-question baseline is paid by the first audit):",
             f"  {'audit':<14}{'seconds':>9}  {'status':<10}peak MB"]
    for name in SUITE:
        row = suite["audits"].get(name)
        if row:
            error = f": {row['error']}" if row["error"] else ""
            lines.append(f"  {name:<14}{row['seconds']:>9.2f}  {row['status']:<10}{_mem(row.get('memory'))}{error}")
        else:
            lines.append(f"  {name:<14}{'-':>9}  missing (module not in this checkout)")
    lines.append(f"  {'total':<14}{suite['total_s']:>9.2f}  {'':<10}{_mem(suite.get('memory'))}")
    target = f"  target: <= {TARGET_SUITE_S:.0f} s on the full demo pair on 2 CPU cores"
    if quick:
        return lines + [f"{target} (not measured by --quick)"]
    return lines + [f"{target}: {_met(suite['total_s'] <= TARGET_SUITE_S and not suite['missing'])}"]


def _mfu_lines(mfu: dict[str, Any]) -> list[str]:
    if "skipped" in mfu:
        return [f"MFU (1B-shaped model, scoring pass): skipped, {mfu['skipped']}"]
    lines = [f"MFU (Llama-3.2-1B shape, random bf16 weights, {mfu['parameters'] / 1e9:.2f}B parameters, "
             f"{mfu['rows']} rows x {mfu['seq_len']} tokens on {mfu['device_name']}): "
             f"{mfu['tokens_per_s']:,.0f} tokens/s, {mfu['model_flops_per_s'] / 1e12:.1f} TFLOP/s, "
             f"peak MB {_mem(mfu.get('memory'))}"]
    measured = mfu["measured_peak"]
    lines.append(f"  {mfu['share_of_measured_peak']:.1%} of this GPU's measured bf16 matmul peak "
                 f"({measured['flops_per_s'] / 1e12:.0f} TFLOP/s, torch.matmul {measured['n']}^3)")
    if mfu["mfu"] is None:
        return lines + ["  MFU: n/a (no assumed peak for this GPU)"]
    return lines + [f"  MFU {mfu['mfu']:.1%} of an assumed {mfu['peak_flops'] / 1e12:.0f} TFLOP/s dense bf16 peak "
                    f"({mfu['peak_assumed_for']} datasheet; an assumption)",
                    f"  target: >= {TARGET_MFU:.0%} on H200: {_met(mfu['mfu'] >= TARGET_MFU)}"]


def format_result(result: dict[str, Any]) -> str:
    """The benchmark as plain-text tables, with each target and whether this run met it."""
    what = ("realistic shapes only" if result.get("realistic_only") else
            f"{'quick: tiny demo' if result['quick'] else 'full demo'} at {result['demo']}")
    head = (f"Unlearning Audit Lab bench ({what}) on {result['device']}, {result['torch_threads']} torch threads"
            + (f", OMP_WAIT_POLICY={result['omp_wait_policy']}" if result.get("omp_wait_policy") else "")
            + (f", {result['dtype']}" if result.get("dtype") else ""))
    lines = [head]
    if result.get("memory_method"):
        lines.append(f"memory: {result['memory_method']}")
    sections = [_comparison_lines(result), _peer_lines(result), _realistic_lines(result), _hardware_lines(result),
                _suite_lines(result["suite"], result["quick"]) if "suite" in result else [], _scaling_lines(result),
                _mfu_lines(result["mfu"]) if "mfu" in result else []]
    for section in sections:
        if section:
            lines += ["", *section]
    if result.get("bench_seconds") is not None:
        lines += ["", f"bench wall time {result['bench_seconds']:.1f} s"]
    return "\n".join(lines)
