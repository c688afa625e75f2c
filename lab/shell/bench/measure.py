"""Timing, peak memory and growth fits: what every bench measurement is made of.

Peak memory (:class:`MemoryMeter`): on Linux the kernel's resident high-water mark (``VmHWM``), reset before
every measurement by writing 5 to ``/proc/self/clear_refs``, so each figure is the peak of that measurement
alone (``ru_maxrss`` only ever grows).  Where that reset is not available, a thread samples the resident set
every 2 ms (a lower bound).  On CUDA, ``torch.cuda.max_memory_allocated`` after a reset.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch

from lab.core import settings

T = TypeVar("T")
MB = 2**20
OWN_LOOP = "per-example loop"


@dataclass
class Comparison:
    """One piece of work done by us and by another implementation, on the same inputs.

    ``batched_s`` is our time, ``loop_s`` the other side's: our own per-example loop (``other`` is
    ``per-example loop``) or the tool a user would pick instead (named in ``name`` and ``other``).
    ``shape`` names the model it ran on (:func:`lab.shell.bench.shapes.model_shape`).
    """

    name: str
    items: int
    batched_s: float
    loop_s: float
    agreement: str
    agrees: bool
    other: str = OWN_LOOP
    memory: dict[str, dict[str, float | None]] = field(default_factory=dict)  # "ours" / "other": peak memory
    details: dict[str, Any] = field(default_factory=dict)
    shape: dict[str, Any] = field(default_factory=dict)  # what it ran on: vocabulary, width, depth, parameters

    @property
    def speedup(self) -> float:
        return self.loop_s / self.batched_s if self.batched_s > 0 else math.inf


# ------------------------------------------------------------------- memory
def _status_kb(key: str) -> int | None:
    """A ``kB`` field of /proc/self/status (None where there is no such file)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def _reset_hwm() -> bool:
    """Reset the kernel's resident high-water mark to the current RSS; whether that worked."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    hwm, rss = _status_kb("VmHWM"), _status_kb("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss + 8 * 1024


def _rss_bytes() -> int:
    rss = _status_kb("VmRSS")
    if rss is not None:
        return rss * 1024
    import psutil

    return int(psutil.Process().memory_info().rss)


def _cpu_ticks() -> tuple[int, int, int] | None:
    """(machine busy, machine total, this process's user + system) in clock ticks; None without /proc."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = [int(v) for v in fields[:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks), int(own[11]) + int(own[12])  # utime, stime


class MemoryMeter:
    """Peak resident memory (and peak CUDA memory) between two calls of :meth:`mark`.

    Linux: VmHWM, reset at every mark through /proc/self/clear_refs (exact: the kernel tracks it).
    Elsewhere: a daemon thread samples the RSS every 2 ms (a lower bound: a shorter spike can be missed).
    Each reading also says how much of the machine's CPU other processes used meanwhile
    (``background_cpu``, from /proc/stat): a timing taken while something else ran is not this code's.
    """

    def __init__(self) -> None:
        self._ticks = _cpu_ticks()
        self.exact = _reset_hwm()
        self.method = ("peak RSS: kernel high-water mark (VmHWM) reset before each measurement via "
                       "/proc/self/clear_refs" if self.exact else
                       "peak RSS: resident set sampled every 2 ms by a thread (a lower bound)")
        self._start = _rss_bytes()
        self._peak = self._start
        self._lock = threading.Lock()
        if not self.exact:
            threading.Thread(target=self._sample, daemon=True, name="bench-rss").start()

    def _sample(self) -> None:
        while True:
            time.sleep(0.002)
            rss = _rss_bytes()
            with self._lock:
                self._peak = max(self._peak, rss)

    def mark(self, device: str = "cpu") -> dict[str, float | None]:
        """Peak since the last mark and the RSS at that mark (MB); a new segment starts now."""
        cuda = None
        if device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.synchronize()
            cuda = torch.cuda.max_memory_allocated() / MB
            torch.cuda.reset_peak_memory_stats()
        now = _rss_bytes()
        if self.exact:
            peak = max((_status_kb("VmHWM") or 0) * 1024, now)
            _reset_hwm()
        else:
            with self._lock:
                peak, self._peak = max(self._peak, now), now
        start, self._start = self._start, now
        ticks, before = _cpu_ticks(), self._ticks
        self._ticks = ticks
        background = None
        if ticks and before and ticks[1] > before[1]:
            others = (ticks[0] - before[0]) - (ticks[2] - before[2])
            background = min(1.0, max(0.0, others / (ticks[1] - before[1])))
        return {"peak_rss_mb": peak / MB, "start_rss_mb": start / MB, "peak_cuda_mb": cuda,
                "background_cpu": background}


_METER: MemoryMeter | None = None


def memory_meter() -> MemoryMeter:
    """The process's one meter (a second sampler thread would only add noise)."""
    global _METER
    if _METER is None:
        _METER = MemoryMeter()
    return _METER


def peak_of(readings: Sequence[dict[str, float | None]]) -> dict[str, float | None]:
    """One reading for consecutive segments: the highest peaks, the first start."""
    cuda = [r["peak_cuda_mb"] for r in readings if r["peak_cuda_mb"] is not None]
    background = [r["background_cpu"] for r in readings if r.get("background_cpu") is not None]
    return {"peak_rss_mb": max(r["peak_rss_mb"] for r in readings),  # type: ignore[type-var]
            "start_rss_mb": readings[0]["start_rss_mb"], "peak_cuda_mb": max(cuda) if cuda else None,
            "background_cpu": max(background) if background else None}


# ------------------------------------------------------------------- timing
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], T], repeats: int, device: str) -> tuple[float, T]:
    """Best wall time of ``repeats`` calls (the first also pays any warm-up) and the last result.  Engines keep
    no results meanwhile (:func:`lab.core.settings.memo_off`): every repeat does the work."""
    best, result = math.inf, None
    with settings.memo_off():
        for _ in range(max(1, repeats)):
            _sync(device)
            start = time.perf_counter()
            result = fn()
            _sync(device)
            best = min(best, time.perf_counter() - start)
    return best, result  # type: ignore[return-value]


