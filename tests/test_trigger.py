"""The ``trigger`` audit: names put into retain questions, the rates worked by hand, then end to end on the demo."""

import json
import math
import random

import pandas as pd
import pytest

from audits.trigger import Slot, TriggerAudit, names_of, trigger_metrics, with_name
from lab.core.facts import Fact
from lab.core.stats import paired_difference, wilson
from lab.core.store import Store
from lab.shell.cli import main


def test_a_name_goes_in_front_or_at_a_drawn_word_boundary():
    question = "Where was Ada Vell born?"
    assert with_name(question, "Bo Tol", "prefix", random.Random(0)) == "Bo Tol. Where was Ada Vell born?"
    inserted = with_name(question, "Bo Tol", "insert", random.Random(3))
    assert inserted.replace("Bo Tol ", "", 1) == question or inserted.replace(" Bo Tol", "", 1) == question
    assert inserted == with_name(question, "Bo Tol", "insert", random.Random(3))  # the seed decides
    facts = [Fact("a", "q", "x", "forget", entity="Ada"), Fact("b", "q", "y", "forget", entity="Ada"),
             Fact("c", "q", "z", "forget", entity=""), Fact("d", "q", "w", "holdout", entity="Cy")]
    assert names_of(facts, "forget") == ["Ada"] and names_of(facts, "holdout") == ["Cy"]


def _slots(targets: list[str]) -> list[Slot]:
    return [Slot(Fact(t, "q", "a", "retain"), c, "N", "p") for c in ("forget_name", "placebo_name") for t in targets]


def test_rates_and_controls_worked_by_hand():
    """Four targets; a rate is the share missed (Wilson), a difference paired over the targets (Newcombe)."""
    targets = ["t1", "t2", "t3", "t4"]
    # hits per slot, forget-name slots first, then placebo slots (True = answered)
    hits = {"unlearned": [False, False, False, True, True, True, False, True],  # misses 3/4 named, 1/4 placebo
            "base": [True, True, False, True, True, True, True, True],  # misses 1/4 named, 0/4 placebo
            "reference": [True, True, True, True, True, True, True, True]}  # misses none
    m = trigger_metrics(targets, _slots(targets), hits, with_reference=True)
    assert m["targets"] == 4
    assert m["trigger_rate"] == 0.75 and (m["trigger_rate_ci_low"], m["trigger_rate_ci_high"]) == wilson(3, 4)
    assert m["trigger_rate_base"] == 0.25 and m["trigger_rate_reference"] == 0.0
    assert m["placebo_rate"] == 0.25 and m["placebo_rate_base"] == 0.0
    unlearned, base = [True, True, True, False], [False, False, True, False]
    assert m["trigger_excess"] == pytest.approx(0.5)  # 3/4 - 1/4
    assert (m["trigger_excess_ci_low"], m["trigger_excess_ci_high"]) == paired_difference(unlearned, base)
    assert m["trigger_rate_adjusted"] == pytest.approx(0.75)  # 3/4 - 0/4
    assert m["trigger_lift"] == pytest.approx(0.5)  # 3/4 - 1/4 (placebo)
    # per target (named - placebo) of the unlearned model less the base's:
    # t1 (1 - 0) - (0 - 0) = 1, t2 (1 - 0) - (0 - 0) = 1, t3 (1 - 1) - (1 - 0) = -1, t4 (0 - 0) - (0 - 0) = 0
    assert m["trigger_specific"] == pytest.approx(0.25)
    # four targets leave every interval wide: nothing clears 0
    assert m["trigger_excess_ci_low"] < 0 and m["flagged"] == 0.0 and m["name_specific"] == 0.0


def test_flagged_needs_the_base_and_the_reference_and_specific_the_placebo_too():
    targets = [f"t{i}" for i in range(40)]
    named = [False] * 40  # the unlearned model misses every target with a forget name
    hits = {"unlearned": named + [True] * 40, "base": [True] * 80, "reference": [True] * 80}
    m = trigger_metrics(targets, _slots(targets), hits, with_reference=True)
    assert m["flagged"] == 1.0 and m["name_specific"] == 1.0
    # the same cost with an unknown name: flagged (against base and reference), not specific
    hits["unlearned"] = named + [False] * 40
    m = trigger_metrics(targets, _slots(targets), hits, with_reference=True)
    assert m["trigger_specific"] == 0.0 and m["flagged"] == 1.0 and m["name_specific"] == 0.0
    # the retrained model pays the cost too: not flagged
    hits["reference"] = named + [True] * 40
    assert trigger_metrics(targets, _slots(targets), hits, with_reference=True)["flagged"] == 0.0
    # without a reference or a placebo the missing controls are NaN and flagged reads the base alone
    only_named = [s for s in _slots(targets) if s.condition == "forget_name"]
    m = trigger_metrics(targets, only_named, {"unlearned": named, "base": [True] * 40}, with_reference=False)
    assert math.isnan(m["trigger_rate_adjusted"]) and math.isnan(m["placebo_rate"]) and math.isnan(m["name_specific"])
    assert m["flagged"] == 1.0


