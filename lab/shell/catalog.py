"""``python -m lab audits``: every registered audit, its paper and its options (text or Markdown).

The Markdown pieces (:func:`needs_text`, :func:`options_table`) are the ones the manual's generated audit pages
use (:mod:`lab.shell.docs`), so the terminal, ``--markdown`` and the manual describe an audit the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from audits import available, get_audit
from lab.core.backend import CAPABILITIES
from lab.core.options import option_specs, options_markdown

if TYPE_CHECKING:
    from audits.base import Audit


def needs_text(cls: type["Audit"]) -> str:
    """What the audit asks of both models, in the order of :data:`lab.core.backend.CAPABILITIES`."""
    return ", ".join(c for c in CAPABILITIES if c in cls.needs)


def options_table(cls: type["Audit"]) -> str:
    """The audit's options as a Markdown table (option, default, meaning), or a line saying it has none."""
    return options_markdown(cls.Options) if option_specs(cls.Options) else "_no options_"


def audits_text() -> str:
    """One block per audit: name, title, paper, options with type, default and help."""
    blocks = []
    for name in available():
        cls = get_audit(name)
        lines = [f"{name}: {cls.title}", f"  paper: {cls.paper}", f"  headline: {', '.join(cls.headline_keys)}",
                 f"  needs: {needs_text(cls)}; runs on: {', '.join(cls.uses)}"]
        for spec in option_specs(cls.Options):
            lines.append(f"  --set {name}.{spec.name}=<{spec.type}>  (default {spec.default_text}) {spec.help}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def audits_markdown() -> str:
    """Each audit's option table, as the manual's audit pages show it."""
    blocks = []
    for name in available():
        cls = get_audit(name)
        blocks.append(f"#### `{name}` options\n\nNeeds: {needs_text(cls)}. Runs on: {', '.join(cls.uses)} items.\n\n"
                      f"{options_table(cls)}")
    return "\n\n".join(blocks)
