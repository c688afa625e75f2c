"""The web lab driven in headless Chromium (Playwright) on the tiny demo.

One browser walks the whole workflow: the demo pair loads on start, both models
answer a prompt side by side (checked against the engines' own greedy
answers), an attack transform rewrites the prompt, a ``direct`` audit runs on a
few facts per split and its numbers match the store, the run opens in Results
down to one item and downloads as Parquet, the logit-lens and SAE views draw,
and the run's report downloads as HTML.  A
screenshot of every tab goes to test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import expect

from audits import get_audit
from lab.shell.ui import running

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make browser)")
LIMIT = 3  # facts per split in the audit


@pytest.fixture()
def served(demo_env, monkeypatch):
    """The lab on the tiny demo with a fresh database: (url, Lab)."""
    monkeypatch.setenv("LAB_DEMO_PROFILE", "tiny")
    with running(server_name="127.0.0.1", quiet=True) as served:
        yield served


@pytest.fixture()
def page(served):
    from playwright.sync_api import sync_playwright

    expect.set_options(timeout=90_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.set_default_timeout(90_000)
        page.goto(served[0])
        yield page
        browser.close()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in a Gradio dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea").input_value()


def cell(page, elem_id: str, text: str):
    """The visible table cell of ``elem_id`` whose text is exactly ``text`` (Gradio also keeps hidden copies)."""
    return page.locator(f"#{elem_id} [role=gridcell]", has_text=re.compile(rf"^\s*{re.escape(text)}\s*$")).first


def wait_loaded(page) -> None:
    page.locator("#models-status").get_by_text("Loaded").wait_for()


def shot(page, artifacts: Path, name: str) -> None:
    page.wait_for_timeout(400)  # let plots finish drawing
    page.screenshot(path=str(artifacts / f"ui-{name}.png"), full_page=True)


def test_lab_in_the_browser(served, page, artifacts_dir, tiny_demo, tmp_path):
    from lab.core.facts import load_facts
    from lab.shell.ui.session import PairSpec

    url, lab = served
    # Models: the demo pair is ready on start.
    wait_loaded(page)
    assert "demo:base → demo:npo" in page.locator("#models-status").inner_text()
    models = page.locator("#models-table").inner_text()
    assert "LlamaForCausalLM" in models and "demo:npo" in models
    assert "✓ tokenizer check" in page.locator("#models-tokenizer").inner_text()
    shot(page, artifacts_dir, "models")

    # Probe: a forget fact, both models side by side, equal to the engines' own greedy answers.
    facts = load_facts(tiny_demo / "facts.jsonl")
    fact = facts.split("forget")[0]
    open_tab(page, "Probe")
    choose(page, "probe-fact", f"[forget] {fact.question}")
    expect(page.locator("#probe-gold textarea")).to_have_value(fact.answer)
    page.locator("#probe-tokens input[type=number]").fill("12")
    page.locator("#probe-tokens input[type=number]").press("Enter")
    page.locator("#probe-run").click()
    cell(page, "probe-scores", "unlearned").wait_for()
    pair = lab.pair(PairSpec.demo("npo"))
    prompt = pair.base.prompt(fact.question)
    assert text_of(page, "probe-sent") == prompt
    assert text_of(page, "probe-base").strip() == pair.base.generate([prompt], 12)[0]
    assert text_of(page, "probe-unlearned").strip() == pair.unlearned.generate([prompt], 12)[0]
    scores = page.locator("#probe-scores").inner_text()
    expected_lp = pair.base.answer_logprobs([prompt], [fact.answer])[0]
    assert f"{expected_lp:.3f}".rstrip("0").rstrip(".") in scores
    # An attack transform rewrites the prompt; the attribution view draws for the gold answer.
    page.locator("#probe-steps-direct").click()
    expect(page.locator("#probe-prompt textarea")).to_have_value(re.compile("step by step", re.IGNORECASE))
    assert fact.question in text_of(page, "probe-prompt")
    page.locator("#probe-run").click()
    expect(page.locator("#probe-sent textarea")).to_have_value(re.compile("step by step", re.IGNORECASE))
    page.locator("#probe-attribute").click()
    page.locator("#probe-attribution .js-plotly-plot").wait_for()
    shot(page, artifacts_dir, "probe")

    # Audit: direct and logit_lens (one option edited in the table) on LIMIT facts per split;
    # the numbers shown are the stored ones, the edited option reached the run.
    open_tab(page, "Audit")
    page.locator("#audit-select").get_by_text("logit_lens", exact=True).click()
    option_k = page.locator("#audit-options [role=row]").filter(
        has=page.locator("[role=gridcell]", has_text=re.compile(r"^\s*k\s*$")))
    option_k.locator("[role=gridcell]").nth(4).dblclick()
    page.keyboard.press("Control+A")
    page.keyboard.type("3")
    page.keyboard.press("Enter")
    page.locator("#audit-limit input").fill(str(LIMIT))
    page.locator("#audit-run").click()
    page.locator("#audit-status").get_by_text("complete").wait_for()
    run_id = lab.store.runs().iloc[-1]["run_id"]
    assert run_id in page.locator("#audit-status").inner_text()
    assert lab.store.run(run_id)["config"]["options"]["logit_lens"]["k"] == 3
    items = lab.store.items(run_id, "direct")
    assert len(items) == 3 * LIMIT and set(items["split"]) == {"forget", "retain", "holdout"}
    shown = page.locator("#audit-metrics").inner_text()
    for audit, values in lab.store.metrics_dict(run_id).items():
        for key, value, _, _ in get_audit(audit)().headline(values):
            assert key in shown and (value is None or str(round(value, 4)).rstrip("0").rstrip(".") in shown)
    page.locator("#audit-plots .js-plotly-plot").first.wait_for()
    shot(page, artifacts_dir, "audit")

    # Internals: the logit lens of the same fact.
    open_tab(page, "Internals")
    choose(page, "internals-fact", f"[forget] {fact.question}")
    expect(page.locator("#internals-entity textarea")).to_have_value(fact.entity)
    page.locator("#internals-lens").click()
    page.locator("#internals-lens-plot .js-plotly-plot").wait_for()
    page.locator("#internals-sae").click()  # trains the SAE on the tiny base model (seconds)
    page.locator("#internals-sae-plot .js-plotly-plot").wait_for()
    assert fact.entity in page.locator("#internals-sae-plot").inner_text()
    shot(page, artifacts_dir, "internals")

    # Results: the run, its items down to one record, and the Parquet download.
    open_tab(page, "Results")
    cell(page, "results-runs", run_id).wait_for()
    page.locator("#results-summary").get_by_text(run_id).wait_for()
    stored = lab.store.items(run_id)
    for fact_id in set(stored["fact_id"]):
        cell(page, "results-items", fact_id).wait_for()
    target = stored.iloc[-1]
    cell(page, "results-items", target["fact_id"]).click()
    page.locator("#results-item .item-detail").wait_for()
    detail = page.locator("#results-item").inner_text()
    assert target["fact_id"] in detail and target["answer"] in detail and target["prompt"].splitlines()[0] in detail
    page.locator("#results-export").click()
    with page.expect_download() as download:
        page.locator("#results-download").click()
    saved = tmp_path / "items.parquet"
    download.value.save_as(saved)
    assert len(pd.read_parquet(saved)) == len(stored)
    shot(page, artifacts_dir, "results")

    # Report: the run's report, previewed and downloaded as HTML.
    open_tab(page, "Report")
    page.locator("#report-preview").get_by_text(run_id).first.wait_for()
    page.locator("#report-export").click()
    with page.expect_download() as download:
        page.locator("#report-download").click()
    report = tmp_path / "report.html"
    download.value.save_as(report)
    text = report.read_text()
    assert text.lstrip().lower().startswith("<!doctype html") and run_id in text and "direct" in text
    shot(page, artifacts_dir, "report")


def test_errors_show_in_the_page_and_the_lab_keeps_working(served, page, artifacts_dir, tmp_path):
    wait_loaded(page)
    # A model that does not exist: a message, and the loaded pair stays usable.
    page.locator("#models-source").get_by_text("Your models", exact=True).click()
    page.locator("#models-base textarea").fill("/no/such/model")
    page.locator("#models-unlearned textarea").fill("/no/such/model")
    page.locator("#models-load").click()
    toast = page.get_by_test_id("toast-body").first
    expect(toast).to_contain_text("model directory not found: /no/such/model")
    assert "Traceback" not in page.content()
    shot(page, artifacts_dir, "error")
    page.get_by_test_id("toast-close").first.click()
    page.locator("#models-source").get_by_text("Demo pair", exact=True).click()
    choose(page, "models-demo", "ga")
    page.locator("#models-load").click()
    page.locator("#models-status").get_by_text("demo:ga").wait_for()

    # A malformed facts file: its line and field named; a good one: counted by split.
    open_tab(page, "Audit")
    page.locator("#audit-facts-source").get_by_text("Upload a file", exact=True).click()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Who?", "answer": "Zed"}\n{"question": "Where?"}\n')
    page.locator("#audit-facts-file input[type=file]").set_input_files(str(bad))
    expect(page.get_by_test_id("toast-body").first).to_contain_text("bad.jsonl: line 2: field 'answer' is missing")
    page.get_by_test_id("toast-close").first.click()
    good = tmp_path / "mine.csv"
    good.write_text("question,answer,split\nWho is nobody?,Zed,forget\nWho is somebody?,Ann,retain\n")
    page.locator("#audit-facts-file button[aria-label='Clear']").first.click()
    page.locator("#audit-facts-file input[type=file]").set_input_files(str(good))
    expect(page.locator("#audit-facts-info")).to_contain_text("2 facts (1 forget, 1 retain, 0 holdout)")
