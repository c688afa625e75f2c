"""The audit report: every format, for a complete run and for runs that stopped part way."""

from __future__ import annotations

from collections import Counter

import json
import os
import stat
import math
import shlex
import threading
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from conftest import FULL_RUN_LIMIT
from conftest import run_on_pair as run
from plotly.offline import get_plotlyjs

import audits
from audits import available, get_audit
from lab.core.batching import Cancelled, cancellable
from lab.core.options import AuditOptions, build_options, options_dict
from lab.core.store import Store
from lab.shell.cli import build_parser, spec_from_args, main
from lab.shell.report import render_report, write_report
from lab.shell.report.collect import collect, kill_chain
from lab.shell.report.render import SECTIONS, figure_id, number

CHROMIUM = Path("/usr/bin/chromium")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@pytest.fixture(scope="module")
def full(full_run) -> tuple[Store, str]:
    return full_run


@pytest.fixture(scope="module")
def failed(tiny_demo, demo_pair, tmp_path_factory) -> tuple[Store, str]:
    """logit_lens fails at run time (no middle layer past min_layer in the 2-layer tiny model), 'ghost' is
    registered but its module is missing; the rest completes."""
    store = Store(tmp_path_factory.mktemp("report") / "failed.duckdb")
    patch = pytest.MonkeyPatch()
    patch.setitem(audits.REGISTRY, "ghost", "audits.ghost_not_installed:GhostAudit")
    try:
        run_id = run(tiny_demo, demo_pair, store, ["direct", "logit_lens", "ghost", "quantization"],
                     sets={"logit_lens": {"min_layer": "5"}}, extra_options={"ghost": AuditOptions()})
    finally:
        patch.undo()
    return store, run_id


class StopAfter(Store):
    """A store that asks the run to stop once a given audit has finished."""

    def __init__(self, path: Path, audit: str, stop: threading.Event):
        super().__init__(path)
        self.after, self.stop = audit, stop

    def finish_audit(self, run_id, audit, status, error=None, notes=None):
        super().finish_audit(run_id, audit, status, error, notes)
        if audit == self.after:
            self.stop.set()


@pytest.fixture(scope="module")
def interrupted(tiny_demo, demo_pair, tmp_path_factory) -> tuple[Store, str]:
    stop = threading.Event()
    store = StopAfter(tmp_path_factory.mktemp("report") / "stopped.duckdb", "direct", stop)
    with cancellable(stop), pytest.raises(Cancelled):
        run(tiny_demo, demo_pair, store, ["direct", "quantization", "remind"])
    return store, store.runs()["run_id"].iloc[-1]


def expected_figures(store: Store, run_id: str) -> list[str]:
    """Element ids of every figure the complete audits of a run draw, asked of each audit directly."""
    done = store.audits(run_id)
    ids = []
    for name in done[done["status"] == "complete"]["audit"]:
        figures = get_audit(name)().figures(store.artifacts(run_id).get(name, {}), store.items(run_id, name))
        ids += [figure_id(name, fig) for fig in figures]
    return ids