def measured(fn: Callable[[], T], repeats: int, device: str) -> tuple[float, T, dict[str, float | None]]:
    """:func:`timed`, plus the peak memory over all its calls (:class:`MemoryMeter`)."""
    meter = memory_meter()
    meter.mark(device)
    seconds, result = timed(fn, repeats, device)
    return seconds, result, meter.mark(device)


def measured_side_by_side(fns: Sequence[Callable[[], Any]], repeats: int,
                          device: str) -> list[tuple[float, Any, dict[str, float | None]]]:
    """:func:`measured` for work done two (or more) ways, their calls interleaved round by round.

    On a shared machine the load changes over seconds: timing one side's repeats and then the other's lets a
    burst land on one side only and skews the ratio, interleaving lets both sides see the same conditions.
    Each side gets its best time, its last result and the peak memory over its own calls.
    """
    meter = memory_meter()
    best = [math.inf] * len(fns)
    results: list[Any] = [None] * len(fns)
    readings: list[list[dict[str, float | None]]] = [[] for _ in fns]
    for _ in range(max(1, repeats)):
        for i, fn in enumerate(fns):
            meter.mark(device)
            seconds, results[i] = timed(fn, 1, device)
            readings[i].append(meter.mark(device))
            best[i] = min(best[i], seconds)
    return [(best[i], results[i], peak_of(readings[i])) for i in range(len(fns))]


def growth_exponent(x: Sequence[float], y: Sequence[float]) -> float:
    """k of y ~ x ** k: the least-squares slope of log y on log x."""
    return float(np.polyfit(np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float)), 1)[0])
