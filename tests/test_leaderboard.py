"""The sweep leaderboard: checkpoints x audits with verdicts, intervals and the release gate, in the store's
terms, as a report (``python -m lab report --sweep``), on a real sweep of the tiny demo."""

from __future__ import annotations

import json

import pytest

from lab.core.store import Store

MODELS = ["demo:npo", "demo:ga", "demo:retrain"]
AUDITS = ["direct", "reasoning", "logit_lens"]


@pytest.fixture()
def swept(demo_env, tmp_path):
    """A sweep of three demo models on three audits (4 facts per split): (store, sweep id)."""
    from lab.shell.sweep import SweepSpec, run_sweep, sweep_spec as make_sweep

    store = Store(tmp_path / "sweep.duckdb")
    spec = make_sweep(dict(base="demo:base", unlearned=MODELS, audits=AUDITS, limit=4, device="cpu", max_new_tokens=16))
    outcome = run_sweep(spec, store, local=True)
    assert outcome.status == "complete"
    yield store, outcome.sweep_id
    store.close()


def test_leaderboard_rows_follow_the_stored_runs(swept):
    from lab.shell.report.leaderboard import collect_sweep, table_frame
    from lab.shell.verdict import LEAKED, model_verdict

    store, sweep_id = swept
    board = collect_sweep(store, sweep_id, threshold=0.5)
    assert [e.model for e in board.entries] == ["npo", "ga", "retrain"] and board.audits == AUDITS
    assert board.sweep["status"] == "complete" and board.sweep["completed"] == 3
    for entry in board.entries:
        metrics = store.metrics_dict(entry.run_id)
        assert entry.verdict == model_verdict(entry.model, metrics, {a: "complete" for a in AUDITS})
        direct = entry.cell("direct")
        assert direct.value == metrics["direct"]["forget_accuracy_unlearned"]
    # The tiny demo's GA keeps most of its forget answers (manifest: 78%); retrain never learned them.
    ga, retrain = board.entries[1], board.entries[2]
    assert ga.verdict.state == LEAKED and retrain.cell("direct").state == "not answered"
    table = table_frame(board)
    assert list(table["model"]) == ["npo", "ga", "retrain"]
    assert table.loc[1, "direct %"] == round(100 * ga.cell("direct").value, 1)
    assert set(table["gate"]) <= {"pass", "FAIL"}


def test_release_gate_follows_the_threshold(swept):
    from lab.shell.report.leaderboard import collect_sweep

    from lab.shell.verdict import HIDDEN, LEAKED, UNJUDGED

    store, sweep_id = swept
    strict, lax = collect_sweep(store, sweep_id, threshold=0.0), collect_sweep(store, sweep_id, threshold=1.0)
    for loose, tight in zip(lax.entries, strict.entries):
        # at 100% only a leak or a model that cannot be judged fails; at 0% any hidden cell fails as well
        assert loose.passes == (loose.verdict.state not in (LEAKED, UNJUDGED))
        hidden = any(c.state == HIDDEN and (c.value or 0) > 0 for c in tight.verdict.cells)
        assert tight.passes == (loose.passes and not hidden)
        assert all(reason.split(" ")[0] in AUDITS or reason.startswith("cannot") for reason in tight.gate)


def collect_sweep_entries(db, sweep_id: str, threshold: float) -> list:
    from lab.core.store import Store
    from lab.shell.report.leaderboard import collect_sweep

    with Store(db, read_only=True) as store:
        return collect_sweep(store, sweep_id, threshold).entries


def test_report_sweep_writes_html_markdown_and_json(swept, tmp_path, capsys):
    from lab.shell.cli import main

    store, sweep_id = swept
    db = store.path
    store.close()
    for fmt in ("html", "md", "json"):
        out = tmp_path / f"board.{fmt}"
        assert main(["report", "--db", str(db), "--sweep", sweep_id, "--format", fmt, "--out", str(out)]) == 0
        text = out.read_text()
        assert sweep_id in text
    strict = collect_sweep_entries(db, sweep_id, 0.0)
    gated = main(["report", "--db", str(db), "--sweep", sweep_id, "--format", "json", "--out",
                  str(tmp_path / "gated.json"), "--fail-above", "0"])
    assert gated == (3 if any(not e.passes for e in strict) else 0)  # a CI job can use the leaderboard's gate
    html = (tmp_path / "board.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "table class=\"dataframe sortable\"" in html
    assert "class='vgrid'" in html and "leaderboard-heatmap" in html and ("gate: FAIL" in html or "gate: pass" in html)
    md = (tmp_path / "board.md").read_text()
    assert "| model | verdict | gate | direct | reasoning | logit_lens |" in md
    data = json.loads((tmp_path / "board.json").read_text())
    assert [e["model"] for e in data["entries"]] == ["npo", "ga", "retrain"]
    assert data["entries"][1]["cells"]["direct"]["state"] == "leaked"
    assert main(["report", "--db", str(db), "--sweep", "sweep-nope", "--out", str(tmp_path / "x.html")]) == 2
    assert "no sweep 'sweep-nope'" in capsys.readouterr().err
