"""The web lab driven in headless Chromium (Playwright) on the tiny demo.

- The workflow (desktop, light): the demo pair loads on start; the verdict dashboard audits the demo's four
  unlearned models in one click, streaming progress with Run disabled, and its grid matches the stored
  sweep; the Results tab's leaderboard reopens that sweep; the Probe diffs both outputs (checked against the
  engines' own greedy answers and probabilities), transforms start from the original question, the
  attribution colours the prompt; an audit runs with progress over the whole run (audits and fact checks)
  and shows its verdict row; the Results tab filters items, exports exactly the filtered rows, replays an
  item in the Probe, opens its logit lens in Internals and explains it in the Probe, and the URL reopens the
  run, fact and item; the report downloads.
- Errors: beside the control that caused them, never over the input; "Upload a file" before a file is
  picked (a regression) shows a hint, not an error; an unknown hub id fails fast offline; an over-long prompt
  is flagged beside the prompt box and sent cut from the left; the attribution panel says what Explain shows.
- Looks: every tab at desktop 1440x900 and phone 390x844, light and dark: nothing wider than a phone,
  the theme's colours in dark mode; on a phone the leaderboard's sentences stay inside their card and the
  heatmap's title clears the audits' labels.  Screenshots go to test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import expect

from lab.shell.ui import running

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TAB_TITLES = ("Models", "Verdicts", "Probe", "Audit", "Internals", "Results", "Report")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make browser)")
LIMIT = 3  # facts per split in the audit
DESKTOP, PHONE = {"width": 1440, "height": 900}, {"width": 390, "height": 844}


@pytest.fixture()
def served(demo_env, monkeypatch):
    """The lab on the tiny demo with a fresh database: (url, Lab)."""
    monkeypatch.setenv("LAB_DEMO_PROFILE", "tiny")
    with running(server_name="127.0.0.1", quiet=True) as served:
        yield served


@pytest.fixture()
def browser():
    from playwright.sync_api import sync_playwright

    expect.set_options(timeout=90_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


def open_page(browser, url: str, viewport=DESKTOP, scheme: str = "light"):
    page = browser.new_context(viewport=viewport, color_scheme=scheme, accept_downloads=True).new_page()
    page.set_default_timeout(90_000)
    page.goto(url)
    return page


@pytest.fixture()
def page(served, browser):
    return open_page(browser, served[0])


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in a Gradio dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea").input_value()


def cell(page, elem_id: str, text: str):
    """The visible table cell of ``elem_id`` whose text is exactly ``text`` (Gradio also keeps hidden copies)."""
    return page.locator(f"#{elem_id} [role=gridcell]", has_text=re.compile(rf"^\s*{re.escape(text)}\s*$")).first


def wait_loaded(page, state: str = "visible") -> None:
    page.locator("#models-status").get_by_text("Loaded").wait_for(state=state)


def shot(page, artifacts: Path, name: str) -> None:
    page.wait_for_timeout(500)  # let plots finish drawing
    page.screenshot(path=str(artifacts / f"ui-{name}.png"), full_page=True)


def grid_states(page, elem_id: str) -> dict[str, list[str]]:
    """Model -> [overall verdict, then each audit's state] as a verdict grid on the page shows them."""
    rows = page.locator(f"#{elem_id} tr.vrow")
    out = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        out[row.get_attribute("data-model")] = [row.locator(".vverdict .vbadge").first.inner_text()] + \
            row.locator("td.vcell .vstate").all_inner_texts()
    return out


def board_states(board) -> dict[str, list[str]]:
    return {e.model: [e.verdict.state] + [e.cell(a).state for a in board.audits] for e in board.entries}


def browser_of(page):
    return page.context.browser


def never_forgotten_and_failed(page) -> None:
    """No model anywhere on the page reads "forgotten" beside "gate: FAIL": not in a verdict grid, not in a
    leaderboard table (the gate follows the verdict's own judgement)."""
    rows = page.locator("tr.vrow")
    for i in range(rows.count()):
        badges = rows.nth(i).locator(".vverdict .vbadge").all_inner_texts()
        assert not ("forgotten" in badges and "gate: FAIL" in badges), badges
    for table in page.locator("[id$='-table']").all():
        for line in table.locator("[role=row]").all_inner_texts():
            cells = [c.strip() for c in line.split("\t")]
            assert not ("forgotten" in cells and "FAIL" in cells), cells


def grid_fits_its_card(page, elem_id: str) -> None:
    """The verdict grid's every column inside its card: nothing cut, no sideways scroll."""
    wrap = page.locator(f"#{elem_id} .vgrid-wrap")
    widths = wrap.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert widths[0] <= widths[1] + 1, widths


def item_head(page) -> str:
    page.locator("#results-item .item-head").wait_for()
    return page.locator("#results-item .item-head").inner_text()


def shared_links_reopen_their_item(page, url: str, run_id: str, store) -> None:
    """Under filters picked on the page (audit and split; then recovered only and part of a fact id), the last
    listed item is picked (its stored id is not its row); its URL, opened in a fresh page, shows the same
    filters and the same item."""
    from lab.shell.ui import results

    recovered = results.run_items(store, run_id, recovered_only=True)
    combos = [("direct", "forget", False, "")]
    combos += [("all", "all", True, recovered.iloc[-1]["fact_id"][:4])] if len(recovered) else \
        [("all", "retain", False, "p00")]
    open_tab(page, "Results")
    renumbered = False  # an item whose stored id is not its row: a row number would have opened another
    for audit, split, only, text in combos:
        choose(page, "results-audit", audit)
        choose(page, "results-split", split)
        page.locator("#results-recovered input").set_checked(only)
        box = page.locator("#results-fact textarea, #results-fact input").first
        box.fill(text)
        box.press("Enter")
        frame = results.run_items(store, run_id, audit, split, only, text)
        expect(page.locator("#results-count")).to_contain_text(f"{len(frame)} items match")
        item = frame.iloc[-1]
        renumbered = renumbered or int(item["#"]) != len(frame) - 1
        cell(page, "results-items", str(item["#"])).click()
        head = item_head(page)
        assert f"{item['audit']} · {item['fact_id']} · {item['split']}" in head, head
        expect(page).to_have_url(re.compile(rf"item={item['#']}(&|$)"))
        link = page.url
        for part in [f"run={run_id}"] + [f"{k}={v}" for k, v in (("audit", audit), ("split", split)) if v != "all"] + \
                (["recovered=1"] if only else []) + ([f"fact={text}"] if text else []):
            assert part in link, (part, link)
        again = open_page(browser_of(page), link)
        assert item_head(again) == head, (link, head)
        for name, value in (("audit", audit), ("split", split)):
            expect(again.locator(f"#results-{name} input")).to_have_value(value)
        expect(again.locator("#results-recovered input")).to_be_checked(checked=only)
        expect(again.locator("#results-fact textarea, #results-fact input").first).to_have_value(text)
        expect(again).to_have_url(link)  # the reopened page names the same place
        again.context.close()
    assert renumbered


def exported_reports_say_the_verdict(page, browser, run_id: str, store, tmp_path: Path, artifacts: Path) -> None:
    """The run report in HTML, Markdown and JSON opens with the verdict and the gate, as the grid says them;
    the HTML one, opened in the browser, shows them and is no wider than a phone."""
    import json

    from lab.shell.report.leaderboard import entry

    expected = entry(store, run_id)
    gate = "pass" if expected.passes else "FAIL"
    saved = {}
    for fmt in ("html", "md", "json"):
        page.locator("#report-format").get_by_text(fmt, exact=True).click()
        page.locator("#report-export").click()
        with page.expect_download() as download:
            page.locator("#report-download").click()
        saved[fmt] = tmp_path / f"report.{fmt}"
        download.value.save_as(saved[fmt])
    data = json.loads(saved["json"].read_text())
    assert data["verdict"]["state"] == expected.verdict.state and data["verdict"]["gate"] == gate.lower()
    markdown = saved["md"].read_text()
    verdict_at = markdown.index("## Verdict and release gate")
    assert verdict_at < markdown.index("## Executive summary") and f"**{expected.verdict.state}**" in markdown
    assert f"Release gate at" in markdown[verdict_at:]
    html_text = saved["html"].read_text()
    assert html_text.lstrip().lower().startswith("<!doctype html") and run_id in html_text
    for viewport, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
        report = open_page(browser, saved["html"].as_uri(), viewport)
        section = report.locator("#verdict")
        expect(section).to_contain_text(expected.verdict.state)
        expect(section).to_contain_text(f"gate: {gate}")
        expect(section).to_contain_text(expected.verdict.sentence)
        report.wait_for_timeout(300)
        report.screenshot(path=str(artifacts / f"report-file-{name}.png"), full_page=True)
        width = report.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"] + 1, f"the exported report is {width}px wide at {viewport['width']}px"
        report.context.close()


def test_lab_in_the_browser(served, page, artifacts_dir, tiny_demo, tmp_path):
    from lab.core.facts import load_facts
    from lab.shell.report.leaderboard import collect_sweep
    from lab.shell.ui import results
    from lab.shell.ui.probe import rewrites
    from lab.shell.ui.session import demo_pair

    url, lab = served
    # Models: the demo pair is ready on start.
    wait_loaded(page)
    assert "demo:base → demo:npo" in page.locator("#models-status").inner_text()
    assert "✓ tokenizer check" in page.locator("#models-tokenizer").inner_text()
    shot(page, artifacts_dir, "models")

    # Verdicts: the demo's three unlearned models against the retrain control (the default: the control is never
    # also audited; ticked anyway, the page says so beside the control field), progress over the whole job.
    open_tab(page, "Verdicts")
    expect(page.locator("#verdicts-reference textarea")).to_have_value("demo:retrain")
    page.locator("#verdicts-models").get_by_text("retrain", exact=True).click()
    expect(page.locator("#verdicts-reference-note")).to_contain_text("demo:retrain is the control")
    page.locator("#verdicts-models").get_by_text("retrain", exact=True).click()
    expect(page.locator("#verdicts-reference-note")).to_have_text("")
    page.locator("#verdicts-limit input").fill("-3")  # a bad field is answered beside it, as it is typed
    expect(page.locator("#verdicts-limit-msg")).to_contain_text("facts per split must be 0 (all) or more, got -3")
    page.locator("#verdicts-run").click()
    expect(page.locator("#verdicts-run-msg")).to_contain_text("facts per split must be 0 (all) or more, got -3")
    page.locator("#verdicts-limit input").fill("0")
    expect(page.locator("#verdicts-limit-msg")).to_have_text("")
    expect(page.locator("#verdicts-max-tokens")).to_contain_text("Max new tokens (1-128)")  # the demo's context: 256
    page.locator("#verdicts-run").click()
    expect(page.locator("#verdicts-run")).to_be_disabled()
    expect(page.locator("#verdicts-progress")).to_contain_text(re.compile(r"audit \d+ of 12"))
    page.locator("#verdicts-grid tr.vrow").first.wait_for()  # streamed before the sweep ends
    expect(page.locator("#verdicts-status")).to_contain_text("complete", timeout=240_000)
    expect(page.locator("#verdicts-run")).to_be_enabled()
    expect(page.locator("#verdicts-progress")).to_contain_text("12 of 12 audits done")
    expect(page.locator("#verdicts-progress")).to_contain_text(re.compile(r"\b(\d+) of \1 fact checks"))
    sweep_id = lab.store.sweeps().iloc[-1]["sweep_id"]
    board = collect_sweep(lab.store, sweep_id)
    assert [e.model for e in board.entries] == ["npo", "graddiff", "ga"] and board.control == "retrain"
    assert grid_states(page, "verdicts-grid") == board_states(board)
    shot(page, artifacts_dir, "verdicts")
    never_forgotten_and_failed(page)
    grid_fits_its_card(page, "verdicts-grid")
    for entry in board.entries:  # one sentence per model
        expect(page.locator("#verdicts-grid tr.vsentence", has_text=entry.verdict.sentence)).to_have_count(1)
    ga_row = page.locator("#verdicts-grid tr.vsentence").nth(2)
    ga_row.locator("summary").click()  # the worst recovered facts, one click away
    worst = board.entries[2].worst
    if worst:
        expect(ga_row.locator("table.vworst tbody tr")).to_have_count(len(worst))
        assert worst[0].fact_id in ga_row.inner_text()
    else:
        expect(ga_row.locator(".vnone")).to_be_visible()
    assert page.locator("#verdicts-heatmap .js-plotly-plot").count() == 1

    # Results -> Leaderboard: the same sweep reopened, heatmap and sortable table.
    open_tab(page, "Results")
    page.get_by_role("tab", name="Leaderboard (sweeps)").click()
    expect(page.locator("#results-board-grid tr.vrow")).to_have_count(3)
    assert grid_states(page, "results-board-grid") == board_states(board)
    page.locator("#results-board-heatmap .js-plotly-plot").wait_for()
    cell(page, "results-board-table", "graddiff").wait_for()
    shot(page, artifacts_dir, "leaderboard")
    page.get_by_role("tab", name="Runs").click()

    # Probe: a forget fact, both outputs diffed, equal to the engines' own greedy answers and probabilities.
    facts = load_facts(tiny_demo / "facts.jsonl")
    fact = facts.split("forget")[0]
    open_tab(page, "Probe")
    choose(page, "probe-fact", f"[forget] {fact.question}")
    expect(page.locator("#probe-gold textarea")).to_have_value(fact.answer)
    assert f"fact={fact.id}" in page.url and "tab=probe" in page.url
    page.locator("#probe-tokens input[type=number]").fill("12")
    page.locator("#probe-tokens input[type=number]").press("Enter")
    page.locator("#probe-run").click()
    page.locator("#probe-compare .pgold b").nth(1).wait_for()
    pair = lab.pair(demo_pair("npo"))
    prompt = pair.base.prompt(fact.question)
    outputs = [pair.base.generate([prompt], 12)[0], pair.unlearned.generate([prompt], 12)[0]]
    assert text_of(page, "probe-sent") == prompt
    page.locator("#probe-plain").get_by_text("Plain outputs").click()
    assert [text_of(page, "probe-base").strip(), text_of(page, "probe-unlearned").strip()] == outputs
    compare = page.locator("#probe-compare")
    assert [t.strip() for t in compare.locator(".cmp-text").all_inner_texts()] == outputs
    probabilities = [f"{__import__('math').exp(e.answer_logprobs([prompt], [fact.answer])[0]):.3f}"
                     for e in (pair.base, pair.unlearned)]
    assert compare.locator(".pgold b").all_inner_texts() == probabilities
    hits = compare.locator(".cmp-head .badge").all_inner_texts()
    assert all(h in ("✓ hit", "✗ miss") for h in hits) and len(hits) == 2
    if fact.answer.split()[0].lower() in outputs[0].lower():
        assert compare.locator(".cmp-base mark.gold").count() >= 1
    # Transforms start from the original question, whichever was applied before; the active one is named.
    page.locator("#probe-emphasis-upper").click()
    expect(page.locator("#probe-active")).to_contain_text("keywords · upper")
    page.locator("#probe-emphasis-repeat").click()
    expect(page.locator("#probe-active")).to_contain_text("keywords · repeat")
    related = [f for f in facts.of_kinds(("qa",)).facts if f.entity == fact.entity and f.id != fact.id]
    (expected,) = rewrites("keywords", pair, fact, related, "repeat")
    expect(page.locator("#probe-prompt textarea")).to_have_value(expected.text)
    page.locator("#probe-reset").click()
    expect(page.locator("#probe-prompt textarea")).to_have_value(fact.question)
    page.locator("#probe-steps-direct").click()
    expect(page.locator("#probe-prompt textarea")).to_have_value(re.compile("step by step", re.IGNORECASE))
    page.locator("#probe-run").click()
    expect(page.locator("#probe-sent textarea")).to_have_value(re.compile("step by step", re.IGNORECASE))
    page.locator("#probe-attribute").click()
    expect(page.locator("#probe-saliency .sal-row")).to_have_count(3)
    page.locator("#probe-attribution .js-plotly-plot").wait_for()
    shot(page, artifacts_dir, "probe")

    # Audit: direct and logit_lens (one option edited) on LIMIT facts per split, progress over the run.
    open_tab(page, "Audit")
    for name in ("direct", "reasoning", "keywords", "logit_lens"):  # the audits ticked by default
        page.locator("#audit-select").get_by_label(name, exact=True).set_checked(name in ("direct", "logit_lens"))
    page.locator("#audit-options-box").get_by_text("Audit options").click()
    option_k = page.locator("#audit-options [role=row]").filter(
        has=page.locator("[role=gridcell]", has_text=re.compile(r"^\s*k\s*$")))
    option_k.locator("[role=gridcell]").nth(4).dblclick()
    page.wait_for_timeout(300)  # the cell editor opens
    page.keyboard.press("Control+A")
    page.keyboard.type("3")
    page.keyboard.press("Enter")
    page.locator("#audit-limit input").fill(str(LIMIT))
    page.locator("#audit-run").click()
    expect(page.locator("#audit-run")).to_be_disabled()
    page.locator("#audit-status").get_by_text("complete").wait_for()
    expect(page.locator("#audit-run")).to_be_enabled()
    expect(page.locator("#audit-progress")).to_contain_text("2 of 2 audits done")
    run_id = lab.store.runs().iloc[-1]["run_id"]
    questions = int((lab.store.facts(run_id)["kind"] == "qa").sum())  # direct and logit_lens read the questions
    expect(page.locator("#audit-progress")).to_contain_text(f"{2 * questions} of {2 * questions} fact checks")
    assert run_id in page.locator("#audit-status").inner_text()
    assert lab.store.run(run_id)["config"]["options"]["logit_lens"]["k"] == 3
    assert len(lab.store.items(run_id, "direct")) == 3 * LIMIT
    shown = page.locator("#audit-metrics").inner_text()
    for audit, values in lab.store.metrics_dict(run_id).items():
        assert audit in shown
    expect(page.locator("#audit-verdict tr.vrow")).to_have_count(1)
    page.locator("#audit-plots .js-plotly-plot").first.wait_for()
    page.locator("#audit-plots-logit_lens").get_by_text("logit_lens ·").first.click()  # its accordion
    page.locator("#audit-plots-logit_lens .js-plotly-plot").first.wait_for()
    lens_ticks = page.locator("#audit-plots-logit_lens .xtick text").all_text_contents()
    assert lens_ticks and all(re.fullmatch(r"-?\d+", t.strip()) for t in lens_ticks), lens_ticks  # whole layers
    shot(page, artifacts_dir, "audit")

    # Internals: the logit lens of the same fact, whole-number layer ticks.
    open_tab(page, "Internals")
    choose(page, "internals-fact", f"[forget] {fact.question}")
    expect(page.locator("#internals-entity textarea")).to_have_value(fact.entity)
    page.locator("#internals-lens").click()
    page.locator("#internals-lens-plot .js-plotly-plot").wait_for()
    page.locator("#internals-sae").click()
    page.locator("#internals-sae-plot .js-plotly-plot").wait_for()
    assert fact.entity in page.locator("#internals-sae-plot").inner_text()
    shot(page, artifacts_dir, "internals")

    # Results: the run, filtered items, one record, the filtered download, replay in the Probe.
    open_tab(page, "Results")
    cell(page, "results-runs", run_id).wait_for()
    choose(page, "results-run", f"{run_id} · complete · demo:npo")  # the picker kept the run opened before
    page.locator("#results-summary").get_by_text(run_id).wait_for()
    choose(page, "results-audit", "direct")
    choose(page, "results-split", "forget")
    expect(page.locator("#results-count")).to_contain_text(f"{LIMIT} items match")
    everything = results.run_items(lab.store, run_id)  # "#": each item's stored id
    forget = everything[(everything["audit"] == "direct") & (everything["split"] == "forget")].reset_index(drop=True)
    item_id = int(forget.iloc[1]["#"])
    cell(page, "results-items", forget.iloc[1]["fact_id"]).click()
    page.locator("#results-item .item-detail .cmp").wait_for()
    assert forget.iloc[1]["answer"] in page.locator("#results-item").inner_text()
    for part in (f"run={run_id}", "audit=direct", "split=forget", f"item={item_id}"):
        expect(page).to_have_url(re.compile(re.escape(part) + r"(&|$)"))
    page.locator("#results-export").click()
    with page.expect_download() as download:
        page.locator("#results-download").click()
    saved = tmp_path / "items.parquet"
    download.value.save_as(saved)
    assert len(pd.read_parquet(saved)) == LIMIT  # the filters on screen, not the whole run
    shot(page, artifacts_dir, "results")
    page.locator("#results-replay").click()
    expect(page.locator("#probe-prompt textarea")).to_have_value(forget.iloc[1]["prompt"])
    expect(page.locator("#probe-gold textarea")).to_have_value(forget.iloc[1]["answer"])
    expect(page.locator("#probe-active")).to_contain_text(f"Replaying item {item_id} of run {run_id}")
    item = forget.iloc[1]
    # The same item's logit lens in Internals: its stored prompt, sent as typed, on the run's pair.
    open_tab(page, "Results")
    page.locator("#results-lens").click()
    expect(page.locator("#internals-question textarea")).to_have_value(item["prompt"])
    expect(page.locator("#internals-answer textarea")).to_have_value(item["answer"])
    expect(page.locator("#internals-mode").get_by_label("Raw prompt (sent as typed)")).to_be_checked()
    expect(page.locator("#internals-lens-plot .gtitle")).to_contain_text(f"Logit lens: {item['prompt'].split()[0]}")
    assert "tab=internals" in page.url
    shot(page, artifacts_dir, "internals-item")
    # ... and explained in the Probe: the attribution of its gold answer to its stored prompt.
    open_tab(page, "Results")
    page.locator("#results-explain").click()
    expect(page.locator("#probe-active")).to_contain_text(f"Explaining item {item_id}")
    expect(page.locator("#probe-saliency .sal-head mark.gold")).to_have_text(item["answer"])
    expect(page.locator("#probe-saliency .sal-row")).to_have_count(3)
    assert text_of(page, "probe-sent") == item["prompt"]
    shot(page, artifacts_dir, "probe-explained")

    # A shared item link reopens the same item, its filters with it, under any filter.
    shared_links_reopen_their_item(page, url, run_id, lab.store)

    # Report: the run's report, previewed and downloaded in every format, each opening with the verdict and the
    # gate; the HTML one opened in the browser, at phone width too.
    open_tab(page, "Report")
    page.locator("#report-preview").get_by_text(run_id).first.wait_for()
    expect(page.locator("#report-preview")).to_contain_text("Verdict and release gate")
    shot(page, artifacts_dir, "report")
    exported_reports_say_the_verdict(page, browser_of(page), run_id, lab.store, tmp_path, artifacts_dir)


def test_errors_show_beside_their_control_and_never_replace_input(served, page, artifacts_dir, tmp_path,
                                                                  monkeypatch):
    from huggingface_hub import constants

    wait_loaded(page)
    # A model folder that does not exist: a message beside Load; the loaded pair's description stays.
    page.locator("#models-source").get_by_text("Your models", exact=True).click()
    page.locator("#models-base textarea").fill("/no/such/model")
    page.locator("#models-unlearned textarea").fill("/no/such/model")
    page.locator("#models-load").click()
    expect(page.locator("#models-load-msg .lab-msg-error")).to_contain_text("model directory not found: /no/such/model")
    assert "demo:base → demo:npo" in page.locator("#models-status").inner_text()
    assert page.get_by_test_id("toast-body").count() == 0 and "Traceback" not in page.content()
    shot(page, artifacts_dir, "error")
    # A hub id that is not cached, offline: fails in seconds with the reason.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    page.locator("#models-base textarea").fill("some-org/no-such-model")
    page.locator("#models-unlearned textarea").fill("some-org/no-such-model")
    started = time.monotonic()
    page.locator("#models-load").click()
    expect(page.locator("#models-load-msg")).to_contain_text("not found locally and the hub is unreachable",
                                                             timeout=15_000)
    assert time.monotonic() - started < 15
    page.locator("#models-source").get_by_text("Demo pair", exact=True).click()
    choose(page, "models-demo", "ga")
    page.locator("#models-load").click()
    page.locator("#models-status").get_by_text("demo:ga").wait_for()
    expect(page.locator("#models-load-msg")).to_have_text("")  # cleared by the success

    # Probe: before Explain, the attribution panel says what it will show.
    open_tab(page, "Probe")
    expect(page.locator("#probe-saliency")).to_contain_text("Press Explain the answer to colour the prompt by "
                                                            "attribution")
    # An over-long prompt: flagged beside the prompt box as typed, sent cut from the left to the context.
    long = " ".join(f"word{i}" for i in range(300))
    page.locator("#probe-prompt textarea").fill(long)
    expect(page.locator("#probe-fit .lab-msg-warn")).to_contain_text(re.compile(
        r"256-token context .* cut from the left to \d+ tokens"))
    shot(page, artifacts_dir, "probe-long")
    page.locator("#probe-run").click()
    expect(page.locator("#probe-sent textarea")).to_have_value(re.compile(r"word299\nAnswer:$"))
    assert not text_of(page, "probe-sent").startswith("Question: word0 ")
    page.locator("#probe-prompt textarea").fill("Who?")
    expect(page.locator("#probe-fit")).to_have_text("")
    page.locator("#probe-prompt textarea").fill("")
    # An empty prompt is refused beside the button; what the user typed in the gold field stays.
    page.locator("#probe-gold textarea").fill("Zed")
    page.locator("#probe-run").click()
    expect(page.locator("#probe-run-msg")).to_contain_text("type a question or a prompt first")
    expect(page.locator("#probe-gold textarea")).to_have_value("Zed")
    assert page.locator("#probe-prompt .error, #probe-gold .error").count() == 0

    # Regression: "Upload a file" / "Server path" before anything is given: a hint, never an error.
    open_tab(page, "Audit")
    page.locator("#audit-facts-source").get_by_text("Upload a file", exact=True).click()
    expect(page.locator("#audit-facts-info")).to_contain_text("Pick a facts file")
    page.locator("#audit-facts-source").get_by_text("Server path", exact=True).click()
    expect(page.locator("#audit-facts-info")).to_contain_text("Type the path")
    assert page.locator("#audit-facts-msg .lab-msg-error").count() == 0
    assert "unexpected error" not in page.content()
    # A malformed facts file: its line and field named beside the picker; a good one: counted by split.
    page.locator("#audit-facts-source").get_by_text("Upload a file", exact=True).click()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Who?", "answer": "Zed"}\n{"question": "Where?"}\n')
    page.locator("#audit-facts-file input[type=file]").set_input_files(str(bad))
    expect(page.locator("#audit-facts-msg")).to_contain_text("bad.jsonl: line 2: field 'answer' is missing")
    good = tmp_path / "mine.csv"
    good.write_text("question,answer,split\nWho is nobody?,Zed,forget\nWho is somebody?,Ann,retain\n")
    page.locator("#audit-facts-file button[aria-label='Clear']").first.click()
    page.locator("#audit-facts-file input[type=file]").set_input_files(str(good))
    expect(page.locator("#audit-facts-info")).to_contain_text("2 facts (1 forget, 1 retain, 0 holdout)")
    expect(page.locator("#audit-facts-msg")).to_have_text("")


def luminance(css_colour: str) -> float:
    """Relative brightness (0 dark .. 1 light) of a computed ``rgb(...)``/``rgba(...)`` colour."""
    r, g, b = (int(v) for v in re.findall(r"[\d.]+", css_colour)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def leaderboard_reads_at_any_width(page) -> None:
    """Every verdict sentence inside the grid's card (nothing cut at its edge), and the heatmap's caption clear
    of the audits' labels above the cells (Plotly turns them on a phone)."""
    card = page.locator("#results-board-grid .vgrid-card").bounding_box()
    for sentence in page.locator("#results-board-grid tr.vsentence > td").all():
        box = sentence.bounding_box()
        assert box["x"] >= card["x"] - 1 and box["x"] + box["width"] <= card["x"] + card["width"] + 1, (box, card)
        assert sentence.evaluate("e => e.scrollWidth <= e.clientWidth + 1")
    title = page.locator("#results-board-caption").bounding_box()
    assert page.locator("#results-board-heatmap .gtitle").count() == 0
    sizes = page.locator("#results-board-heatmap .heatmap-label text").evaluate_all(
        "texts => texts.map(t => parseFloat(getComputedStyle(t).fontSize))")
    assert sizes and min(sizes) >= 10, sizes  # cell text Plotly would otherwise shrink to fit a phone's cells
    for tick in page.locator("#results-board-heatmap .xtick text").all():
        label = tick.bounding_box()
        assert title["y"] + title["height"] <= label["y"] + 1, (title, label)


# Every axis of every drawn chart: Plotly names an axis's tick labels by the axis (xtick, x2tick, y2tick...), so
# a chart's second panel and a second y axis are read as well as its first.
AXES_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
  .filter(gd => gd._fullLayout && gd.offsetParent).flatMap(gd => {
    let place = gd.parentElement;  // the nearest element the lab named
    while (place && !(place.id && !/^component-/.test(place.id))) place = place.parentElement;
    return Object.keys(gd._fullLayout).filter(key => /^[xy]axis\\d*$/.test(key)).map(key => ({
      plot: place ? place.id : '', axis: key,
      fills: Array.from(gd.querySelectorAll('g.' + gd._fullLayout[key]._id + 'tick text'))
        .map(t => getComputedStyle(t).fill)}));
  })"""


def panels_follow_the_theme(page, scheme: str) -> list[str]:
    """Every chart panel's tick labels in the theme's text colour (light in dark mode, dark in light mode);
    returns the axes read."""
    axes = [a for a in page.evaluate(AXES_JS) if a["fills"]]
    for axis in axes:
        for fill in axis["fills"]:
            assert (luminance(fill) > 0.5) == (scheme == "dark"), (scheme, axis)
    return [f"{a['plot']}:{a['axis']}" for a in axes]


def phone_layout_reads(page, name: str) -> None:
    """On a phone: every top-level tab is a button of its own (none behind an overflow menu); the Probe's
    answers come right under Ask; the report preview's tables keep readable columns."""
    tabs = page.locator("#lab-tabs [role=tablist]").first.locator("[role=tab]")
    assert [t for t in tabs.all_inner_texts()] == list(TAB_TITLES), tabs.all_inner_texts()
    assert all(tab.is_visible() for tab in tabs.all())
    if name == "probe":
        ask = page.locator("#probe-run").bounding_box()
        answers = page.locator("#probe-compare").bounding_box()
        assert 0 < answers["y"] - (ask["y"] + ask["height"]) < PHONE["height"] / 2, (ask, answers)
    if name == "report":
        widths = page.locator("#report-preview td").evaluate_all("cells => cells.map(c => c.offsetWidth)")
        assert widths and min(widths) >= 60, sorted(widths)[:5]


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_every_tab_fits_and_follows_the_theme(served, browser, artifacts_dir, tiny_demo, size):
    """Desktop and phone, light and dark: a stored sweep and run opened by URL on every tab."""
    from lab.shell.ui.dashboard import dashboard_spec, run_dashboard

    url, lab = served
    spec = dashboard_spec({"base": "demo:base", "audits": ["direct", "reasoning", "logit_lens"], "limit": 4,
                           "max_new_tokens": 12, "device": "cpu"}, ["demo:npo", "demo:ga"])
    outcome = run_dashboard(lab.store, spec, None, lambda event: None)
    run_id = outcome.pairs[1].run_id
    fact = lab.store.items(run_id, "direct").iloc[0]["fact_id"]
    viewport = DESKTOP if size == "desktop" else PHONE
    places = {"models": "", "verdicts": "?tab=verdicts", "probe": f"?tab=probe&fact={fact}", "audit": "?tab=audit",
              "internals": "?tab=internals", "results": f"?tab=results&run={run_id}&item=0",
              "leaderboard": f"?tab=results&sweep={outcome.sweep_id}", "report": "?tab=report"}
    second_panels = set()
    for scheme in ("light", "dark"):
        for name, query in places.items():
            page = open_page(browser, url + query, viewport, scheme)  # a fresh visit of a shared link
            wait_loaded(page, "attached")  # on another tab, the Models tab's status is not visible
            if name == "probe":
                expect(page.locator("#probe-prompt textarea")).not_to_have_value("")
                page.locator("#probe-run").click()
                page.locator("#probe-compare .cmp-text").first.wait_for()
                page.locator("#probe-compare .pgold b").first.wait_for()
                page.locator("#probe-attribute").click()  # the attribution chart: two panels
                page.locator("#probe-attribution .js-plotly-plot .x2tick").first.wait_for()
            if name == "results":
                page.locator("#results-item .item-detail").wait_for()
                page.locator("#results-plots .js-plotly-plot").first.wait_for()
            if name == "internals":  # the logit lens of a fact: rank and probability panels
                page.locator("#internals-fact input").click()
                page.get_by_role("option", name=re.compile(r"^\[forget\] ")).first.click()
                expect(page.locator("#internals-question textarea")).not_to_have_value("")
                page.locator("#internals-lens").click()
                page.locator("#internals-lens-plot .js-plotly-plot .y2tick").first.wait_for()
            if name == "leaderboard":
                page.locator("#results-board-grid tr.vrow").first.wait_for()
                page.locator("#results-board-heatmap .js-plotly-plot").wait_for()
                leaderboard_reads_at_any_width(page)
                never_forgotten_and_failed(page)
                if size == "desktop":
                    grid_fits_its_card(page, "results-board-grid")
            if name == "report":
                page.locator("#report-preview").get_by_text(run_id.split("-")[0]).first.wait_for()
            shot(page, artifacts_dir, f"{name}-{size}-{scheme}")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"] + 1, f"{name} is {width}px wide at {viewport['width']}px"
            title = page.locator("#lab-header h1").evaluate("e => getComputedStyle(e).color")
            assert (luminance(title) > 0.6) == (scheme == "dark"), (name, scheme, title)
            if name == "results":
                card = page.locator("#results-item .item-detail").evaluate("e => getComputedStyle(e).backgroundColor")
                text = page.locator("#results-item .item-detail").evaluate("e => getComputedStyle(e).color")
                assert abs(luminance(card) - luminance(text)) > 0.4, (scheme, card, text)
            second_panels.update(a for a in panels_follow_the_theme(page, scheme) if re.search(r"axis\d+$", a))
            if size == "phone":
                phone_layout_reads(page, name)
            page.context.close()
    # The second panels the issue named were read: the attribution difference, the lens's probability axis.
    assert {"probe-attribution:xaxis2", "internals-lens-plot:yaxis2"} <= second_panels, second_panels


FIRST_LAUNCH_S = 60  # issue 27: a usable lab page within a minute of the venv being ready


def test_first_launch_opens_on_the_tiny_demo_and_switches_when_the_asked_for_one_is_built(browser, tmp_path,
                                                                                          monkeypatch):
    """A fresh machine, no demo anywhere: the page is usable on the tiny world within a minute and says so, the
    asked-for world builds behind it with its progress in the page, and the page then switches to it."""
    from dataclasses import replace

    from lab.core import settings
    from lab.demo import build
    from lab.demo.train import ModelShape

    # The asked-for world: the tiny profile's recipe, smaller still (the full one takes minutes; the path is the
    # same), slow enough for the page to show its progress.
    tiny = build.PROFILES["tiny"]
    asked = replace(tiny, people=12, shape=ModelShape(hidden=32, layers=1, heads=2, intermediate=64), vocab=384,
                    epochs=40, unlearners={"npo": tiny.unlearners["npo"]})
    monkeypatch.setitem(build.PROFILES, "asked", asked)
    monkeypatch.delenv("LAB_DEMO_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LAB_DB", str(tmp_path / "lab.duckdb"))
    monkeypatch.setenv("LAB_DEMO_PROFILE", "asked")
    started = time.monotonic()
    with running(server_name="127.0.0.1", quiet=True) as (url, lab):
        page = open_page(browser, url)
        wait_loaded(page)
        usable = time.monotonic() - started
        assert usable < FIRST_LAUNCH_S, f"the first page was usable after {usable:.0f} s"
        status = page.locator("#models-status").inner_text()
        assert "demo:base → demo:npo" in status and "tiny demo" in status
        assert "✓ tokenizer check" in page.locator("#models-tokenizer").inner_text()
        world = page.locator("#models-world")
        expect(world).to_contain_text("Demo world: tiny")
        # The background build's progress, then the switch (the page polls every 2 s).
        expect(world).to_contain_text(re.compile(r"training step \d+ of \d+"))
        expect(world).to_contain_text("asked demo")
        expect(page.locator("#models-status")).to_contain_text("asked demo", timeout=120_000)
        expect(world).to_contain_text("Demo world: asked")
        assert lab.demo.build.finished and lab.demo.build.done == lab.demo.build.total > 0
        assert settings.demo_dir() == tmp_path / "cache" / "unlearning-audit-lab" / "demo-asked"
        assert build.is_built("tiny") and build.is_built("asked")  # each world in its own folder
        later = open_page(browser, url)  # a page opened now starts on the asked-for world
        expect(later.locator("#models-status")).to_contain_text("asked demo")
        expect(later.locator("#models-world")).not_to_contain_text("background")
    assert settings.demo_dir() == tmp_path / "cache" / "unlearning-audit-lab" / "demo"  # the CLI's default again
    print(f"first launch: usable after {usable:.1f} s")
