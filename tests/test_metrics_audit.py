"""The ``metrics`` audit: engine-level metrics checked by hand, then end to end on the tiny demo."""

import copy
import dataclasses
import json
import math
import re
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from audits.base import AuditContext
from audits.metrics import (
    ALIASES,
    METRIC_DEFINITIONS,
    UTILITY,
    MetricsAudit,
    MetricsOptions,
    Probe,
    fact_probe,
    score_probes,
    truth_ratio_answers,
)
from lab.core.membership import MiaText, membership_scores, mia_examples
from lab.core import unlearning_metrics as um
from lab.core.facts import Fact, FactSet
from lab.core.probes import eos_suffix, labelled_row
from lab.core.store import Store
from lab.shell.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics-parity.md"


def _labelled_scores(engine, prompts, answers):
    """Teacher-forced scores of each answer followed by EOS, built by hand from the engine's primitives."""
    rows = [labelled_row(engine, p, a, eos=True) for p, a in zip(prompts, answers)]
    return engine.token_scores([r for r, _ in rows], [s for _, s in rows])


def test_greedy_match_is_the_argmax_of_a_plain_forward_pass(demo_pair, demo_facts):
    engine = demo_pair.base
    fact = demo_facts.split("retain")[0]
    prompt = engine.prompt(fact.question)
    target = f"{fact.answer} {demo_facts.split('retain')[1].answer}"  # a memorized answer, then a wrong tail
    prefix_ids, target_ids = engine.encode_continuation(prompt, target)
    ids = torch.tensor([prefix_ids + target_ids])
    with torch.no_grad():
        logits = engine.model(input_ids=ids).logits[0]
    expected = (logits[len(prefix_ids) - 1: -1].argmax(-1) == torch.tensor(target_ids)).numpy()
    scores = engine.answer_scores([prompt], [target])[0]
    assert np.array_equal(scores.greedy_match, expected)
    probe = score_probes(engine, [Probe(prompt, target)], "test")[0]
    assert probe.exact_memorization == pytest.approx(expected.mean())
    assert probe.extraction_strength == pytest.approx(um.extraction_strength(expected))
    assert probe.extraction_strength < 1.0  # the wrong tail is not what the model predicts


def test_the_base_model_reproduces_its_retain_answers_token_by_token(demo_pair, demo_facts):
    facts = demo_facts.split("retain")[:20]
    scores = score_probes(demo_pair.base, [fact_probe(demo_pair.base, f) for f in facts], "test", eos=True)
    assert sum(s.exact_memorization == 1.0 and s.extraction_strength == 1.0 for s in scores) >= 18


def test_probability_includes_eos_and_memorization_reads_the_answer(demo_pair, demo_facts):
    """open-unlearning's labels: the answer, then EOS; Prob over all of them, EM / ES without the EOS."""
    engine = demo_pair.unlearned
    facts = demo_facts.split("forget")[:4]
    prompts, answers = [engine.prompt(f.question) for f in facts], [f.answer for f in facts]
    with_eos = _labelled_scores(engine, prompts, answers)
    plain = engine.answer_scores(prompts, answers)
    probes = score_probes(engine, [Probe(p, a) for p, a in zip(prompts, answers)], "test", eos=True)
    for probe, full, answer in zip(probes, with_eos, plain):
        assert len(full.logprobs) == len(answer.logprobs) + 1  # one EOS appended
        assert probe.logprob == pytest.approx(full.mean, abs=1e-5)
        assert probe.prob == pytest.approx(math.exp(full.mean), rel=1e-4)
        assert probe.exact_memorization == pytest.approx(answer.greedy_match.mean())
        assert probe.extraction_strength == pytest.approx(um.extraction_strength(answer.greedy_match))


def test_eos_suffix_needs_an_eos_id():
    assert eos_suffix(SimpleNamespace(tokenizer=SimpleNamespace(eos_token_id=2)), True) == [2]
    assert eos_suffix(SimpleNamespace(tokenizer=SimpleNamespace(eos_token_id=2)), False) == []
    assert eos_suffix(SimpleNamespace(tokenizer=SimpleNamespace(eos_token_id=None)), True) == []