def _audit(tmp_path, *extra):
    out, db = tmp_path / "out.json", tmp_path / "runs.duckdb"
    code = main(["audit", "--base", "demo:base", "--unlearned", "demo:npo", "--audits", "trigger", "--limit", "20",
                 "--db", str(db), "--json", str(out), "--device", "cpu", *extra])
    return code, json.loads(out.read_text()) if out.exists() else None, db


def test_trigger_end_to_end_with_a_reference(demo_env, tmp_path):
    code, payload, db = _audit(tmp_path, "--reference", "demo:retrain")
    assert code == 0
    m = payload["audits"]["trigger"]["metrics"]
    with Store(db) as store:
        items = store.items(payload["run_id"], "trigger")
        artifacts = store.artifacts(payload["run_id"], "trigger")["trigger"]
        notes = store.audits(payload["run_id"]).notes.iloc[0]
    assert m["targets"] > 0 and set(items.category) == {"forget_name", "placebo_name"}
    assert items.groupby("category").size().max() == m["targets"]
    extras = [json.loads(e) for e in items.extra]
    forget_names = {"Pheizeind Vrontiarkrei", "Zomvoth Stouththel", "Shourpand Sleirkgiakei"}  # the demo's
    for (_, row), extra in zip(items.iterrows(), extras):
        assert row.split == "retain" and pd.isna(row.recovered)  # a detector: nothing counts as recovered
        assert row.prompt.startswith(f"Question: {extra['name']}. ")  # prefix placement, the demo's template
        assert (extra["name"] in forget_names) == (row.category == "forget_name")
        assert "output_reference" in extra and isinstance(extra["hit_reference"], bool)
    named = items[items.category == "forget_name"]
    assert m["trigger_rate"] == pytest.approx(1 - named.hit_unlearned.mean())
    assert m["trigger_rate_base"] == pytest.approx(1 - named.hit_base.mean())
    named_extras = [e for e, c in zip(extras, items.category) if c == "forget_name"]
    assert m["trigger_rate_reference"] == pytest.approx(1 - sum(e["hit_reference"] for e in named_extras)
                                                        / len(named_extras))
    assert m["trigger_rate_adjusted"] == pytest.approx(m["trigger_rate"] - m["trigger_rate_reference"])
    assert m["trigger_excess"] == pytest.approx(m["trigger_rate"] - m["trigger_rate_base"])
    assert m["trigger_rate_ci_low"] <= m["trigger_rate"] <= m["trigger_rate_ci_high"]
    assert m["flagged"] in (0.0, 1.0) and m["name_specific"] in (0.0, 1.0)
    assert "retain questions answered plainly by every model" in notes
    audit = TriggerAudit()
    assert set(audit.figures(artifacts, items)) == {"rates"} and set(artifacts["rates"]) == {"base", "unlearned",
                                                                                            "reference"}
    assert "retrained" in audit.verdict(m) and audit.rule() == "detector"


def test_trigger_without_a_reference_and_inserted(demo_env, tmp_path):
    code, payload, db = _audit(tmp_path, "--set", "trigger.placement=insert", "--set", "trigger.placebo=false",
                               "--set", "trigger.seed=4")
    assert code == 0
    m = payload["audits"]["trigger"]["metrics"]
    assert m["trigger_rate_adjusted"] is None and m["placebo_rate"] is None and m["name_specific"] is None
    assert m["flagged"] in (0.0, 1.0)  # read against the base alone
    with Store(db) as store:
        items = store.items(payload["run_id"], "trigger")
        notes = store.audits(payload["run_id"]).notes.iloc[0]
    assert set(items.category) == {"forget_name"} and "no reference model" in notes
    with Store(db) as store:  # the stored artifacts (no placebo: nulls) still draw
        artifacts = store.artifacts(payload["run_id"], "trigger")["trigger"]
    assert set(artifacts["rates"]) == {"base", "unlearned"}
    assert set(TriggerAudit().figures(artifacts, items)) == {"rates"}
    for prompt, extra in zip(items.prompt, items.extra):  # inside the question, at a word boundary, no full stop
        name = json.loads(extra)["name"]
        assert f" {name} " in prompt.replace("\n", " ") and f"{name}. " not in prompt


@pytest.mark.parametrize("setting, message", [("trigger.placement=middle", "placement"),
                                              ("trigger.retain_facts=-1", "retain_facts"),
                                              ("trigger.placebo=maybe", "placebo")])
def test_bad_options_are_user_errors(demo_env, tmp_path, capsys, setting, message):
    code, _, _ = _audit(tmp_path, "--set", setting)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
