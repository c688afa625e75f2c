"""How the cost grows: the attack suite at 1x, 2x and 4x the facts, the scoring pass at three model sizes.

Each growth exponent is k of time ~ size^k, the least-squares slope on log-log axes (1.0 is linear).  The
suite runs through the runner exactly as ``python -m lab run`` does, into a throwaway store.
"""

from __future__ import annotations

import gc
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from audits import REGISTRY, available, get_audit
from lab.core.store import Store
from lab.shell.bench.hardware import random_engine, scoring_pass
from lab.shell.bench.measure import growth_exponent, memory_meter, peak_of

SUITE = tuple(name for name in REGISTRY if get_audit(name).suite)  # the design's five attacks
# Random-weight Llama shapes of about 1M, 10M and 100M parameters (tied embeddings), for the size scaling.
SCALE_SHAPES = {
    "1M": dict(vocab_size=2048, hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=4, head_dim=32, max_position_embeddings=1024, tie_word_embeddings=True),
    "10M": dict(vocab_size=8192, hidden_size=320, intermediate_size=864, num_hidden_layers=6, num_attention_heads=5,
                num_key_value_heads=5, head_dim=64, max_position_embeddings=1024, tie_word_embeddings=True),
    "100M": dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=11,
                 num_attention_heads=12, num_key_value_heads=12, head_dim=64, max_position_embeddings=1024,
                 tie_word_embeddings=True),
}


@dataclass
class SuiteTiming:
    """Wall time of the attack suite through the runner, per audit (each with its peak memory)."""

    facts: int
    load_s: float
    total_s: float
    audits: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> seconds, status, error, memory
    missing: list[str] = field(default_factory=list)
    limit: int | None = None
    memory: dict[str, float | None] = field(default_factory=dict)  # peak over the whole suite
    requested: list[str] = field(default_factory=list)  # the audits asked for (SUITE, or a subset of it)


def model_scaling(device: str, dtype: torch.dtype, rows: int, seq_len: int, peak: float,
                  repeats: int) -> dict[str, Any]:
    """The scoring pass of random Llama shapes of about 1M, 10M and 100M parameters on the same token count."""
    points = []
    for label, shape in SCALE_SHAPES.items():
        engine = random_engine(shape, device, dtype)
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, shape["vocab_size"], (rows, seq_len), generator=generator).tolist()
        engine.token_scores(ids[:1], [1])  # warm-up
        points.append(scoring_pass(engine, ids, [1] * rows, peak, repeats, label))
        del engine
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return {"rows": rows, "seq_len": seq_len, "points": points,
            "exponent": growth_exponent([p["parameters"] for p in points], [p["seconds"] for p in points])}


def facts_scaling(demo: Path, device: str, base_limit: int, known: Sequence[SuiteTiming] = (),
                  audits: Sequence[str] | None = None) -> dict[str, Any]:
    """The suite's wall time at 1x, 2x and 4x ``base_limit`` facts per split (a timing already made is reused).

    ``audits``: a fixed subset of the suite to time instead of all of it (None: the whole suite).
    """
    points = []
    wanted = list(audits or SUITE)
    for factor in (1, 2, 4):
        limit = base_limit * factor
        timing = next((t for t in known if t.limit == limit and t.requested == wanted), None) \
            or suite_timing(demo, device, limit, wanted)
        points.append({"factor": factor, "limit": limit, "facts": timing.facts, "seconds": timing.total_s,
                       "memory": timing.memory, "failed": [a for a, row in timing.audits.items()
                                                           if row["status"] != "complete"]})
    return {"audits": wanted, "points": points,
            "exponent": growth_exponent([p["facts"] for p in points], [p["seconds"] for p in points])}


def suite_timing(demo: Path, device: str, limit: int | None, audits: Sequence[str] | None = None) -> SuiteTiming:
    """The five attacks (or ``audits`` of them) through the runner on the demo pair (base vs NPO) into a
    throwaway store."""
    from lab.shell.runner import execute, prepare
    from lab.shell.spec import RunSpec, build_spec

    wanted = list(audits or SUITE)
    present = [a for a in wanted if a in available()]
    spec = build_spec(RunSpec, {"base": str(demo / "models" / "base"), "unlearned": str(demo / "models" / "npo"),
                                "audits": present, "facts": str(demo / "facts.jsonl"), "device": device,
                                "limit": limit}, "the bench")
    start = time.perf_counter()
    prepared = prepare(spec)
    load_s = time.perf_counter() - start
    meter = memory_meter()
    readings: list[dict[str, float | None]] = []
    per_audit: dict[str, dict[str, float | None]] = {}

    def on_event(event: Any) -> None:  # segments: before an audit, each audit, between audits, after the last
        reading = meter.mark(device)
        readings.append(reading)
        if event.status != "running":
            per_audit[event.audit] = reading

    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
        meter.mark(device)
        start = time.perf_counter()
        outcome = execute(prepared, store, on_event=on_event) if present else None
        total_s = time.perf_counter() - start
        readings.append(meter.mark(device))
        rows = store.audits(outcome.run_id).to_dict("records") if outcome else []
    timings = {r["audit"]: {"seconds": (r["finished_at"] - r["started_at"]).total_seconds(), "status": r["status"],
                           "error": (str(r["error"]).splitlines()[0] if isinstance(r["error"], str) else None),
                           "memory": per_audit.get(r["audit"])}
              for r in rows}
    return SuiteTiming(len(prepared.facts), load_s, total_s, timings, [a for a in wanted if a not in present], limit,
                       peak_of(readings), wanted)