def test_truth_ratio_matches_answer_logprobs(demo_pair, demo_facts):
    engine = demo_pair.base
    fact = demo_facts.split("forget")[0]
    probe = fact_probe(engine, fact)
    true_lp = _labelled_scores(engine, [probe.prompt], [probe.true_answer])[0].mean
    wrong_lp = [s.mean for s in _labelled_scores(engine, [probe.prompt] * len(probe.perturbed), probe.perturbed)]
    expected = math.exp(np.mean(wrong_lp)) / (math.exp(true_lp) + 1e-10)
    scores = score_probes(engine, [probe], "test", eos=True)[0]
    assert scores.truth_ratio == pytest.approx(expected, rel=1e-4)
    expected_normalised = math.exp(true_lp) / (math.exp(true_lp) + np.exp(wrong_lp).sum() + 1e-10)
    assert scores.normalised_prob == pytest.approx(expected_normalised, rel=1e-4)


def test_truth_ratio_answers_put_wrong_values_into_the_paraphrase():
    fact = Fact("f", "Where was Ada born?", "Velmora", entity="Ada",
                paraphrased_answer="Ada was born in the town of Velmora.", perturbed_answers=("Brisk", "Tol"))
    assert truth_ratio_answers(fact) == ("Ada was born in the town of Velmora.",
                                         ("Ada was born in the town of Brisk.", "Ada was born in the town of Tol."))
    tofu = Fact("g", "Q?", "A long answer.", paraphrased_answer="Another phrasing.", perturbed_answers=("Wrong one.",))
    assert truth_ratio_answers(tofu) == ("Another phrasing.", ("Wrong one.",))
    bare = Fact("h", "Q?", "Velmora")
    assert truth_ratio_answers(bare) == ("Velmora", ())
    # real authors and world facts: the original answer is the correct side (open-unlearning's ra/wf truth ratio)
    author = Fact("r", "Who wrote it?", "Ada Vell", "retain", paraphrased_answer="It was Ada Vell.",
                  perturbed_answers=("Bo Tol",), subset="real_authors")
    assert truth_ratio_answers(author) == ("Ada Vell", ("Bo Tol",))


def test_answer_membership_scores_follow_the_reference_labels(demo_pair, demo_facts):
    """LOSS and ZLib over the answer and EOS; Min-K% and Min-K%++ over the answer's own tokens."""
    engine = demo_pair.base
    facts = demo_facts.split("forget")[:3]
    examples = [MiaText(f, f.answer, engine.prompt(f.question)) for f in facts]
    scores = membership_scores(engine, examples, 0.4, "test")
    for score, ex in zip(scores, examples):
        row, start = labelled_row(engine, ex.prefix, ex.text, eos=True)
        full, answer = engine.token_scores([row, row[:-1]], [start, start], distribution=True)  # with / without EOS
        text = engine.tokenizer.decode(row[start:], skip_special_tokens=True)  # the labels as the reference decodes
        assert score["loss"] == pytest.approx(full.mean, abs=1e-5)
        assert score["zlib"] == pytest.approx(full.mean / len(zlib.compress(text.encode("utf-8"))), abs=1e-6)
        assert score["mink"] == pytest.approx(um.min_k_score(answer.logprobs, 0.4), abs=1e-5)
        assert score["mink_pp"] == pytest.approx(um.min_k_pp_score(answer.logprobs, answer.mu, answer.sigma, 0.4),
                                                 abs=1e-4)


def test_mia_examples_per_source(demo_pair):
    bio = "Ada Vell was born in Velmora. Ada Vell was a cooper."
    facts = [Fact("a1", "Where was Ada Vell born?", "Velmora", "forget", text=bio),
             Fact("a2", "What was Ada Vell's trade?", "cooper", "forget", text=bio),
             Fact("r1", "Where was Bo born?", "Tol", "retain", text="Bo was born in Tol."),
             Fact("h1", "Where was Cy born?", "Quill", "holdout", text=""),
             Fact("t1", "", "", "holdout", kind="text", text="Cy was born in Quill.")]  # a MUSE privleak passage
    engine = demo_pair.base
    answers = mia_examples(engine, facts, "answer")
    assert [(e.fact.id, e.text, e.prefix) for e in answers] == [
        ("a1", "Velmora", engine.prompt(facts[0].question)), ("a2", "cooper", engine.prompt(facts[1].question)),
        ("h1", "Quill", engine.prompt(facts[3].question))]  # retain facts are not part of forget-vs-holdout
    assert mia_examples(engine, facts, "qa")[0].text == f"{engine.prompt(facts[0].question)} Velmora"
    assert [(e.fact.id, e.text) for e in mia_examples(engine, facts, "text")] == [
        ("a1", bio), ("t1", "Cy was born in Quill.")]  # each text once, empty ones skipped, any kind


