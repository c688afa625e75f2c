"""Typed records that audits produce and the store writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ItemRecord:
    """One prompt given to both models (or one scored example), with its scores.

    ``category`` names the variant inside an audit: a reasoning category, an
    emphasis transform, a precision, a REMIND radius.  ``recovered`` follows
    the project-wide rule in :mod:`lab.core.scoring`.  ``extra`` keeps whatever else
    an audit measured per item (curves, latents), as JSON.
    """

    audit: str
    fact_id: str
    split: str
    prompt: str = ""
    answer: str = ""
    category: str = ""
    output_base: str | None = None
    output_unlearned: str | None = None
    hit_base: bool | None = None
    hit_unlearned: bool | None = None
    rouge_base: float | None = None
    rouge_unlearned: float | None = None
    logprob_base: float | None = None
    logprob_unlearned: float | None = None
    recovered: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AuditResult:
    """What an audit returns: headline metrics and plot-ready artifacts."""

    metrics: dict[str, float]
    artifacts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def extra_dict(value: Any) -> dict[str, Any]:
    """An item's ``extra`` as the store returns it (JSON text) or as recorded (a dict)."""
    if isinstance(value, dict):
        return value
    return json.loads(value) if isinstance(value, str) and value else {}
