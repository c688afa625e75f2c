"""Sweeps: one base against many checkpoints, one stored run per pair, partial when a pair fails."""

import json

import pytest

from lab.core.store import Store
from lab.shell.cli import main
from lab.shell.sweep import sweep_spec, expand, load_spec


def write_spec(tmp_path, data, name="sweep.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize("data, message", [
    ({"unlearned": ["x"], "audits": ["direct"]}, "field 'base' is missing"),
    ({"base": "b", "unlearned": ["x"], "audits": ["direct"], "colour": 1}, "unknown field 'colour'"),
    ({"base": "b", "unlearned": [], "audits": ["direct"]}, "'unlearned' must be"),
    ({"base": "b", "unlearned": ["/nowhere/*"], "audits": ["direct"]}, "matches no folder"),
    ("[1, 2]", "a sweep spec is a mapping"),
    ("{not json", "invalid JSON"),
])
def test_bad_specs_are_one_line_errors_and_store_nothing(tmp_path, capsys, data, message):
    db = tmp_path / "s.duckdb"
    code = main(["sweep", str(write_spec(tmp_path, data)), "--db", str(db)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not db.exists()


def test_yaml_spec_and_glob_expansion(tiny_demo, tmp_path):
    path = write_spec(tmp_path, f"base: {tiny_demo}/models/base\nunlearned: {tiny_demo}/models/*_small\n"
                                "audits: direct,keywords\nlimit: 3\n", "sweep.yaml")
    spec = load_spec(path)
    assert [p.rsplit("/", 1)[1] for p in spec.unlearned] == ["graddiff_small", "npo_small"]
    assert spec.audits == ["direct", "keywords"] and {p.limit for p in spec.pairs} == {3}
    twice = sweep_spec({"base": "demo:base", "unlearned": ["demo:npo", "demo:npo"], "audits": ["direct"]})
    assert twice.unlearned == ["demo:npo"]  # duplicates once


def test_sweep_stores_a_run_per_pair_and_is_partial_when_one_fails(demo_env, family_gpt2, tmp_path, capsys):
    models = demo_env / "models"
    spec = write_spec(tmp_path, {"base": str(models / "base"), "audits": ["direct"], "limit": 3,
                                 "facts": str(demo_env / "facts.jsonl"), "device": "cpu",
                                 "unlearned": [str(models / "npo"), str(family_gpt2), str(models / "graddiff")]})
    db = tmp_path / "s.duckdb"
    code = main(["sweep", str(spec), "--db", str(db)])
    out = capsys.readouterr().out
    assert code == 2  # partial
    assert "[2/3]" in out and "tokenizer" in out  # the mismatched pair says why, the sweep goes on
    with Store(db, read_only=True) as store:
        sweep = store.sweeps().iloc[-1]
        assert (sweep.status, sweep.pairs, sweep.completed) == ("partial", 3, 2)
        runs = store.sweep_runs(sweep.sweep_id)
        # pairs land as they finish (under Ray, in any order)
        assert sorted(runs.unlearned_ref) == sorted([str(models / "npo"), str(models / "graddiff")])
        assert set(runs.status) == {"complete"}
        for run_id in runs.run_id:
            assert store.metrics_dict(run_id)["direct"]["forget_accuracy_unlearned"] is not None


@pytest.fixture(scope="module")
def family_gpt2(tiny_demo):
    """A model whose tokenizer differs from the demo's (a GPT-2-style byte-level BPE)."""
    from families import CACHE, FAMILIES, build_pair, corpus
    from lab.core.facts import load_facts

    return build_pair(FAMILIES["gpt2"], corpus(load_facts(tiny_demo / "facts.jsonl")), CACHE / "gpt2")[1]
