"""The CLI end to end on the tiny demo."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from lab.core.facts import load_facts
from lab.shell.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_demo_build_prints_its_directory(tiny_demo, capsys):
    assert main(["demo", "build", "--profile", "tiny", "--out", str(tiny_demo)]) == 0
    assert capsys.readouterr().out.strip() == str(tiny_demo)
    manifest = json.loads((tiny_demo / "manifest.json").read_text())
    assert set(manifest["accuracy"]) == set(manifest["models"]) == {
        "base", "retrain", "ga", "graddiff", "npo", "graddiff_small", "npo_small", "rmu", "idk"}
    assert set(manifest["unlearners"]["rmu"]) >= {"objective", "steps", "lr", "layer", "steering"}
    assert manifest["accuracy"]["base"]["retain"] >= 0.9
    assert manifest["accuracy"]["retrain"]["forget"] <= 0.1  # the control never learned the forget set
    facts = load_facts(tiny_demo / "facts.jsonl")
    assert set(facts.breakdown()) == {"qa", "mc", "text"}
    assert facts.breakdown()["mc"] == facts.breakdown()["qa"]  # every question again as multiple choice
    people = {s: len({f.entity for f in facts.split(s) if f.kind == "qa"}) for s in ("forget", "retain", "holdout")}
    assert facts.breakdown()["text"] == people  # one biography per person
    assert manifest["chance_rate"] < 0.05
    for name in manifest["accuracy"]:
        assert (tiny_demo / "models" / name / "config.json").is_file()
        assert (tiny_demo / "models" / name / "tokenizer.json").is_file()


def test_audit_runs_export(demo_env, tmp_path, capsys):
    db, out = tmp_path / "runs.duckdb", tmp_path / "out.json"
    code = main(["audit", "--base", "demo:base", "--unlearned", "demo:npo", "--audits", "direct",
                 "--db", str(db), "--json", str(out), "--device", "cpu"])
    assert code == 0
    payload = json.loads(out.read_text())
    metrics = payload["audits"]["direct"]["metrics"]
    manifest = json.loads((demo_env / "manifest.json").read_text())
    assert abs(metrics["forget_accuracy_unlearned"] - manifest["accuracy"]["npo"]["forget"]) < 1e-9
    assert abs(metrics["retain_accuracy_base"] - manifest["accuracy"]["base"]["retain"]) < 1e-9
    run_id = payload["run_id"]
    capsys.readouterr()
    assert main(["runs", "--db", str(db), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert runs[-1]["run_id"] == run_id and runs[-1]["status"] == "complete"
    assert main(["export", "--db", str(db), "--run", run_id, "--format", "parquet",
                 "--out", str(tmp_path / "items.parquet")]) == 0
    items = pd.read_parquet(tmp_path / "items.parquet")
    assert len(items) == sum(manifest["counts"].values())
    assert {"prompt", "output_base", "output_unlearned", "hit_base", "rouge_unlearned"} <= set(items.columns)


def test_limit_and_facts_file(demo_env, tmp_path):
    facts = tmp_path / "mine.csv"
    facts.write_text("question,answer\nWho is nobody?,Zed\n")
    code = main(["audit", "--base", "demo:base", "--unlearned", "demo:ga", "--facts", str(facts),
                 "--audits", "direct", "--db", str(tmp_path / "d.duckdb"), "--json", str(tmp_path / "o.json")])
    assert code == 0
    metrics = json.loads((tmp_path / "o.json").read_text())["audits"]["direct"]["metrics"]
    assert metrics["forget_accuracy_base"] == 0.0 and metrics["retain_accuracy_base"] is None


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, cwd=ROOT, env=env)


def test_errors_exit_2_with_one_line(demo_env, tmp_path):
    import os

    env = {**os.environ}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    cases = [
        ("audit", "--base", "demo:base", "--unlearned", "demo:npo", "--audits", "nope", "--db", str(tmp_path / "x")),
        ("audit", "--base", "demo:base", "--unlearned", "demo:missing", "--audits", "direct", "--db",
         str(tmp_path / "x")),
        ("audit", "--base", "demo:base", "--unlearned", "demo:npo", "--facts", str(bad), "--audits", "direct",
         "--db", str(tmp_path / "x")),
        ("audit", "--base", str(tmp_path / "none"), "--unlearned", "demo:npo", "--facts", str(bad),
         "--audits", "direct", "--db", str(tmp_path / "x")),
        ("export", "--db", str(tmp_path / "x"), "--run", "missing", "--format", "csv", "--out", str(tmp_path / "o")),
        ("audit", "--base", "demo:base"),
    ]
    for args in cases:
        proc = run_cli(*args, env=env)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert "Traceback" not in proc.stderr
