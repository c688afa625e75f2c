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

import dataclasses
from typing import Any, Callable

import gradio as gr
import pandas as pd

from lab.core.store import Store
from lab.shell.ui import links, models_tab
from lab.shell.ui.results import find_item
from lab.shell.ui.diff import compare_outputs
from lab.shell.ui.internals_tab import InternalsInputs, item_view
from lab.shell.ui.probe_tab import RAW, ProbeInputs
from lab.shell.ui.results_tab import ResultsHooks
from lab.shell.spec import PairSpec, build_spec
from lab.shell.ui.session import MODEL_QUEUE, Lab
from lab.shell.ui.updates import Outputs

PAIR_FIELDS = {f.name for f in dataclasses.fields(PairSpec)}


def run_pair(store: Store, run_id: str, current: PairSpec | None) -> PairSpec:
    """The pair that ran ``run_id`` as its stored config says (references and prompt format), on the session's
    device and dtype when it has a pair (where models run is this session's choice), else on the run's."""
    run = store.run(run_id)
    config = {k: v for k, v in run["config"].items() if k in PAIR_FIELDS}
    config.setdefault("base", run["base_ref"])
    config.setdefault("unlearned", run["unlearned_ref"])
    if current is not None:
        config.update(device=current.device, dtype=current.dtype, device_map=current.device_map)
    return build_spec(PairSpec, config, f"run {run_id}'s config")


def use_run_pair(lab: Lab, store: Store, frame: pd.DataFrame | None, index: float | None,
                 current: PairSpec | None, progress: Any) -> dict[str, Any]:
    """The Models tab's outputs (by name) with the item's run pair loaded; nothing when the session has it."""
    row = find_item(frame, index)
    if row is None:
        return {}
    wanted = run_pair(store, str(row["run_id"]), current)
    if current is not None and wanted == current:
        return {}
    return models_tab.load(lab, wanted, progress)


def item_note(doing: str, index: float, row: pd.Series) -> str:
    """The Probe's note on where its prompt came from: ``Replaying item 3 of run run-… (direct, forget)…``
    (``index``: the item's stored id)."""
    category = f", {row['category']}" if row.get("category") else ""
    return (f"{doing} item {int(index)} of run {row['run_id']} ({row['audit']}, {row['split']}{category}): its "
            "stored prompt")


def replay(frame: pd.DataFrame | None, index: float | None) -> dict[str, Any]:
    """The Probe filled with the item's prompt, sent as typed, and its gold answer, no demo fact picked."""
    row = find_item(frame, index)
    if row is None:
        return {}
    note = item_note("Replaying", index, row) + ", sent as typed."
    return dict(tabs=gr.Tabs(selected="probe"), fact=None, prompt=row["prompt"], mode=RAW, gold=row["answer"],
                original=row["prompt"], active=None, note=note)


def explain(frame: pd.DataFrame | None, index: float | None) -> dict[str, Any]:
    """:func:`replay`, and the prompt set as sent with no outputs yet: Explain attributes the gold answer to
    exactly that prompt."""
    row = find_item(frame, index)
    if row is None:
        return {}
    note = item_note("Explaining", index, row) + " and gold answer, attributed in both models."
    return {**replay(frame, index), "note": note, "sent": row["prompt"],
            "compare": compare_outputs("", "", row["answer"]), "base": "", "unlearned": ""}


def lens(frame: pd.DataFrame | None, index: float | None) -> dict[str, Any]:
    """The Internals tab filled with the item's prompt (sent as typed) and answer, no demo fact picked."""
    row = find_item(frame, index)
    if row is None:
        return {}
    return dict(tabs=gr.Tabs(selected="internals"), fact=None, question=row["prompt"], answer=row["answer"],
                mode=RAW)


def wire(lab: Lab, tabs: gr.Tabs, probe: ProbeInputs, internals: InternalsInputs, hooks: ResultsHooks,
         models: Outputs) -> None:
    """The three links: the run's pair first (``models``: what the Models tab's loading fills, the session's
    pair among them), then the target tab filled and opened, then the lens or the attribution run."""
    buttons, rows = hooks.buttons, [hooks.items, hooks.item]
    message = buttons.message

    @message
    def on_pair(frame: pd.DataFrame | None, index: float | None, current: PairSpec | None, request: gr.Request,
                progress=gr.Progress()):
        return models(**use_run_pair(lab, lab.view(request), frame, index, current, progress))

    def link(button: gr.Button, fill: Callable[..., dict[str, Any]], outputs: Outputs, tab: str) -> Any:
        loaded = message.watch(button.click(on_pair, [*rows, models["state"]], models.list, api_visibility="private",
                                            concurrency_id=MODEL_QUEUE, concurrency_limit=1, **message.events))
        shown = loaded.success(lambda frame, index: outputs(**fill(frame, index)), rows, outputs.list,
                               api_visibility="private")
        shown.then(None, None, None, js=links.params_js([], {"tab": tab}))
        return shown

    to_probe = Outputs(tabs=tabs, fact=probe.fact, prompt=probe.prompt, mode=probe.mode, gold=probe.gold,
                       original=probe.original, active=probe.active, note=probe.active_note)
    explained = to_probe + Outputs(sent=probe.sent, compare=probe.compare, base=probe.out_base,
                                   unlearned=probe.out_unlearned)
    to_lens = Outputs(tabs=tabs, fact=internals.fact, question=internals.question, answer=internals.answer,
                      mode=internals.mode)
    link(buttons.replay, replay, to_probe, "probe")
    probe.explain_after(link(buttons.explain, explain, explained, "probe"))
    viewed = item_view()
    if viewed is not None:
        internals.view_after(viewed, link(buttons.lens, lens, to_lens, "internals"))
