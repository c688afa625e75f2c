"""The web lab's parts that need no browser: diff, saliency, progress, links, the dashboard's tally, the
facts hint (the "Upload a file" regression), audits offered per pair, filtered export, figure style."""

from __future__ import annotations

import copy
import re
import threading
import time

import pandas as pd
import plotly.graph_objects as go
import pytest


def test_word_diff_marks_only_changed_words_and_the_gold_answer():
    from lab.shell.ui.diff import Scored, compare_outputs, word_diff

    left, right = word_diff("He was born in Paris.", "He was born in Rome")
    assert [t for t, only in left if only] == ["Paris."] and [t for t, only in right if only] == ["Rome"]
    page = compare_outputs("He was born in Paris.", "He was born in Rome", "Paris",
                           {"base": Scored(True, 1.0, -0.1), "unlearned": Scored(False, 0.0, -4.0)})
    assert "<mark class='gold' title='gold answer'>Paris.</mark>" in page
    assert page.count("badge-hit") == 1 and page.count("badge-miss") == 1
    assert "p(gold) <b>0.905</b>" in page and "p(gold) <b>0.018</b>" in page  # exp(-0.1), exp(-4)
    assert "<script>" not in compare_outputs("<script>", "", "")  # escaped


def test_saliency_tints_tokens_by_their_share(demo_pair, demo_facts):
    from lab.core.attribution import attribute_prompt
    from lab.shell.ui.saliency import saliency_html

    fact = demo_facts.split("forget")[0]
    attr = attribute_prompt(demo_pair, demo_pair.base.prompt(fact.question), fact.answer, ["feature_ablation"])
    page = saliency_html(attr)
    assert page.count("class='sal-row") == 3 and page.count("sal-tok") >= 3 * len(attr.labels)
    top = max(range(len(attr.labels)), key=lambda i: abs(attr.scores["feature_ablation"]["base"][i]))
    assert f"title='{attr.scores['feature_ablation']['base'][top]:+.3f}'" in page


def test_background_streams_events_then_the_result_and_raises_errors():
    from lab.shell.ui.background import Finished, in_background, progress_html, time_left

    def work(emit):
        for i in range(3):
            emit(i)
        return "done"

    assert list(in_background(work)) == [0, 1, 2, Finished("done")]
    with pytest.raises(ValueError, match="boom"):
        list(in_background(lambda emit: (_ for _ in ()).throw(ValueError("boom"))))
    assert time_left(2, 4, 60) == "about 1:00 left" and time_left(0, 4, 5) == ""
    bar = progress_html(3, 8, time.monotonic() - 30, "npo: reasoning")
    assert "audit 4 of 8" in bar and "npo: reasoning" in bar and "0:30 elapsed" in bar and "width:37.5%" in bar


def test_turns_run_side_by_side_then_wait_in_line_with_their_place_and_an_estimate():
    from lab.core.batching import Cancelled
    from lab.shell.ui.turns import Turns, ordinal

    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 21, 102)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "21st", "102nd"]
    turns = Turns(2)
    with turns.line_up("audit") as a, turns.line_up("sweep") as b:
        assert list(a.wait()) == [] and list(b.wait()) == []  # two slots: both run at once
        with turns.line_up("audit") as c, turns.line_up("SAE view") as d:
            waiting_c, waiting_d = c.wait(every=0.01), d.wait(every=0.01)
            assert next(waiting_c) == ("waiting for a turn: 1st in line · 2 running (audit, sweep) · no estimate "
                                       "yet (the jobs ahead have not reported progress)")
            assert next(waiting_d).startswith("waiting for a turn: 2nd in line")
            a.progress(0.25)  # a quarter done after a minute: three minutes left
            turns._running[a.ident].since -= 60
            b.progress(0.5)
            turns._running[b.ident].since -= 30  # half done after 30 s: 30 s left
            assert next(waiting_c).endswith("a turn should free in about 0:30")
            assert next(waiting_d).endswith("a turn should free in about 3:00")
            stop = threading.Event()
            stop.set()
            with pytest.raises(Cancelled, match="stopped while waiting for a turn"):
                next(d.wait(stop))
        assert turns.waiting == 0 and turns.running == 2  # c and d left the line, stopped or not
    assert turns.running == 0
    one = Turns(1)
    with one.line_up("audit") as first:
        list(first.wait())
        second = one.line_up("audit").__enter__()
        later = threading.Thread(target=lambda: list(second.wait(every=0.01)))
        later.start()
    later.join(timeout=5)  # the first turn freed: the next in line runs
    assert not later.is_alive() and one.running == 1 and one.waiting == 0
    second.__exit__()


