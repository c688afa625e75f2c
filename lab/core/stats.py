"""Intervals for every rate the lab reports, valid at the small counts audits often rest on.

A rate over a few dozen target facts moves by several points from one fact
more or less, so every rate carries a 95% interval (``<key>_ci_low`` /
``<key>_ci_high``):

- a share of yes/no outcomes (recovered, answered, flagged) gets the Wilson
  score interval (Wilson 1927; recommended over the Wald and the percentile
  bootstrap by Brown, Cai and DasGupta, "Interval Estimation for a Binomial
  Proportion", Statistical Science 2001).  Unlike the percentile bootstrap it
  never collapses to zero width: 2 of 2 recovered reads 100% [34%, 100%], not
  100% [100%, 100%];
- a difference of two shares on the same facts (an attack's rate less the
  control's) gets Newcombe's interval for paired proportions (Newcombe,
  "Improved confidence intervals for the difference between binomial
  proportions based on paired data", Statistics in Medicine 1998, method 10),
  built from the two Wilson intervals and the pairs' correlation;
- a difference of two shares on different facts (an audit's flag rate on a
  planted positive less its rate on the control) gets Newcombe's hybrid
  score interval for independent proportions (Newcombe 1998, method 10);
- the mean of other per-fact values (log-prob gains) keeps the percentile
  bootstrap over facts (Efron and Tibshirani, "An Introduction to the
  Bootstrap"), with a fixed seed.

Fewer than ``MIN_TARGETS`` targets earn a warning in the run's notes.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000
LEVEL = 0.95
Z = 1.959963984540054  # the normal quantile of a two-sided 95% interval
MIN_TARGETS = 20
SEED = 0


def wilson(hits: int, total: int) -> tuple[float, float]:
    """The 95% Wilson score interval of ``hits`` out of ``total`` (NaN, NaN for none)."""
    if total <= 0:
        return math.nan, math.nan
    p = hits / total
    centre = (p + Z * Z / (2 * total)) / (1 + Z * Z / total)
    half = Z * math.sqrt(p * (1 - p) / total + Z * Z / (4 * total * total)) / (1 + Z * Z / total)
    low, high = (0.0 if hits == 0 else centre - half), (1.0 if hits == total else centre + half)
    return min(max(0.0, low), p), max(min(1.0, high), p)  # the rate itself always inside, to the last bit


def paired_difference(first: Sequence[bool], second: Sequence[bool]) -> tuple[float, float]:
    """Newcombe's 95% interval of mean(first) - mean(second) over the same items (paired yes/no outcomes)."""
    n = len(first)
    if n == 0 or n != len(second):
        return math.nan, math.nan
    both = sum(1 for a, b in zip(first, second) if a and b)
    only_first = sum(1 for a, b in zip(first, second) if a and not b)
    only_second = sum(1 for a, b in zip(first, second) if b and not a)
    neither = n - both - only_first - only_second
    p1, p2 = (both + only_first) / n, (both + only_second) / n
    (l1, u1), (l2, u2) = wilson(both + only_first, n), wilson(both + only_second, n)
    margins = (both + only_first) * (only_second + neither) * (both + only_second) * (only_first + neither)
    cross = both * neither - only_first * only_second
    if margins == 0:
        phi = 0.0
    else:  # Newcombe's continuity-corrected correlation when it is positive
        phi = (max(cross - n / 2, 0.0) if cross > 0 else cross) / math.sqrt(margins)
    below = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    above = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    diff = p1 - p2
    return max(-1.0, diff - math.sqrt(max(below, 0.0))), min(1.0, diff + math.sqrt(max(above, 0.0)))


def unpaired_difference(hits1: int, total1: int, hits2: int, total2: int) -> tuple[float, float]:
    """Newcombe's 95% interval of hits1/total1 - hits2/total2 from independent samples (Newcombe, "Interval
    estimation for the difference between independent proportions", Statistics in Medicine 1998, method 10:
    the hybrid score interval built from the two Wilson intervals)."""
    if total1 <= 0 or total2 <= 0:
        return math.nan, math.nan
    p1, p2 = hits1 / total1, hits2 / total2
    (l1, u1), (l2, u2) = wilson(hits1, total1), wilson(hits2, total2)
    diff = p1 - p2
    return (max(-1.0, diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)),
            min(1.0, diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)))


def bootstrap_interval(values: Iterable[bool | float], samples: int = BOOTSTRAP_SAMPLES,
                       seed: int = SEED) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of ``values`` (NaN, NaN without any)."""
    array = np.asarray([float(v) for v in values], dtype=float)
    if array.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, array.size, size=(samples, array.size))].mean(axis=1)
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def interval(values: Sequence[float]) -> tuple[float, float]:
    """The 95% interval of a mean: Wilson for yes/no outcomes, the percentile bootstrap otherwise."""
    if all(v in (0.0, 1.0) for v in values):
        return wilson(int(sum(values)), len(values))
    return bootstrap_interval(values)


def rate_with_interval(key: str, flags: Iterable[bool | float]) -> dict[str, float]:
    """``{key: rate, key_ci_low: ..., key_ci_high: ...}`` over ``flags`` (NaN for an empty set)."""
    values = [float(v) for v in flags]
    low, high = interval(values)
    rate = sum(values) / len(values) if values else math.nan
    return {key: rate, f"{key}_ci_low": low, f"{key}_ci_high": high}


def difference_with_interval(key: str, first: Sequence[bool], second: Sequence[bool]) -> dict[str, float]:
    """``{key: mean(first) - mean(second)}`` with Newcombe's paired interval (NaN for an empty set)."""
    low, high = paired_difference(first, second)
    diff = (sum(map(float, first)) - sum(map(float, second))) / len(first) if first else math.nan
    return {key: diff, f"{key}_ci_low": low, f"{key}_ci_high": high}


def few_targets_note(audit: str, count: int) -> list[str]:
    """A warning when a rate rests on fewer than ``MIN_TARGETS`` facts."""
    if count >= MIN_TARGETS:
        return []
    if count == 0:  # its rates are n/a, and the note says why
        return [f"{audit}: no target facts (forget facts the base model answers and the unlearned model misses): "
                "its rates are n/a"]
    return [f"{audit}: only {count} target facts (fewer than {MIN_TARGETS}): the rates are rough; see their "
            "95% intervals"]
