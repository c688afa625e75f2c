"""``python -m lab calibrate``: each audit's power and false-positive rate, measured on the demo.

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

**Power and false positives.**  A 0% recovery means "forgotten" only if the
audit catches knowledge that is really there.  The demo's recipes name the
audits whose papers say the attack reveals what that recipe leaves behind
(``Recipe.reveals``: GA and NPO for the prompt attacks, the quantization
paper's small-learning-rate GradDiff and NPO for quantization, RMU for
relearning and directional ablation, ...): those models are each audit's
*planted positives*.  Over several demo worlds (``--seeds``, each built with
its own seed), an audit's **power** is its recovery rate on a planted
positive's targets, pooled over the seeds (the best planted positive, by the
lower bound of its Wilson interval), and its **false-positive rate** the
same rate on the retrained control's targets (facts the control never
learned).  An audit whose power's lower bound is not above 0 has "power not
shown": its 0% lends a verdict no weight.
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
from lab.core.stats import unpaired_difference, wilson
from lab.core.store import Store
from lab.shell.sweep import SweepOutcome, run_sweep, sweep_spec

CONTROL = "retrain"
CONTROL_CEILING = 0.05  # a recovery audit whose rate on the control exceeds this flags models that never knew


@dataclass
class RecoveryRow:
    """One recovery audit on one model of one demo world (its seed)."""

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
    seed: int = 0
    hits: int = 0  # targets recovered


@dataclass
class Power:
    """One recovery audit's power (on its best planted positive) and false-positive rate (on the control),
    pooled over the demo worlds: what a verdict of "no recovery shown" stands on."""

    audit: str
    planted: str | None  # the planted positive the power is read on (None: the demo plants none for it)
    power: float
    power_ci_low: float
    power_ci_high: float
    power_hits: int
    power_targets: int
    fpr: float
    fpr_ci_low: float
    fpr_ci_high: float
    fpr_hits: int
    fpr_targets: int
    detection_auc: float  # the planted positive's facts against the control's, pooled
    excess: float = math.nan  # power less the false-positive rate, with Newcombe's interval (independent facts)
    excess_ci_low: float = math.nan
    excess_ci_high: float = math.nan

    @property
    def shown(self) -> bool:
        """The audit caught planted knowledge beyond doubt and beyond what it flags on the control: the lower
        bound of power less the false-positive rate is above 0 (an audit that flags the control as often as
        the planted positive, or flags one fact in thirty, has no power to lend)."""
        return math.isfinite(self.excess_ci_low) and self.excess_ci_low > 0


@dataclass
class Calibration:
    """Everything ``calibrate`` measured, as stored in its JSON (``power``: audit -> :class:`Power`)."""

    demo: str
    sweep_id: str
    models: list[str]
    audits: list[str]
    options: dict[str, dict[str, str]]
    recovery: list[RecoveryRow] = field(default_factory=list)
    detectors: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    profile: str = ""
    seeds: list[int] = field(default_factory=list)
    date: str = ""
    power: dict[str, Power] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["power"] = {name: {**asdict(p), "shown": p.shown} for name, p in self.power.items()}
        return out


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


FactScores = dict[tuple[str, str, int], dict[str, float]]  # (audit, model, seed) -> fact -> score


def read_sweep(outcome: SweepOutcome, names: dict[str, str], store: Store, audits: list[str], seed: int = 0,
               scores: FactScores | None = None) -> tuple[list[RecoveryRow], list[dict[str, Any]]]:
    """The calibration tables from a finished sweep (``names``: checkpoint path -> demo model name); each
    recovery audit's per-fact scores land in ``scores`` for the pooled detection AUC."""
    runs = {names[p.unlearned]: p for p in outcome.pairs if p.run_id and p.status == "complete"}
    scores = {} if scores is None else scores
    recovery, detectors = [], []
    for audit in audits:
        spec = get_audit(audit)
        key = spec.recovery_key
        if key is None:
            for model, pair in runs.items():
                values = pair.metrics.get(audit, {})
                detectors.append({"audit": audit, "model": model, "seed": seed,
                                  **{k: _value(values, k) for k in spec.headline_keys}})
            continue
        for model, pair in runs.items():
            scores[(audit, model, seed)] = fact_scores(store.items(pair.run_id, audit), audit)
        control = scores.get((audit, CONTROL, seed), {})
        for model, pair in runs.items():
            values = pair.metrics.get(audit, {})
            mine = scores[(audit, model, seed)]
            shared = [f for f in mine if f in control]
            auc = um.auc([mine[f] for f in shared], [control[f] for f in shared]) \
                if model != CONTROL and shared else math.nan
            targets = int(_value(values, "targets")) if "targets" in values else 0
            rate = _value(values, key)
            recovery.append(RecoveryRow(
                audit, key, model, targets, rate, _value(values, f"{key}_ci_low"), _value(values, f"{key}_ci_high"),
                _value(values, f"{key}_adjusted"), _value(values, f"{key}_adjusted_ci_low"),
                _value(values, f"{key}_adjusted_ci_high"), auc, seed,
                round(rate * targets) if math.isfinite(rate) else 0))
    return recovery, detectors


