"""Each recovery audit's calibrated power and false-positive rate, as the verdicts quote them.

``python -m lab calibrate --seeds ...`` measures, on several demo worlds, how
often each recovery audit catches knowledge planted in the paper's regime
(power) and how often it "recovers" facts the retrained control never knew
(false positives) (:mod:`lab.shell.calibrate`).  The lab ships the figures of
its own run in ``static/calibration.json`` (its profile, seeds and date
inside); a verdict that reads "no recovery shown" names them beside each audit
so the reader knows what the zero stands on, and an audit whose power was not
shown lends a "forgotten" no weight.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from lab.core import settings

CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class PowerNote:
    """What one audit's calibration says, in words."""

    text: str
    shown: bool


def _interval(value: float, low: float, high: float) -> str:
    return f"{value:.0%} [{low:.0%}, {high:.0%}]"


@lru_cache(maxsize=1)
def calibration() -> dict[str, Any]:
    """The shipped calibration (empty when the file is missing or unreadable)."""
    try:
        return json.loads((settings.static_dir() / CALIBRATION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def power_of(audit: str) -> PowerNote:
    """The audit's power and false-positive rate with where they were measured, or "power not shown"."""
    data = calibration()
    entry = (data.get("power") or {}).get(audit)
    where = f"{data.get('profile', '?')} demo, seeds {','.join(map(str, data.get('seeds', [])))}, {data.get('date', '?')}"
    if not entry or not all(isinstance(entry.get(k), (int, float)) and math.isfinite(entry[k])
                            for k in ("power", "power_ci_low", "power_ci_high")):
        return PowerNote("power not shown (not calibrated)", False)
    power = _interval(entry["power"], entry["power_ci_low"], entry["power_ci_high"])
    fpr = (f"; false positives {_interval(entry['fpr'], entry['fpr_ci_low'], entry['fpr_ci_high'])}"
           if isinstance(entry.get("fpr"), (int, float)) and math.isfinite(entry["fpr"]) else "")
    shown = bool(entry.get("shown"))
    text = f"{power} on {entry.get('planted')}{fpr}; {where}"
    return PowerNote(text if shown else f"power not shown ({text})", shown)
