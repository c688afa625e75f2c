"""``python -m lab``: the command line (CONTRACTS: Command line).

Exit codes: 0 done; 2 bad input or failure, one line on stderr; 3 when
``--fail-above X`` and the release gate fails (lab.shell.verdict.gate: the model leaked, an attack recovers
more than X beyond the control or chance, or it cannot be judged).
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
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from lab.core import settings
from lab.core.batching import cancellable
from lab.core.errors import LabError, describe, printable, route_warnings

if TYPE_CHECKING:
    from lab.shell.spec import RunSpec
    from lab.shell.verdict import ModelVerdict

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


def finite_fraction(text: str) -> float:
    """``--fail-above``'s value: a finite number (a NaN gate could never fail), read by the options' parser."""
    from lab.core.options import parse_number

    return float(parse_number(text, "--fail-above"))


def model_folders(*refs: str | None) -> list[Path]:
    """The local folders of the models a command reads: its outputs must never land inside them."""
    from lab.core.refs import parse_ref

    folders = []
    for ref in refs:
        try:
            parts = parse_ref(ref).parts() if ref else []
        except LabError:
            continue  # a malformed reference is the run's own error, reported by its check
        folders += [part.local_folder for part in parts if part.local_folder is not None]  # an adapter's too
    return folders


def open_store(db: str, read_only: bool):
    """The store at ``db``: read-only for commands that only read (a missing file is an error),
    read-write for a run (a missing file is created, and the user is told)."""
    from lab.core.store import Store

    if not read_only and not Path(db).expanduser().exists():
        print(printable(f"note: {db} does not exist yet; creating a new store there"), file=sys.stderr)
    return Store(db, read_only=read_only)


def headline(audit: str, values: dict[str, float]) -> str:
    """An audit's headline keys for the terminal, intervals in brackets; the rest is in --json and the report."""
    from audits import get_audit

    shown = [f"{key}={value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None
                                     and math.isfinite(low) else "")
             for key, value, low, high in get_audit(audit)().headline(values) if value is not None]
    rest = len([k for k in values if not k.endswith(("_ci_low", "_ci_high"))]) - len(shown)
    return ", ".join(shown) + (f" (+{rest} more keys in --json and the report)" if rest > 0 else "")


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per run-spec field (lab.shell.spec), so every field of a run can be set from the command line."""
    from lab.shell.spec import RunSpec, cli_flag, fields_of

    for field in fields_of(RunSpec):
        flag, help_text = cli_flag(field), field.help + (f" (default: {field.default_text})"
                                                          if field.default_text and not field.required else "")
        if field.base_type is bool:
            parser.add_argument(flag, dest=field.name, action="store_true", default=None, help=help_text)
        elif field.name in ("options", "chat_vars"):
            parser.add_argument(flag, dest=field.name, action="append", metavar=field.name.upper(), help=help_text)
        else:
            parser.add_argument(flag, dest=field.name, required=field.required or field.name == "audits",
                                help=help_text)


def spec_from_args(args: argparse.Namespace) -> "RunSpec":
    """The run the ``audit`` flags ask for, through the one builder (a flag names its field in errors).
    ``\\n`` typed in a prompt template or system prompt is a newline, as a shell makes typing one hard."""
    from lab.shell.spec import RunSpec, build_spec, cli_flag, fields_of

    data = {f.name: getattr(args, f.name) for f in fields_of(RunSpec)}
    for name in ("prompt_template", "system_prompt"):
        if data[name]:
            data[name] = data[name].replace("\\n", "\n")
    return build_spec(RunSpec, data, label=cli_flag)


def _audit(args: argparse.Namespace) -> int:
    from lab.core.files import check_output, write_text
    from lab.core.store import to_json
    from lab.core.policy import current
    from lab.shell.runner import check, check_request, execute, prepare
    from lab.shell.verdict import model_verdict

    spec = spec_from_args(args)
    check_request(spec, current())  # a refused request builds no demo and stores nothing
    inputs = [args.db, args.facts, *model_folders(spec.base, spec.unlearned, spec.reference)]
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
    verdict = model_verdict(spec.unlearned, outcome.metrics, outcome.statuses)
    print(f"verdict: {verdict.state}. {verdict.sentence}")  # first: a base that never knew the facts, say
    for name, values in outcome.metrics.items():
        print(f"  {name}: {headline(name, values)}")
    if outcome.errors:
        raise LabError("audits failed: " + "; ".join(f"{k}: {v}" for k, v in outcome.errors.items()))
    if args.fail_above is not None:
        return gated(verdict, args.fail_above, args.allow_unjudged)
    return EXIT_OK


def gated(verdict: "ModelVerdict", threshold: float, allow_unjudged: bool) -> int:
    """The release gate on a finished run, by its verdict (lab.shell.verdict.gate): exit 3 naming each failure."""
    from lab.shell.verdict import gate

    failed = gate(verdict, threshold, allow_unjudged)
    if failed:
        print(f"release gate failed: {'; '.join(failed)}", file=sys.stderr)
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

    from lab.shell.report.leaderboard import GATE, collect_sweep

    with open_store(args.db, read_only=True) as store:
        if not args.sweep:
            print(write_report(store, args.run, args.format, args.out))
            return EXIT_OK
        threshold = GATE if args.fail_above is None else args.fail_above
        print(write_sweep_report(store, args.sweep, args.format, args.out, threshold))
        failing = [f"{e.model}: {e.gate[0]}" for e in collect_sweep(store, args.sweep, threshold).entries
                   if not e.passes]
    if failing and args.fail_above is not None:
        print(f"release gate failed for {len(failing)} checkpoints: {'; '.join(failing)}", file=sys.stderr)
        return EXIT_GATE
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    from lab.shell.bench import run_bench

    run_bench(quick=args.quick, device=args.device, json_out=args.json, realistic_only=args.realistic)
    return EXIT_OK


def _gpucheck(args: argparse.Namespace) -> int:
    from lab.shell.gpucheck import require_gpu, run

    require_gpu(args.shape)  # before the demo is built or a byte of the pair is written
    from lab.shell.bench import demo_for

    result = run(args.shape, Path(args.out), demo_for(quick=True), args.limit)
    print(f"wrote {args.out}: scoring {result['scoring']['tokens_per_s']:,.0f} tokens/s, suite "
          f"{result['suite']['status']} in {result['suite']['total_s']:.0f} s")
    return EXIT_OK


def _gguf(args: argparse.Namespace) -> int:
    from lab.core.files import write_output
    from lab.core.gguf import write_gguf
    from lab.core.refs import require_local

    ref = require_local(args.model)
    if ref.local_folder is None or ref.adapter is not None:
        raise LabError(f"'{args.model}': gguf converts a model folder on this machine (a path or demo:<name>)")
    print(write_output(args.out, lambda tmp: write_gguf(ref.local_folder, tmp), [ref.local_folder]))
    return EXIT_OK


def _sweep(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from lab.shell.sweep import PairResult, load_spec, pair_source, run_sweep

    def show(result: PairResult, done: int, total: int) -> None:
        tqdm.write(printable(f"[{done}/{total}] {result.unlearned}: {result.status}" + (
            f" ({result.error})" if result.error else "") + (f" run {result.run_id}" if result.run_id else "")))

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


def seeded_dir(profile: str, seed: int) -> Path:
    """Where the demo world of ``seed`` lives: the profile's folder for seed 0, beside it for the others."""
    folder = settings.demo_dir(profile)
    return folder if seed == 0 else folder.with_name(f"{folder.name}-seed{seed}")


