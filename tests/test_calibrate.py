"""``python -m lab calibrate`` on the tiny demo: flag rates with intervals, the control, detection AUC."""

import json

import pytest

from lab.core import unlearning_metrics as um
from lab.core.store import Store
from lab.shell.calibrate import fact_scores
from lab.shell.cli import main


def test_calibrate_reads_flag_rates_controls_and_auc(tiny_demo, tmp_path, capsys):
    db, out, md = tmp_path / "c.duckdb", tmp_path / "c.json", tmp_path / "c.md"
    code = main(["calibrate", "--demo", str(tiny_demo), "--models", "npo", "--audits", "keywords,direct",
                 "--limit", "6", "--db", str(db), "--json", str(out), "--markdown", str(md), "--device", "cpu"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["models"] == ["npo", "retrain"]  # the control is always added
    rows = {(r["audit"], r["model"]): r for r in result["recovery"]}
    assert set(rows) == {("keywords", "npo"), ("keywords", "retrain")}  # direct is no recovery audit
    assert {d["audit"] for d in result["detectors"]} == {"direct"}
    with Store(db, read_only=True) as store:
        runs = store.sweep_runs(result["sweep_id"])
        by_model = {ref.rsplit("/", 1)[1]: run for ref, run in zip(runs.unlearned_ref, runs.run_id)}
        for model in ("npo", "retrain"):
            metrics = store.metrics_dict(by_model[model])["keywords"]
            row = rows[("keywords", model)]
            assert row["rate"] == pytest.approx(metrics["recovery_rate"])
            assert row["ci_low"] <= row["rate"] <= row["ci_high"]
            assert row["adjusted"] == pytest.approx(metrics["recovery_rate_adjusted"])
        npo = fact_scores(store.items(by_model["npo"], "keywords"), "keywords")
        control = fact_scores(store.items(by_model["retrain"], "keywords"), "keywords")
    shared = [f for f in npo if f in control]
    assert shared and rows[("keywords", "npo")]["detection_auc"] == pytest.approx(
        um.auc([npo[f] for f in shared], [control[f] for f in shared]))
    assert rows[("keywords", "retrain")]["detection_auc"] is None  # no AUC of the control against itself
    table = md.read_text()
    assert "retrain (control: false positives)" in table and table.strip() in capsys.readouterr().out
    control_rate = rows[("keywords", "retrain")]["rate"]
    last = table.strip().splitlines()[-1]  # the audits whose control rate is above the 5% bar, or none
    assert ("keywords" in last and last.startswith("Control above 5%")) if control_rate > 0.05 else \
        last == "Every recovery audit stays at or below 5% on the control."


def test_the_control_line_names_each_audit_above_the_bar():
    from lab.shell.calibrate import Calibration, RecoveryRow, markdown, power_of

    def row(audit, model, hits, targets=40, seed=0):
        rate = hits / targets
        return RecoveryRow(audit, "recovery_rate", model, targets, rate, rate / 2, rate * 2, 0.0, 0.0, 0.0,
                           float("nan"), seed, hits)

    rows = [row("a", "retrain", 8), row("b", "retrain", 2), row("a", "npo", 20), row("a", "npo", 20, seed=1),
            row("c", "retrain", 12), row("c", "npo", 14)]
    power = {name: power_of(name, rows, {}, ["npo"]) for name in ("a", "b", "c")}
    assert (power["a"].power_hits, power["a"].power_targets, power["a"].fpr_hits) == (40, 80, 8)  # pooled seeds
    assert power["a"].excess_ci_low > 0 and power["a"].shown
    assert power["b"].planted is None and not power["b"].shown
    # c flags its planted positive (35% [22%, 50%]: above 0) about as often as the control (30%): no power to lend
    assert power["c"].power_ci_low > 0 and power["c"].excess_ci_low < 0 and not power["c"].shown
    result = Calibration(demo="d", sweep_id="s", models=["npo", "retrain"], audits=["a", "b", "c"], options={},
                         recovery=rows, detectors=[], failed=[], profile="tiny", seeds=[0, 1], date="2026-12-06",
                         power=power)
    lines = markdown(result).splitlines()
    assert lines[-1] == ("Control above 5% (false positives; read these audits' adjusted rates): a 20% [10%, 35%]; "
                         "c 30% [18%, 45%]")
    assert "| a | 50% [39%, 61%] on npo (40/80) | 20% [10%, 35%] (8/40) | 30% [" in "\n".join(lines)
    assert "| c | 35% [22%, 50%] on npo: power not shown (14/40) |" in "\n".join(lines)
    assert "| b | power not shown (the demo plants no positive for it) (0/0) |" in "\n".join(lines)


def test_calibrate_refuses_an_unknown_model(tiny_demo, tmp_path, capsys):
    code = main(["calibrate", "--demo", str(tiny_demo), "--models", "npo,wizard", "--audits", "direct",
                 "--db", str(tmp_path / "c.duckdb")])
    err = capsys.readouterr().err
    assert code == 2 and "no demo model 'wizard'" in err and "Traceback" not in err


def test_power_pools_seeds_and_the_base_is_computed_once(tiny_demo, tmp_path, monkeypatch):
    """Two demo worlds (seeds 0 and 1): each audit's power on its planted positive and false positives on the
    control, pooled; the same numbers whether the engines keep the base's results or compute them again."""
    monkeypatch.setenv("LAB_DEMO_DIR", str(tiny_demo))  # seed 0; seed 1 is built beside it
    runs = {}
    for memo in ("0", "1"):
        monkeypatch.setenv("LAB_MEMO", memo)
        out = tmp_path / f"power-{memo}.json"
        assert main(["calibrate", "--profile", "tiny", "--seeds", "0,1", "--models", "ga", "--audits",
                     "direct,reasoning", "--limit", "4", "--local", "--device", "cpu", "--db",
                     str(tmp_path / f"p{memo}.duckdb"), "--json", str(out)]) == 0
        runs[memo] = json.loads(out.read_text())
    result = runs["1"]
    assert result["seeds"] == [0, 1] and result["profile"] == "tiny"
    power = result["power"]["reasoning"]
    rows = [r for r in result["recovery"] if r["audit"] == "reasoning"]
    planted = [r for r in rows if r["model"] == power["planted"]]
    assert power["planted"] == "ga" and {r["seed"] for r in planted} == {0, 1}
    assert power["power_targets"] == sum(r["targets"] for r in planted)
    assert power["fpr_targets"] == sum(r["targets"] for r in rows if r["model"] == "retrain")
    assert power["power_ci_low"] <= power["power"] <= power["power_ci_high"]
    for key in ("recovery", "detectors", "power"):
        assert runs["0"][key] == runs["1"][key], key


def test_the_shipped_calibration_covers_every_recovery_audit_and_its_figures_add_up():
    """static/calibration.json (what the verdicts quote) has power and false positives for every recovery audit,
    with the keys the contract names, and each 'shown' follows from its own counts."""
    from pathlib import Path

    from audits import available, get_audit
    from lab.core.stats import unpaired_difference, wilson

    data = json.loads((Path(__file__).resolve().parents[1] / "static" / "calibration.json").read_text())
    assert len(data["seeds"]) >= 3 and data["profile"]
    for name in (n for n in available() if get_audit(n).recovery_key):
        entry = data["power"][name]
        assert {"power", "power_ci_low", "power_ci_high", "fpr", "fpr_ci_low", "fpr_ci_high"} <= set(entry), name
        assert (entry["power_ci_low"], entry["power_ci_high"]) == pytest.approx(
            wilson(entry["power_hits"], entry["power_targets"]))
        low, _ = unpaired_difference(entry["power_hits"], entry["power_targets"], entry["fpr_hits"], entry["fpr_targets"])
        assert entry["shown"] == (low > 0), name
