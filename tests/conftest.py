"""Shared fixtures: the tiny demo world, built once and reused by every test.

The tiny demo is built into ``$LAB_TEST_DEMO`` (default ``.cache/demo-tiny``
in the repo); ``build_demo`` locks, so parallel pytest processes share one build.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_DEMO = Path(os.environ.get("LAB_TEST_DEMO", ROOT / ".cache" / "demo-tiny"))
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def tiny_demo() -> Path:
    """Directory of the tiny demo (facts, models, manifest)."""
    from lab.demo.build import build_demo

    return build_demo("tiny", TEST_DEMO)


@pytest.fixture()
def demo_env(tiny_demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point LAB_DEMO_DIR at the tiny demo and LAB_DB at a fresh file."""
    monkeypatch.setenv("LAB_DEMO_DIR", str(tiny_demo))
    monkeypatch.setenv("LAB_DB", str(tmp_path / "lab.duckdb"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tiny_demo


@pytest.fixture(scope="session")
def demo_pair(tiny_demo: Path):
    """The tiny base model and its NPO-unlearned version, loaded once."""
    from lab.core.models import load_pair

    return load_pair(str(tiny_demo / "models" / "base"), str(tiny_demo / "models" / "npo"), device="cpu")


@pytest.fixture(scope="session")
def demo_all_facts(tiny_demo: Path):
    """Every item of the tiny demo: questions and the multiple-choice items."""
    from lab.core.facts import load_facts

    return load_facts(tiny_demo / "facts.jsonl")


@pytest.fixture(scope="session")
def demo_facts(demo_all_facts):
    """The demo's questions, what most audits run on (the runner gives each audit the kinds it uses)."""
    return demo_all_facts.of_kinds(("qa",))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests write screenshots and reports for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


FULL_RUN_LIMIT = 12  # facts per split: enough known retain entities for the SAE view, small enough for seconds


def run_on_pair(tiny_demo: Path, demo_pair, store, names: list[str], sets: dict | None = None,
                extra_options: dict | None = None, facts: str | None = None) -> str:
    """A run of ``names`` on the session's loaded tiny pair (no reload), returning its id.

    ``extra_options`` adds audits with ready options that skip the checks (an audit whose module is missing);
    ``facts`` is another facts file than the demo's.
    """
    from lab.core.store import new_run_id
    from lab.shell.spec import RunSpec, build_spec
    from lab.shell.runner import PreparedRun, check, execute

    spec = build_spec(RunSpec, dict(base=str(tiny_demo / "models" / "base"), unlearned=str(tiny_demo / "models" / "npo"),
                   audits=[n for n in names if n not in (extra_options or {})], facts=facts or str(tiny_demo / "facts.jsonl"),
                   device="cpu", limit=FULL_RUN_LIMIT, options=sets or {}))
    checked = check(spec)
    spec = dataclasses.replace(spec, audits=tuple(names))  # with the audits that skip the checks
    prepared = PreparedRun(new_run_id(), spec, demo_pair, None, checked.facts,
                           {**checked.options, **(extra_options or {})}, loader=None)
    return execute(prepared, store).run_id


@pytest.fixture(scope="session")
def full_run(tiny_demo: Path, demo_pair, tmp_path_factory):
    """Every available audit on the tiny pair, once per session: (store, run id)."""
    from audits import available
    from lab.core.store import Store

    store = Store(tmp_path_factory.mktemp("full") / "full.duckdb")
    run_id = run_on_pair(tiny_demo, demo_pair, store, available())
    assert store.run(run_id)["status"] == "complete", store.audits(run_id)[["audit", "status", "error"]].to_string()
    return store, run_id
