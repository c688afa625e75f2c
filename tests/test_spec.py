"""One run spec for every door: one builder, every field reachable from the CLI, sweep specs and the web lab's
forms, type errors named by field, and a shell that never names an audit."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from lab.core.errors import LabError
from lab.shell.cli import build_parser, main, spec_from_args
from lab.shell.spec import PairSpec, RunSpec, build_spec, command_line, fields_of

ROOT = Path(__file__).resolve().parents[1]
EVERY_FIELD = {  # a value other than the default for every field of a run
    "base": "demo:base", "unlearned": "demo:ga", "device": "cpu", "dtype": "float32", "device_map": "auto",
    "trust_remote_code": True, "prompt_template": "Q: {question}\nA:", "chat_template": True,
    "system_prompt": "Answer briefly.\nOne line.", "chat_vars": ["date_string=26 Jul 2024"],
    "token_split": "open-unlearning",
    "audits": ["direct", "reasoning"], "facts": "facts.jsonl", "reference": "demo:retrain", "limit": 7,
    "max_new_tokens": 12, "options": {"reasoning": {"prompts_per_category": "2"}},
}


def test_every_field_is_in_the_fixture():
    assert set(EVERY_FIELD) == {f.name for f in fields_of(RunSpec)}  # a new field must join the door tests


def test_the_command_line_reaches_every_field_and_reads_its_own_repeat_command():
    spec = build_spec(RunSpec, EVERY_FIELD)
    args = build_parser().parse_args(command_line(spec.to_dict())[3:])
    assert spec_from_args(args) == spec


def test_a_sweep_spec_takes_every_field_for_all_pairs_and_per_pair(tmp_path):
    from lab.shell.sweep import load_spec

    shared = {k: v for k, v in EVERY_FIELD.items() if k != "unlearned"}
    own = {"unlearned": "demo:npo", "chat_template": False, "limit": 3, "options": {"reasoning": {}}}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({**shared, "unlearned": ["demo:ga", own]}))
    first, second = load_spec(path).pairs
    assert first == build_spec(RunSpec, EVERY_FIELD)
    assert second == build_spec(RunSpec, {**EVERY_FIELD, **own})  # its own fields win, the rest is shared


def test_the_web_lab_forms_reach_every_field():
    """The Models tab (the pair and its prompt format) and the Audit tab (the run) give the same spec."""
    import pandas as pd

    from lab.shell.ui import auditing
    from lab.shell.ui.models_tab import CUSTOM, spec_from_inputs

    pair = spec_from_inputs(CUSTOM, "npo", "demo:base", "demo:ga", "cpu", "float32", True, "auto",
                            EVERY_FIELD["prompt_template"], True, EVERY_FIELD["system_prompt"],
                            "\n".join(EVERY_FIELD["chat_vars"]), EVERY_FIELD["token_split"])
    options = pd.DataFrame([{"audit": "reasoning", "option": "prompts_per_category", "type": "int",
                             "default": "4", "value": "2", "help": ""}])
    run = auditing.run_spec(pair, auditing.SERVER_PATH, None, "facts.jsonl", ["direct", "reasoning"], options, 7,
                            12, "demo:retrain")
    assert run == build_spec(RunSpec, EVERY_FIELD)
    assert run.pair() == pair


def test_only_the_builder_constructs_a_spec():
    """No module of the lab builds a RunSpec or PairSpec field by field: every door goes through build_spec."""
    offenders = []
    for path in [*ROOT.joinpath("lab").rglob("*.py"), *ROOT.joinpath("audits").rglob("*.py")]:
        if path.name == "spec.py" and path.parent.name == "shell":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                    "RunSpec", "PairSpec"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_no_shell_module_names_an_audit():
    """Audits describe themselves (verdict rule, Probe group, fact view, defaults, suite): the shell iterates the
    registry, so a new audit needs no edit there.  A string equal to an audit's name in the shell fails this."""
    from audits import REGISTRY

    found = []
    for path in ROOT.joinpath("lab", "shell").rglob("*.py"):
        tree = ast.parse(path.read_text())
        keys = {id(k) for node in ast.walk(tree) if isinstance(node, ast.Dict) for k in node.keys if k is not None}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in REGISTRY and id(node) not in keys:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} '{node.value}'")
    assert not found, found


