"""``python -m lab audits``: every registered audit, its paper and its options (text or README Markdown)."""

from __future__ import annotations

from audits import available, get_audit
from lab.core.backend import CAPABILITIES
from lab.core.options import option_specs, options_markdown


def audits_text() -> str:
    """One block per audit: name, title, paper, options with type, default and help."""
    blocks = []
    for name in available():
        cls = get_audit(name)
        lines = [f"{name}: {cls.title}", f"  paper: {cls.paper}", f"  headline: {', '.join(cls.headline_keys)}",
                 f"  needs: {', '.join(c for c in CAPABILITIES if c in cls.needs)}; runs on: {', '.join(cls.uses)}"]
        for spec in option_specs(cls.Options):
            lines.append(f"  --set {name}.{spec.name}=<{spec.type}>  (default {spec.default_text}) {spec.help}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def audits_markdown() -> str:
    """Each audit's option table, as the README shows it."""
    blocks = []
    for name in available():
        cls = get_audit(name)
        table = options_markdown(cls.Options) if option_specs(cls.Options) else "_no options_"
        needs = ", ".join(c for c in CAPABILITIES if c in cls.needs)
        blocks.append(f"#### `{name}` options\n\nNeeds: {needs}. Runs on: {', '.join(cls.uses)} items.\n\n{table}")
    return "\n\n".join(blocks)
