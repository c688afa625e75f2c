"""Paths and switches read from the environment (see CONTRACTS: Environment)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user's cache folder for the lab (XDG convention)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unlearning-audit-lab"


def demo_dir() -> Path:
    """Where the demo world lives: ``$LAB_DEMO_DIR`` or the user's cache."""
    override = os.environ.get("LAB_DEMO_DIR")
    return Path(override) if override else cache_dir() / "demo"


def default_db() -> Path:
    """The default DuckDB file: ``$LAB_DB`` or the user's cache."""
    override = os.environ.get("LAB_DB")
    return Path(override) if override else cache_dir() / "lab.duckdb"


def space_mode() -> bool:
    """True in a hosted Space (``LAB_SPACE=1``): no server paths, request limits."""
    return os.environ.get("LAB_SPACE", "").strip().lower() in {"1", "true", "yes", "on"}


def demo_profile() -> str:
    """The demo profile the web lab builds on first launch: ``$LAB_DEMO_PROFILE`` (tiny or full)."""
    return os.environ.get("LAB_DEMO_PROFILE", "").strip() or "full"
