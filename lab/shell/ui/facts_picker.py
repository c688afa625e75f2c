"""Picking one fact of the demo world (Probe and Internals tabs)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from lab.core.errors import LabError
from lab.core.facts import Fact, load_facts
from lab.demo.build import demo_facts_path


def demo_facts() -> list[Fact]:
    """The demo's questions (what the Probe and Internals tabs ask; its multiple-choice copies and passages
    are for the audits), or none when the demo is not built yet."""
    try:
        return load_facts(demo_facts_path()).of_kinds(("qa",)).facts
    except LabError:
        return []


def fact_label(fact: Fact) -> str:
    return f"[{fact.split}] {fact.question}"


def fact_choices() -> list[tuple[str, str]]:
    """(label, id) of the demo's facts, forget facts first (the ones worth probing)."""
    order = {"forget": 0, "retain": 1, "holdout": 2}
    facts = sorted(demo_facts(), key=lambda f: order.get(f.split, 3))
    return [(fact_label(f), f.id) for f in facts]


def choices() -> gr.Dropdown:
    """The picker filled with the demo's facts."""
    return gr.Dropdown(choices=fact_choices())


def find(fact_id: str | None) -> Fact:
    """The demo fact with this id."""
    for fact in demo_facts():
        if fact.id == fact_id:
            return fact
    raise LabError("pick a fact first" if not fact_id else f"no demo fact '{fact_id}'")


def fill(fact_id: str | None, fields: tuple[str, ...]) -> dict[str, Any]:
    """The picked fact's ``fields`` by name, for the inputs it fills; nothing changes without a pick."""
    if not fact_id:
        return {}
    picked = find(fact_id)
    return {name: getattr(picked, name) for name in fields}
