"""The manual: generated pages current, the site builds with ``mkdocs build --strict`` (a broken link, anchor or
image fails), the README is a front page whose links resolve, and the generator follows the registry."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import audits
from lab.core.errors import LabError
from lab.shell import docs
from lab.shell.catalog import options_table
from lab.shell.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def test_generated_pages_are_current(capsys):
    """Fails after an audit, an option or a flag changed until `python -m lab docs` is run and committed."""
    code = main(["docs", "--check"])
    assert code == 0, capsys.readouterr().err


def test_the_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for page in ["tour", "cli", "metrics-parity", "calibration", *(f"audits/{name}" for name in audits.REGISTRY)]:
        assert (site / page / "index.html").is_file(), page


def test_the_readme_is_a_front_page_whose_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "make run" in text and "make test" in text
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert any(t.endswith(".png") for t in local)  # a screenshot
    assert [t for t in local if not (ROOT / t).exists()] == []


def test_a_new_audit_gets_its_page_and_nav_entry(monkeypatch):
    monkeypatch.setitem(audits.REGISTRY, "direct_copy", audits.REGISTRY["direct"])
    pages = docs.generated(build_parser())
    page = pages[docs.AUDITS / "direct_copy.md"]
    assert page.startswith("<!-- Generated") and "# `direct_copy`: " in page
    assert "Not in the recorded calibration run" in page
    assert "- direct_copy: audits/direct_copy.md" in pages[docs.CONFIG]
    assert "[`direct_copy`](direct_copy.md)" in pages[docs.AUDITS / "index.md"]


def test_an_audit_page_carries_its_options_notes_and_calibration_rows():
    cls = audits.get_audit("reasoning")
    page = docs.generated(build_parser())[docs.AUDITS / "reasoning.md"]
    assert options_table(cls) in page
    assert (docs.NOTES / "reasoning.md").read_text(encoding="utf-8").strip() in page
    printout = (docs.DOCS / "calibration.md").read_text(encoding="utf-8")
    rows = [line for line in printout.splitlines() if line.startswith("| reasoning (recovery_rate) |")]
    assert len(rows) == 5 and all(row in page for row in rows)
    assert "| keywords (" not in page


def test_screenshots_are_copied_from_the_browser_tests_folder(tmp_path, monkeypatch):
    manual = tmp_path / "docs"
    manual.mkdir()
    (manual / "page.md").write_text("![a tab](images/ui-some-tab.png)\n")
    monkeypatch.setattr(docs, "DOCS", manual)
    shots = tmp_path / "artifacts"
    shots.mkdir()
    wanted = {"ui-some-tab.png"} | set(re.findall(r"images/(ui-[\w-]+\.png)", (ROOT / "README.md").read_text()))
    with pytest.raises(LabError, match="ui-some-tab.png"):
        docs.copy_screenshots(shots)
    for i, name in enumerate(sorted(wanted)):
        (shots / name).write_bytes(bytes([i]) * 10)
    assert set(docs.copy_screenshots(shots)) == wanted
    assert all((manual / "images" / name).read_bytes() == (shots / name).read_bytes() for name in wanted)