def test_a_view_that_trains_an_sae_shows_its_steps_and_stops(demo_env):
    """The SAE view's training reports its steps with the time left; Stop ends it and nothing is kept."""
    from functools import partial

    from lab.shell.ui import facts_picker
    from lab.shell.ui.internals_tab import view, view_updates
    from lab.shell.ui.session import Lab, demo_pair

    lab = Lab()
    fact = next(f for f in facts_picker.demo_facts() if f.split == "forget" and f.entity)
    job = partial(view, lab, "sae", demo_pair("npo", device="cpu"), fact, {"sae": "train", "layer": ""})
    stop, shown = threading.Event(), []
    for update in view_updates(lab, "sae", job, stop):
        shown.append(update["progress"])
        if "training the SAE" in update["progress"] and "left" in update["progress"]:
            stop.set()
    training = [p for p in shown if "training the SAE: " in p]
    assert training and re.search(r"training the SAE: \d+ of \d+ · \d+:\d\d elapsed · about \d+:\d\d left",
                                  training[-1]), training[-1]
    assert shown[-1].startswith("<div class='lab-msg-note'>Stopped after ") and "nothing was kept" in shown[-1]
    assert "plot" not in update and not lab._memo and lab.turns.running == 0
    lab.close()


def test_links_round_trip_and_drop_junk():
    from lab.shell.ui.links import Link, params_js, parse

    assert parse({"tab": "results", "run": "run-1", "fact": "f1", "item": "3"}) == \
        Link("results", "run-1", None, "f1", 3)
    assert parse({"run": "run-1", "audit": "reasoning", "split": "forget", "recovered": "1", "item": "37"}) == \
        Link(run="run-1", item=37, audit="reasoning", split="forget", recovered=True)
    assert parse({"tab": "nowhere", "item": "-1", "audit": "all", "split": "all", "recovered": "0"}) == Link()
    js = params_js(["run"], {"tab": "results"})
    assert 'window.labParams(["run", "tab"]' in js and '.concat(["results"])' in js


def test_item_ids_stay_the_same_under_any_filter(full_run):
    """An item's id is its place in the run as stored: every filter keeps it, so a link names one item."""
    from lab.shell.ui import results

    store, run_id = full_run
    everything = results.run_items(store, run_id)
    assert list(everything["#"]) == list(range(len(everything)))
    key = ["audit", "fact_id", "split", "category", "prompt"]
    for filters in (dict(audit="direct"), dict(split="forget"), dict(recovered_only=True),
                    dict(audit="reasoning", split="forget", recovered_only=True), dict(fact="p00")):
        frame = results.run_items(store, run_id, **filters)
        assert len(frame), filters
        same = everything.set_index("#").loc[frame["#"], key]
        assert (frame[key].fillna("").to_numpy() == same.fillna("").to_numpy()).all(), filters
        assert results.find_item(frame, frame.iloc[-1]["#"])["prompt"] == frame.iloc[-1]["prompt"]
    assert results.find_item(everything, len(everything)) is None and results.find_item(None, 0) is None


