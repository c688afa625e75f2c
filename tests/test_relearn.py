"""Relearning: the in-place fine-tuning restores every weight, trains what it is shown, and the audit's
curve, controls and held-out rule; plus LoRA on a 100M-parameter-shaped model within memory."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audits.base import AuditContext
from audits.relearn import RelearnAudit, RelearnOptions, checkpoints, fact_rows
from lab.core.errors import LabError
from lab.core.finetune import Schedule, finetune
from lab.core.options import build_options
from lab.core.scoring import score_answer
from lab.core.store import Store
from lab.shell.cli import main

ROOT = Path(__file__).resolve().parents[1]


def weights(engine):
    return {n: p.detach().clone() for n, p in engine.model.named_parameters()}


@pytest.mark.parametrize("method, lr", [("full", 3e-4), ("lora", 3e-3)])
def test_finetune_learns_what_it_is_shown_and_restores_every_weight(demo_pair, demo_facts, method, lr):
    engine = demo_pair.unlearned
    shown = [f for f in demo_facts.split("forget")][:6]
    before = weights(engine)
    correct = {}

    def ask(step):
        outs = engine.generate([engine.prompt(f.question) for f in shown], 12)
        correct[step] = sum(score_answer(o, f.answer).hit for o, f in zip(outs, shown))

    finetune(engine, fact_rows(engine, shown), Schedule(40, lr, 4, method, rank=8), [0, 40], ask)
    assert correct[40] > correct[0]  # it learned the shown facts
    after = weights(engine)
    assert all(torch.equal(after[n], before[n]) for n in before)  # and the model is as it was
    assert not any(p.requires_grad for p in engine.model.parameters())

    def broken(step):
        if step == 10:
            raise RuntimeError("a failing evaluation")

    with pytest.raises(RuntimeError):
        finetune(engine, fact_rows(engine, shown), Schedule(20, lr, 4, method, rank=8), [10], broken)
    assert all(torch.equal(p, before[n]) for n, p in engine.model.named_parameters())


def test_checkpoints_and_option_errors():
    assert checkpoints(40, 10) == [0, 10, 20, 30, 40]
    assert checkpoints(25, 10) == [0, 10, 20, 25]
    with pytest.raises(LabError, match="relearn.file is required"):
        build_options(RelearnOptions, "relearn", {"data": "file"})
    with pytest.raises(LabError, match="method: 'sgd'"):
        build_options(RelearnOptions, "relearn", {"method": "sgd"})


def test_relearn_audit_asks_only_held_out_targets_and_reports_the_curve(demo_env, tmp_path):
    db, out = tmp_path / "r.duckdb", tmp_path / "r.json"
    code = main(["audit", "--base", "demo:base", "--unlearned", "demo:npo", "--reference", "demo:retrain",
                 "--audits", "relearn", "--db", str(db), "--json", str(out), "--device", "cpu",
                 "--set", "relearn.method=full", "--set", "relearn.lr=3e-4", "--set", "relearn.steps=20"])
    assert code == 0
    payload = json.loads(out.read_text())
    m = payload["audits"]["relearn"]["metrics"]
    with Store(db, read_only=True) as store:
        items = store.items(payload["run_id"], "relearn")
        art = store.artifacts(payload["run_id"], "relearn")["relearn"]
    assert set(items.category) == {"step_0", "step_10", "step_20"}
    assert not set(items.fact_id) & set(art["relearned_on"])  # facts trained on are never asked
    final = items[items.category == "step_20"]
    assert m["recovery_rate"] == pytest.approx(final.recovered.astype(bool).mean())
    assert m["recovery_rate_step_0"] == 0.0  # before any step the targets are, by definition, missed
    assert m["targets"] == len(final) and m["relearn_examples"] == len(art["relearned_on"])
    assert set(art["curve"]) == {"base", "unlearned", "reference"}
    assert m["recovery_rate_adjusted"] == pytest.approx(m["recovery_rate"] - m["recovery_rate_reference"])
    assert 0.0 <= m["holdout_rate"] <= 1.0 and 0.0 <= m["base_retention"] <= 1.0


def test_relearn_on_benign_data_and_on_a_file(demo_pair, demo_facts, tmp_path):
    texts = tmp_path / "benign.jsonl"
    retain = demo_facts.split("retain")[:4]
    texts.write_text("\n".join(json.dumps({"question": f.question, "answer": f.answer}) for f in retain))
    for options in ({"data": "retain", "size": "5"}, {"data": "file", "file": str(texts)}):
        opts = build_options(RelearnOptions, "relearn", {"steps": "4", "eval_every": "2", **options})
        items = []
        result = RelearnAudit().run(AuditContext(pair=demo_pair, facts=demo_facts.limited(6), options=opts,
                                                 record=items.extend))
        assert result.metrics["relearn_examples"] == (5 if options["data"] == "retain" else 4)
        assert result.metrics["targets"] == len(AuditContext(pair=demo_pair, facts=demo_facts.limited(6),
                                                             options=opts, record=list.append).baseline.targets())


LORA_100M = r"""
import resource, sys, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM, AutoTokenizer
from lab.core.facts import load_facts
from lab.core.models import load_engine
from lab.core.finetune import Schedule, finetune
from audits.relearn import fact_rows
demo, folder = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(f"{demo}/models/base")
config = LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=512,
                     pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     tie_word_embeddings=True)