@pytest.mark.parametrize("data, message", [
    ({"base": 5}, "field 'base': expected a text, got int"),
    ({"limit": "abc"}, "field 'limit': expected an integer, got 'abc'"),
    ({"limit": -3}, "field 'limit' must be at least 1, got -3"),
    ({"limit": 2.5}, "field 'limit': expected int or none, got float"),
    ({"max_new_tokens": "x"}, "field 'max_new_tokens': expected an integer"),
    ({"options": {"direct": 5}}, "audit 'direct': expected a mapping of option names"),
    ({"options": ["direct=1"]}, "--set expects audit.option=value"),
    ({"device": 5}, "field 'device': expected a text, got int"),
    ({"device": "gpu"}, "unknown device 'gpu'"),
    ({"dtype": "int3"}, "'int3' is not one of auto, float32, bfloat16, float16"),
    ({"reference": ["demo:retrain"]}, "field 'reference': expected a text, got list"),
    ({"chat_vars": ["no equals sign"]}, "is not NAME=VALUE"),
    ({"chat_template": "maybe"}, "expected true or false"),
    ({"audits": "nothing_like_it"}, "unknown audit 'nothing_like_it'"),
    ({"colour": "red"}, "unknown field 'colour'"),
])
def test_mistyped_fields_are_named(data, message):
    with pytest.raises(LabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_spec(RunSpec, {"base": "demo:base", "unlearned": "demo:npo", "audits": "direct", **data}, "spec.json")


@pytest.mark.parametrize("text, message", [
    ('{"base": 5, "unlearned": ["demo:npo"], "audits": ["direct"]}', "field 'base': expected a text"),
    ('{"base": "demo:base", "unlearned": [5], "audits": ["direct"]}', "unlearned[0]: expected a model reference"),
    ('{"base": "demo:base", "unlearned": ["demo:npo"], "audits": ["direct"], "options": {"direct": 5}}',
     "audit 'direct'"),
    ('{"base": "demo:base", "unlearned": [{"unlearned": "demo:npo", "limit": "abc"}], "audits": ["direct"]}',
     "unlearned[0]: field 'limit': expected an integer"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_bad_sweep_specs_are_one_line_errors(tmp_path, capsys, text, message):
    spec, db = tmp_path / "s.json", tmp_path / "s.duckdb"
    spec.write_text(text)
    assert main(["sweep", str(spec), "--db", str(db), "--local"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "unexpected" not in err, err
    assert not db.exists()


def test_chat_variables_reach_the_template(tiny_demo):
    """Llama 3.x's templates print ``date_string``; the run's chat variables are passed to the template."""
    from transformers import AutoTokenizer

    from lab.core.prompts import Encoder

    tokenizer = AutoTokenizer.from_pretrained(tiny_demo / "models" / "base")
    tokenizer.chat_template = ("{% if date_string is not defined %}{% set date_string = '1 Jan 2000' %}{% endif %}"
                               "Today: {{ date_string }}|{% for m in messages %}{{ m['content'] }}{% endfor %}")
    spec = build_spec(PairSpec, {"base": "demo:base", "unlearned": "demo:npo", "chat_template": True,
                                 "chat_vars": "date_string=26 Jul 2024"})
    assert Encoder(tokenizer, spec.prompt_format).prompt("Q?") == "Today: 26 Jul 2024|Q?"
    plain = dataclasses.replace(spec.prompt_format, chat_vars=())
    assert Encoder(tokenizer, plain).prompt("Q?") == "Today: 1 Jan 2000|Q?"
