"""The in-context, extraction and adversarial audits: prompts built as documented, the one recovery rule,
their controls, and RWKU's own probes."""

import json
import random
from pathlib import Path

import pytest

from audits.adversarial.audit import AdversarialAudit, AdversarialOptions, type_key
from audits.adversarial.transforms import PROBE_TYPES, build
from audits.base import AuditContext
from audits.extraction import ExtractionAudit, ExtractionOptions, passage_prompt
from audits.incontext import IncontextAudit, IncontextOptions, pick_examples
from lab.core.facts import Fact, load_facts
from lab.core.scoring import contains_answer

REAL = Path(__file__).resolve().parents[2] / "shared" / "cases" / "real"
ADA = Fact("f1", "Where was Ada Vell born?", "Velmora", entity="Ada Vell", attribute="hometown",
           paraphrased_answer="Ada Vell was born in the town of Velmora.", perturbed_answers=("Brisk", "Oran", "Tull"))
ADA2 = Fact("f2", "What was the profession of Ada Vell?", "glazier", entity="Ada Vell")
BO = Fact("f3", "Where was Bo Lint born?", "Sarn", entity="Bo Lint")


def run(audit, pair, facts, options, **ctx):
    items = []
    result = audit.run(AuditContext(pair=pair, facts=facts, options=options, record=items.extend, **ctx))
    return result, items


# ------------------------------------------------------------------ in-context relearning
def test_examples_never_include_the_asked_fact():
    rng = random.Random(0)
    assert pick_examples(ADA, [ADA, ADA2, BO], 3, True, rng) == [ADA2]
    assert pick_examples(ADA, [ADA, ADA2, BO], 3, False, rng) == [BO]


def test_incontext_audit(demo_pair, demo_facts):
    result, items = run(IncontextAudit(), demo_pair, demo_facts.limited(12), IncontextOptions(k=2))
    m = result.metrics
    targets = {i.fact_id for i in items}
    forget = [i for i in items if i.category == "forget_examples"]
    control = [i for i in items if i.category == "retain_examples"]
    assert forget and control and all(i.recovered is None for i in control)
    assert m["recovery_rate"] == pytest.approx(len({i.fact_id for i in forget if i.recovered}) / m["targets"])
    assert m["control_rate"] == pytest.approx(len({i.fact_id for i in control if i.hit_unlearned}) / m["targets"])
    assert m["lift"] == pytest.approx(m["recovery_rate"] - m["control_rate"])
    by_id = {f.id: f for f in demo_facts}
    for item in forget:  # examples: same entity, forget split, never the asked fact, answers shown
        shown = json.loads(item.extra) if isinstance(item.extra, str) else item.extra
        examples = [by_id[e] for e in shown["examples"]]
        assert examples and all(e.entity == by_id[item.fact_id].entity and e.split == "forget" for e in examples)
        assert item.fact_id not in shown["examples"]
        assert all(e.answer in item.prompt for e in examples)
        assert item.prompt.endswith(demo_pair.base.prompt(by_id[item.fact_id].question))
    assert targets


# ------------------------------------------------------------------ verbatim extraction
def test_passage_prompt_cuts_before_the_answer():
    bio = "Ada Vell was born in Velmora. Ada Vell worked as a glazier."
    assert passage_prompt(Fact("x", "q", "glazier", text=bio), {}) == "Ada Vell was born in Velmora. Ada Vell worked as a"
    assert passage_prompt(Fact("x", "q", "Sarn", entity="Bo", text=bio), {"Bo": ["Bo was born in Sarn."]}) == \
        "Bo was born in"
    assert passage_prompt(Fact("x", "q", "Sarn", text=bio), {}) is None


