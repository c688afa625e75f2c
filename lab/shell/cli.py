"""``python -m lab``: the command line (CONTRACTS: Command line).

Exit codes: 0 done; 2 bad input or failure, one line on stderr; 3 when
``--fail-above X`` and some audit's forget-set recovery rate exceeds X.
Every command runs inside one error boundary (:func:`lab.core.errors.describe`):
a known failure is its message, an unexpected one a line naming the log file
that holds its traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from pathlib import Path

from lab.core import settings
from lab.core.errors import LabError, describe, route_warnings

EXIT_OK, EXIT_ERROR, EXIT_GATE = 0, 2, 3


class Parser(argparse.ArgumentParser):
    """argparse that raises LabError (one line, exit 2) instead of printing usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise LabError(f"{self.prog}: {message}")


def _demo_build(args: argparse.Namespace) -> int:
    from lab.demo.build import build_demo

    print(build_demo(args.profile, Path(args.out) if args.out else None, seed=args.seed, force=args.force))
    return EXIT_OK


def ensure_demo_models(*refs: str | None) -> None:
    """Build the default demo on first use when a ``demo:`` model is asked for and none exists."""
    from lab.demo.build import build_demo, read_manifest

    if any(r and r.startswith("demo:") for r in refs) and read_manifest(settings.demo_dir()) is None:
        print(f"building the demo world in {settings.demo_dir()} (first use)...", file=sys.stderr)
        build_demo("full")


def gate_failures(metrics: dict[str, dict[str, float]], threshold: float) -> list[str]:
    """Audits whose forget-set recovery rate exceeds the threshold, as 'name=value'."""
    from audits import get_audit

    failed = []
    for name, values in metrics.items():
        key = get_audit(name).recovery_key
        value = values.get(key) if key else None
        if value is not None and not math.isnan(value) and value > threshold:
            failed.append(f"{name} {key}={value:.3f}")
    return failed


def open_store(db: str, read_only: bool):
    """The store at ``db``: read-only for commands that only read (a missing file is an error),
    read-write for a run (a missing file is created, and the user is told)."""
    from lab.core.store import Store

    if not read_only and not Path(db).expanduser().exists():
        print(f"note: {db} does not exist yet; creating a new store there", file=sys.stderr)
    return Store(db, read_only=read_only)


def headline(audit: str, values: dict[str, float]) -> str:
    """An audit's headline keys for the terminal, intervals in brackets; the rest is in --json and the report."""
    from audits import get_audit

    shown = [f"{key}={value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None
                                     and math.isfinite(low) else "")
             for key, value, low, high in get_audit(audit)().headline(values) if value is not None]
    rest = len([k for k in values if not k.endswith(("_ci_low", "_ci_high"))]) - len(shown)
    return ", ".join(shown) + (f" (+{rest} more keys in --json and the report)" if rest > 0 else "")


def _audit(args: argparse.Namespace) -> int:
    from audits import parse_audits
    from lab.core.files import check_output, write_text
    from lab.core.options import parse_sets
    from lab.core.store import to_json
    from lab.shell.runner import RunSpec, check, execute, prepare

    spec = RunSpec(
        base=args.base, unlearned=args.unlearned, audits=parse_audits(args.audits), facts=args.facts,
        reference=args.reference, device=args.device, dtype=args.dtype, limit=args.limit,
        max_new_tokens=args.max_new_tokens, options=parse_sets(args.set or []),
        trust_remote_code=args.trust_remote_code, chat_template=args.chat_template,
        system_prompt=args.system_prompt or "", device_map=args.device_map,
    )
    if args.prompt_template:
        spec.prompt_template = args.prompt_template.replace("\\n", "\n")
    inputs = [args.db, args.facts]
    if args.json:
        check_output(args.json, inputs)
    ensure_demo_models(spec.base, spec.unlearned, spec.reference)
    prepared = prepare(spec, checked=check(spec))
    with open_store(args.db, read_only=False) as store:
        outcome = execute(prepared, store, stop=STOP)
    payload = {"run_id": outcome.run_id, "status": outcome.status,
               "audits": {name: {"metrics": m} for name, m in outcome.metrics.items()},
               "errors": outcome.errors}
    if args.json:
        write_text(args.json, to_json(payload), inputs)
    print(f"run {outcome.run_id}: {outcome.status}")
    for name, values in outcome.metrics.items():
        print(f"  {name}: {headline(name, values)}")
    if outcome.errors:
        raise LabError("audits failed: " + "; ".join(f"{k}: {v}" for k, v in outcome.errors.items()))
    if args.fail_above is not None:
        failed = gate_failures(outcome.metrics, args.fail_above)
        if failed:
            print(f"release gate failed (recovery above {args.fail_above}): {', '.join(failed)}", file=sys.stderr)
            return EXIT_GATE
    return EXIT_OK