def planted_positives(profile: str) -> dict[str, list[str]]:
    """Per audit, the demo models its paper says the attack reveals (the recipes' ``reveals``)."""
    from lab.demo.build import PROFILES

    out: dict[str, list[str]] = {}
    for name, recipe in PROFILES[profile].unlearners.items() if profile in PROFILES else ():
        for audit in recipe.reveals:
            out.setdefault(audit, []).append(name)
    return out


def pooled(rows: list[RecoveryRow], audit: str, model: str) -> tuple[int, int]:
    """(targets recovered, targets) of one audit on one model over every seed."""
    mine = [r for r in rows if r.audit == audit and r.model == model]
    return sum(r.hits for r in mine), sum(r.targets for r in mine)


def pooled_auc(scores: FactScores, audit: str, model: str) -> float:
    """The detection AUC of ``model``'s facts against the control's, every seed's facts pooled."""
    mine, theirs = [], []
    for (name, who, seed), values in scores.items():
        if name != audit or who != model:
            continue
        control = scores.get((audit, CONTROL, seed), {})
        shared = [f for f in values if f in control]
        mine += [values[f] for f in shared]
        theirs += [control[f] for f in shared]
    return um.auc(mine, theirs) if mine else math.nan


def power_of(audit: str, rows: list[RecoveryRow], scores: FactScores, planted: list[str]) -> Power:
    """The audit's power on its best planted positive (by the lower bound of its excess over the false-positive
    rate) and its false-positive rate."""
    fpr_hits, fpr_targets = pooled(rows, audit, CONTROL)
    fpr_low, fpr_high = wilson(fpr_hits, fpr_targets)
    fpr = fpr_hits / fpr_targets if fpr_targets else math.nan
    candidates = []
    for model in planted:
        hits, targets = pooled(rows, audit, model)
        if targets:
            excess = unpaired_difference(hits, targets, fpr_hits, fpr_targets)
            candidates.append((excess[0], wilson(hits, targets)[0], model, hits, targets, excess))
    if not candidates:
        return Power(audit, None, math.nan, math.nan, math.nan, 0, 0, fpr, fpr_low, fpr_high, fpr_hits, fpr_targets,
                     math.nan)
    *_, model, hits, targets, (excess_low, excess_high) = max(candidates, key=lambda c: (_ordered(c[0]), c[1]))
    low, high = wilson(hits, targets)
    rate = hits / targets
    return Power(audit, model, rate, low, high, hits, targets, fpr, fpr_low, fpr_high, fpr_hits, fpr_targets,
                 pooled_auc(scores, audit, model), rate - fpr if fpr_targets else math.nan, excess_low, excess_high)


def _ordered(value: float) -> float:
    """NaN (no control to compare with) sorts below every number."""
    return value if math.isfinite(value) else -math.inf


def demo_models(root: Path) -> list[str]:
    """The demo's models other than the base, from its manifest."""
    from lab.demo.build import read_manifest

    manifest = read_manifest(root)
    if manifest is None:
        raise LabError(f"no demo at {root} (build one: python -m lab demo build)")
    return [m for m in manifest.get("models", []) if m != "base"]


def sweep_one(root: Path, store: Store, models: list[str], audits: list[str], limit: int | None, device: str,
              options: dict[str, dict[str, str]], local: bool) -> tuple[SweepOutcome, dict[str, str]]:
    """Every chosen audit on every chosen demo model of one world, the retrained model as reference."""
    paths = {str(root / "models" / m): m for m in models}
    spec = sweep_spec({"base": str(root / "models" / "base"), "unlearned": list(paths), "audits": audits,
                       "facts": str(root / "facts.jsonl"), "reference": str(root / "models" / CONTROL),
                       "limit": limit, "device": device, "options": options}, "calibrate")
    return run_sweep(spec, store, local=local), paths


