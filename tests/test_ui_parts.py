"""The web lab's parts that need no browser: diff, saliency, progress, links, the dashboard's tally, the
facts hint (the "Upload a file" regression), audits offered per pair, filtered export, figure style."""

from __future__ import annotations

import copy
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


def test_links_round_trip_and_drop_junk():
    from lab.shell.ui.links import Link, params_js, parse

    assert parse({"tab": "results", "run": "run-1", "fact": "f1", "item": "3"}) == \
        Link("results", "run-1", None, "f1", 3)
    assert parse({"tab": "nowhere", "item": "-1"}) == Link()
    js = params_js(["run"], {"tab": "results"})
    assert 'window.labParams(["run", "tab"]' in js and '.concat(["results"])' in js


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
    from lab.shell.ui.dashboard import Tally, dashboard_spec, parse_models, run_dashboard

    models = parse_models(["npo"], "demo:ga\ndemo:npo, demo:retrain")
    assert models == ["demo:npo", "demo:ga", "demo:retrain"]
    spec = dashboard_spec("demo:base", models[:2], ["direct", "reasoning"], "", 3, 12, None, "cpu")
    seen, tally = [], Tally(2, 2)
    with Store(tmp_path / "d.duckdb") as store:
        outcome = run_dashboard(store, spec, threading.Event(), lambda e: (seen.append((e.kind, tally.done)),
                                                                             tally.add(e)))
        runs = store.sweep_runs(outcome.sweep_id)
    assert outcome.status == "complete" and len(runs) == 2 and tally.done == tally.total == 4
    kinds = [k for k, _ in seen]
    assert kinds[0] == "sweep" and kinds.count("audit") == kinds.count("done") == 4 and kinds.count("pair") == 2
    assert [d for k, d in seen if k == "done"] == [0, 1, 2, 3]  # the count before each audit ended


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
