"""Items longer than a model's context are left out of an audit with a count and a reason; the audit runs on the
rest instead of failing (lab.core.fitting, through the runner)."""

from __future__ import annotations

import json

from conftest import run_on_pair

from lab.core.facts import Fact
from lab.core.fitting import fitting, passage_tokens, row_tokens
from lab.core.store import Store

LONG = " ".join(["word"] * 400)  # far past the tiny demo's 256 tokens


def test_items_that_do_not_fit_are_counted_and_named(demo_pair):
    engine = demo_pair.base
    assert engine.context == 256
    facts = [Fact("short", "Where was Ada born?", "Velmora"),
             Fact("long-perturbed", "Where was Ada born?", "Velmora", perturbed_answers=("Brisk", LONG)),
             Fact("long-text", "", "", kind="text", text=LONG, subset="privleak"),
             Fact("long-prompt", LONG, "the end of it", kind="continuation", subset="verbmem")]
    fit = fitting(facts, [demo_pair.base, demo_pair.unlearned])
    assert [f.id for f in fit.kept] == ["short", "long-prompt"]  # a passage prompt is cut from the left: fits
    assert [f.id for f in fit.skipped] == ["long-perturbed", "long-text"]
    assert fit.longest == max(row_tokens(engine, facts[1:3])) > 256 and fit.context == 256
    assert fit.note == (f"2 of 4 items skipped: longer than {engine.info.ref}'s context of 256 tokens (the longest "
                        f"needs {fit.longest:,}); 1 qa forget, 1 text forget (privleak). The numbers are over the "
                        "other 2")
    assert passage_tokens(engine, facts)[2] < 256  # the passage audits read a text's opening and continuation
    assert passage_tokens(engine, facts)[:2] == row_tokens(engine, facts[:2])  # questions as everywhere
    assert fitting(facts[:1], [demo_pair.base]).note == ""


def test_a_run_skips_the_items_and_keeps_the_audit(tiny_demo, demo_pair, demo_all_facts, tmp_path):
    """The demo's facts with one over-long question: direct and metrics complete over the others, and say so."""
    path = tmp_path / "facts.jsonl"
    rows = [json.loads(line) for line in (tiny_demo / "facts.jsonl").read_text().splitlines()]
    long_row = {**next(r for r in rows if r["split"] == "forget" and r.get("kind", "qa") == "qa"),
                "id": "too-long", "answer": LONG}
    path.write_text("\n".join(json.dumps(r) for r in [long_row, *rows]) + "\n")
    store = Store(tmp_path / "fit.duckdb")
    facts = str(path)
    run_id = run_on_pair(tiny_demo, demo_pair, store, ["direct", "metrics"], sets={"metrics": {"max_new_tokens": "8"}},
                         facts=facts)
    audits = store.audits(run_id).set_index("audit")
    assert store.run(run_id)["status"] == "complete"
    for name in ("direct", "metrics"):
        notes = json.loads(audits.loc[name, "notes"])
        assert notes[0].startswith("1 of ") and "longer than" in notes[0] and "1 qa forget" in notes[0], notes
    assert "too-long" not in set(store.items(run_id)["fact_id"])
