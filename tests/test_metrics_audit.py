"""The ``metrics`` audit: engine-level metrics checked by hand, then end to end on the tiny demo."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from audits.metrics import (
    PER_FACT,
    MetricsAudit,
    MiaText,
    Probe,
    fact_probe,
    membership_scores,
    mia_examples,
    score_probes,
    truth_ratio_answers,
)
from lab.core import unlearning_metrics as um
from lab.core.facts import Fact
from lab.core.store import Store
from lab.shell.cli import main


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
    scores = score_probes(demo_pair.base, [fact_probe(demo_pair.base, f) for f in facts], "test")
    assert sum(s.exact_memorization == 1.0 and s.extraction_strength == 1.0 for s in scores) >= 18


def test_truth_ratio_matches_answer_logprobs(demo_pair, demo_facts):
    engine = demo_pair.base
    fact = demo_facts.split("forget")[0]
    probe = fact_probe(engine, fact)
    true_lp = engine.answer_logprobs([probe.prompt], [probe.true_answer])[0]
    wrong_lp = engine.answer_logprobs([probe.prompt] * len(probe.perturbed), list(probe.perturbed))
    expected = math.exp(np.mean(wrong_lp) - true_lp)
    assert score_probes(engine, [probe], "test")[0].truth_ratio == pytest.approx(expected, rel=1e-4)


def test_truth_ratio_answers_put_wrong_values_into_the_paraphrase():
    fact = Fact("f", "Where was Ada born?", "Velmora", entity="Ada",
                paraphrased_answer="Ada was born in the town of Velmora.", perturbed_answers=("Brisk", "Tol"))
    assert truth_ratio_answers(fact) == ("Ada was born in the town of Velmora.",
                                         ("Ada was born in the town of Brisk.", "Ada was born in the town of Tol."))
    tofu = Fact("g", "Q?", "A long answer.", paraphrased_answer="Another phrasing.", perturbed_answers=("Wrong one.",))
    assert truth_ratio_answers(tofu) == ("Another phrasing.", ("Wrong one.",))
    bare = Fact("h", "Q?", "Velmora")
    assert truth_ratio_answers(bare) == ("Velmora", ())


def test_answer_membership_scores_are_the_answer_logprobs(demo_pair, demo_facts):
    engine = demo_pair.base
    facts = demo_facts.split("forget")[:3]
    examples = [MiaText(f, f.answer, engine.prompt(f.question)) for f in facts]
    scores = membership_scores(engine, examples, 0.4, "test")
    expected = engine.answer_logprobs([e.prefix for e in examples], [f.answer for f in facts])
    assert [s["loss"] for s in scores] == pytest.approx(expected, abs=1e-5)


def test_mia_examples_per_source(demo_pair):
    bio = "Ada Vell was born in Velmora. Ada Vell was a cooper."
    facts = [Fact("a1", "Where was Ada Vell born?", "Velmora", "forget", text=bio),
             Fact("a2", "What was Ada Vell's trade?", "cooper", "forget", text=bio),
             Fact("r1", "Where was Bo born?", "Tol", "retain", text="Bo was born in Tol."),
             Fact("h1", "Where was Cy born?", "Quill", "holdout", text="")]
    engine = demo_pair.base
    answers = mia_examples(engine, facts, "answer")
    assert [(e.fact.id, e.text, e.prefix) for e in answers] == [
        ("a1", "Velmora", engine.prompt(facts[0].question)), ("a2", "cooper", engine.prompt(facts[1].question)),
        ("h1", "Quill", engine.prompt(facts[3].question))]  # retain facts are not part of forget-vs-holdout
    assert mia_examples(engine, facts, "qa")[0].text == f"{engine.prompt(facts[0].question)} Velmora"
    assert [(e.fact.id, e.text) for e in mia_examples(engine, facts, "text")] == [("a1", bio)]  # once, non-empty


def _audit(tmp_path, *extra):
    out, db = tmp_path / "out.json", tmp_path / "runs.duckdb"
    code = main(["audit", "--base", "demo:base", "--unlearned", "demo:npo", "--audits", "metrics",
                 "--db", str(db), "--json", str(out), "--device", "cpu", *extra])
    return code, out, db


def test_metrics_end_to_end_with_a_reference(demo_env, tmp_path):
    code, out, db = _audit(tmp_path, "--reference", "demo:retrain")
    assert code == 0
    payload = json.loads(out.read_text())
    m = payload["audits"]["metrics"]["metrics"]
    for metric in PER_FACT:
        for split in ("forget", "retain"):
            assert {f"{metric}_{split}", f"{metric}_{split}_base", f"{metric}_{split}_reference"} <= set(m)
    assert {"mia_mink_pp_auc", "privleak_mink_pp", "forget_quality", "forget_quality_base",
            "model_utility", "model_utility_base"} <= set(m)
    with Store(db) as store:
        items = store.items(payload["run_id"], "metrics")
        artifacts = store.artifacts(payload["run_id"], "metrics")["metrics"]
    answers, mia = items[items.category == "answer"], items[items.category == "mia"]
    manifest = json.loads((demo_env / "manifest.json").read_text())["counts"]
    assert len(answers) == manifest["forget"] + manifest["retain"]
    assert len(mia) == manifest["forget"] + manifest["holdout"]
    # headline values are the stored per-item values, aggregated as documented
    forget = answers[answers.split == "forget"]
    assert m["rouge_l_forget_base"] == pytest.approx(forget.rouge_base.mean())
    assert m["rouge_l_forget"] == pytest.approx(forget.rouge_unlearned.mean())
    assert m["prob_forget"] == pytest.approx(np.exp(forget.logprob_unlearned).mean())
    extras = [json.loads(e) for e in mia.extra]
    members = [e["unlearned"]["mink_pp"] for e, s in zip(extras, mia.split) if s == "forget"]
    others = [e["unlearned"]["mink_pp"] for e, s in zip(extras, mia.split) if s == "holdout"]
    assert m["mia_mink_pp_auc"] == pytest.approx(um.auc(members, others))
    assert m["privleak_loss"] == pytest.approx((m["mia_loss_auc"] - m["mia_loss_auc_reference"])
                                               / m["mia_loss_auc_reference"])
    assert m["model_utility"] == pytest.approx(stats.hmean([m["prob_retain"], m["rouge_l_retain"],
                                                            m["truth_ratio_retain"]]))
    ratios = artifacts["forget_truth_ratios"]
    assert m["forget_quality"] == pytest.approx(stats.ks_2samp(ratios["unlearned"], ratios["reference"]).pvalue)
    # the demo's story: the base memorized the forget set, the retrained model never saw it
    assert m["exact_memorization_forget_base"] > 0.9 and m["mia_loss_auc_base"] > 0.9
    assert m["prob_forget_reference"] < m["prob_forget"] < m["prob_forget_base"]
    assert m["mia_loss_auc_reference"] < m["mia_loss_auc_base"]
    figures = MetricsAudit().figures(artifacts, items)
    assert set(figures) == {"metrics", "mia_roc", "truth_ratios"}


def test_metrics_without_a_reference_says_what_is_missing(demo_env, tmp_path):
    code, out, db = _audit(tmp_path, "--limit", "4", "--set", "metrics.mia_source=qa")
    assert code == 0
    payload = json.loads(out.read_text())
    m = payload["audits"]["metrics"]["metrics"]
    assert "forget_quality" not in m and "privleak_loss" not in m and "prob_forget_reference" not in m
    with Store(db) as store:
        notes = store.audits(payload["run_id"]).notes.iloc[0]
    assert "--reference" in notes
    assert "ROUGE-L" in MetricsAudit().verdict(m)


@pytest.mark.parametrize("setting, message", [("metrics.mia_source=words", "mia_source"),
                                              ("metrics.mia_k=0", "mia_k")])
def test_bad_options_are_user_errors(demo_env, tmp_path, capsys, setting, message):
    code, _, _ = _audit(tmp_path, "--limit", "2", "--set", setting)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
