"""Intervals for every rate the lab reports: a percentile bootstrap over facts.

A rate over a few dozen target facts moves by several points from one fact
more or less, so every rate carries a 95% interval (``<key>_ci_low`` /
``<key>_ci_high``): facts are resampled with replacement
``BOOTSTRAP_SAMPLES`` times with a fixed seed, and the interval is the 2.5th
and 97.5th percentile of the resampled rates (Efron and Tibshirani, "An
Introduction to the Bootstrap", percentile method).  Fewer than
``MIN_TARGETS`` targets earn a warning in the run's notes.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

BOOTSTRAP_SAMPLES = 2000
LEVEL = 0.95
MIN_TARGETS = 20
SEED = 0


def bootstrap_interval(flags: Iterable[bool | float], samples: int = BOOTSTRAP_SAMPLES,
                       seed: int = SEED) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of ``flags`` (NaN, NaN without any)."""
    values = np.asarray([float(v) for v in flags], dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(samples, values.size))].mean(axis=1)
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def rate_with_interval(key: str, flags: Iterable[bool | float]) -> dict[str, float]:
    """``{key: rate, key_ci_low: ..., key_ci_high: ...}`` over ``flags`` (NaN for an empty set)."""
    values = [float(v) for v in flags]
    low, high = bootstrap_interval(values)
    rate = sum(values) / len(values) if values else math.nan
    return {key: rate, f"{key}_ci_low": low, f"{key}_ci_high": high}


def few_targets_note(audit: str, count: int) -> list[str]:
    """A warning when a rate rests on fewer than ``MIN_TARGETS`` facts."""
    if count >= MIN_TARGETS:
        return []
    return [f"{audit}: only {count} target facts (fewer than {MIN_TARGETS}): the rates are rough; see their "
            "95% intervals"]
