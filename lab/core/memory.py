"""Where the models of a run go: a memory plan, stated before anything is loaded.

A run can hold up to five models at once (base, unlearned, reference, an
attacker or rewriter, a judge) and the quantization audit briefly adds
quantized copies.  On one GPU they compete for memory, so the plan puts the
audited pair on the accelerator first (every audit needs both there), then
each further model on the accelerator while its weights and a working margin
still fit, and on the CPU otherwise; with ``device_map=auto`` accelerate
spreads a model that is larger than one GPU over the GPUs (and the CPU).
The plan is recorded in the run's config and shown in the report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

WORKING_MARGIN = 0.2  # of a model's weights, kept free for activations and the scoring chunks
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class Placement:
    """One model of the run: its role, where it goes, how large it is and why it goes there."""

    role: str
    ref: str
    device: str
    bytes: int
    reason: str


def weights_bytes(folder: str | Path | None, dtype: str = "float32") -> int:
    """Bytes a model's weights take in ``dtype``: from its config's parameter estimate, else its files."""
    if folder is None or not Path(folder).is_dir():
        return 0
    root = Path(folder)
    files = [p for p in root.iterdir() if p.suffix in WEIGHT_SUFFIXES]
    stored = sum(p.stat().st_size for p in files)
    try:
        config = json.loads((root / "config.json").read_text())
        stored_dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    except (OSError, json.JSONDecodeError):
        stored_dtype = "float32"
    ratio = DTYPE_BYTES.get(dtype, 4) / DTYPE_BYTES.get(stored_dtype, 4)
    return int(stored * ratio)


def plan(models: list[tuple[str, str, int]], device: str, free_bytes: int | None) -> list[Placement]:
    """Placements for ``models`` [(role, ref, bytes)], the audited pair first; ``free_bytes`` of the accelerator.

    On the CPU, or when the accelerator's free memory is unknown, everything goes on ``device``.
    """
    if not device.startswith("cuda") or free_bytes is None:
        return [Placement(role, ref, device, size, "one device for every model") for role, ref, size in models]
    left = free_bytes
    out = []
    for role, ref, size in models:
        need = int(size * (1 + WORKING_MARGIN))
        if role in ("base", "unlearned"):
            out.append(Placement(role, ref, device, size, "the audited pair stays on the accelerator"))
            left -= need
        elif need <= left:
            out.append(Placement(role, ref, device, size, f"fits beside the pair ({left / 2**30:.1f} GiB free)"))
            left -= need
        else:
            out.append(Placement(role, ref, "cpu", size, f"does not fit beside the pair ({left / 2**30:.1f} GiB "
                                                          f"free, needs {need / 2**30:.1f} GiB): on the CPU"))
    return out


def describe(placements: list[Placement]) -> list[dict]:
    return [asdict(p) for p in placements]
