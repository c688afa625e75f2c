"""Scoring at a 128k vocabulary never builds the full [batch, length, vocabulary] logits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BOUND_MB = 1500  # stated bound for 8 x 1024 scored tokens; full float32 logits alone would be 4200 MB

SCRIPT = """
import resource, sys, torch
from types import SimpleNamespace
from transformers import LlamaConfig, LlamaForCausalLM
from lab.core.backend import ModelInfo
from lab.core.engine import Engine
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=128256, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=2048))
info = ModelInfo(ref="random", path="", content_hash="", device="cpu", dtype="float32", parameters=0,
                 architecture="LlamaForCausalLM")
engine = Engine(model, SimpleNamespace(pad_token_id=0, eos_token_id=1, bos_token_id=None), info)
rows = torch.randint(2, 128256, (8, 1024)).tolist()
engine.chunked_scoring  # the one-time check, before measuring
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
scores = engine.token_scores(rows, [1] * len(rows), distribution=True)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
assert len(scores) == 8 and all(len(s.logprobs) == 1023 for s in scores)
print(f"{grown:.0f} {engine.policy.max_tokens}")
"""


def test_128k_vocabulary_scoring_stays_under_the_memory_bound():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    grown_mb, budget = out.stdout.split()
    assert int(budget) >= 8 * 1024  # the 8 rows are scored as one batch: the bound is per batch, not per row
    assert float(grown_mb) < BOUND_MB, f"peak memory grew by {grown_mb} MB"


def test_chunked_scores_equal_the_full_logits():
    from types import SimpleNamespace

    from transformers import LlamaConfig, LlamaForCausalLM

    from lab.core.backend import ModelInfo
    from lab.core.engine import Engine

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128256, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1))
    info = ModelInfo(ref="random", path="", content_hash="", device="cpu", dtype="float32", parameters=0,
                     architecture="LlamaForCausalLM")
    engine = Engine(model, SimpleNamespace(pad_token_id=0, eos_token_id=1, bos_token_id=None), info)
    rows = [torch.randint(2, 128256, (n,)).tolist() for n in (40, 25)]
    scores = engine.token_scores(rows, [5, 3], distribution=True)
    assert engine.chunked_scoring and engine.info.extra["scoring"] == "chunked head"
    with torch.no_grad():
        for row, start, got in zip(rows, [5, 3], scores):
            logp = torch.log_softmax(model(input_ids=torch.tensor([row])).logits[0, start - 1:-1].float(), -1)
            want = logp.gather(-1, torch.tensor(row[start:]).unsqueeze(-1)).squeeze(-1).numpy()
            assert np.allclose(got.logprobs, want, atol=1e-4)
            mu = (logp.exp() * logp).sum(-1).numpy()
            assert np.allclose(got.mu, mu, atol=1e-3)