def test_number_fields_answer_bad_values_and_bound_answers_by_the_context():
    from lab.core.errors import LabError
    from lab.shell.ui.fields import check_limit, check_new_tokens, new_tokens_cap, tokens_label

    assert check_limit(0) is None and check_limit(None) is None and check_limit(7.0) == 7
    with pytest.raises(LabError, match=r"^facts per split must be 0 \(all\) or more, got -3$"):
        check_limit(-3)
    with pytest.raises(LabError, match="facts per split must be a whole number, got 2.5"):
        check_limit(2.5)
    assert new_tokens_cap(256) == 128 and new_tokens_cap(None) == 4096 and new_tokens_cap(100_000) == 4096
    assert check_new_tokens(128, 256) == 128 and tokens_label(256) == "Max new tokens (1-128)"
    with pytest.raises(LabError, match=r"at most 128 \(half of demo:base's 256-token context: the prompt needs the "
                                       r"rest\), got 4096"):
        check_new_tokens(4096, 256, "demo:base")
    with pytest.raises(LabError, match="max new tokens must be 1 or more, got 0"):
        check_new_tokens(0)


def test_facts_hint_before_a_file_or_a_path_is_given():
    """Regression: choosing "Upload a file" (or "Server path") showed an error before anything was picked."""
    from lab.shell.ui.auditing import DEMO_FACTS, SERVER_PATH, UPLOAD, facts_hint

    assert "Pick a facts file" in facts_hint(UPLOAD, None, None)
    assert "Type the path" in facts_hint(SERVER_PATH, None, None)
    assert "Type the path" in facts_hint(SERVER_PATH, None, "   ")
    assert facts_hint(UPLOAD, "/tmp/f.jsonl", None) is None and facts_hint(DEMO_FACTS, None, None) is None


def test_audits_a_pair_cannot_run_are_not_offered_and_say_why(demo_pair):
    from audits import available
    from lab.core.models import ModelPair
    from lab.shell.ui.auditing import offered, unavailable_note

    assert offered(demo_pair) == (available(), {})
    served = copy.copy(demo_pair.unlearned)
    served.capabilities = frozenset({"generate"})  # as a text-only inference server offers
    names, why = offered(ModelPair(demo_pair.base, served))
    assert "reasoning" in names and "logit_lens" not in names and "remind" not in names
    assert why["logit_lens"].startswith("needs weights, activations and gradients") and "unlearned model" in why["logit_lens"]
    assert "`logit_lens`" in unavailable_note(why)


def test_dashboard_tally_counts_every_audit_of_every_model(demo_env, tmp_path):
    from lab.core.store import Store
    from lab.core.errors import LabError
    from lab.shell.ui.dashboard import Tally, control_note, dashboard_spec, parse_models, run_dashboard

    models = parse_models(["npo"], "demo:ga\ndemo:npo, demo:retrain")
    assert models == ["demo:npo", "demo:ga", "demo:retrain"]
    # The control is the reference, never also audited against itself.
    assert parse_models(["npo", "retrain"], "", " demo:retrain ") == ["demo:npo"]
    assert "demo:retrain is the control" in control_note(["npo", "retrain"], "", "demo:retrain")
    assert control_note(["npo"], "", "demo:retrain") == "" == control_note(["retrain"], "", "")
    with pytest.raises(LabError, match=r"pick at least one unlearned model to audit \(demo:retrain is the control"):
        parse_models(["retrain"], "", "demo:retrain")
    spec = dashboard_spec({"base": "demo:base", "audits": ["direct", "reasoning"], "limit": 3, "max_new_tokens": 12,
                           "device": "cpu"}, models[:2])
    seen, tally = [], Tally(2, 2)
    with Store(tmp_path / "d.duckdb") as store:
        outcome = run_dashboard(store, spec, threading.Event(), lambda e: (seen.append((e.kind, tally.done)),
                                                                             tally.add(e)))
        runs = store.sweep_runs(outcome.sweep_id)
        facts = store.facts(runs.iloc[0]["run_id"])
    assert outcome.status == "complete" and len(runs) == 2 and tally.done == tally.total == 4
    kinds = [k for k, _ in seen]
    assert kinds[0] == "sweep" and kinds.count("audit") == kinds.count("done") == 4 and kinds.count("pair") == 2
    assert [d for k, d in seen if k == "done"] == [0, 1, 2, 3]  # the count before each audit ended
    assert kinds.count("facts") == 2 and len(tally.counts) == 2 and all(tally.counts)
    assert tally.counts[0] == len(facts[facts["kind"] == "qa"])  # direct: the run's questions
    assert tally.checks == (2 * sum(tally.counts), 2 * sum(tally.counts))  # every model's checks done


