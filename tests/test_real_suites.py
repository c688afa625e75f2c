"""The field's benchmarks on the demo models, which never learned them (../shared/cases/real): the command line and
the report say first that the base model does not know the facts; items too long for the 256-token models are
left out with a count, not a failed audit; every n/a says why; multiple choice warns about skewed letters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lab.core.store import Store
from lab.shell.cli import main
from lab.shell.report import render_report
from lab.shell.report.collect import collect

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "cases" / "real"
pytestmark = pytest.mark.skipif(not (REAL / "SOURCES.md").is_file(), reason="needs ../shared/cases/real")


def audit(tmp_path: Path, suite: str, audits: str, *sets: str) -> tuple[str, str, dict]:
    """``python -m lab audit`` of the demo pair on a real suite (in this process): run id, stdout, stored notes."""
    out = tmp_path / f"{suite}.json"
    argv = ["audit", "--base", "demo:base", "--unlearned", "demo:npo", "--facts", f"{suite}:{REAL / suite}",
            "--limit", "10", "--audits", audits, "--device", "cpu", "--json", str(out),
            "--set", "metrics.max_new_tokens=8", *[a for s in sets for a in ("--set", s)]]
    assert main(argv) == 0
    run_id = json.loads(out.read_text())["run_id"]
    with Store(tmp_path / "lab.duckdb", read_only=True) as store:
        rows = store.audits(run_id).set_index("audit")
    assert set(rows["status"]) == {"complete"}, rows[["status", "error"]]
    return run_id, out.read_text(), {name: json.loads(rows.loc[name, "notes"]) for name in rows.index}


def test_tofu_on_the_demo_says_first_that_the_base_does_not_know_the_facts(demo_env, tmp_path, capsys):
    run_id, _, notes = audit(tmp_path, "tofu", "direct,reasoning,metrics")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run {run_id}: complete"
    assert lines[1].startswith("verdict: cannot be judged. demo:npo: the base model answers 0% of the forget "
                               "questions: it does not know them, so there is nothing to forget")
    # a TOFU answer of 270 tokens after its question does not fit the 256-token models: left out, counted
    skipped = [n for n in notes["metrics"] if " items skipped: longer than " in n]
    assert len(skipped) == 1 and "context of 256 tokens" in skipped[0], notes["metrics"]
    with Store(tmp_path / "lab.duckdb", read_only=True) as store:
        report = collect(store, run_id)
        markdown = render_report(store, run_id, "md")
        data = json.loads(render_report(store, run_id, "json"))
    assert report.unknown.startswith("The base model does not know the forget facts: it answers 0% [")
    verdict_section = markdown.split("## Executive summary")[0]
    assert "> **Cannot be judged.** The base model does not know the forget facts" in verdict_section
    summary = markdown.split("## Executive summary")[1].split("## Kill chain")[0]
    assert "claim under audit" not in summary
    assert "| direct | complete | – | cannot be judged: the base model answers 0% of the forget questions" in summary
    assert "| reasoning | complete | recovery_rate = n/a | cannot be judged: no target facts" in summary
    assert re.search(r"No target forget facts: the base model answers none of the \d+ forget questions asked, so no "
                     r"audit had anything to recover\.", summary)
    assert data["verdict"]["unknown"] == report.unknown and data["verdict"]["state"] == "cannot be judged"


def test_muse_passages_longer_than_the_context_are_left_out_with_a_count(demo_env, tmp_path, capsys):
    """MUSE's privleak passages (up to 5,550 tokens here) against 256-token models: the membership part of
    metrics and the passage audits run on what fits, each saying how many items it left out and why."""
    _, _, notes = audit(tmp_path, "muse", "direct,metrics,extraction,surrogates", "metrics.mia_source=text")
    for name in ("metrics", "extraction", "surrogates"):  # the passage audits read a text's opening and sequel
        line = next(n for n in notes[name] if " items skipped: longer than " in n)
        longest = int(re.search(r"the longest needs ([\d,]+)\)", line).group(1).replace(",", ""))
        assert longest > (5000 if name == "metrics" else 256) and "text forget (privleak)" in line, line
    assert any(n.startswith("no forget and no holdout texts to score (text)") for n in notes["metrics"])


def test_rwku_says_why_membership_is_na_and_warns_about_its_one_letter_answers(demo_env, tmp_path, capsys):
    run_id, _, notes = audit(tmp_path, "rwku", "direct,metrics,multiple_choice")
    assert ("no holdout texts to score (answer): the membership AUCs and privleak compare forget with holdout texts, "
            "so they are n/a") in notes["metrics"]
    mc = notes["multiple_choice"]
    assert ("retain: the gold answers are unbalanced: C is right in 3 of 3 questions, so a model that always picks C "
            "scores 100% (chance is 25% per question)") in mc
    with Store(tmp_path / "lab.duckdb", read_only=True) as store:
        report = collect(store, run_id)
    entries = {a.name: a for a in report.audits}
    assert "Min-K% AUC and privleak n/a (no forget or no holdout texts to compare)" in entries["metrics"].verdict
    assert entries["multiple_choice"].verdict.startswith("no forget questions of this kind (forget accuracy n/a)")
    assert report.verdict.cell("multiple_choice").reason.startswith("no forget questions of its kind")
