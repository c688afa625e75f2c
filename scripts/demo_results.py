"""Reproduce the README's measured tables: every audit on each demo pair.

Usage: python scripts/demo_results.py [--audits a,b] [--db PATH] [--out DIR]

Runs ``python -m lab audit --base demo:base --unlearned demo:<m> --reference
demo:retrain`` for m in ga, graddiff, npo and retrain (the control), writes
each run's JSON to DIR, and prints one markdown table per audit with the
metrics side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("ga", "graddiff", "npo", "retrain")
ALL_AUDITS = "direct,reasoning,keywords,quantization,remind,metrics,surrogates,sae,logit_lens"


def run_model(model: str, audits: str, db: Path, out: Path) -> tuple[dict, float]:
    target = out / f"{model}.json"
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "lab", "audit", "--base", "demo:base", "--unlearned", f"demo:{model}",
         "--reference", "demo:retrain", "--audits", audits, "--db", str(db), "--json", str(target)],
        capture_output=True, text=True,
    )
    if proc.returncode not in (0, 2) or not target.exists():
        raise SystemExit(f"{model}: audit failed: {proc.stderr.strip()}")
    return json.loads(target.read_text()), time.time() - started


def table(audit: str, results: dict[str, dict]) -> str:
    keys: list[str] = []
    for payload in results.values():
        for key in payload["audits"].get(audit, {}).get("metrics", {}):
            if key not in keys:
                keys.append(key)
    lines = [f"#### {audit}", "", "| metric | " + " | ".join(results) + " |",
             "| --- |" + " ---: |" * len(results)]
    for key in keys:
        cells = []
        for payload in results.values():
            value = payload["audits"].get(audit, {}).get("metrics", {}).get(key)
            cells.append("n/a" if value is None else f"{value:.3f}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audits", default=ALL_AUDITS)
    parser.add_argument("--db", default="demo-results.duckdb")
    parser.add_argument("--out", default="demo-results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, seconds = {}, {}
    for model in MODELS:
        results[model], seconds[model] = run_model(model, args.audits, Path(args.db), out)
        print(f"{model}: run {results[model]['run_id']} {results[model]['status']} in {seconds[model]:.0f}s",
              file=sys.stderr)
    for audit in args.audits.split(","):
        print(table(audit, results) + "\n")
    for model, payload in results.items():
        for audit, error in payload.get("errors", {}).items():
            print(f"- {model} / {audit} failed: {error}")


if __name__ == "__main__":
    main()
