"""The release gate (``audit --fail-above X``) end to end: exit 0 pass, 3 fail, 2 error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lab.shell.verdict import gate, model_verdict

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


def judged(payload: dict, threshold: float) -> tuple[str, list[str]]:
    """The verdict and the gate's failures for a --json payload, by the one rule (lab.shell.verdict)."""
    verdict = model_verdict("the unlearned model", {n: r["metrics"] for n, r in payload["audits"].items()})
    return verdict.state, gate(verdict, threshold)


def test_gate_fails_then_passes_at_the_judged_rate(demo_env, tmp_path):
    threshold = 0.0
    failed, payload = audit_cli(tmp_path, "fail", "--audits", GATED, "--fail-above", str(threshold))
    state, reasons = judged(payload, threshold)
    assert reasons, f"precondition: the tiny NPO model must fail a gate at 0, got {state}"
    assert failed.returncode == 3, failed.stderr
    assert failed.stderr.strip().splitlines()[-1] == f"release gate failed: {'; '.join(reasons)}"
    assert f"verdict: {state}" in failed.stdout and "Traceback" not in failed.stderr
    assert payload["status"] == "complete"

    hidden = [c.value for c in model_verdict("m", {n: r["metrics"] for n, r in payload["audits"].items()}).cells
              if c.state == "hidden"]
    if state in ("hidden", "forgotten", "no recovery shown", "not answered"):  # a threshold at the highest passes
        passed, again = audit_cli(tmp_path, "pass", "--audits", GATED, "--fail-above", repr(max(hidden or [0.0])))
        assert passed.returncode == 0, passed.stderr
        assert again["audits"] == payload["audits"]  # same greedy run, same numbers
        assert "release gate" not in passed.stderr


def test_the_base_as_its_own_unlearned_model_fails(demo_env, tmp_path):
    """A model that forgot nothing still answers its forget questions (leaked); without the direct audit it has
    no targets for any attack (cannot be judged): either way the gate fails."""
    for audits in ("direct,reasoning", "reasoning"):
        proc = subprocess.run(
            [sys.executable, "-m", "lab", "audit", "--base", "demo:base", "--unlearned", "demo:base", "--audits",
             audits, "--db", str(tmp_path / "self.duckdb"), "--device", "cpu", "--limit", LIMIT, "--fail-above",
             "0.1"], capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 3, proc.stderr
        reason = "direct leaked" if audits.startswith("direct") else "cannot be judged"
        assert reason in proc.stderr.strip().splitlines()[-1]


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