def _calibrate(args: argparse.Namespace) -> int:
    from lab.core.files import check_output, write_text
    from lab.core.options import parse_number, parse_sets
    from lab.core.store import to_json
    from lab.demo.build import build_demo
    from lab.shell.calibrate import calibrate, markdown

    outputs = [o for o in (args.json, args.markdown) if o]
    for out in outputs:
        check_output(out, [args.db])
    split = lambda text: [t.strip() for t in text.split(",") if t.strip()] if text else None  # noqa: E731
    seeds = [parse_number(s, "--seeds", integer=True) for s in split(args.seeds) or ["0"]]
    if args.demo and args.seeds:
        raise LabError("--demo names one demo world; --seeds builds one per seed: give one of them")
    roots = [Path(args.demo)] if args.demo else [build_demo(args.profile, seeded_dir(args.profile, seed), seed=seed)
                                                 for seed in dict.fromkeys(seeds)]
    with open_store(args.db or str(settings.default_db()), read_only=False) as store:
        result = calibrate(roots, store, split(args.models), split(args.audits), args.limit, args.device,
                           parse_sets(args.set or []), local=args.local)
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


def _docs(args: argparse.Namespace) -> int:
    from lab.shell import docs

    if args.screenshots:
        copied = docs.copy_screenshots(Path(args.screenshots))
        print(f"copied {len(copied)} screenshots into docs/images: {', '.join(copied)}")
        return EXIT_OK
    if args.check:
        stale = docs.stale(build_parser())
        if stale:
            raise LabError(f"generated manual pages are out of date: {', '.join(stale)} (run python -m lab docs)")
        print("generated manual pages are current")
        return EXIT_OK
    changed = docs.write(build_parser())
    print(f"wrote {', '.join(changed)}" if changed else "generated manual pages are current")
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
    add_spec_arguments(audit)
    audit.add_argument("--db", help="DuckDB file (default: $LAB_DB or the user cache)")
    audit.add_argument("--json", help="write the metrics as JSON here")
    audit.add_argument("--fail-above", type=finite_fraction, help="the release gate: exit 3 if the model leaked, an "
                       "attack recovers more than this share beyond the control (or chance), or it cannot be judged")
    audit.add_argument("--allow-unjudged", action="store_true", help="with --fail-above: pass a model that cannot be "
                       "judged (no target facts)")
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
    report.add_argument("--fail-above", type=finite_fraction, help="with --sweep: the release gate (as for audit: a "
                        "checkpoint fails when it leaked, an attack recovers more than this fraction, or it cannot "
                        "be judged); exit 3 when any fails (without it the board shows the gate at 0.10)")
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

    gguf = sub.add_parser("gguf", help="write a local Llama model (a demo model) in llama.cpp's GGUF format, to "
                          "serve it with llama.cpp (docs/served.md)")
    gguf.add_argument("model", help="a model folder or demo:<name> (Llama, byte-level BPE tokenizer)")
    gguf.add_argument("out", help="the .gguf file to write")
    gguf.set_defaults(func=_gguf)

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
    cal.add_argument("--seeds", help="comma-separated demo seeds: one demo world built per seed, power and false "
                     "positives pooled over them (default: 0)")
    cal.add_argument("--local", action="store_true", help="run every pair in this process, even with Ray")
    cal.set_defaults(func=_calibrate)

    catalog = sub.add_parser("audits", help="list the audits and their options")
    catalog.add_argument("--markdown", action="store_true", help="as Markdown tables (the manual's audit pages)")
    catalog.set_defaults(func=_audits)

    manual = sub.add_parser("docs", help="write the manual's generated pages (docs/audits/, docs/cli.md, the "
                            "audits in mkdocs.yml's nav) from the audit registry and this parser")
    action = manual.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="write nothing; exit 2 naming the pages that are "
                        "out of date")
    action.add_argument("--screenshots", metavar="DIR", help="copy the screenshots the manual and the README link "
                        "(images/ui-*.png) from the browser tests' folder DIR (test-artifacts) into docs/images")
    manual.set_defaults(func=_docs)
    return parser


STOP = threading.Event()  # set by the first Ctrl-C or SIGTERM: the run stops before its next batch


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM (a container stopping, a CI timeout): every long command stops at its next check (a
    run before its next batch, keeping every row written and stored as interrupted; a demo build or the GPU check
    before its next training step or batch, leaving no half-built folder); a second signal stops at once."""
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
        with cancellable(STOP) if main_thread else nullcontext():  # every batch and training step checks STOP
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
