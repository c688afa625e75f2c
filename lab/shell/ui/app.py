"""The web lab: one ``gr.Blocks`` app with a tab per task, and how it is launched.

The UI is thin: every tab calls the same functions as the CLI (runner, store,
facts, models).  Events that run a model share the concurrency group
:data:`~lab.shell.ui.session.MODEL_QUEUE` with a limit of one, so browser sessions
take turns on the models; everything else (reading results, exports) runs
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
from lab.shell.ui import audit_tab, facts_picker, internals_tab, models_tab, probe_tab, report_tab, results_tab
from lab.shell.ui.session import Lab

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


def build_app(lab: Lab | None = None) -> gr.Blocks:
    """The whole lab; ``lab`` (models, store) defaults to one on ``$LAB_DB``."""
    lab = lab or Lab()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.HTML(header(), elem_id="lab-header")
        state = gr.State(None)  # this session's PairSpec
        with gr.Tabs(elem_id="lab-tabs"):
            with gr.Tab("Models", id="models", elem_id="tab-models"):
                models_tab.build(lab, state, app)
            with gr.Tab("Probe", id="probe", elem_id="tab-probe") as probe:
                picker = probe_tab.build(lab, state)
            with gr.Tab("Audit", id="audit", elem_id="tab-audit"):
                audit_tab.build(lab, state)
            with gr.Tab("Internals", id="internals", elem_id="tab-internals") as internals:
                internals_picker = internals_tab.build(lab, state)
            with gr.Tab("Results", id="results", elem_id="tab-results") as results:
                results_tab.build(lab, results)
            with gr.Tab("Report", id="report", elem_id="tab-report") as report:
                report_tab.build(lab, report)
        probe.select(facts_picker.choices, None, picker, api_visibility="private")
        internals.select(facts_picker.choices, None, internals_picker, api_visibility="private")
    return app


def launch_options() -> dict[str, Any]:
    """Theme, styles and limits every launch uses (the app, the tests)."""
    return dict(theme=THEME, css_paths=[STATIC / "style.css"], ssr_mode=False, max_file_size=current_policy().max_upload,
                footer_links=["api", "settings"])


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