def _audit(tmp_path, *extra):
    out, db = tmp_path / "out.json", tmp_path / "runs.duckdb"
    code = main(["audit", "--base", "demo:base", "--unlearned", "demo:npo", "--audits", "metrics",
                 "--db", str(db), "--json", str(out), "--device", "cpu", *extra])
    return code, out, db


def _definition_key(key: str) -> str:
    """The defined name of a key: itself (``mia_reference`` is open-unlearning's name of an attack), or the key
    less its interval suffix and its model suffix."""
    key = re.sub(r"_ci_(low|high)$", "", key)
    return key if key in METRIC_DEFINITIONS else re.sub(r"_(base|reference)$", "", key)


def test_metrics_end_to_end_with_a_reference(demo_env, tmp_path):
    limit = 8
    code, out, db = _audit(tmp_path, "--reference", "demo:retrain", "--limit", str(limit))
    assert code == 0
    payload = json.loads(out.read_text())
    m = payload["audits"]["metrics"]["metrics"]
    for key in ("forget_Q_A_ROUGE", "forget_Q_A_Prob", "forget_truth_ratio", "exact_memorization",
                "extraction_strength", "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "mia_loss",
                "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "model_utility", *ALIASES):
        assert {key, f"{key}_base", f"{key}_reference"} <= set(m)
    assert {"privleak", "privleak_mink_pp", "forget_quality", "forget_quality_base", "privleak_base"} <= set(m)
    assert not any(k.startswith(("ra_", "wf_")) for k in m)  # the demo has no real authors / world facts
    assert set(map(_definition_key, m)) <= set(METRIC_DEFINITIONS)  # every key is defined
    for key in ("privleak", "model_utility", "mia_min_k", "mia_gradnorm", "privleak_base"):  # headline intervals
        assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key
    with Store(db) as store:
        items = store.items(payload["run_id"], "metrics")
        artifacts = store.artifacts(payload["run_id"], "metrics")["metrics"]
        notes = store.audits(payload["run_id"]).notes.iloc[0]
    answers, mia = items[items.category == "answer"], items[items.category == "mia"]
    assert len(answers) == 2 * limit and len(mia) == 2 * limit  # forget + retain; forget + holdout
    # the audit's own greedy answers, at the reference's generation length, scored by the stemmed ROUGE-L recall
    assert artifacts["settings"]["max_new_tokens"] == 200 and "200 new tokens" in notes
    assert artifacts["definitions"] == METRIC_DEFINITIONS
    extras = [json.loads(e) for e in answers.extra]
    forget = [(row, e) for (_, row), e in zip(answers.iterrows(), extras) if row.split == "forget"]
    for row, extra in forget:
        assert extra["rouge_l"]["unlearned"] == pytest.approx(um.rouge_l(row.output_unlearned, row.answer))
    assert m["forget_Q_A_ROUGE"] == pytest.approx(np.mean([e["rouge_l"]["unlearned"] for _, e in forget]))
    assert m["forget_Q_A_ROUGE_reference"] == pytest.approx(np.mean([e["rouge_l"]["reference"] for _, e in forget]))
    assert m["forget_Q_A_Prob"] == pytest.approx(np.mean([math.exp(r.logprob_unlearned) for r, _ in forget]))
    assert m["forget_truth_ratio"] == pytest.approx(um.closer_to_1_better([e["truth_ratio"]["unlearned"]
                                                                           for _, e in forget]))
    for alias, key in ALIASES.items():
        assert m[alias] == m[key]
    mia_extras = [json.loads(e) for e in mia.extra]
    members = [e["unlearned"]["mink_pp"] for e, s in zip(mia_extras, mia.split) if s == "forget"]
    others = [e["unlearned"]["mink_pp"] for e, s in zip(mia_extras, mia.split) if s == "holdout"]
    assert m["mia_min_k_plus_plus"] == pytest.approx(um.auc(members, others))
    # PrivLeak: percent, open-unlearning's sign, against the reference's AUC of the same attack
    for attack, name in (("loss", "mia_loss"), ("mink", "mia_min_k")):
        ref = m[f"{name}_reference"]
        assert m[f"privleak_{attack}"] == pytest.approx(((1 - m[name]) - (1 - ref)) / (1 - ref + 1e-10) * 100)
    assert m["privleak"] == m["privleak_mink"]
    # the reference-model attack: each model's LOSS less the reference's, so the reference's own AUC is 0.5
    members = [e["unlearned"]["ref"] for e, s in zip(mia_extras, mia.split) if s == "forget"]
    others = [e["unlearned"]["ref"] for e, s in zip(mia_extras, mia.split) if s == "holdout"]
    assert all(e["unlearned"]["ref"] == pytest.approx(e["unlearned"]["loss"] - e["reference"]["loss"])
               for e in mia_extras)
    assert m["mia_reference"] == pytest.approx(um.auc(members, others)) and m["mia_reference_reference"] == 0.5
    assert m["privleak_ref"] == pytest.approx(((1 - m["mia_reference"]) - 0.5) / (0.5 + 1e-10) * 100)
    # the gradient-norm attack: the base, trained on the forget answers, has smaller gradients there
    assert all(e[model]["gradnorm"] < 0 for e in mia_extras for model in ("base", "unlearned", "reference"))
    assert m["mia_gradnorm_base"] > 0.9 and m["mia_gradnorm_reference"] < m["mia_gradnorm_base"]
    # paraphrased and perturbed answers: the truth ratio's two sides, scored on their own
    assert m["forget_Q_A_PARA_Prob"] == pytest.approx(np.mean([e["para_prob"]["unlearned"] for _, e in forget]))
    assert m["forget_Q_A_PERT_Prob_base"] == pytest.approx(np.mean([e["pert_prob"]["base"] for _, e in forget]))
    for row, extra in forget:
        assert extra["pert_rouge"]["unlearned"] == pytest.approx(um.mean_rouge_l(
            row.output_unlearned, extra["truth_ratio_perturbed"]))
    assert m["forget_Q_A_PARA_Prob_base"] > m["forget_Q_A_PERT_Prob_base"]  # the base knows the true answer
    assert m["model_utility_components"] == 3 and "not computed: ra_Q_A_Prob_normalised" in notes
    assert m["model_utility"] == pytest.approx(stats.hmean([m["retain_Q_A_Prob"], m["retain_Q_A_ROUGE"],
                                                            m["retain_Truth_Ratio"]]))
    ratios = artifacts["forget_truth_ratios"]
    assert m["forget_quality"] == pytest.approx(stats.ks_2samp(ratios["unlearned"], ratios["reference"]).pvalue)
    # the demo's story: the base memorized the forget set, the retrained model never saw it
    assert m["exact_memorization_base"] > 0.9 and m["mia_loss_base"] > 0.9
    assert m["mia_min_k_base"] == 1.0 and m["privleak_base"] == pytest.approx(-100.0)  # remembers: -100
    assert m["privleak_base"] < m["privleak"]
    assert m["forget_Q_A_Prob_reference"] < m["forget_Q_A_Prob"] < m["forget_Q_A_Prob_base"]
    assert m["mia_loss_reference"] < m["mia_loss_base"]
    figures = MetricsAudit().figures(artifacts, items)
    assert set(figures) == {"metrics", "mia_roc", "truth_ratios"}


def test_metrics_without_a_reference_says_what_is_missing(demo_env, tmp_path):
    code, out, db = _audit(tmp_path, "--limit", "4", "--set", "metrics.mia_source=qa",
                           "--set", "metrics.max_new_tokens=12", "--set", "metrics.rouge=f1")
    assert code == 0
    payload = json.loads(out.read_text())
    m = payload["audits"]["metrics"]["metrics"]
    assert m["forget_quality"] is None and "prob_forget_reference" not in m  # NaN is stored as null
    # open-unlearning's default reference AUC, 0.5
    assert m["privleak_loss"] == pytest.approx(((1 - m["mia_loss"]) - 0.5) / (0.5 + 1e-10) * 100)
    with Store(db) as store:
        notes = store.audits(payload["run_id"]).notes.iloc[0]
        settings = store.artifacts(payload["run_id"], "metrics")["metrics"]["settings"]
    assert "--reference" in notes and "AUC 0.5" in notes and "12 new tokens" in notes
    assert settings["max_new_tokens"] == 12 and settings["rouge"] == "f1" and settings["eos"] is True
    assert "ROUGE-L" in MetricsAudit().verdict(m)


def test_model_utility_over_all_nine_components(demo_pair, demo_facts):
    """TOFU suites give real authors and world facts as retain facts with those subsets: all 9 components."""
    retain = demo_facts.split("retain")
    facts = [*demo_facts.split("forget")[:3], *demo_facts.split("holdout")[:3], *retain[:3],
             *[dataclasses.replace(f, subset="real_authors") for f in retain[3:6]],
             *[dataclasses.replace(f, subset="world_facts") for f in retain[6:9]]]
    items: list = []
    ctx = AuditContext(pair=demo_pair, facts=FactSet(facts), options=MetricsOptions(max_new_tokens=8),
                       record=items.extend)
    result = MetricsAudit().run(ctx)
    m = result.metrics
    assert m["model_utility_components"] == 9 and not any("not computed" in n for n in result.notes)
    assert m["model_utility"] == pytest.approx(stats.hmean([m[k] for k in UTILITY]))
    answers = [i for i in items if i.category == "answer"]
    authors = [i for i in answers if i.extra["group"] == "ra"]
    assert len(authors) == 3 and all(i.extra["truth_ratio_true"] == i.answer for i in authors)
    assert m["ra_Q_A_Prob_normalised"] == pytest.approx(np.mean([i.extra["normalised_prob"]["unlearned"]
                                                                 for i in authors]))
    assert m["ra_Truth_Ratio"] == pytest.approx(um.true_better(i.extra["truth_ratio"]["unlearned"] for i in authors))
    # the retain components read the other retain facts only
    plain = [i for i in answers if i.extra["group"] == "retain"]
    assert m["retain_Q_A_Prob"] == pytest.approx(np.mean([math.exp(i.logprob_unlearned) for i in plain]))
    assert result.artifacts["settings"]["model_utility_components"] == list(UTILITY)


def test_knowledge_rouge_on_knowmem_questions(demo_pair, demo_facts):
    """MUSE's KnowMem questions are answered after their split's few-shot examples, cut at MUSE's stop words and
    scored by ROUGE-L F1; other questions are not."""
    forget, retain = demo_facts.split("forget"), demo_facts.split("retain")
    knowmem = [dataclasses.replace(f, subset="knowmem") for f in (*forget[:3], *retain[:2])]
    # one example each: the tiny demo, trained on single questions, loses the thread after more
    shots = {"knowmem_forget": [(forget[3].question, forget[3].answer)],
             "knowmem_retain": [(retain[2].question, retain[2].answer)]}
    items: list = []
    ctx = AuditContext(pair=demo_pair, facts=FactSet([*knowmem, *demo_facts.split("holdout")[:2]], examples=shots),
                       options=MetricsOptions(max_new_tokens=4, knowmem_max_new_tokens=12), record=items.extend)
    result = MetricsAudit().run(ctx)
    asked = [i for i in items if i.category == "knowmem"]
    assert [i.fact_id for i in asked] == [f.id for f in knowmem]
    first = asked[0]
    assert first.prompt == demo_pair.base.few_shot_prompt(shots["knowmem_forget"], knowmem[0].question)
    assert asked[-1].prompt.startswith(demo_pair.base.prompt(retain[2].question))
    for item in asked:
        cut = item.extra["answer_cut"]["unlearned"]
        assert cut == um.cut_at_stop_words(item.output_unlearned)
        assert item.extra["knowmem_rouge"]["unlearned"] == pytest.approx(um.rouge_l(cut, item.answer, "f1"))
    m = result.metrics
    assert m["forget_knowmem_ROUGE"] == pytest.approx(np.mean([i.extra["knowmem_rouge"]["unlearned"]
                                                               for i in asked if i.split == "forget"]))
    assert m["retain_knowmem_ROUGE_base"] == pytest.approx(np.mean([i.extra["knowmem_rouge"]["base"]
                                                                    for i in asked if i.split == "retain"]))
    assert m["forget_knowmem_ROUGE_base"] > m["forget_knowmem_ROUGE"]  # NPO forgot what the base answers
    assert any("KnowMem: 3 forget questions after 1 few-shot example, 2 retain" in n for n in result.notes)


def test_gradient_norm_skipped_without_gradients_and_the_base_as_anchor(demo_pair, demo_facts):
    """A model that gives no gradients (a served one) scores the gradient-norm attack NaN, and the notes say why;
    the reference-model attack can take the base as its anchor; the weights come back untouched."""
    served = copy.copy(demo_pair.unlearned)
    served.capabilities = frozenset({"generate", "logprobs"})  # what an OpenAI-compatible server offers
    pair = dataclasses.replace(demo_pair, unlearned=served)
    facts = [*demo_facts.split("forget")[:4], *demo_facts.split("holdout")[:4]]
    before = {n: p.detach().clone() for n, p in demo_pair.base.model.named_parameters()}
    flags = {n: p.requires_grad for n, p in demo_pair.base.model.named_parameters()}
    result = MetricsAudit().run(AuditContext(pair=pair, facts=FactSet(facts), record=lambda items: None,
                                             options=MetricsOptions(max_new_tokens=4, mia_reference="base")))
    m = result.metrics
    assert math.isnan(m["mia_gradnorm"]) and 0 <= m["mia_gradnorm_base"] <= 1
    assert any("skipped (NaN) for" in n and served.info.ref in n for n in result.notes)
    assert m["mia_reference_base"] == 0.5 and 0 <= m["mia_reference"] <= 1
    for name, param in demo_pair.base.model.named_parameters():
        assert torch.equal(param, before[name]) and param.requires_grad == flags[name] and param.grad is None


@pytest.fixture(scope="module")
def tiny_classifier(tiny_demo, tmp_path_factory):
    """A tiny randomly initialized sequence classifier with the demo's tokenizer, saved as a model folder: it stands
    in for open-unlearning's gibberish detector, which comes from the model hub."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("classifier")
    tokenizer = AutoTokenizer.from_pretrained(tiny_demo / "models" / "base")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=4,
                        pad_token_id=tokenizer.pad_token_id or 0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_gibberish_rate_with_a_named_classifier(demo_pair, demo_facts, tiny_classifier):
    """With a classifier, each greedy answer gets its class-0 probability (truncated to 32 tokens) and
    forget_Q_A_gibberish is their mean over the forget answers; without one the key is absent and the notes say why."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    facts = [*demo_facts.split("forget")[:3], *demo_facts.split("retain")[:2], *demo_facts.split("holdout")[:2]]
    items: list = []
    options = MetricsOptions(max_new_tokens=8, gibberish_classifier=str(tiny_classifier), gibberish_class=1)
    result = MetricsAudit().run(AuditContext(pair=demo_pair, facts=FactSet(facts), options=options,
                                             record=items.extend))
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier).eval()
    forget = [i for i in items if i.category == "answer" and i.split == "forget"]
    for item in forget:
        inputs = tokenizer([item.output_unlearned], return_tensors="pt", truncation=True, max_length=32)
        with torch.no_grad():
            expected = torch.softmax(model(**inputs).logits, -1)[0, 1].item()
        assert item.extra["gibberish"]["unlearned"] == pytest.approx(expected, abs=1e-6)
    m = result.metrics
    assert m["forget_Q_A_gibberish"] == pytest.approx(np.mean([i.extra["gibberish"]["unlearned"] for i in forget]))
    assert 0 < m["forget_Q_A_gibberish_base"] < 1 and any("class 1" in n for n in result.notes)
    plain = MetricsAudit().run(AuditContext(pair=demo_pair, facts=FactSet(facts), record=lambda items: None,
                                            options=MetricsOptions(max_new_tokens=8)))
    assert "forget_Q_A_gibberish" not in plain.metrics
    assert any("gibberish rate) is not reported" in n for n in plain.notes)


def test_a_missing_classifier_is_a_user_error(demo_env, tmp_path, capsys):
    code, _, _ = _audit(tmp_path, "--limit", "2", "--set", f"metrics.gibberish_classifier={tmp_path / 'none'}")
    assert code == 2
    err = capsys.readouterr().err
    assert "gibberish_classifier" in err and "Traceback" not in err


def test_every_metric_is_in_the_parity_table():
    table = {line.split("|")[1].strip().strip("`") for line in DOC.read_text().splitlines() if line.startswith("| `")}
    assert set(METRIC_DEFINITIONS) <= table


@pytest.mark.parametrize("setting, message", [("metrics.mia_source=words", "mia_source"),
                                              ("metrics.mia_k=0", "mia_k"),
                                              ("metrics.rouge=bleu", "rouge"),
                                              ("metrics.max_new_tokens=0", "max_new_tokens")])
def test_bad_options_are_user_errors(demo_env, tmp_path, capsys, setting, message):
    code, _, _ = _audit(tmp_path, "--limit", "2", "--set", setting)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
