"""The house plan holds: layers import downward only, the shell reaches audits through the registry and
the base, no import cycles, and every registered audit keeps the audit contract."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from audits import REGISTRY, available, get_audit
from lab.core.options import option_specs, validate
from lab.core.policy import SPACE

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lab", "audits")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every module of the house and the house modules it imports (at the top or inside functions)."""
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules}
        edges[name] = found - {name}
    return edges


def layer(module: str) -> str:
    for prefix in ("lab.core", "lab.demo", "lab.shell", "audits"):
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return module


def test_core_imports_nothing_above_it():
    bad = {m: sorted(d for d in deps if layer(d) != "lab.core")
           for m, deps in imports().items() if layer(m) == "lab.core"}
    assert {m: d for m, d in bad.items() if d} == {}


def test_demo_and_audits_do_not_reach_into_the_shell():
    bad = {m: sorted(d for d in deps if layer(d) == "lab.shell")
           for m, deps in imports().items() if layer(m) in ("lab.demo", "audits")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_the_shell_reaches_audits_only_through_the_registry_and_the_base():
    allowed = {"audits", "audits.base"}
    bad = {m: sorted(d for d in deps if layer(d) == "audits" and d not in allowed)
           for m, deps in imports().items() if layer(m) == "lab.shell"}
    assert {m: d for m, d in bad.items() if d} == {}


def test_an_audit_imports_no_other_audit():
    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    bad = {m: sorted(d for d in deps if layer(d) == "audits" and d not in ("audits", "audits.base")
                     and package(d) != package(m))
           for m, deps in imports().items() if layer(m) == "audits" and m not in ("audits", "audits.base")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_no_import_cycles():
    edges = imports()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif not state.get(nxt):
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(edges):
        if not state.get(module):
            visit(module, [module])
    # A package's __init__ re-exporting its own submodules is not a cycle of the house.
    cycles = [c for c in cycles if not all(m.startswith(c[0] + ".") or m == c[0] for m in c)]
    assert cycles == []


# ------------------------------------------------------------------ the audit contract
@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_audit_declares_its_contract(name):
    cls = get_audit(name)
    assert cls.name == name
    assert cls.title and cls.summary and cls.paper and cls.headline_keys
    assert cls.recovery_key is None or cls.recovery_key in cls.headline_keys
    options = cls.Options()
    validate(options, name)  # the defaults validate
    SPACE.check_options(name, options, given=())  # and run in a hosted Space (defaults above a cap are lowered)
    for spec in option_specs(cls.Options):
        assert spec.help, f"{name}.{spec.name} has no help text"
    for transform in cls.rewrites:
        assert isinstance(transform, str) and transform


def test_every_audit_runs_on_the_tiny_demo_with_its_documented_keys(full_run, demo_all_facts):
    store, run_id = full_run
    metrics = store.metrics_dict(run_id)
    kinds = {f.kind for f in demo_all_facts}
    runnable = [n for n in available() if set(get_audit(n).uses) & kinds]
    assert sorted(metrics) == sorted(runnable)
    statuses = store.audits(run_id).set_index("audit")["status"]
    assert all(statuses[n] == "skipped" for n in available() if n not in runnable)
    for name in runnable:
        keys = set(metrics[name])
        missing = set(get_audit(name).headline_keys) - keys
        assert not missing, f"{name} lacks {missing}"
        for key in get_audit(name).headline_keys:
            value = metrics[name][key]
            assert value is None or math.isfinite(value)


def test_the_report_modules_import_no_model_or_nlp_stack():
    """Writing a report, a leaderboard or a listing starts fast: importing the report package brings in no torch,
    transformers or rouge-score (NLTK, SciPy, scikit-learn: seconds on a busy machine); they load where they are
    used (the scorer, an audit's figures)."""
    import subprocess
    import sys

    heavy = ("torch", "transformers", "rouge_score", "nltk", "scipy", "sklearn")
    code = ("import sys, lab.shell.report, lab.shell.report.leaderboard, lab.shell.report.sweep_report, "
            f"lab.shell.verdict; print(','.join(m for m in {heavy!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