def test_export_carries_the_filtered_rows_only(full_run, tmp_path):
    from lab.shell.ui import results

    store, run_id = full_run
    frame = results.run_items(store, run_id, audit="direct", split="forget")
    path = results.export_file(store, run_id, "csv", frame)
    written = pd.read_csv(path)
    assert len(written) == len(frame) < len(store.items(run_id)) and set(written["audit"]) == {"direct"}
    assert "#" not in written.columns


def test_style_gives_roles_one_colour_integer_layers_and_empty_states():
    from lab.shell.report.style import ROLE_COLORS, styled

    fig = go.Figure([go.Scatter(x=[0, 1, 2], y=[0.1, 0.5, 0.9], name="unlearned"),
                     go.Scatter(x=[0, 1, 2], y=[0.2, 0.4, 0.8], name="base")],
                    layout=dict(xaxis=dict(title="layer"), yaxis=dict(title="hit rate")))
    styled(fig)
    assert fig.data[0].line.color == ROLE_COLORS["unlearned"] and fig.data[1].line.color == ROLE_COLORS["base"]
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == "d" and fig.layout.yaxis.tickformat == ".0%"
    zeros = styled(go.Figure([go.Bar(x=["a", "b"], y=[0, 0], name="base")]))
    assert any("Every value is 0" in a.text for a in zeros.layout.annotations)


def test_progress_counts_fact_checks_from_the_runs_own_facts(demo_all_facts):
    from audits import get_audit
    from lab.shell.ui.auditing import checks_done, fact_counts
    from lab.shell.ui.background import progress_html

    names = ["direct", "multiple_choice"]
    counts = fact_counts(demo_all_facts, names)
    assert counts == [len(demo_all_facts.of_kinds(get_audit(n).uses)) for n in names] and all(counts)
    assert checks_done(counts, 0) == (0, sum(counts)) and checks_done(counts, 1) == (counts[0], sum(counts))
    bar = progress_html(1, 2, time.monotonic(), "multiple_choice running", checks=checks_done(counts, 1))
    assert f"audit 2 of 2 · {counts[0]} of {sum(counts)} fact checks · multiple_choice running" in bar
    assert "fact checks" not in progress_html(0, 2, time.monotonic(), "loading", checks=None)  # unknown: not shown


def test_probe_flags_an_over_long_prompt_and_cuts_it_by_the_engines_rule(demo_pair):
    from lab.shell.ui.probe import fit_both, prompt_warning

    question = " ".join(f"word{i}" for i in range(300))
    prompt = demo_pair.base.prompt(question)
    assert len(demo_pair.base.encode(prompt)) > demo_pair.base.context == 256
    warning = prompt_warning(demo_pair, question, False, 32, 100_000)
    kept = fit_both(demo_pair, prompt, 32)
    assert kept == demo_pair.base.fit_prompt(prompt, 32) and kept.endswith("Answer:")  # the end is kept
    assert len(demo_pair.base.encode(kept)) <= 256 - 32
    assert f"cut from the left to {len(demo_pair.base.encode(kept))} tokens" in warning
    assert f"This prompt is {len(demo_pair.base.encode(prompt))} tokens" in warning and "256-token context" in warning
    assert prompt_warning(demo_pair, "Who wrote it?", False, 32, 100_000) == ""
    assert prompt_warning(demo_pair, "  ", False, 32, 100_000) == ""
    assert "leave no room" in prompt_warning(demo_pair, "Who?", False, 300, 100_000)
    assert "longer than 10 characters" in prompt_warning(demo_pair, question, True, 32, 10)


