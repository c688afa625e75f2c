"""Links from one stored item to the views that look at it again: "Replay in Probe", "Logit lens in
Internals" and "Explain in Probe", under the Results tab's selected item.

A stored item keeps the exact prompt its models were sent (template applied, an attack's transform
included), so every link hands that prompt on as typed (``RAW``) with the item's gold answer.  The views
then read the run's own models: when the session has another pair loaded, the run's pair is loaded first
(:func:`use_run_pair`, the Models tab's own loading, shown there), so a lens or an attribution is of the
models the audit read.  Replay stops at the Probe's filled prompt; the lens and Explain then run, as their
buttons would.  The address bar follows (:mod:`lab.shell.ui.links`).
"""

from __future__ import annotations

from typing import Any, Callable

import gradio as gr
import pandas as pd

from lab.core.store import Store
from lab.shell.ui import links, models_tab
from lab.shell.ui.diff import compare_outputs
from lab.shell.ui.internals_tab import InternalsInputs
from lab.shell.ui.probe_tab import RAW, ProbeInputs
from lab.shell.ui.results_tab import ResultsHooks
from lab.shell.ui.session import MODEL_QUEUE, Lab, PairSpec


def picked(frame: pd.DataFrame | None, index: float | None) -> pd.Series | None:
    """The selected row of the filtered items, or None when no row is (still) there."""
    if frame is None or index is None or not 0 <= index < len(frame):
        return None
    return frame.iloc[int(index)]


def run_pair(store: Store, run_id: str, current: PairSpec | None) -> PairSpec:
    """The pair that ran ``run_id`` (its references as the run asked for them), on the session's device and
    dtype when it has a pair (where models run is this session's choice), else on the run's."""
    run = store.run(run_id)
    config = run["config"]
    where = current or PairSpec("", "", config.get("device", "auto"), config.get("dtype", "auto"))
    return PairSpec(config.get("base") or run["base_ref"], config.get("unlearned") or run["unlearned_ref"],
                    where.device, where.dtype, bool(config.get("trust_remote_code", False)))


def use_run_pair(lab: Lab, store: Store, frame: pd.DataFrame | None, index: float | None,
                 current: PairSpec | None, progress: Any) -> tuple:
    """The Models tab's outputs with the item's run pair loaded, or unchanged when the session has it."""
    row = picked(frame, index)
    if row is None:
        return (gr.skip(),) * 5
    wanted = run_pair(store, str(row["run_id"]), current)
    if current is not None and (wanted.base, wanted.unlearned) == (current.base, current.unlearned):
        return (gr.skip(),) * 5
    return models_tab.load(lab, wanted, progress)


def item_note(doing: str, index: float, row: pd.Series) -> str:
    """The Probe's note on where its prompt came from: ``Replaying item 3 of run results (direct, forget)…``."""
    category = f", {row['category']}" if row.get("category") else ""
    return f"{doing} item {int(index)} of run results ({row['audit']}, {row['split']}{category}): its stored prompt"


def replay(frame: pd.DataFrame | None, index: float | None) -> tuple:
    """The Probe filled with the item's prompt, sent as typed, and its gold answer, no demo fact picked (tab,
    fact, prompt, mode, gold, original question, active transform, note)."""
    row = picked(frame, index)
    if row is None:
        return (gr.skip(),) * 8
    note = item_note("Replaying", index, row) + ", sent as typed."
    return gr.Tabs(selected="probe"), None, row["prompt"], RAW, row["answer"], row["prompt"], None, note


def explain(frame: pd.DataFrame | None, index: float | None) -> tuple:
    """:func:`replay`, and the prompt set as sent with no outputs yet: Explain attributes the gold answer to
    exactly that prompt (then sent, compared, plain base and unlearned outputs)."""
    row = picked(frame, index)
    if row is None:
        return (gr.skip(),) * 12
    note = item_note("Explaining", index, row) + " and gold answer, attributed in both models."
    return (*replay(frame, index)[:7], note, row["prompt"], compare_outputs("", "", row["answer"]), "", "")


def lens(frame: pd.DataFrame | None, index: float | None) -> tuple:
    """The Internals tab filled with the item's prompt (sent as typed) and answer, no demo fact picked."""
    row = picked(frame, index)
    if row is None:
        return (gr.skip(),) * 5
    return gr.Tabs(selected="internals"), None, row["prompt"], row["answer"], RAW


def wire(lab: Lab, tabs: gr.Tabs, probe: ProbeInputs, internals: InternalsInputs, hooks: ResultsHooks,
         models: list[Any]) -> None:
    """The three links: the run's pair first (``models``: what the Models tab's loading fills, the session's
    pair first), then the target tab filled and opened, then the lens or the attribution run."""
    buttons, rows = hooks.buttons, [hooks.items, hooks.item]
    message = buttons.message

    @message
    def on_pair(frame: pd.DataFrame | None, index: float | None, current: PairSpec | None, request: gr.Request,
                progress=gr.Progress()):
        return use_run_pair(lab, lab.view(request), frame, index, current, progress)

    def link(button: gr.Button, fill: Callable[..., tuple], outputs: list[Any], tab: str) -> Any:
        loaded = message.watch(button.click(on_pair, [*rows, models[0]], models, api_visibility="private",
                                            concurrency_id=MODEL_QUEUE, concurrency_limit=1, **message.events))
        shown = loaded.success(fill, rows, outputs, api_visibility="private")
        shown.then(None, None, None, js=links.params_js([], {"tab": tab}))
        return shown

    to_probe = [tabs, probe.fact, probe.prompt, probe.mode, probe.gold, probe.original, probe.active,
                probe.active_note]
    link(buttons.replay, replay, to_probe, "probe")
    probe.explain_after(link(buttons.explain, explain,
                             to_probe + [probe.sent, probe.compare, probe.out_base, probe.out_unlearned], "probe"))
    internals.lens_after(link(buttons.lens, lens, [tabs, internals.fact, internals.question, internals.answer,
                                                   internals.mode], "internals"))
