"""The web lab: one ``gr.Blocks`` app with a tab per task, and how it is launched.

The UI is thin: every tab calls the same functions as the CLI (runner, sweep,
store, report, facts, models).  Short events that run a model (loading a pair,
the Probe) share the concurrency group :data:`~lab.shell.ui.session.MODEL_QUEUE`
with a limit of one; long work (runs, sweeps, Internals views) takes turns in
:mod:`lab.shell.ui.turns`, two side by side by default, a waiting visitor told
their place and an estimate; everything else (reading results, exports) runs
alongside.  ``LAB_SPACE=1`` turns on Space mode (see :func:`lab.shell.ui.session.limits`).
"""

from __future__ import annotations

import html
from contextlib import contextmanager
from typing import Any, Iterator

import gradio as gr

from lab.core import settings
from lab.core.errors import route_warnings
from lab.core.policy import current as current_policy
from lab.shell.ui import (audit_tab, facts_picker, internals_tab, item_links, links, models_tab, probe_tab,
                          report_tab, results, results_tab, verdicts_tab)
from lab.shell.ui.internals_tab import InternalsInputs
from lab.shell.ui.probe_tab import ProbeInputs
from lab.shell.ui.results_tab import ResultsHooks
from lab.shell.ui.session import Lab
from lab.shell.ui.updates import Outputs

STATIC = settings.static_dir()
TITLE = "Unlearning Audit Lab"
THEME = gr.themes.Base(
    primary_hue="indigo", secondary_hue="rose", neutral_hue="slate", radius_size="md",
    font=["Inter", "ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=["JetBrains Mono", "ui-monospace", "SFMono-Regular", "monospace"],
)


def header() -> str:
    """The page header: the logo inline (no extra request), the name, and which mode this is."""
    logo = (STATIC / "logo.svg").read_text()
    space = settings.space_mode()
    badge = ("<span class='lab-badge space'>Space mode: hub ids and uploads only</span>" if space
             else "<span class='lab-badge'>Local lab</span>")
    return (f"<div class='lab-brand'>{logo}<div><h1>{html.escape(TITLE)}</h1>"
            "<p>Did the model forget, or only hide it? Audit a base model against its unlearned version.</p>"
            f"</div>{badge}</div>")


def tab_of(key: str) -> gr.Tab:
    """The top-level tab ``key`` (its id is what the URL's ``tab`` names)."""
    return gr.Tab(links.TABS[key], id=key, elem_id=f"tab-{key}")


def open_link(lab: Lab, request: gr.Request | None) -> dict[str, Any]:
    """The page as the URL asks for it (:mod:`lab.shell.ui.links`), by output name: the run, its item filters
    and item in Results, the sweep on the leaderboard, or the fact in the Probe.  The tab itself is opened in
    the browser afterwards (:data:`lab.shell.ui.links.OPEN_TAB_JS`), so its select event sees these values."""
    link = links.parse(request.query_params if request else {})
    store = lab.view(request)
    runs = results.runs_frame(store)
    shown: dict[str, Any] = {}
    if link.run is not None and link.run in set(runs["run_id"]):
        shown.update(run=results_tab.run_dropdown(runs, link.run), item=link.item,
                     audit=results_tab.audit_picker(store, link.run, link.audit), recovered=link.recovered)
        if link.split in results.SPLITS:
            shown["split"] = link.split
        if link.fact:
            shown["fact"] = link.fact
    sweeps = results.sweep_choices(store)
    if link.sweep in {s[1] for s in sweeps}:
        shown["sweep"] = gr.Dropdown(choices=sweeps, value=link.sweep)
    if link.tab == "probe" and link.fact:
        shown["probe_fact"] = gr.Dropdown(choices=facts_picker.fact_choices(), value=link.fact)
    return shown


def wire(lab: Lab, tabs: gr.Tabs, probe: ProbeInputs, internals: InternalsInputs, hooks: ResultsHooks,
         models: Outputs, app: gr.Blocks) -> None:
    """What crosses tabs: the URL on load and as the user moves, and an item's links
    (:mod:`lab.shell.ui.item_links`)."""
    # The run last: its change lists the items with the filters and item the URL names, set before it.
    opened = hooks.filters + Outputs(item=hooks.item, sweep=hooks.sweep, probe_fact=probe.fact, run=hooks.run)

    def on_load(request: gr.Request) -> dict[Any, Any]:
        return opened(**open_link(lab, request))

    app.load(on_load, None, opened.list, api_visibility="private").then(None, None, None, js=links.OPEN_TAB_JS)
    item_links.wire(lab, tabs, probe, internals, hooks, models)
    probe.fact.input(None, probe.fact, None, js=links.params_js(["fact"], {"tab": "probe"}))


def build_app(lab: Lab | None = None) -> gr.Blocks:
    """The whole lab; ``lab`` (models, store) defaults to one on ``$LAB_DB``."""
    lab = lab or Lab()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.HTML(header(), elem_id="lab-header")
        state = gr.State(None)  # this session's PairSpec
        with gr.Tabs(elem_id="lab-tabs", overflow_behavior="wrap") as tabs:
            with tab_of("models") as models:
                loaded = models_tab.build(lab, state, app)
            with tab_of("verdicts") as verdicts:
                verdicts_tab.build(lab, verdicts)
            with tab_of("probe") as probe_page:
                probe = probe_tab.build(lab, state)
            with tab_of("audit") as audit:
                audit_tab.build(lab, state)
            with tab_of("internals") as internals:
                internals_inputs = internals_tab.build(lab, state)
            with tab_of("results") as results_page:
                hooks = results_tab.build(lab, results_page)
            with tab_of("report") as report:
                report_tab.build(lab, report)
        for key, page in zip(links.TABS, (models, verdicts, probe_page, audit, internals, results_page, report)):
            page.select(None, None, None, js=links.params_js([], {"tab": key}))
        probe_page.select(facts_picker.choices, None, probe.fact, api_visibility="private")
        internals.select(facts_picker.choices, None, internals_inputs.fact, api_visibility="private")
        wire(lab, tabs, probe, internals_inputs, hooks, loaded, app)
    return app


def launch_options() -> dict[str, Any]:
    """Theme, styles and limits every launch uses (the app, the tests)."""
    return dict(theme=THEME, css_paths=[STATIC / "verdict.css", STATIC / "style.css"], head=links.HEAD, ssr_mode=False,
                max_file_size=current_policy().max_upload, footer_links=["api", "settings"])


def start(lab: Lab | None = None, **overrides: Any) -> tuple[gr.Blocks, str]:
    """Build, queue and serve the lab; returns the app and its URL (with ``prevent_thread_lock``).

    Reading results runs up to four requests at once; model events are limited by their own group.
    Gradio reads GRADIO_SERVER_NAME and GRADIO_SERVER_PORT (default: the first free port from 7860).
    """
    app = build_app(lab)
    app.queue(default_concurrency_limit=4)
    _, url, _ = app.launch(**{**launch_options(), **overrides})
    return app, url


@contextmanager
def running(lab: Lab | None = None, **overrides: Any) -> Iterator[tuple[str, Lab]]:
    """The lab served in the background while the block runs, then closed: (url, lab). For tests and scripts."""
    lab = lab or Lab()
    app, url = start(lab, prevent_thread_lock=True, **overrides)
    try:
        yield url, lab
    finally:
        app.close()
        lab.close()


def launch() -> None:
    """``python app.py``: serve the lab until stopped (library warnings go to the lab's log file)."""
    route_warnings()
    start()