class Structure(HTMLParser):
    """Element ids, script sources and stylesheet links of a page; fails on unbalanced tags."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.ids: set[str] = set()
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        for key in ("src", "href"):
            if attrs.get(key) and not attrs[key].startswith("#"):
                self.external.append(attrs[key])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def parse(html: str) -> Structure:
    parser = Structure()
    parser.feed(html)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    return parser


# ------------------------------------------------------------------ unit cases
def test_kill_chain_hand_computed():
    def item(audit, fact, split, hit_b, hit_u, recovered=None, category=""):
        return dict(audit=audit, fact_id=fact, split=split, category=category, prompt=f"{audit}:{fact}:{category}",
                    answer=f"ans-{fact}", output_unlearned=f"out-{fact}", hit_base=hit_b, hit_unlearned=hit_u,
                    recovered=recovered)

    items = pd.DataFrame([
        item("direct", "f1", "forget", True, False),  # target
        item("direct", "f2", "forget", True, True),  # not forgotten: no target
        item("direct", "f3", "forget", True, False),  # target no audit brings back
        item("direct", "r1", "retain", True, False),  # suppressed on the plain question
        item("direct", "r2", "retain", True, True),
        item("direct", "h1", "holdout", False, False),
        item("logit_lens", "f1", "forget", True, False, True, "target"),  # read in hidden states, not the text
        item("reasoning", "f1", "forget", True, True, True, "implied"),
        item("reasoning", "f1", "forget", True, False, False, "direct"),
        item("reasoning", "f3", "forget", True, False, False, "direct"),
        item("keywords", "f1", "forget", True, True, True, "repeat"),
        item("keywords", "f1", "forget", True, True, True, "upper"),
        item("reasoning", "r2", "retain", True, False, None, "indirect"),  # suppressed only under an attack
        item("remind", "r1", "retain", None, None, None, "landscape"),  # no hits: never suppression evidence
    ])
    chain = kill_chain(items)
    assert chain.targets == ["f1", "f3"]
    assert [r.fact_id for r in chain.recovered] == ["f1"]
    assert chain.recovered[0].by == {"logit_lens": ["target"], "reasoning": ["implied"], "keywords": ["repeat", "upper"]}
    # the evidence is a prompt whose output text hits, not the hidden-state read-out listed first
    assert chain.recovered[0].question == "direct:f1:" and chain.recovered[0].prompt == "reasoning:f1:implied"
    assert chain.held == ["f3"]
    assert {r.fact_id: r.by for r in chain.suppressed} == {"r1": {"direct": []}, "r2": {"reasoning": ["indirect"]}}


def test_number_formats():
    assert number("recovery_rate", 0.25) == "25.0%"
    assert number("retain_accuracy_base", 1.0) == "100.0%"
    assert number("targets", 17.0) == "17"
    assert number("auc_forget_vs_holdout", 1.0) == "1.000"
    assert number("logprob_gain", -0.1234) == "-0.123"
    assert number("recovery_rate", None) == "n/a" and number("x", math.nan) == "n/a"


# ------------------------------------------------------------ complete run
def test_html_is_self_contained_with_every_section_and_figure(full):
    store, run_id = full
    html = render_report(store, run_id, "html")
    page = parse(html)
    assert {sid for sid, _ in SECTIONS} <= page.ids
    assert page.external == [], "the report must not load anything"
    figures = expected_figures(store, run_id)
    assert len(figures) >= 5 and set(figures) <= page.ids
    assert html.count(get_plotlyjs()[:400]) == 1  # plotly.js inlined exactly once
    assert "partial" not in page.ids  # no "partial results" banner on a complete run
    for name in store.audits(run_id)["audit"]:
        assert f'id="audit-{name}"' in html


def test_json_and_markdown_hold_the_same_content(full, demo_all_facts):
    store, run_id = full
    data = json.loads(render_report(store, run_id, "json"))
    markdown = render_report(store, run_id, "md")
    metrics = store.metrics_dict(run_id)
    assert data["partial"] is None and data["run"]["status"] == "complete"
    assert [s["audit"] for s in data["summary"]] == available()
    cells = {c["audit"]: c for c in data["verdict"]["cells"]}
    for row in data["summary"]:
        cls = get_audit(row["audit"])
        if row["status"] == "skipped":  # no item of its kinds in the demo: the note says so
            assert row["verdict"].startswith("skipped: ") and row["audit"] not in metrics
            continue
        cell = cells[row["audit"]]  # an audit the rules cannot judge says why, not a rate over nothing
        assert row["verdict"] == (f"cannot be judged: {cell['reason']}" if cell["state"] == "cannot be judged"
                                  else cls().verdict(metrics[row["audit"]]))
        assert row["headline_value"] == (metrics[row["audit"]].get(cls.recovery_key) if cls.recovery_key else None)
        assert row["verdict"] in markdown.replace("\\|", "|")
    items = store.items(run_id)
    recovered = items[(items["split"] == "forget") & items["recovered"].eq(True)]
    assert {r["fact_id"] for r in data["kill_chain"]["recovered"]} == set(recovered["fact_id"])
    for row in data["kill_chain"]["recovered"]:
        assert set(row["by"]) == set(recovered[recovered["fact_id"] == row["fact_id"]]["audit"])
        assert f"| {row['fact_id']} |" in markdown
    for name, entry in data["audits"].items():
        assert set(entry["figures"]) == {fid.removeprefix(f"fig-{name}-") for fid in expected_figures(store, run_id)
                                         if fid.startswith(f"fig-{name}-")}
        assert all("data" in fig for fig in entry["figures"].values())
    assert data["models"]["base"]["content_hash"] == store.run(run_id)["base_hash"]
    # the limit holds per split and kind (questions, multiple choice and passages each get it)
    assert data["facts"]["counts"] == dict(Counter(f.split for f in demo_all_facts.limited(FULL_RUN_LIMIT).facts))
    assert data["environment"]["packages"]["torch"]
    headings = [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    assert headings == [title for _, title in SECTIONS]


def test_repeat_command_parses_back_to_the_stored_config(full):
    store, run_id = full
    command = collect(store, run_id).repeat_command
    spec = spec_from_args(build_parser().parse_args(shlex.split(command)[3:]))
    config = store.run(run_id)["config"]
    assert (spec.limit, spec.device) == (FULL_RUN_LIMIT, "cpu")
    assert {k: v for k, v in spec.to_dict().items() if k != "options"} == \
        {k: config[k] for k in spec.to_dict() if k != "options"}  # every run-spec field, the prompt format included
    for name in spec.audits:
        rebuilt = build_options(get_audit(name).Options, name, spec.options.get(name, {}))
        assert options_dict(rebuilt) == config["options"][name]


def test_report_cli(full, tmp_path, capsys):
    store, run_id = full
    db = str(store.path)
    for fmt in ("html", "md", "json"):
        out = tmp_path / "out" / f"report.{fmt}"
        assert main(["report", "--db", db, "--run", run_id, "--out", str(out), "--format", fmt]) == 0
        assert capsys.readouterr().out.strip() == str(out) and out.stat().st_size > 1000
    assert main(["report", "--db", db, "--run", "run-missing", "--out", str(tmp_path / "x.html")]) == 2
    assert "no run 'run-missing'" in capsys.readouterr().err
    assert main(["report", "--db", db, "--run", run_id, "--out", str(tmp_path / "x"), "--format", "pdf"]) == 2


# -------------------------------------------------------- runs that stopped
def test_failed_run_report_says_so(failed):
    store, run_id = failed
    report = collect(store, run_id)
    status = {a.name: a.status for a in report.audits}
    assert status == {"direct": "complete", "logit_lens": "failed", "ghost": "failed", "quantization": "complete"}
    lens, ghost = (next(a for a in report.audits if a.name == n) for n in ("logit_lens", "ghost"))
    assert [a.error for a in report.audits if a.status == "complete"] == [None, None]
    assert "no middle layers to read" in lens.error and lens.figures == {}
    assert "cannot be loaded" in ghost.error and ghost.paper.startswith("unknown")
    assert report.partial.startswith("This run failed part way") and "logit_lens (failed)" in report.partial
    html, markdown = render_report(store, run_id, "html"), render_report(store, run_id, "md")
    page = parse(html)
    assert "partial" in page.ids and set(expected_figures(store, run_id)) <= page.ids
    assert "**Partial results.**" in markdown and "logit_lens: the audit failed" in markdown
    data = json.loads(render_report(store, run_id, "json"))
    assert data["partial"] == report.partial and data["audits"]["logit_lens"]["status"] == "failed"


def test_interrupted_run_report_lists_what_did_not_finish(interrupted):
    store, run_id = interrupted
    report = collect(store, run_id)
    assert report.run["status"] == "interrupted"
    assert [(a.name, a.status) for a in report.audits] == [
        ("direct", "complete"), ("quantization", "interrupted"), ("remind", "not run")]
    assert report.partial.startswith("This run was interrupted")
    assert "remind (not run)" in report.partial
    parse(render_report(store, run_id, "html"))
    assert json.loads(render_report(store, run_id, "json"))["audits"]["remind"]["status"] == "not run"


# ----------------------------------------------------------------- browser
def open_offline(html_path: Path, screenshot: Path) -> dict:
    """Open a report in headless chromium with the network cut; return what the page drew."""
    from playwright.sync_api import sync_playwright

    requests, errors = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1400, "height": 1000})
            context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                          else (requests.append(route.request.url), route.abort()))
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(html_path.as_uri())
            page.wait_for_function("Array.from(document.querySelectorAll('.plotly-graph-div'))"
                                   ".every(d => d.querySelector('.main-svg'))", timeout=30_000)
            drawn = page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => d.id)")
            overflow = page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot')).filter(d => "
                                     "d.querySelector('.main-svg').getBoundingClientRect().width > "
                                     "d.getBoundingClientRect().width + 1).map(d => d.id)")
            sections = page.evaluate("Array.from(document.querySelectorAll('section')).map(s => s.id)")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {"drawn": drawn, "overflow": overflow, "sections": sections, "requests": requests, "errors": errors}


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make browser)")
@pytest.mark.parametrize("which", ["full", "failed"])
def test_html_opens_offline_in_chromium(which, request, artifacts_dir, tmp_path):
    store, run_id = request.getfixturevalue(which)
    path = write_report(store, run_id, "html", tmp_path / f"report-{which}.html")
    seen = open_offline(path, artifacts_dir / f"report-{which}.png")
    assert seen["requests"] == [] and seen["errors"] == []
    assert sorted(seen["drawn"]) == sorted(expected_figures(store, run_id))
    assert seen["overflow"] == [], "plots wider than their cell"
    assert seen["sections"] == [sid for sid, _ in SECTIONS]


@pytest.mark.parametrize("mask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_report_and_export_files_get_the_mode_of_any_new_file(tmp_path, capsys, mask):
    """Outputs are filled privately and renamed into place with the mode the user's umask gives any new file
    (0644 under the usual 022), never mkstemp's 0600."""
    from lab.core.store import new_run_id

    db = tmp_path / "modes.duckdb"
    with Store(db) as store:
        run_id = new_run_id()
        store.create_run(run_id=run_id, base={"ref": "demo:base", "content_hash": "a"},
                         unlearned={"ref": "demo:npo", "content_hash": "b"}, reference=None, facts_source="f.jsonl",
                         facts_hash="h", audits=["direct"], config={"limit": None}, environment={"python": "3"})
    previous = os.umask(mask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        outputs = [tmp_path / "report.md", tmp_path / "items.csv"]
        assert main(["report", "--db", str(db), "--run", run_id, "--out", str(outputs[0]), "--format", "md"]) == 0
        assert main(["export", "--db", str(db), "--run", run_id, "--format", "csv", "--out", str(outputs[1])]) == 0
        assert main(["report", "--db", str(db), "--run", run_id, "--out", str(outputs[0]), "--format", "md"]) == 0
    finally:
        os.umask(previous)
    capsys.readouterr()
    assert stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~mask
    assert [stat.S_IMODE(p.stat().st_mode) for p in outputs] == [0o666 & ~mask] * 2