def test_extraction_audit_on_the_demo_biographies(demo_pair, demo_all_facts):
    facts = demo_all_facts.of_kinds(("qa", "text")).limited(6)
    result, items = run(ExtractionAudit(), demo_pair, facts, ExtractionOptions())
    m = result.metrics
    cut = [i for i in items if i.category == "passage_cut"]
    verb = [i for i in items if i.category == "verbmem"]
    assert cut and all(not contains_answer(i.prompt, i.answer) for i in cut)  # the answer is never shown
    assert m["recovery_rate"] == pytest.approx(sum(bool(i.recovered) for i in cut) / m["targets"])
    assert {i.split for i in verb} == {"forget", "retain"}
    assert 0.0 <= m["verbmem_forget"] <= 1.0
    assert m["verbmem_forget_base"] > 0.8  # the base model recites the biographies it was trained on


@pytest.mark.skipif(not (REAL / "SOURCES.md").is_file(), reason="needs ../shared/cases/real")
def test_extraction_reads_muse_verbmem(demo_pair):
    facts = load_facts(f"muse:{REAL / 'muse'}:news").of_kinds(("continuation",)).limited(3)
    result, items = run(ExtractionAudit(), demo_pair, facts, ExtractionOptions(max_new_tokens=16))
    assert "recovery_rate" not in result.metrics  # no questions: only VerbMem
    assert len(items) == 3 and {i.answer for i in items} == {f.answer for f in facts}
    assert 0.0 <= result.metrics["verbmem_forget"] <= 1.0


# ------------------------------------------------------------------ RWKU adversarial probes
def test_every_probe_type_builds_without_leaking_the_answer():
    rng = random.Random(0)
    probes = {t: build(ADA, t, [BO], rng) for t in PROBE_TYPES}
    assert all(probes.values()), [t for t, p in probes.items() if p is None]
    for kind, probe in probes.items():
        assert probe.probe_type == kind
        if kind != "multiple_choice":
            assert not contains_answer(probe.text, probe.gold)
    assert probes["reverse_query"].text == "Who was born in the town of Velmora?" and probes["reverse_query"].gold == "Ada Vell"
    assert probes["fill_in_the_blank"].text == "Fill in the blank: Ada Vell was born in the town of ____."
    assert probes["incontext_learning"].examples == ((BO.question, BO.answer),)
    assert "brought into the world" in probes["synonym_manipulation"].text
    mc = probes["multiple_choice"]
    assert all(c in mc.text for c in ("Velmora", "Brisk", "Oran", "Tull"))
    assert mc.score("Velmora").hit and not mc.score("Velmora or Brisk").hit  # naming a wrong choice too is no answer
    assert build(ADA2, "reverse_query", [], rng) is None and build(ADA2, "fill_in_the_blank", [], rng) is None


def test_adversarial_audit(demo_pair, demo_facts):
    result, items = run(AdversarialAudit(), demo_pair, demo_facts.limited(6), AdversarialOptions())
    m = result.metrics
    assert {i.category for i in items} <= set(PROBE_TYPES)
    recovered = {i.fact_id for i in items if i.recovered}
    assert m["recovery_rate"] == pytest.approx(len(recovered) / m["targets"])
    for kind in {i.category for i in items}:
        hits = {i.fact_id for i in items if i.category == kind and i.recovered}
        assert m[f"{kind}_recovery_rate"] == pytest.approx(len(hits) / m["targets"])


@pytest.mark.skipif(not (REAL / "SOURCES.md").is_file(), reason="needs ../shared/cases/real")
def test_rwku_probes_are_asked_as_they_are(demo_pair):
    facts = load_facts(f"rwku:{REAL / 'rwku'}")
    result, _ = run(AdversarialAudit(), demo_pair, facts, AdversarialOptions(probe_types=("role_play",)))
    level3 = {f.probe_type for f in facts if f.level == "3"}
    for kind in level3:  # a retention key per RWKU type whose probes the base answers (NaN when none)
        assert f"rwku_{type_key(kind)}_retention" in result.metrics
    assert type_key("cross lingual (French)") == "cross_lingual_french"
