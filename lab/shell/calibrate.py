"""``python -m lab calibrate``: how well each audit separates "still knows" from "never learned", on the demo.

An audit is a detector; its worth is how often it flags a model that still
holds the forget set and how rarely it flags one that never saw it.  The demo
has both: unlearners run here (the knowledge may be only hidden) and a model
retrained without the forget set (the control, whose flags are false
positives).  Calibration runs every chosen audit on every chosen demo model
against the demo's base model, as one sweep with the retrained model as the
reference, and reads per recovery audit and model:

- the flag rate: the audit's recovery rate with its 95% bootstrap interval
  (on the retrain control, the false-positive rate);
- the control-adjusted rate (the rate less the reference's under the same
  attack), with its paired interval;
- the per-fact detection AUC against the control: every target fact is
  scored in the unlearned model and in the retrained one, ranked by
  recovered-or-not and then by the gold answer's probability under the
  attack (the best of its attempts); the AUC is the chance that the
  unlearned model's fact outranks the retrained model's (0.5: the audit
  cannot tell them apart).

Detectors without a recovery rate (REMIND, the SAE view, the standard
metrics, ...) are listed with their headline values per model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from audits import get_audit
from lab.core import unlearning_metrics as um
from lab.core.errors import LabError
from lab.core.records import ItemRecord
from lab.core.store import Store
from lab.shell.sweep import SweepOutcome, run_sweep, sweep_spec

CONTROL = "retrain"
CONTROL_CEILING = 0.05  # a recovery audit whose rate on the control exceeds this flags models that never knew


@dataclass
class RecoveryRow:
    """One recovery audit on one model."""

    audit: str
    key: str
    model: str
    targets: int
    rate: float
    ci_low: float
    ci_high: float
    adjusted: float
    adjusted_low: float
    adjusted_high: float
    detection_auc: float  # per-fact, against the retrain control (NaN for the control itself)


@dataclass
class Calibration:
    """Everything ``calibrate`` measured, as stored in its JSON."""

    demo: str
    sweep_id: str
    models: list[str]
    audits: list[str]
    options: dict[str, dict[str, str]]
    recovery: list[RecoveryRow] = field(default_factory=list)
    detectors: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def records(items: pd.DataFrame) -> list[ItemRecord]:
    """Stored items back as records (NULLs as None), for the audits' own item rules."""
    fields = [f for f in ItemRecord.__dataclass_fields__ if f in items.columns]
    frame = items[fields].astype(object).where(items[fields].notna(), None)
    return [ItemRecord(**row) for row in frame.to_dict("records")]


def fact_scores(items: pd.DataFrame, audit: str) -> dict[str, float]:
    """Per target fact: recovered by one of the audit's attempts (1) or not (0), plus half the best gold
    probability over those attempts, so facts rank by recovery first and then by how close the attack came."""
    scores: dict[str, float] = {}
    for item in get_audit(audit)().attempts(records(items)):
        prob = math.exp(item.logprob_unlearned) if item.logprob_unlearned is not None else 0.0
        score = float(bool(item.recovered)) + 0.5 * prob
        scores[item.fact_id] = max(scores.get(item.fact_id, 0.0), score)
    return scores


def _value(metrics: dict[str, float], key: str) -> float:
    value = metrics.get(key)
    return float(value) if value is not None else math.nan


def read_sweep(outcome: SweepOutcome, names: dict[str, str], store: Store, audits: list[str]
               ) -> tuple[list[RecoveryRow], list[dict[str, Any]]]:
    """The calibration tables from a finished sweep (``names``: checkpoint path -> demo model name)."""
    runs = {names[p.unlearned]: p for p in outcome.pairs if p.run_id and p.status == "complete"}
    recovery, detectors = [], []
    for audit in audits:
        spec = get_audit(audit)
        key = spec.recovery_key
        if key is None:
            for model, pair in runs.items():
                values = pair.metrics.get(audit, {})
                detectors.append({"audit": audit, "model": model,
                                  **{k: _value(values, k) for k in spec.headline_keys}})
            continue
        control = runs.get(CONTROL)
        control_scores = fact_scores(store.items(control.run_id, audit), audit) if control else {}
        for model, pair in runs.items():
            values = pair.metrics.get(audit, {})
            auc = math.nan
            if model != CONTROL and control_scores:
                scores = fact_scores(store.items(pair.run_id, audit), audit)
                shared = [f for f in scores if f in control_scores]
                auc = um.auc([scores[f] for f in shared], [control_scores[f] for f in shared]) if shared else math.nan
            recovery.append(RecoveryRow(
                audit, key, model, int(_value(values, "targets")) if "targets" in values else 0,
                _value(values, key), _value(values, f"{key}_ci_low"), _value(values, f"{key}_ci_high"),
                _value(values, f"{key}_adjusted"), _value(values, f"{key}_adjusted_ci_low"),
                _value(values, f"{key}_adjusted_ci_high"), auc))
    return recovery, detectors