def calibrate(roots: list[Path], store: Store, models: list[str] | None = None, audits: list[str] | None = None,
              limit: int | None = None, device: str = "auto", options: dict[str, dict[str, str]] | None = None,
              local: bool = False) -> Calibration:
    """Every audit on every demo model (and the retrain control) against the demo's base, one sweep per demo
    world (``roots``: one folder per seed), then each recovery audit's power and false-positive rate pooled."""
    from datetime import date

    from audits import available
    from lab.demo.build import read_manifest

    known = demo_models(roots[0])
    models = models or known
    unknown = [m for m in models if m not in known]
    if unknown:
        raise LabError(f"no demo model '{unknown[0]}' in {roots[0]} (models: {', '.join(known)})")
    if CONTROL not in models:
        models = [*models, CONTROL]
    audits = audits or available()
    manifests = [read_manifest(root) or {} for root in roots]
    profile = str(manifests[0].get("profile", ""))
    seeds = [int(m.get("seed", 0)) for m in manifests]
    recovery: list[RecoveryRow] = []
    detectors: list[dict[str, Any]] = []
    scores: FactScores = {}
    failed, sweeps = [], []
    for root, seed in zip(roots, seeds):
        outcome, paths = sweep_one(root, store, models, audits, limit, device, options or {}, local)
        rows, found = read_sweep(outcome, paths, store, audits, seed, scores)
        recovery += rows
        detectors += found
        failed += [f"seed {seed}, {paths[p.unlearned]}: {p.error}" for p in outcome.pairs if p.status != "complete"]
        sweeps.append(outcome.sweep_id)
    planted = planted_positives(profile)
    power = {audit: power_of(audit, recovery, scores, [m for m in planted.get(audit, []) if m in models])
             for audit in audits if get_audit(audit).recovery_key}
    return Calibration(", ".join(str(r) for r in roots), ", ".join(sweeps), models, audits, options or {}, recovery,
                       detectors, failed, profile, seeds, date.today().isoformat(), power)


def _interval(value: float, low: float, high: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.0%} [{low:.0%}, {high:.0%}]" if math.isfinite(low) else f"{value:.0%}"


def power_text(power: Power) -> str:
    """Power as a verdict quotes it: ``62% [45%, 77%] on ga`` or ``power not shown``."""
    if power.planted is None:
        return "power not shown (the demo plants no positive for it)"
    shown = _interval(power.power, power.power_ci_low, power.power_ci_high)
    return f"{shown} on {power.planted}" + ("" if power.shown else ": power not shown")


def markdown(result: Calibration) -> str:
    """The calibration as Markdown tables: power and false positives first, then every row per seed."""
    seeds = ", ".join(map(str, result.seeds))
    lines = [f"Power and false positives: {result.profile} demo, seeds {seeds}, measured {result.date}.", "",
             "| audit | power on a planted positive [95% CI] | false positives on retrain [95% CI] | "
             "power beyond the false positives [95% CI] | detection AUC |", "|---|---|---|---|---|"]
    for name, power in result.power.items():
        auc = "n/a" if not math.isfinite(power.detection_auc) else f"{power.detection_auc:.2f}"
        lines.append(f"| {name} | {power_text(power)} ({power.power_hits}/{power.power_targets}) | "
                     f"{_interval(power.fpr, power.fpr_ci_low, power.fpr_ci_high)} "
                     f"({power.fpr_hits}/{power.fpr_targets}) | "
                     f"{_interval(power.excess, power.excess_ci_low, power.excess_ci_high)} | {auc} |")
    lines += ["", "| audit | model | seed | targets | flag rate [95% CI] | adjusted for the control [95% CI] | "
              "detection AUC |", "|---|---|---|---|---|---|---|"]
    for row in result.recovery:
        model = f"{row.model} (control: false positives)" if row.model == CONTROL else row.model
        adjusted = "—" if row.model == CONTROL else _interval(row.adjusted, row.adjusted_low, row.adjusted_high)
        auc = "—" if row.model == CONTROL else ("n/a" if not math.isfinite(row.detection_auc)
                                                 else f"{row.detection_auc:.2f}")
        lines.append(f"| {row.audit} ({row.key}) | {model} | {row.seed} | {row.targets} | "
                     f"{_interval(row.rate, row.ci_low, row.ci_high)} | {adjusted} | {auc} |")
    if result.detectors:
        keys = list(dict.fromkeys(k for d in result.detectors for k in d if k not in ("audit", "model", "seed")))
        lines += ["", "| detector | model | seed | headline values |", "|---|---|---|---|"]
        for row in result.detectors:
            shown = ", ".join(f"{k} {row[k]:.3f}" for k in keys if k in row and math.isfinite(row[k]))
            lines.append(f"| {row['audit']} | {row['model']} | {row.get('seed', 0)} | {shown or 'n/a'} |")
    loose = [f"{p.audit} {_interval(p.fpr, p.fpr_ci_low, p.fpr_ci_high)}" for p in result.power.values()
             if math.isfinite(p.fpr) and p.fpr > CONTROL_CEILING]
    lines += ["", (f"Control above {CONTROL_CEILING:.0%} (false positives; read these audits' adjusted rates): "
                   + "; ".join(loose)) if loose else f"Every recovery audit stays at or below {CONTROL_CEILING:.0%} "
              "on the control."]
    if result.failed:
        lines += ["", "Failed pairs: " + "; ".join(result.failed)]
    return "\n".join(lines)
