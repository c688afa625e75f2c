"""Architecture discovery on tiny, randomly initialized models of several families (built locally)."""

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from lab.core.architecture import discover, layer_count, lens_readings, middle_layer, verify_lens
from lab.core.errors import LabError

SIZE = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, vocab_size=97)
# family -> (model class, config, attribute path of the final norm that discovery must find)
FAMILIES = {
    "gpt2": (GPT2LMHeadModel, GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=97, n_positions=32),
             "transformer.ln_f"),
    "llama": (LlamaForCausalLM, LlamaConfig(num_hidden_layers=3, num_key_value_heads=2, **SIZE), "model.norm"),
    "gpt_neox": (GPTNeoXForCausalLM, GPTNeoXConfig(num_hidden_layers=3, **SIZE), "gpt_neox.final_layer_norm"),
    "mistral": (MistralForCausalLM, MistralConfig(num_hidden_layers=3, num_key_value_heads=1, **SIZE), "model.norm"),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(num_hidden_layers=3, num_key_value_heads=1, **SIZE), "model.norm"),
    "opt": (OPTForCausalLM, OPTConfig(num_hidden_layers=3, hidden_size=32, ffn_dim=64, num_attention_heads=2,
                                      vocab_size=97, word_embed_proj_dim=32), "model.decoder.final_layer_norm"),
}


def build(family: str) -> torch.nn.Module:
    """A tiny random model whose norms are randomized too, so that a missing or wrong norm shows."""
    cls, config, _ = FAMILIES[family]
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "ln" in name:
                param.copy_(torch.randn_like(param) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    return model


@pytest.mark.parametrize("family", list(FAMILIES))
def test_parts_are_found_and_reproduce_the_logits(family):
    model = build(family)
    arch = discover(model)
    assert arch.n_layers == layer_count(model) == 3
    assert arch.final_norm is model.get_submodule(FAMILIES[family][2])
    assert arch.head is model.get_output_embeddings()
    assert arch.embeddings is model.get_input_embeddings()
    ids = torch.tensor([[5, 17, 3, 42, 8]])
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        # the lens of the last hidden state is the model's own output
        assert torch.allclose(arch.logits(out.hidden_states[-1][0], arch.n_layers), out.logits[0], atol=1e-4)
        # a middle layer goes through the final norm, then the head
        by_hand = arch.head(arch.final_norm(out.hidden_states[1][0]))
        assert torch.allclose(arch.logits(out.hidden_states[1][0], 1), by_hand, atol=1e-5)


def test_a_wrong_final_norm_is_caught():
    model = build("llama")
    arch = discover(model)
    arch.final_norm = None  # as if discovery had missed it
    with pytest.raises(LabError, match="do not reproduce the model's logits"):
        verify_lens(model, arch)


def test_lens_readings_rank_and_probability_by_hand():
    model = build("gpt2")
    arch = discover(model)
    states = torch.randn(2, arch.n_layers + 1, 32)
    targets = torch.tensor([7, 11])
    rank, prob, top = lens_readings(arch, states, targets, top=3, chunk=1)
    with torch.no_grad():
        for i in range(2):
            for layer in range(arch.n_layers + 1):
                logp = torch.log_softmax(arch.logits(states[i, layer], layer), -1)
                assert rank[i, layer] == int((logp > logp[targets[i]]).sum())
                assert torch.isclose(prob[i, layer], logp[targets[i]].exp(), atol=1e-6)
                assert top[i, layer, 0] == int(logp.argmax())
    assert rank.shape == prob.shape == (2, arch.n_layers + 1) and top.shape == (2, arch.n_layers + 1, 3)


def test_middle_layer():
    assert [middle_layer(n) for n in (1, 2, 4, 32)] == [0, 1, 2, 16]