def _runs(args: argparse.Namespace) -> int:
    with open_store(args.db, read_only=True) as store:
        frame = store.runs()
    if args.json:
        print(frame.to_json(orient="records", date_format="iso"))
    elif frame.empty:
        print("no runs")
    else:
        print(frame[["run_id", "status", "created_at", "base_ref", "unlearned_ref", "audits"]].to_string(index=False))
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    with open_store(args.db, read_only=True) as store:
        print(store.export(args.run, args.format, args.out))
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from lab.shell.report import write_report
    from lab.shell.report.sweep_report import write_sweep_report

    with open_store(args.db, read_only=True) as store:
        if args.sweep:
            print(write_sweep_report(store, args.sweep, args.format, args.out, args.fail_above))
        else:
            print(write_report(store, args.run, args.format, args.out))
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    from lab.shell.bench import run_bench

    run_bench(quick=args.quick, device=args.device, json_out=args.json, realistic_only=args.realistic)
    return EXIT_OK


def _gpucheck(args: argparse.Namespace) -> int:
    from lab.shell.bench import demo_for
    from lab.shell.gpucheck import run

    result = run(args.shape, Path(args.out), demo_for(quick=True), args.limit)
    print(f"wrote {args.out}: scoring {result['scoring']['tokens_per_s']:,.0f} tokens/s, suite "
          f"{result['suite']['status']} in {result['suite']['total_s']:.0f} s")
    return EXIT_OK


