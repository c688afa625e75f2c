"""The field's benchmarks read whole: every real sample in ../shared/cases/real through the suite readers and
through the single-file path, counts checked against SOURCES.md, and malformed suites refused in one line."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lab.core.errors import LabError
from lab.core.facts import load_facts

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "cases" / "real"
pytestmark = pytest.mark.skipif(not (REAL / "SOURCES.md").is_file(), reason="needs ../shared/cases/real")
# Sample files that are not facts (refusal strings, instructions, training pairs, answer lists):
# the single-file path must refuse them in one line naming the file.
NOT_FACTS = {"idontknow.jsonl", "intro.json", "reject.json", "reject_phi.json", "pair.json", "pair_phi.json",
             "fluency.json", "truthful.json", "triviaqa.json"}


def kept_counts() -> dict[str, int]:
    """SOURCES.md's table: file (relative to cases/real) -> records kept."""
    counts = {}
    for line in (REAL / "SOURCES.md").read_text().splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|[^|]*\|[^|]*\|\s*(\d+)/\d+\s*\|", line)
        if match:
            counts[match.group(1)] = int(match.group(2))
    return counts


def test_sources_table_covers_every_sample_file():
    files = {str(p.relative_to(REAL)) for p in REAL.rglob("*") if p.is_file() and p.name != "SOURCES.md"}
    assert files == set(kept_counts())


@pytest.mark.parametrize("name", sorted(kept_counts()) if (REAL / "SOURCES.md").is_file() else [])
def test_every_sample_file_through_the_single_file_path(name):
    path = REAL / name
    if path.name in NOT_FACTS:
        with pytest.raises(LabError) as caught:
            load_facts(path)
        message = str(caught.value)
        assert message.startswith(path.name) and "\n" not in message
        return
    facts = load_facts(path)
    if path.suffix == ".txt":  # a plain-text corpus: passages between blank lines (its documents hold some too)
        passages = [block.strip() for block in re.split(r"\n\s*\n", path.read_text()) if block.strip()]
        assert [f.text for f in facts] == passages and {f.kind for f in facts} == {"text"}
        return
    assert len(facts) == kept_counts()[name]
    kinds = {f.kind for f in facts}
    assert len(kinds) == 1  # one schema per file
    expected_kind = ("mc" if "option1" in path.read_text()[:2000] or "choices" in path.read_text()[:2000]
                     else "continuation" if "verbmem" in name else None)
    if expected_kind:
        assert kinds == {expected_kind}


def test_tofu_suite_maps_every_split_and_derives_the_authors():
    counts = kept_counts()
    facts = load_facts(f"tofu:{REAL / 'tofu'}:forget01")
    by_subset = Counter(f.subset for f in facts)
    assert by_subset == {"forget01": counts["tofu/forget01_perturbed.json"], "holdout": counts["tofu/holdout01.json"],
                         "retain": counts["tofu/retain_perturbed.json"],
                         "real_authors": counts["tofu/real_authors_perturbed.json"],
                         "world_facts": counts["tofu/world_facts_perturbed.json"],
                         "real_authors_mc": counts["tofu/real_authors.json"],
                         "world_facts_mc": counts["tofu/world_facts.json"]}
    assert {f.split for f in facts if f.subset == "forget01"} == {"forget"}
    assert {f.split for f in facts if f.subset == "holdout"} == {"holdout"}
    assert {f.split for f in facts if f.subset in ("retain", "real_authors", "world_facts")} == {"retain"}
    forget = [f for f in facts if f.subset == "forget01"]
    assert all(f.paraphrased_answer and len(f.perturbed_answers) >= 3 for f in forget)
    # Two authors of 20 questions each, named in their own answers.
    authors = [f.entity for f in forget]
    assert len(set(authors[:20])) == 1 and len(set(authors[20:])) == 1 and authors[0] != authors[20]
    for block in (forget[:20], forget[20:]):
        named = sum(block[0].entity in f"{f.question} {f.answer}" for f in block)
        assert named >= 10
    mc = [f for f in facts if f.kind == "mc"]
    assert all(f.choices[f.answer_index] == f.answer and len(f.choices) == 4 for f in mc)
    # forget10 has no holdout10 in the sample: said, not a crash.
    ten = load_facts(f"tofu:{REAL / 'tofu'}")
    assert any("holdout10" in w for w in ten.warnings) and ten.counts()["holdout"] == 0


