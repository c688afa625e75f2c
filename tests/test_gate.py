"""The release gate (``audit --fail-above X``) end to end: exit 0 pass, 3 fail, 2 error."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from audits import get_audit
from lab.shell.cli import gate_failures

ROOT = Path(__file__).resolve().parents[1]
GATED = "direct,quantization,logit_lens"  # the logit lens reads back forget facts of the tiny NPO model
LIMIT = "4"


def audit_cli(tmp_path: Path, name: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """``python -m lab audit`` on the tiny demo pair; returns the process and its --json payload."""
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "lab", "audit", "--base", "demo:base", "--unlearned", "demo:npo",
         "--db", str(tmp_path / "gate.duckdb"), "--device", "cpu", "--limit", LIMIT, "--json", str(out), *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return proc, json.loads(out.read_text()) if out.exists() else {}


def recovery(payload: dict) -> dict[str, float]:
    """Each gated audit's forget-set recovery rate, read from the --json output."""
    rates = {}
    for name, result in payload["audits"].items():
        key = get_audit(name).recovery_key
        if key and result["metrics"].get(key) is not None:
            rates[name] = result["metrics"][key]
    return rates


def test_gate_failures_by_hand():
    metrics = {"direct": {"forget_accuracy_base": 1.0},  # not a recovery audit: never gated
               "reasoning": {"recovery_rate": 0.25}, "quantization": {"recovery_rate": 0.1},
               "surrogates": {"recovery_rate": math.nan}, "keywords": {"recovery_rate": None}}
    assert gate_failures(metrics, 0.1) == ["reasoning recovery_rate=0.250"]  # 0.1 does not exceed 0.1
    assert gate_failures(metrics, 0.09) == ["reasoning recovery_rate=0.250", "quantization recovery_rate=0.100"]
    assert gate_failures(metrics, 0.25) == []


def test_gate_fails_then_passes_at_the_measured_rate(demo_env, tmp_path):
    threshold = 0.1
    failed, payload = audit_cli(tmp_path, "fail", "--audits", GATED, "--fail-above", str(threshold))
    rates = recovery(payload)
    over = [f"{name} {get_audit(name).recovery_key}={rate:.3f}" for name, rate in rates.items() if rate > threshold]
    assert over, f"precondition: some audit must recover more than {threshold} on the tiny demo, got {rates}"
    assert failed.returncode == 3, failed.stderr
    stderr = failed.stderr.strip().splitlines()[-1]
    assert stderr == f"release gate failed (recovery above {threshold}): {', '.join(over)}"
    assert "Traceback" not in failed.stderr and payload["status"] == "complete"

    highest = max(rates.values())  # the gate fails only when a rate exceeds X, so X = the highest rate passes
    passed, again = audit_cli(tmp_path, "pass", "--audits", GATED, "--fail-above", repr(highest))
    assert passed.returncode == 0, passed.stderr
    assert recovery(again) == rates  # same greedy run, same numbers
    assert "release gate" not in passed.stderr


def test_gate_reports_errors_with_exit_2(demo_env, tmp_path):
    # An audit that fails while running (the tiny model has no layer past min_layer): exit 2, the run is stored.
    broken, payload = audit_cli(tmp_path, "broken", "--audits", "direct,logit_lens", "--set",
                                "logit_lens.min_layer=5", "--fail-above", "0.5")
    assert broken.returncode == 2
    assert broken.stderr.strip().splitlines()[-1].startswith("error: audits failed: logit_lens: no middle layers")
    assert payload["status"] == "failed" and "logit_lens" in payload["errors"] and "Traceback" not in broken.stderr
    bad, _ = audit_cli(tmp_path, "bad", "--audits", "direct", "--fail-above", "half")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--fail-above" in bad.stderr


def test_bad_options_fail_before_a_run_exists(demo_env, tmp_path):
    """Any audit's bad option is one line and exit 2, and nothing is stored: the store stays as it was."""
    from lab.core.store import Store

    cases = [("remind", "remind.max_radius=1", "must be at least 2"),
             ("quantization", "quantization.backend=foo", "'foo' is not one of auto, rtn, bitsandbytes"),
             ("reasoning", "reasoning.categories=direct,sideways", "'sideways' is not one of direct, indirect, implied"),
             ("keywords", "keywords.top_k=three", "expected an integer"),
             ("surrogates", "surrogates.band_low=0.9", "low <= high")]
    for audit, setting, message in cases:
        if audit == "surrogates":
            setting = "surrogates.band_low=0.95"
        proc, payload = audit_cli(tmp_path, f"bad-{audit}", "--audits", f"direct,{audit}", "--set", setting)
        lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("note:")]
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (setting, proc.stderr)
        assert payload == {}
    with Store(tmp_path / "gate.duckdb") as store:
        assert store.runs().empty
