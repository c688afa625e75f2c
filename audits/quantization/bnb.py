"""bitsandbytes quantization, as the code of "Catastrophic Failure of LLM Unlearning via Quantization"
(ICLR 2025) loads its models.

Its ``load_model`` passes ``BitsAndBytesConfig(load_in_4bit=True)`` with
``torch_dtype=torch.bfloat16`` and nothing else, which under its pinned
transformers and bitsandbytes means 4-bit **fp4** weights with **float32**
compute and no double quantization; 8-bit is ``BitsAndBytesConfig(load_in_8bit=True)``
(LLM.int8 with its default outlier threshold 6.0) with no dtype given.  This
module reproduces those settings (``bnb_4bit_type`` can switch to nf4).
bitsandbytes is installed from ``requirements-gpu.txt``; the audit takes this
path by default on CUDA (``backend=auto``), and ``backend=bitsandbytes`` runs it
on the CPU too (bitsandbytes 0.49+ has a CPU path; slow, but the same code).
"""

from __future__ import annotations

import dataclasses

import torch

from lab.core.backend import Backend
from lab.core.engine import Engine
from lab.core.errors import LabError

BNB_4BIT_TYPES = ("nf4", "fp4")


def bitsandbytes_installed() -> bool:
    """The package is importable (its CPU path runs anywhere; CUDA is where the paper ran it)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def bitsandbytes_available() -> bool:
    """bitsandbytes where the paper ran it: a CUDA device and the package (what ``backend=auto`` takes)."""
    return torch.cuda.is_available() and bitsandbytes_installed()


def load_bitsandbytes(engine: Backend, bits: int, quant_type: str = "fp4") -> Backend:
    """A second engine on ``engine``'s weights loaded by bitsandbytes in 8-bit or 4-bit (CUDA only).

    The paper's settings (see the module docstring).
    """
    if not bitsandbytes_installed():
        raise LabError("the bitsandbytes backend needs the bitsandbytes package (pip install -r "
                       "requirements-gpu.txt); or use backend=rtn (pure torch, any device)")
    if bits not in (4, 8) or (bits == 4 and quant_type not in BNB_4BIT_TYPES):
        raise LabError(f"bitsandbytes loads 8-bit or 4-bit ({', '.join(BNB_4BIT_TYPES)}) weights")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if bits == 8:  # LLM.int8, no dtype given (the paper's code)
        config, dtype = BitsAndBytesConfig(load_in_8bit=True), {}
    else:  # fp4 by default, float32 compute (BitsAndBytesConfig's default), bf16 for the rest (the paper's code)
        config, dtype = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type), {"dtype": torch.bfloat16}
    model = AutoModelForCausalLM.from_pretrained(
        engine.info.path, quantization_config=config, device_map={"": engine.device},
        trust_remote_code=engine.info.trust_remote_code, **dtype,
    )
    label = f"{bits}-bit {quant_type}" if bits == 4 else "8-bit"
    info = dataclasses.replace(engine.info, extra={**engine.info.extra, "bitsandbytes": label})
    return Engine(model, engine.tokenizer, info, engine.prompt_format)