def test_muse_suite_both_layouts():
    counts = kept_counts()
    news = load_facts(f"muse:{REAL / 'muse'}:news")
    assert news.breakdown()["qa"] == {"forget": counts["muse/news/knowmem/forget_qa.json"],
                                      "retain": counts["muse/news/knowmem/retain_qa.json"], "holdout": 0}
    assert news.breakdown()["continuation"]["forget"] == counts["muse/news/verbmem/forget.json"]
    assert news.breakdown()["text"]["forget"] == counts["muse/news/privleak/forget.json"]
    bbc = load_facts(f"muse:{REAL / 'muse'}:bbc")  # the early names: bbc = News, retain2_qa.json
    text = bbc.breakdown()["text"]
    assert text == {"forget": counts["muse/bbc/privleak/forget.json"] + counts["muse/bbc/raw/forget.json"],
                    "retain": counts["muse/bbc/privleak/retain2.json"],
                    "holdout": counts["muse/bbc/privleak/holdout.json"]}
    assert len(bbc.examples["knowmem_forget"]) == counts["muse/bbc/knowmem/forget_qa_icl.json"]
    verbmem = [f for f in bbc if f.kind == "continuation"]
    assert all(f.question and f.answer for f in verbmem)
    assert not any(f.entity for f in bbc)  # MUSE has no entities
    assert len(load_facts(f"muse:{REAL / 'muse'}:hp")) == counts["muse/hp/knowmem/forget_qa.json"] + \
        counts["muse/hp/knowmem/retain2_qa.json"]


def test_rwku_suite_keeps_levels_types_and_targets():
    counts = kept_counts()
    facts = load_facts(f"rwku:{REAL / 'rwku'}")
    king = [f for f in facts if "1_Stephen_King" in f.id]
    for level in (1, 2, 3):
        expected = counts[f"rwku/Target/1_Stephen_King/forget_level{level}.json"]
        assert sum(f.subset == f"forget_level{level}" for f in king) == expected
        assert {f.level for f in king if f.subset == f"forget_level{level}"} == {str(level)}
    types = Counter(f.probe_type for f in king if f.subset == "forget_level3")
    assert {"prefix injection", "affirmative suffix", "role play", "reverse query", "synonym manipulation",
            "context hint", "incontext learning", "multiple choice"} <= set(types)
    assert {f.entity for f in king if f.split == "forget" and f.kind == "qa"} == {"Stephen King"}
    assert {f.split for f in king if f.subset.startswith("neighbor")} == {"retain"}
    assert sum(f.kind == "text" and f.split == "forget" for f in king) == counts[
        "rwku/Target/1_Stephen_King/forget_mia.json"]
    confucius = load_facts(f"rwku:{REAL / 'rwku'}:Confucius")
    assert {f.entity for f in confucius if f.split == "forget"} == {"Confucius"}
    assert len(confucius) == sum(n for k, n in counts.items() if k.startswith("rwku/Target/2_Confucius/")
                                 and "intro" not in k)


def test_wmdp_suite_from_our_own_file(tmp_path):
    rows = [{"question": f"Which agent {i}?", "choices": ["a", "b", "c", "d"], "answer": i % 4} for i in range(6)]
    (tmp_path / "wmdp-bio.json").write_text(json.dumps(rows))
    pd = pytest.importorskip("pandas")
    pd.DataFrame(rows).to_parquet(tmp_path / "wmdp-cyber.parquet")
    facts = load_facts(f"wmdp:{tmp_path}")
    assert Counter(f.subset for f in facts) == {"bio": 6, "cyber": 6}
    assert all(f.kind == "mc" and f.split == "forget" and f.answer == f.choices[f.answer_index] for f in facts)
    assert len(load_facts(f"wmdp:{tmp_path}:bio", per_split=2)) == 2


