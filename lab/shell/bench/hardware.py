"""How close the batched scoring pass comes to the hardware limit.

The limit is measured here, not looked up: the best time of ``torch.matmul`` on two n x n matrices in the
model's dtype with the process's thread count is this machine's dense peak.  The scoring pass's achieved
FLOP/s counts 2 x parameters x real tokens (padding excluded), the usual model-FLOP convention (Kaplan et
al.; PaLM's MFU), so attention-score FLOPs and the softmax count as overhead.  On CUDA the same pass of a
model with Llama-3.2-1B's shape is also set against the datasheet's bf16 peak (MFU), as the GPU check
(``python -m lab gpucheck``, scripts/gpu_check.sh) does.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Sequence

import torch

from lab.core.batching import plan_batches
from lab.core.engine import Engine, ModelInfo
from lab.core.facts import Fact
from lab.shell.bench.measure import measured, timed
from lab.shell.gpucheck import LLAMA_32_1B, PEAK_BF16_FLOPS


def matmul_peak(device: str, dtype: torch.dtype, n: int, repeats: int) -> dict[str, Any]:
    """This machine's dense matmul throughput: best time of ``torch.matmul`` on two n x n matrices."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up (thread pool, kernels)
    seconds, _ = timed(lambda: torch.matmul(a, b), repeats, device)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(), "repeats": repeats,
            "seconds": seconds, "flops_per_s": 2 * n**3 / seconds}


def scoring_pass(engine: Engine, rows: list[list[int]], starts: list[int], peak: float, repeats: int,
                 label: str) -> dict[str, Any]:
    """The batched scoring pass (:meth:`Engine.token_scores` on ready token rows): FLOP/s and share of ``peak``.

    FLOPs are 2 x parameters x tokens (real tokens fed, not padding), the usual model-FLOP convention; a row's
    last token is only a target, never fed.
    """
    device = engine.info.device
    seconds, _, memory = measured(lambda: engine.token_scores(rows, starts), repeats, device)
    lengths = [len(r) - 1 for r in rows]
    tokens = sum(lengths)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in plan_batches(lengths, engine.policy))
    flops = 2 * engine.info.parameters * tokens / seconds
    return {"model": label, "parameters": engine.info.parameters, "rows": len(rows), "tokens": tokens,
            "padded_tokens": padded, "batches": len(plan_batches(lengths, engine.policy)), "seconds": seconds,
            "tokens_per_s": tokens / seconds, "flops_per_s": flops, "peak_flops_per_s": peak, "share": flops / peak,
            "memory": memory}


def rebase_shares(passes: Sequence[dict[str, Any]], peak: float) -> None:
    """Restate each pass's share against ``peak`` (the best peak of the run, known only at its end)."""
    for one in passes:
        one["peak_flops_per_s"], one["share"] = peak, one["flops_per_s"] / peak


def demo_scoring_pass(engine: Engine, facts: list[Fact], peak: float, repeats: int) -> dict[str, Any]:
    """The scoring pass of the answer-scoring comparison's rows (question + answer), tokenized beforehand."""
    pairs = [engine.encode_continuation(engine.prompt(f.question), f.answer) for f in facts]
    return scoring_pass(engine, [p + t for p, t in pairs], [len(p) for p, _ in pairs], peak, repeats, "demo")


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
    seconds, _, memory = measured(lambda: engine.token_scores(rows, [1] * count), 1, engine.info.device)
    tokens = count * (seq_len - 1)  # fed tokens: a row's last token is only a target
    rate = tokens / seconds
    return {"parameters": engine.info.parameters, "rows": count, "seq_len": seq_len, "tokens": tokens,
            "seconds": seconds, "tokens_per_s": rate, "model_flops_per_s": 2 * engine.info.parameters * rate,
            "peak_flops": peak, "mfu": 2 * engine.info.parameters * rate / peak if peak else None, "memory": memory}


def mfu_probe(device: str, seq_len: int = 512, batches: int = 4, matmul_n: int = 8192) -> dict[str, Any]:
    """The scoring pass of a 1B-shaped model (Llama-3.2-1B config, random weights) in bf16 on CUDA: MFU against
    the datasheet's peak and the share of the bf16 matmul peak measured on this GPU (the CPU table's measure)."""
    if not device.startswith("cuda"):
        return {"skipped": "needs a CUDA device"}
    name = torch.cuda.get_device_name(torch.device(device))
    known = peak_flops(name)
    measured_peak = matmul_peak(device, torch.bfloat16, matmul_n, 5)
    engine = random_engine(LLAMA_32_1B, device, torch.bfloat16)
    result = scoring_throughput(engine, seq_len, batches, known[1] if known else None)
    del engine
    torch.cuda.empty_cache()
    return {"device_name": name, "peak_assumed_for": known[0] if known else None, **result,
            "measured_peak": measured_peak,
            "share_of_measured_peak": result["model_flops_per_s"] / measured_peak["flops_per_s"]}