def _sweep(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from lab.shell.sweep import PairResult, load_spec, pair_source, run_sweep

    def show(result: PairResult, done: int, total: int) -> None:
        tqdm.write(f"[{done}/{total}] {result.unlearned}: {result.status}" + (f" ({result.error})" if result.error
                   else "") + (f" run {result.run_id}" if result.run_id else ""))

    spec = load_spec(args.spec)
    pair_source(args.local, args.ray_address)  # conflicting flags, or an address without Ray: before any store
    with open_store(args.db or str(settings.default_db()), read_only=False) as store:
        outcome = run_sweep(spec, store, stop=STOP, on_pair=show, local=args.local, ray_address=args.ray_address)
    print(f"sweep {outcome.sweep_id}: {outcome.status}")
    failed = [r for r in outcome.pairs if r.status != "complete"]
    if failed:
        first = failed[0]
        why = ((first.error or "").strip().splitlines() or [first.status])[0]
        raise LabError(f"sweep {outcome.sweep_id} is partial: {len(failed)} of {len(outcome.pairs)} pairs did not "
                       f"complete ({first.unlearned}: {why})")
    return EXIT_OK


def _calibrate(args: argparse.Namespace) -> int:
    from lab.core.files import check_output, write_text
    from lab.core.options import parse_sets
    from lab.core.store import to_json
    from lab.demo.build import build_demo
    from lab.shell.calibrate import calibrate, markdown

    outputs = [o for o in (args.json, args.markdown) if o]
    for out in outputs:
        check_output(out, [args.db])
    root = Path(args.demo) if args.demo else build_demo(args.profile, settings.demo_dir(args.profile))
    split = lambda text: [t.strip() for t in text.split(",") if t.strip()] if text else None  # noqa: E731
    with open_store(args.db or str(settings.default_db()), read_only=False) as store:
        result = calibrate(root, store, split(args.models), split(args.audits), args.limit, args.device,
                           parse_sets(args.set or []))
    table = markdown(result)
    if args.json:
        write_text(args.json, to_json(result.to_dict()), [args.db])
    if args.markdown:
        write_text(args.markdown, table + "\n", [args.db])
    print(table)
    print(f"sweep {result.sweep_id}" + (f"; failed: {'; '.join(result.failed)}" if result.failed else ""))
    return EXIT_ERROR if result.failed else EXIT_OK


def _audits(args: argparse.Namespace) -> int:
    from lab.shell.catalog import audits_markdown, audits_text

    print(audits_markdown() if args.markdown else audits_text())
    return EXIT_OK


LIMIT_HELP = "at most N facts of each split and kind (questions, multiple choice, passages), in file order"


def build_parser() -> Parser:
    parser = Parser(prog="python -m lab", description="Unlearning Audit Lab")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    demo = sub.add_parser("demo", help="the built-in demo world")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True, parser_class=Parser)
    build = demo_sub.add_parser("build", help="build the demo facts and models")
    build.add_argument("--profile", choices=["tiny", "full"], default="full")
    build.add_argument("--out", help="directory (default: $LAB_DEMO_DIR or the user cache)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--force", action="store_true", help="rebuild even if a matching build exists")
    build.set_defaults(func=_demo_build)

    audit = sub.add_parser("audit", help="run audits on a base / unlearned pair")
    audit.add_argument("--base", required=True, help="HF id, local directory or demo:<name>")
    audit.add_argument("--unlearned", required=True, help="HF id, local directory or demo:<name>")
    audit.add_argument("--facts", help="facts file (JSONL, CSV, Parquet, TOFU/MUSE/RWKU JSON)")
    audit.add_argument("--audits", required=True, help="comma-separated audit names")
    audit.add_argument("--db", help="DuckDB file (default: $LAB_DB or the user cache)")
    audit.add_argument("--reference", help="reference model (e.g. retrained), for PrivLeak and forget quality")
    audit.add_argument("--json", help="write the metrics as JSON here")
    audit.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    audit.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    audit.add_argument("--limit", type=int, help=LIMIT_HELP)
    audit.add_argument("--fail-above", type=float, help="exit 3 if a forget recovery rate exceeds this")
    audit.add_argument("--max-new-tokens", type=int, default=24)
    audit.add_argument("--set", action="append", metavar="AUDIT.OPTION=VALUE", help="set an audit option")
    audit.add_argument("--prompt-template", help="prompt template with {question} (default: QA format)")
    audit.add_argument("--chat-template", action="store_true", help="use the tokenizer's chat template")
    audit.add_argument("--system-prompt", help="system prompt for --chat-template (folded into the user turn "
                       "where the template has no system role)")
    audit.add_argument("--device-map", choices=["auto"], help="spread each model over the GPUs (accelerate)")
    audit.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub")
    audit.set_defaults(func=_audit)

    runs = sub.add_parser("runs", help="list stored runs")
    runs.add_argument("--db")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=_runs)

    export = sub.add_parser("export", help="export a run's items")
    export.add_argument("--db")
    export.add_argument("--run", required=True)
    export.add_argument("--format", choices=["parquet", "csv", "json"], required=True)
    export.add_argument("--out", required=True)
    export.set_defaults(func=_export)

    report = sub.add_parser("report", help="write the audit report of a run, or the leaderboard of a sweep")
    report.add_argument("--db")
    target = report.add_mutually_exclusive_group(required=True)
    target.add_argument("--run", help="the run to report")
    target.add_argument("--sweep", help="a sweep's leaderboard: checkpoints x audits, verdicts, the release gate")
    report.add_argument("--fail-above", type=float, default=0.10, help="with --sweep: the release gate fails a "
                        "checkpoint whose raw recovery rate exceeds this (a fraction, as for audit; default 0.10)")
    report.add_argument("--out", required=True)
    report.add_argument("--format", choices=["html", "md", "json"], default="html")
    report.set_defaults(func=_report)

    bench = sub.add_parser("bench", help="measure batched paths against per-example loops, and the attack suite")
    bench.add_argument("--quick", action="store_true", help="tiny demo, few repeats (CI)")
    bench.add_argument("--realistic", action="store_true",
                       help="only the comparisons on realistic shapes: 32k-256k vocabularies, Llama-3.2-1B's width")
    bench.add_argument("--json", help="write the results as JSON here")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    bench.set_defaults(func=_bench)

    gpu = sub.add_parser("gpucheck", help="the GPU check: 1B-shaped random pair, throughput, MFU, the suite")
    gpu.add_argument("--shape", choices=["llama-3.2-1b", "tiny"], default="llama-3.2-1b")
    gpu.add_argument("--out", default="gpu_check.json")
    gpu.add_argument("--limit", type=int, default=10, help="facts per split and kind in the audit suite")
    gpu.set_defaults(func=_gpucheck)

    sweep = sub.add_parser("sweep", help="one base model against many unlearned checkpoints (a JSON/YAML spec)")
    sweep.add_argument("spec", help="sweep spec: base, unlearned (list or glob), audits, and optionally facts, "
                       "reference, limit, options, device, dtype, max_new_tokens")
    sweep.add_argument("--db", help="DuckDB file (default: $LAB_DB or the user cache)")
    sweep.add_argument("--ray-address", help="run the pairs on this Ray cluster (e.g. HOST:6379 or auto); "
                       "default: Ray on this machine when Ray is installed, else in this process")
    sweep.add_argument("--local", action="store_true", help="run every pair in this process, even with Ray")
    sweep.set_defaults(func=_sweep)

    cal = sub.add_parser("calibrate", help="every audit on every demo unlearner and the retrain control: flag "
                         "rates with intervals, false positives, detection AUC")
    cal.add_argument("--profile", choices=["tiny", "full"], default="full", help="demo profile (built if missing)")
    cal.add_argument("--demo", help="an existing demo folder instead of the profile's")
    cal.add_argument("--models", help="comma-separated demo models (default: all; retrain is always added)")
    cal.add_argument("--audits", help="comma-separated audits (default: all)")
    cal.add_argument("--limit", type=int, help=LIMIT_HELP)
    cal.add_argument("--db", help="DuckDB file (default: $LAB_DB or the user cache)")
    cal.add_argument("--json", help="write the calibration as JSON here")
    cal.add_argument("--markdown", help="write the tables as Markdown here")
    cal.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    cal.add_argument("--set", action="append", metavar="AUDIT.OPTION=VALUE", help="set an audit option")
    cal.set_defaults(func=_calibrate)

    catalog = sub.add_parser("audits", help="list the audits and their options")
    catalog.add_argument("--markdown", action="store_true", help="as the README's Markdown tables")
    catalog.set_defaults(func=_audits)
    return parser


STOP = threading.Event()  # set by the first Ctrl-C or SIGTERM: the run stops before its next batch


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM (a container stopping, a CI timeout): the run stops before its next batch, keeps
    every row written and is stored as interrupted; a second signal stops at once."""
    if STOP.is_set():
        raise KeyboardInterrupt
    STOP.set()
    print("note: stopping before the next batch (signal again to stop at once)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    route_warnings()
    main_thread = threading.current_thread() is threading.main_thread()
    STOP.clear()
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "db", "unset") is None:
            args.db = str(settings.default_db())
        return args.func(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # the reader went away (| head): nothing left to say to it
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit; give it a sink
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the one error boundary of the command line
        print(f"error: {describe(exc)}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