model = LlamaForCausalLM(config)
params = sum(p.numel() for p in model.parameters())
model.save_pretrained(folder)
tok.save_pretrained(folder)
del model
engine = load_engine(folder, device="cpu", dtype="float32")
facts = [f for f in load_facts(f"{demo}/facts.jsonl") if f.kind == "qa"][:16]
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.time()
finetune(engine, fact_rows(engine, facts), Schedule(4, 2e-4, 4, "lora", rank=128), [4],
         lambda step: engine.generate([engine.prompt(facts[0].question)], 4))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(params, round(loaded), round(peak), round(time.time() - start, 1))
"""


def test_lora_relearning_on_a_100m_model_stays_within_memory(tiny_demo, tmp_path):
    """LoRA (rank 128, every linear layer) on a random 100M-parameter Llama shape, 2 CPU cores: the
    fine-tuning (adapters, their gradients and AdamW moments, activations) adds less than twice the weights,
    where full fine-tuning needs gradients, two moments and the restore copy: four times the weights."""
    out = subprocess.run([sys.executable, "-c", LORA_100M, str(tiny_demo), str(tmp_path / "m100")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    params, loaded_mb, peak_mb, seconds = out.stdout.split()
    weights_mb = int(params) * 4 / 2**20
    assert 90e6 < int(params) < 130e6
    grown = float(peak_mb) - float(loaded_mb)
    assert grown < 2 * weights_mb, (params, loaded_mb, peak_mb, seconds)
    print(f"100M LoRA relearning: weights {weights_mb:.0f} MB, +{grown:.0f} MB peak, {seconds} s")


def test_lora_relearning_does_not_depend_on_the_global_generator(demo_pair, demo_facts):
    """The adapters start from the schedule's seed: what ran before (another audit's draws, kept results that
    skipped some) must not change what relearning brings back."""
    engine = demo_pair.unlearned
    shown = [f for f in demo_facts.split("forget")][:6]

    def relearned(global_seed: int) -> list[list[float]]:
        torch.manual_seed(global_seed)
        scores: list[list[float]] = []
        finetune(engine, fact_rows(engine, shown), Schedule(10, 3e-3, 4, "lora", rank=8), [10],
                 lambda step: scores.extend(s.logprobs.tolist() for s in engine.answer_scores(
                     [engine.prompt(f.question) for f in shown], [f" {f.answer}" for f in shown])))
        return scores

    assert relearned(1) == relearned(2)
