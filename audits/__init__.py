"""The audit registry: one line per audit, name -> "module:Class".

Adding an attack is one new module in this package and one line here.
Modules are imported on first use, so a slow import costs only its users.
"""

from __future__ import annotations

import importlib

from lab.errors import LabError

REGISTRY: dict[str, str] = {
    "direct": "audits.direct:DirectAudit",
    "reasoning": "audits.reasoning:ReasoningAudit",
    "keywords": "audits.keywords:KeywordsAudit",
    "quantization": "audits.quantization:QuantizationAudit",
    "remind": "audits.remind:RemindAudit",
    "metrics": "audits.metrics:MetricsAudit",
    "surrogates": "audits.surrogates:SurrogatesAudit",
    "sae": "audits.sae:SaeAudit",
    "logit_lens": "audits.logit_lens:LogitLensAudit",
}


def audit_names() -> list[str]:
    return list(REGISTRY)


def get_audit(name: str):
    """The audit class registered under ``name``."""
    if name not in REGISTRY:
        raise LabError(f"unknown audit '{name}' (available: {', '.join(REGISTRY)})")
    module, cls = REGISTRY[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise LabError(f"audit '{name}' is registered but cannot be loaded ({exc})") from None


def parse_audits(text: str) -> list[str]:
    """A comma-separated audit list, validated, duplicates dropped, order kept."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise LabError("no audits given (available: " + ", ".join(REGISTRY) + ")")
    for name in names:
        get_audit(name)
    return list(dict.fromkeys(names))
