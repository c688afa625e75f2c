"""The Results tab's queries: runs from the store, filtered, and one run's items.

Every item of a run has a stable id, the ``#`` column: its place in the run as stored (items are only ever
appended, and the store reads them back in that order).  Filters keep each item's id, so ``#`` 37 is the same
item in the full list and under ``recovered only``, and a link (:mod:`lab.shell.ui.links`) names it by that id.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from lab.core.store import Store
from lab.shell.ui.links import ALL
from lab.shell.ui.views import ITEM_COLUMNS

STATUSES = [ALL, "complete", "failed", "interrupted", "running"]
SPLITS = [ALL, "forget", "retain", "holdout"]
MAX_SHOWN_ITEMS = 2000  # the page shows this many; downloads carry every row


def runs_frame(store: Store, text: str = "", status: str = ALL) -> pd.DataFrame:
    """Stored runs, newest first, whose id, models or audits contain ``text``."""
    runs = store.runs()
    if status != ALL:
        runs = runs[runs["status"] == status]
    text = text.strip().lower()
    if text:
        haystack = runs[["run_id", "base_ref", "unlearned_ref", "audits"]].astype(str).agg(" ".join, axis=1)
        runs = runs[haystack.str.lower().str.contains(text, regex=False)]
    runs = runs.iloc[::-1].copy()
    runs["created_at"] = runs["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S")
    return runs[["run_id", "created_at", "status", "base_ref", "unlearned_ref", "audits"]]


def run_items(store: Store, run_id: str, audit: str = ALL, split: str = ALL,
              recovered_only: bool = False, fact: str = "") -> pd.DataFrame:
    """The run's items, filtered (``fact``: part of a fact id), with a ``#`` column: each item's stored id
    (numbered before any filter, see the module docstring), which names it in the detail view and the URL."""
    items = store.items(run_id)
    items.insert(0, "#", range(len(items)))
    fact = (fact or "").strip()
    if fact:
        items = items[items["fact_id"].astype(str).str.contains(fact, regex=False)]
    if audit != ALL:
        items = items[items["audit"] == audit]
    if split != ALL:
        items = items[items["split"] == split]
    if recovered_only:
        items = items[items["recovered"].fillna(False).astype(bool)]
    return items.reset_index(drop=True)


def find_item(items: pd.DataFrame | None, item_id: float | None) -> pd.Series | None:
    """The item whose stored id is ``item_id`` among ``items`` (a filtered list), or None when it is not there."""
    if items is None or item_id is None or pd.isna(item_id):
        return None
    rows = items[items["#"] == int(item_id)]
    return None if rows.empty else rows.iloc[0]


def shown(items: pd.DataFrame) -> pd.DataFrame:
    """The columns and rows the page shows (full rows stay in the session for the detail view)."""
    return items[ITEM_COLUMNS].head(MAX_SHOWN_ITEMS)


def scratch_path(name: str) -> Path:
    """``name`` in a fresh temporary folder: a file the page offers for download."""
    return Path(tempfile.mkdtemp(prefix="lab-")) / name


def export_file(store: Store, run_id: str, fmt: str, items: pd.DataFrame | None = None) -> str:
    """Write the run's items in ``fmt`` to a fresh temporary file and return its path: the rows ``items``
    holds (the filters on screen, every matching row, not only those shown) or, without it, all of them."""
    rows = None if items is None else items.drop(columns="#", errors="ignore")
    suffix = "" if items is None else "-filtered"
    return str(store.export(run_id, fmt, scratch_path(f"{run_id}{suffix}.{fmt}"), items=rows))


def sweep_choices(store: Store) -> list[tuple[str, str]]:
    """Stored sweeps for a picker, newest first: ``sweep-… · complete · 4 of 4 pairs``."""
    sweeps = store.sweeps().iloc[::-1]
    return [(f"{r.sweep_id} · {r.status} · {r.completed} of {r.pairs} pairs", r.sweep_id) for r in sweeps.itertuples()]
