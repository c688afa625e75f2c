"""The audit registry: one line per audit, name -> "module:Class".

Adding an attack is one new module (or package) in this package and one line
here.  Modules are imported on first use, so a slow import costs only its
users.  The shell (CLI, web lab, report, bench) reaches audits only through
this registry and :mod:`audits.base`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lab.core.errors import LabError

if TYPE_CHECKING:
    from audits.base import Audit

REGISTRY: dict[str, str] = {
    "direct": "audits.direct:DirectAudit",
    "reasoning": "audits.reasoning.audit:ReasoningAudit",
    "keywords": "audits.keywords.audit:KeywordsAudit",
    "quantization": "audits.quantization.audit:QuantizationAudit",
    "remind": "audits.remind.audit:RemindAudit",
    "metrics": "audits.metrics:MetricsAudit",
    "surrogates": "audits.surrogates.audit:SurrogatesAudit",
    "sae": "audits.sae.audit:SaeAudit",
    "logit_lens": "audits.logit_lens:LogitLensAudit",
    "multiple_choice": "audits.multiple_choice:MultipleChoiceAudit",
    "relearn": "audits.relearn:RelearnAudit",
    "incontext": "audits.incontext:IncontextAudit",
    "extraction": "audits.extraction:ExtractionAudit",
    "adversarial": "audits.adversarial.audit:AdversarialAudit",
    "sampling": "audits.sampling:SamplingAudit",
    "linear_probe": "audits.probing:LinearProbeAudit",
    "ablation": "audits.ablation:AblationAudit",
    "patching": "audits.patching:PatchingAudit",
    "trigger": "audits.trigger:TriggerAudit",
}


def audit_names() -> list[str]:
    return list(REGISTRY)


def get_audit(name: str) -> type["Audit"]:
    """The audit class registered under ``name``."""
    if name not in REGISTRY:
        raise LabError(f"unknown audit '{name}' (available: {', '.join(REGISTRY)})")
    module, cls = REGISTRY[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise LabError(f"audit '{name}' is registered but cannot be loaded ({exc})") from None


def available() -> list[str]:
    """Registered audits whose module loads here (an audit with a missing extra is left out)."""
    names = []
    for name in REGISTRY:
        try:
            get_audit(name)
        except LabError:
            continue
        names.append(name)
    return names


def with_role(role: str) -> type["Audit"]:
    """The first registered audit that plays ``role`` in the benchmark (``Audit.bench_role``)."""
    for name in available():
        if get_audit(name).bench_role == role:
            return get_audit(name)
    raise LabError(f"no registered audit plays the benchmark role '{role}'")


def parse_audits(text: str) -> list[str]:
    """A comma-separated audit list, validated, duplicates dropped, order kept."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise LabError("no audits given (available: " + ", ".join(REGISTRY) + ")")
    for name in names:
        get_audit(name)
    return list(dict.fromkeys(names))