def demo_models(root: Path) -> list[str]:
    """The demo's models other than the base, from its manifest."""
    from lab.demo.build import read_manifest

    manifest = read_manifest(root)
    if manifest is None:
        raise LabError(f"no demo at {root} (build one: python -m lab demo build)")
    return [m for m in manifest.get("models", []) if m != "base"]


def calibrate(root: Path, store: Store, models: list[str] | None = None, audits: list[str] | None = None,
              limit: int | None = None, device: str = "auto",
              options: dict[str, dict[str, str]] | None = None) -> Calibration:
    """Every audit on every demo model (and the retrain control) against the demo's base, as one sweep."""
    from audits import available

    known = demo_models(root)
    models = models or known
    unknown = [m for m in models if m not in known]
    if unknown:
        raise LabError(f"no demo model '{unknown[0]}' in {root} (models: {', '.join(known)})")
    if CONTROL not in models:
        models = [*models, CONTROL]
    audits = audits or available()
    paths = {str(root / "models" / m): m for m in models}
    spec = sweep_spec({"base": str(root / "models" / "base"), "unlearned": list(paths), "audits": audits,
                       "facts": str(root / "facts.jsonl"), "reference": str(root / "models" / CONTROL),
                       "limit": limit, "device": device, "options": options or {}}, "calibrate")
    outcome = run_sweep(spec, store)
    recovery, detectors = read_sweep(outcome, paths, store, audits)
    failed = [f"{paths[p.unlearned]}: {p.error}" for p in outcome.pairs if p.status != "complete"]
    return Calibration(str(root), outcome.sweep_id, models, audits, options or {}, recovery, detectors, failed)


def _interval(value: float, low: float, high: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.0%} [{low:.0%}, {high:.0%}]" if math.isfinite(low) else f"{value:.0%}"


def markdown(result: Calibration) -> str:
    """The calibration as Markdown tables (the manual's calibration page keeps the recorded printout)."""
    lines = ["| audit | model | targets | flag rate [95% CI] | adjusted for the control [95% CI] | detection AUC |",
             "|---|---|---|---|---|---|"]
    for row in result.recovery:
        model = f"{row.model} (control: false positives)" if row.model == CONTROL else row.model
        adjusted = "—" if row.model == CONTROL else _interval(row.adjusted, row.adjusted_low, row.adjusted_high)
        auc = "—" if row.model == CONTROL else ("n/a" if not math.isfinite(row.detection_auc)
                                                 else f"{row.detection_auc:.2f}")
        lines.append(f"| {row.audit} ({row.key}) | {model} | {row.targets} | "
                     f"{_interval(row.rate, row.ci_low, row.ci_high)} | {adjusted} | {auc} |")
    if result.detectors:
        keys = list(dict.fromkeys(k for d in result.detectors for k in d if k not in ("audit", "model")))
        lines += ["", "| detector | model | headline values |", "|---|---|---|"]
        for row in result.detectors:
            shown = ", ".join(f"{k} {row[k]:.3f}" for k in keys if k in row and math.isfinite(row[k]))
            lines.append(f"| {row['audit']} | {row['model']} | {shown or 'n/a'} |")
    loose = [f"{row.audit} {_interval(row.rate, row.ci_low, row.ci_high)}" for row in result.recovery
             if row.model == CONTROL and math.isfinite(row.rate) and row.rate > CONTROL_CEILING]
    lines += ["", (f"Control above {CONTROL_CEILING:.0%} (false positives; read these audits' adjusted rates): "
                   + "; ".join(loose)) if loose else f"Every recovery audit stays at or below {CONTROL_CEILING:.0%} "
              "on the control."]
    if result.failed:
        lines += ["", "Failed pairs: " + "; ".join(result.failed)]
    return "\n".join(lines)