@pytest.mark.parametrize("setup, reference, message", [
    (lambda d: None, "tofu:{d}:forget05", r"tofu: missing forget05 \(.json, .jsonl or .parquet\)"),
    (lambda d: None, "tofu:{d}:forget7", "subset must be forget01, forget05 or forget10"),
    (lambda d: (d / "Target").mkdir(), "rwku:{d}", "no target folder with forget_level1"),
    (lambda d: None, "muse:{d}", "no corpus folder"),
    (lambda d: None, "wmdp:{d}:bio", "no wmdp-bio file"),
    (lambda d: None, "tofu:{d}/nowhere", "folder not found"),
    (lambda d: (d / "forget10.json").write_text(json.dumps(
        [{"question": "q?", "answer": "a"}, {"question": "q?", "option1": "x", "option2": "y", "answer": "x"}])),
     "tofu:{d}", r"forget10.json: item 2: a tofu_options row .* among qa rows"),
    (lambda d: (d / "forget10.json").write_text(json.dumps([{"question": "q?", "answer": ["a"]}])),
     "tofu:{d}", "forget10.json: item 1: field 'answer' must be text"),
])
def test_malformed_suites_fail_in_one_line(tmp_path, setup, reference, message):
    setup(tmp_path)
    with pytest.raises(LabError, match=message) as caught:
        load_facts(reference.format(d=tmp_path))
    assert "\n" not in str(caught.value)


def test_audit_cli_on_a_suite_stores_nothing_when_it_is_malformed(demo_env, tmp_path):
    db = tmp_path / "s.duckdb"
    proc = subprocess.run([sys.executable, "-m", "lab", "audit", "--base", "demo:base", "--unlearned", "demo:npo",
                           "--facts", f"tofu:{tmp_path}", "--audits", "direct", "--db", str(db)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.startswith("error: tofu: missing forget10")
    assert not db.exists()


def test_direct_and_multiple_choice_on_a_suite(tiny_demo, demo_pair, tmp_path):
    """direct on TOFU's questions and multiple_choice on its option files, end to end on the tiny model."""
    from lab.core.store import Store
    from lab.core.store import new_run_id
    from lab.shell.spec import RunSpec, build_spec
    from lab.shell.runner import PreparedRun, check, execute

    spec = build_spec(RunSpec, dict(base=str(tiny_demo / "models" / "base"), unlearned=str(tiny_demo / "models" / "npo"),
                   audits=["direct", "multiple_choice"], facts=f"tofu:{REAL / 'tofu'}:forget01", limit=8,
                   device="cpu"))
    checked = check(spec)
    with Store(tmp_path / "suite.duckdb") as store:
        outcome = execute(PreparedRun(new_run_id(), spec, demo_pair, None, checked.facts, checked.options, None),
                          store)
        assert outcome.status == "complete", outcome.errors
        direct, mc = outcome.metrics["direct"], outcome.metrics["multiple_choice"]
        assert direct["forget_accuracy_base"] is not None and "holdout_accuracy_base" in direct
        assert 0.0 <= mc["retain_accuracy_base"] <= 1.0 and mc["chance_retain"] == 0.25
        assert "subset_world_facts_mc_accuracy_base" in mc
        items = store.items(outcome.run_id, "multiple_choice")
        assert len(items) == 16 and set(items["category"]) == {"real_authors_mc", "world_facts_mc"}
        assert set(store.facts(outcome.run_id)["subset"]) >= {"forget01", "holdout", "real_authors_mc"}
        # forget01 has no multiple-choice forget questions: n/a, never a silent zero.
        assert math.isnan(mc["forget_accuracy_unlearned"])


def test_an_audit_with_nothing_to_run_on_is_skipped_and_says_why(tiny_demo, demo_pair, tmp_path):
    from lab.core.store import Store
    from lab.core.store import new_run_id
    from lab.shell.spec import RunSpec, build_spec
    from lab.shell.runner import PreparedRun, check, execute

    questions = tmp_path / "questions.jsonl"  # the demo's questions alone: no multiple-choice items
    questions.write_text("".join(line for line in (tiny_demo / "facts.jsonl").read_text().splitlines(True)
                                 if json.loads(line)["kind"] == "qa"))
    spec = build_spec(RunSpec, dict(base="demo:base", unlearned="demo:npo", audits=["multiple_choice", "direct"],
                   facts=str(questions), limit=2, device="cpu"))
    checked = check(spec)
    with Store(tmp_path / "skip.duckdb") as store:
        outcome = execute(PreparedRun(new_run_id(), spec, demo_pair, None, checked.facts, checked.options, None),
                          store)
        audits = store.audits(outcome.run_id).set_index("audit")
        assert audits.loc["multiple_choice", "status"] == "skipped"
        assert "runs on mc items and this fact set has none" in audits.loc["multiple_choice", "notes"]
        assert outcome.status == "complete" and "direct" in outcome.metrics
