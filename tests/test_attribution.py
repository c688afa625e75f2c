"""Token attributions: leave-one-out by hand, against captum, integrated gradients, and the view."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from lab.core.attribution import (
    attribute_prompt,
    attribution_figure,
    captum_leave_one_out,
    integrated_gradients,
    leave_one_out,
    prompt_tokens,
)
from lab.core.backend import ModelInfo
from lab.core.engine import Engine
from lab.core.errors import LabError


class Bigram(torch.nn.Module):
    """Logits at each position depend on that token alone: log p(next | prefix) = log_softmax(W[last])."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids, attention_mask=None, **_):
        return SimpleNamespace(logits=self.table[input_ids])


@pytest.fixture(scope="module")
def tokenizer(tiny_demo):
    return AutoTokenizer.from_pretrained(tiny_demo / "models" / "base")


def bigram_engine(tokenizer, table: torch.Tensor) -> Engine:
    info = ModelInfo(ref="bigram", path="", content_hash="", device="cpu", dtype="float32",
                     parameters=table.numel(), architecture="Bigram")
    return Engine(Bigram(table), tokenizer, info)


def log_softmax_at(row: torch.Tensor, index: int) -> float:
    return float(torch.log_softmax(row, -1)[index])


def test_leave_one_out_by_hand_on_a_bigram_model(tokenizer):
    """Only the token right before the answer matters to a bigram model; its C follows by hand."""
    vocab = len(tokenizer)
    prompts = ["Question: Where was Thondbrar Shaexzhodan born?\nAnswer:", "Hello there:"]
    answer = "Brouskbrath"
    ids = prompt_tokens(bigram_engine(tokenizer, torch.zeros(vocab, vocab)), prompts[0], answer).ids
    first = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    assert len(first) == 6  # " B", "rou", "sk", "b", "ra", "th"
    colon, before_colon = ids[-1], ids[-2]  # ":" and "Answer"
    table = torch.zeros(vocab, vocab)
    table[colon, first[0]] = 5.0
    table[before_colon, first[0]] = 1.0
    engine = bigram_engine(tokenizer, table)

    out = leave_one_out(engine, prompts, [answer, answer])
    tokens = out[0].tokens
    assert tokens.target == first and tokens.labels[-2:] == ["Answer", ":"]
    assert len(out[0].values) == len(ids) - 1  # every token but <s>
    # deleting the last ":" puts "Answer" before the answer: only the first answer token's log-prob moves
    expected = (log_softmax_at(table[colon], first[0]) - log_softmax_at(table[before_colon], first[0])) / len(first)
    assert out[0].values[-1] == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx((5.0 - np.log(np.e ** 5 + vocab - 1) - 1.0 + np.log(np.e + vocab - 1)) / 6)
    np.testing.assert_allclose(out[0].values[:-1], 0.0, atol=1e-6)  # the first ":" too: only the last one counts
    lp = (log_softmax_at(table[colon], first[0]) + sum(log_softmax_at(table[a], b) for a, b in zip(first, first[1:])))
    assert out[0].logprob == pytest.approx(lp / len(first), abs=1e-6)
    # the second prompt, scored in the same batch, has its own last token
    assert np.count_nonzero(np.abs(out[1].values) > 1e-6) <= 1


def test_batched_leave_one_out_equals_captum_feature_ablation(demo_pair, demo_facts):
    facts = demo_facts.split("forget")[:3] + demo_facts.split("retain")[:2]
    for engine in (demo_pair.base, demo_pair.unlearned):
        prompts = [engine.prompt(f.question) for f in facts]
        batched = leave_one_out(engine, prompts, [f.answer for f in facts])
        for fact, prompt, mine in zip(facts, prompts, batched):
            reference = captum_leave_one_out(engine, prompt, fact.answer)
            np.testing.assert_allclose(mine.values, reference, atol=1e-5)
        assert np.abs(batched[0].values).max() > 0.01  # not trivially zero
    # captum's token-by-token forward (the generation path, with its KV cache) agrees as well
    prompt = demo_pair.base.prompt(facts[0].question)
    by_tokens = captum_leave_one_out(demo_pair.base, prompt, facts[0].answer, forward_in_tokens=True)
    np.testing.assert_allclose(by_tokens, leave_one_out(demo_pair.base, [prompt], [facts[0].answer])[0].values,
                               atol=1e-5)


def test_integrated_gradients_are_complete(demo_pair, demo_facts):
    """IG attributions sum to LP(x, y) - LP(baseline, y), baseline = every feature the unk token."""
    engine = demo_pair.base
    fact = demo_facts.split("forget")[0]
    prompt = engine.prompt(fact.question)
    attributions = integrated_gradients(engine, prompt, fact.answer, n_steps=64)
    tok = prompt_tokens(engine, prompt, fact.answer)
    baseline = list(tok.ids)
    for position in tok.positions:
        baseline[position] = engine.tokenizer.unk_token_id
    lp_x, lp_base = (s.mean for s in engine.token_scores([tok.ids + tok.target, baseline + tok.target],
                                                         [len(tok.ids), len(baseline)]))
    assert attributions.shape == (len(tok.positions),)
    assert abs(lp_x - lp_base) > 1.0
    assert attributions.sum() == pytest.approx(lp_x - lp_base, rel=0.05, abs=0.05)


def test_attribution_view_both_models_and_difference(demo_pair, demo_facts):
    fact = demo_facts.split("forget")[1]
    prompt = demo_pair.base.prompt(fact.question)
    view = attribute_prompt(demo_pair, prompt, fact.answer, n_steps=16)
    n = len(view.labels)
    assert set(view.scores) == {"feature_ablation", "integrated_gradients"}
    for method in view.scores.values():
        assert len(method["base"]) == len(method["unlearned"]) == n
    loo = leave_one_out(demo_pair.unlearned, [prompt], [fact.answer])[0]
    np.testing.assert_allclose(view.scores["feature_ablation"]["unlearned"], loo.values, atol=1e-6)
    assert view.logprob["unlearned"] == pytest.approx(loo.logprob)

    fig = attribution_figure(view)
    assert len(fig.data) == 6  # per method: base, unlearned, difference
    diff = fig.data[2]
    np.testing.assert_allclose(diff.y, np.subtract(view.scores["feature_ablation"]["unlearned"],
                                                   view.scores["feature_ablation"]["base"]))
    assert list(diff.x)[-1] == f"{n - 1}::"
    round_trip = type(view).from_dict(view.to_dict())
    assert round_trip == view


def test_attribution_bad_input(demo_pair):
    prompt = demo_pair.base.prompt("Who?")
    with pytest.raises(LabError, match="non-empty"):
        attribute_prompt(demo_pair, prompt, "  ")
    with pytest.raises(LabError, match="unknown attribution methods"):
        attribute_prompt(demo_pair, prompt, "x", methods=("saliency",))
    with pytest.raises(LabError, match="n_steps"):
        integrated_gradients(demo_pair.base, prompt, "x", n_steps=1)
