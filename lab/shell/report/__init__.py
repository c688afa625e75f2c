"""The audit report of one stored run: :mod:`.collect` gathers it from the store, :mod:`.render` lays it out.

The CLI (``python -m lab report``) and the UI's Report tab both call
:func:`render_report` / :func:`write_report`.
"""

from __future__ import annotations

from pathlib import Path

from lab.core.errors import LabError
from lab.core.files import write_text
from lab.core.store import Store
from lab.shell.report import render
from lab.shell.report.collect import FORMATS, collect


def render_report(store: Store, run_id: str, fmt: str = "html") -> str:
    """The report of a stored run as text in ``fmt`` (html, md or json)."""
    if fmt not in FORMATS:
        raise LabError(f"unknown report format '{fmt}' (use {', '.join(FORMATS)})")
    renderer = {"html": render.to_html, "md": render.to_markdown, "json": render.to_json}[fmt]
    return renderer(collect(store, run_id))


def write_report(store: Store, run_id: str, fmt: str, out: str | Path) -> Path:
    """Render the report and write it to ``out`` (never over the store; written whole or not at all)."""
    return write_text(out, render_report(store, run_id, fmt), protected=[store.path])
