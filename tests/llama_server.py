"""A real OpenAI-compatible inference server for the tests: llama.cpp's, through llama-cpp-python
(requirements-serve.txt), serving a demo model written here in llama.cpp's GGUF format.

The GGUF writer covers what the demo's Llama models use: float32 tensors, tied embeddings (llama.cpp
falls back to the token embedding when there is no output head), and the byte-level BPE tokenizer (GPT-2
style; the lab sends token ids, so the server only detokenizes).  Hugging Face stores the query and key
projections with the rotary dimensions interleaved differently from llama.cpp; :func:`to_llama_cpp_rope`
reorders their rows.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def to_llama_cpp_rope(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a q/k projection from Hugging Face's rotary layout (first half, second half of each head)
    to llama.cpp's (pairs of adjacent dimensions)."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def write_gguf(folder: Path, out: Path, pre_tokenizer: str = "gpt-2") -> Path:
    """The demo Llama model in ``folder`` (save_pretrained) as a float32 GGUF file.  ``pre_tokenizer`` is
    llama.cpp's name of the split regex: "gpt-2" as the demo tokenizer's ByteLevel pre-tokenizer (another
    one makes a server that tokenizes differently, for the tests)."""
    import gguf
    from transformers import AutoModelForCausalLM

    config = json.loads((folder / "config.json").read_text())
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    state = {k: v.float().numpy() for k, v in AutoModelForCausalLM.from_pretrained(folder).state_dict().items()}
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    hidden = config["hidden_size"]
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_rope_freq_base(float(config.get("rope_theta") or config.get("rope_parameters", {}).get("rope_theta",
                                                                                                      10000.0)))
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
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(True)  # as the demo tokenizer does: a text prompt gets its BOS on the server
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    for layer in range(config["num_hidden_layers"]):
        for hf, ours in names.items():
            weight = state[f"model.layers.{layer}.{hf}.weight"]
            if hf == "self_attn.q_proj":
                weight = to_llama_cpp_rope(weight, heads)
            elif hf == "self_attn.k_proj":
                weight = to_llama_cpp_rope(weight, kv_heads)
            writer.add_tensor(f"blk.{layer}.{ours}.weight", np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server on one GGUF model, started and stopped by a fixture."""

    def __init__(self, gguf_path: Path, alias: str, context: int):
        self.port = free_port()
        self.alias = alias
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = gguf_path.with_suffix(".log")
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path), "--model_alias", alias,
                   "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(context), "--logits_all", "true",
                   "--n_threads", "2", "--seed", "0"]
        self.process = subprocess.Popen(command, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"})

    def wait(self, timeout: float = 60.0) -> "LlamaServer":
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"llama.cpp server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
