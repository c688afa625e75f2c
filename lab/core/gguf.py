"""A local Llama model in llama.cpp's GGUF format (``python -m lab gguf MODEL OUT``), to serve it with llama.cpp.

llama.cpp's server (also through llama-cpp-python) reads GGUF files only.  llama.cpp ships its own converter
for every architecture it runs (``convert_hf_to_gguf.py`` in its repository); this one covers what the demo
models are, so the served-model steps of the manual run on a machine with nothing but the lab's requirements:
a ``LlamaForCausalLM`` (no attention or MLP biases) with a byte-level BPE tokenizer (GPT-2 style), written in
float32.  Other models are refused in one line that names llama.cpp's converter.

Hugging Face stores the query and key projections with the rotary dimensions in two halves per head, llama.cpp
in adjacent pairs (:func:`to_llama_cpp_rope`).  An untied output head is written as ``output.weight``; a tied
one is left out, and llama.cpp reads the token embedding in its place.  The lab sends token ids, or text it
decoded from them (llama-cpp-python's server takes text only), so the tokenizer written here must split text
as the model's own does: the byte-level pre-tokenizer is llama.cpp's ``gpt-2``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lab.core.errors import LabError

CONVERTER = "llama.cpp's convert_hf_to_gguf.py"
# Our names of each decoder block's weights -> llama.cpp's.
BLOCK_TENSORS = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def to_llama_cpp_rope(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a q/k projection from Hugging Face's rotary layout (first half, second half of each head)
    to llama.cpp's (pairs of adjacent dimensions)."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _read(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's config and tokenizer files, checked to be what this converter writes."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LabError(f"{folder} is not a model folder with config.json and tokenizer.json ({exc}); use "
                       f"{CONVERTER} for other layouts") from None
    pre = tokenizer.get("pre_tokenizer") or {}
    if (config.get("model_type") != "llama" or config.get("attention_bias") or config.get("mlp_bias")
            or (tokenizer.get("model") or {}).get("type") != "BPE" or pre.get("type") != "ByteLevel"):
        raise LabError(f"{folder}: this converter writes Llama models without biases and with a byte-level BPE "
                       f"tokenizer (the demo's); this one is {config.get('model_type')!r} with a "
                       f"{(tokenizer.get('model') or {}).get('type')!r} tokenizer: use {CONVERTER}")
    return config, tokenizer


def write_gguf(folder: Path, out: Path, pre_tokenizer: str = "gpt-2") -> Path:
    """The Llama model in ``folder`` (``save_pretrained``) as a float32 GGUF file at ``out``.  ``pre_tokenizer``
    is llama.cpp's name of the split regex: ``gpt-2`` as a byte-level BPE tokenizer splits (another one makes a
    server that tokenizes differently, which the tests need)."""
    config, tokenizer = _read(folder)
    try:
        import gguf
    except ImportError:
        raise LabError("writing GGUF needs the gguf package: pip install -r requirements-serve.txt") from None
    from transformers import AutoModelForCausalLM

    state = {k: v.float().numpy() for k, v in AutoModelForCausalLM.from_pretrained(folder).state_dict().items()}
    heads, kv_heads, hidden = config["num_attention_heads"], config["num_key_value_heads"], config["hidden_size"]
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config.get("head_dim") or hidden // heads)
    theta = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = {**tokenizer["model"]["vocab"], **{t["content"]: t["id"] for t in tokenizer["added_tokens"]}}
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    specials = {t["id"] for t in tokenizer["added_tokens"] if t["special"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer)
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if i in specials else gguf.TokenType.NORMAL
                            for i in range(len(tokens))])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tokenizer["model"]["merges"]])
    for name, token_id in (("bos", config.get("bos_token_id")), ("eos", config.get("eos_token_id")),
                           ("pad", config.get("pad_token_id"))):
        if isinstance(token_id, int):
            getattr(writer, f"add_{name}_token_id")(token_id)
    writer.add_add_bos_token(True)  # as the Llama tokenizers do: a text prompt gets its BOS on the server
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    if not config.get("tie_word_embeddings", False) and "lm_head.weight" in state:
        writer.add_tensor("output.weight", state["lm_head.weight"])
    for layer in range(config["num_hidden_layers"]):
        for ours, theirs in BLOCK_TENSORS.items():
            weight = state[f"model.layers.{layer}.{ours}.weight"]
            if ours == "self_attn.q_proj":
                weight = to_llama_cpp_rope(weight, heads)
            elif ours == "self_attn.k_proj":
                weight = to_llama_cpp_rope(weight, kv_heads)
            writer.add_tensor(f"blk.{layer}.{theirs}.weight", np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
