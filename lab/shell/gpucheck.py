"""``python -m lab gpucheck``: the lab on a GPU, in one prepared call (scripts/gpu_check.sh).

On a randomly initialized pair with Llama-3.2-1B's shape (1.24B parameters, a 128,256-token vocabulary,
bf16; nothing is downloaded) it measures, each with its peak memory:

- the batched scoring pass: tokens/s and model FLOP utilization, MFU = 2 x parameters x tokens/s over the
  device's peak dense bf16 FLOP/s;
- greedy generation: tokens/s;
- the whole audit suite through the runner on the demo facts (every audit, default options but the SAE's
  training length), per audit seconds and status; its quantization audit loads both bitsandbytes modes as
  the quantization paper does (8-bit LLM.int8, 4-bit fp4) when bitsandbytes is installed.

It writes one JSON file.  ``--shape tiny`` runs the same steps on a small model (CPU), to check the
script itself where no GPU is lent; the 1B shape without a CUDA GPU is refused at once (:func:`require_gpu`)
rather than built and run on the CPU (hours, and 2.4 GB of random weights in a temporary folder).
"""

from __future__ import annotations

import json
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from audits import available, get_audit
from lab.core.batching import check_cancelled
from lab.core.errors import LabError
from lab.core.files import write_text
from lab.core.store import Store, to_json

LLAMA_32_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                   num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                   rope_theta=500000.0, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=True)
TINY = dict(LLAMA_32_1B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32)
SHAPES = {"llama-3.2-1b": LLAMA_32_1B, "tiny": TINY}
# Peak dense bf16 tensor throughput from the vendors' datasheets (an assumption: clocks and SKUs move it).
PEAK_BF16_FLOPS = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12))


def require_gpu(shape_name: str) -> None:
    """The GPU check measures a GPU: a shape other than ``tiny`` without CUDA is a one-line refusal."""
    if shape_name != "tiny" and not torch.cuda.is_available():
        raise LabError(f"gpucheck --shape {shape_name} measures a CUDA GPU and this machine has none visible; "
                       "--shape tiny runs the same steps on the CPU")


def peak_flops(device_name: str) -> float | None:
    return next((peak for name, peak in PEAK_BF16_FLOPS if name in device_name.upper()), None)


def measured(fn: Callable[[], Any], device: str) -> tuple[float, Any, dict[str, float]]:
    """Wall time of ``fn``, its result, and the peak memory it reached (CUDA: allocator peak; always RSS)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    memory = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        memory["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return seconds, result, memory


def build_pair(shape: dict[str, Any], folder: Path, tokenizer_dir: Path) -> tuple[Path, Path]:
    """A random base model of ``shape`` and a slightly perturbed copy, saved in bf16 with a tokenizer padded to
    the model's vocabulary (every id decodes)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    missing = shape["vocab_size"] - len(tokenizer)
    if missing > 0:
        tokenizer.add_tokens([f"<pad{i}>" for i in range(missing)], special_tokens=True)
    torch.manual_seed(0)
    config = LlamaConfig(**shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    base, unlearned = folder / "base", folder / "unlearned"
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 1e-3)
    model.save_pretrained(unlearned)
    tokenizer.save_pretrained(unlearned)
    return base, unlearned


def scoring(engine: Any, seq_len: int, rows: int, device: str) -> dict[str, Any]:
    """Tokens/s, FLOP/s and MFU of the batched scoring pass over random rows."""
    vocab = engine.model.config.vocab_size
    data = torch.randint(3, vocab, (rows, seq_len), generator=torch.Generator().manual_seed(0)).tolist()
    engine.token_scores(data[:2], [1, 1])  # warm-up (and the chunked-head check)
    seconds, _, memory = measured(lambda: engine.token_scores(data, [1] * rows), device)
    tokens = rows * (seq_len - 1)  # fed tokens: a row's last token is only a target
    flops = 2 * engine.info.parameters * tokens / seconds
    peak = peak_flops(torch.cuda.get_device_name(0)) if device.startswith("cuda") else None
    return {"rows": rows, "seq_len": seq_len, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "model_flops_per_s": flops, "peak_flops_assumed": peak, "mfu": flops / peak if peak else None, **memory}


def generation(engine: Any, prompts: list[str], new_tokens: int, device: str) -> dict[str, Any]:
    seconds, outputs, memory = measured(lambda: engine.generate(prompts, new_tokens), device)
    return {"prompts": len(prompts), "new_tokens": new_tokens, "seconds": seconds,
            "tokens_per_s": len(prompts) * new_tokens / seconds, **memory}


def suite(base: Path, unlearned: Path, facts: Path, device: str, limit: int) -> dict[str, Any]:
    """Every installed audit through the runner, timed per audit."""
    from lab.shell.runner import execute, prepare
    from lab.shell.spec import RunSpec, build_spec

    names = available()
    options = {name: dict(get_audit(name).check_options) for name in names if get_audit(name).check_options}
    spec = build_spec(RunSpec, {"base": str(base), "unlearned": str(unlearned), "audits": names,
                                "facts": str(facts), "device": device, "dtype": "bfloat16", "limit": limit,
                                "options": options}, "the GPU check")
    load_s, prepared, _ = measured(lambda: prepare(spec), device)
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "gpu.duckdb") as store:
        total_s, outcome, memory = measured(lambda: execute(prepared, store), device)
        rows = store.audits(outcome.run_id).to_dict("records")
    audits = {r["audit"]: {"seconds": (r["finished_at"] - r["started_at"]).total_seconds(), "status": r["status"],
                           "error": str(r["error"]).splitlines()[0] if isinstance(r["error"], str) else None}
              for r in rows}
    return {"facts": len(prepared.facts), "load_s": load_s, "total_s": total_s, "audits": audits,
            "status": outcome.status, **memory}


def run(shape_name: str, out: Path, demo: Path, limit: int) -> dict[str, Any]:
    from lab.core.facts import load_facts
    from lab.core.models import load_engine, pick_device

    device = pick_device("auto")
    shape = SHAPES[shape_name]
    result: dict[str, Any] = {"shape": shape_name, "device": device, "platform": platform.platform(),
                              "torch": torch.__version__,
                              "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None}
    with tempfile.TemporaryDirectory() as tmp:  # removed also when a stop ends the check part way
        build_s, (base, unlearned), _ = measured(
            lambda: build_pair(shape, Path(tmp), demo / "models" / "base"), device)
        result["build_s"] = build_s
        check_cancelled()  # between steps, as within them: the first Ctrl-C ends the check
        engine = load_engine(str(base), device=device, dtype="bfloat16")
        result["parameters"] = engine.info.parameters
        rows = 64 if device.startswith("cuda") else 4
        result["scoring"] = scoring(engine, 512, rows, device)
        prompts = [engine.prompt(f.question) for f in load_facts(demo / "facts.jsonl").facts[:rows]]
        result["generation"] = generation(engine, prompts, 32, device)
        del engine
        check_cancelled()
        result["suite"] = suite(base, unlearned, demo / "facts.jsonl", device, limit)
    write_text(out, json.dumps(json.loads(to_json(result)), indent=2))
    return result