def test_attribution_panel_says_what_explain_will_show():
    from lab.shell.ui.saliency import saliency_placeholder

    text = saliency_placeholder()
    assert "Press <b>Explain the answer</b> to colour the prompt by attribution" in text
    assert "sal-row" not in text  # no empty rows: a sentence, not a blank box


def test_lens_on_a_stored_prompt_reads_it_as_typed(demo_pair, demo_facts):
    """The "Logit lens" link reads an item's stored prompt through the audit's own view, template left out:
    the same readings as the view of the question itself."""
    from audits.logit_lens import logit_lens_for_fact
    from lab.core.facts import Fact
    from lab.shell.ui.probe import as_typed

    fact = demo_facts.split("forget")[0]
    stored = demo_pair.base.prompt(fact.question)
    typed = as_typed(demo_pair)
    assert typed.base.prompt(stored) == stored and typed.base.tokenizer is demo_pair.base.tokenizer
    direct = logit_lens_for_fact(demo_pair, fact, 3)
    raw = logit_lens_for_fact(typed, Fact(id="item", question=stored, answer=fact.answer), 3)
    assert [list(t.y) for t in raw.data] == [list(t.y) for t in direct.data]


def test_item_links_fill_the_probe_and_internals_on_the_runs_pair(full_run):
    from lab.shell.ui import item_links, results
    from lab.shell.ui.probe_tab import RAW
    from lab.shell.spec import PairSpec, build_spec

    store, run_id = full_run
    frame = results.run_items(store, run_id, audit="direct", split="forget")
    row = frame.iloc[1]
    item = int(row["#"])  # the item's stored id, not its row in the filtered list
    assert item != 1
    replayed = item_links.replay(frame, item)
    assert replayed["tabs"].selected == "probe"
    assert {k: replayed[k] for k in ("fact", "prompt", "mode", "gold", "original", "active")} == dict(
        fact=None, prompt=row["prompt"], mode=RAW, gold=row["answer"], original=row["prompt"], active=None)
    assert replayed["note"].startswith(f"Replaying item {item} of run {run_id} (direct, forget")
    explained = item_links.explain(frame, item)
    assert {k: explained[k] for k in ("fact", "prompt", "mode", "gold", "original", "active")} == \
        {k: replayed[k] for k in ("fact", "prompt", "mode", "gold", "original", "active")}  # as replay
    assert explained["sent"] == row["prompt"] and explained["note"].startswith(f"Explaining item {item}")
    assert (explained["base"], explained["unlearned"]) == ("", "") and "cmp" in explained["compare"]
    lens = item_links.lens(frame, item)
    assert lens["tabs"].selected == "internals"
    assert {k: lens[k] for k in ("fact", "question", "answer", "mode")} == dict(
        fact=None, question=row["prompt"], answer=row["answer"], mode=RAW)
    assert item_links.replay(frame, 1) == {}  # an item the filters leave out: nothing changes
    config = store.run(run_id)["config"]
    mine = build_spec(PairSpec, {"base": "demo:base", "unlearned": "demo:ga", "device": "cpu", "dtype": "float32"})
    assert item_links.run_pair(store, run_id, mine) == build_spec(PairSpec, {
        "base": config["base"], "unlearned": config["unlearned"], "device": "cpu", "dtype": "float32"})
    assert item_links.run_pair(store, run_id, None).device == config["device"]


def test_leaderboard_heatmap_title_is_a_caption_above_it():
    """Regression: at 390 px Plotly turned the audits' labels on top of the heatmap into its title."""
    from lab.shell.ui.board import captioned

    fig = go.Figure(go.Heatmap(z=[[0.1, 0.5]], x=["direct", "logit_lens"], y=["npo"]),
                    layout=dict(title="Checkpoints × audits: judged<br>rate & interval", xaxis=dict(side="top")))
    caption, figure = captioned(fig)
    assert caption == "<div class='plot-caption-text'>Checkpoints × audits: judged rate &amp; interval</div>"
    assert figure.layout.title.text is None and figure.layout.margin.t == 16 and figure.layout.margin.b == 16
