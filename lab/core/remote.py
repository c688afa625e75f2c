"""Models behind an OpenAI-compatible inference server (vLLM, SGLang, llama.cpp's server, TGI).

A reference ``openai+http://HOST:PORT/v1#MODEL`` names the model ``MODEL``
served at that base URL; ``#MODEL?tokenizer=PATH_OR_ID`` names the tokenizer
when ``MODEL`` is not itself a local folder or hub id.  The API key, when the
server wants one, comes from ``$LAB_OPENAI_API_KEY`` (else
``$OPENAI_API_KEY``) at request time and is never stored.

The lab tokenizes locally, exactly as for a local model
(:class:`lab.core.prompts.Encoder`: the same prompt formats, BOS once), and
sends token ids as the ``prompt`` of ``/completions`` requests, so the
server sees the very inputs a local engine would.  A server that takes only
text prompts (llama.cpp's server through llama-cpp-python) gets the ids
decoded back to text, its own BOS in place of ours; prompt log-probs are then
offered only when the server echoes exactly our tokens (the same tokenizer on
both sides), with or without the BOS:

- ``generate``: one completion per prompt (``max_tokens``, ``temperature``
  0 and no repeat penalty for greedy, ``seed`` when sampling), requests sent
  concurrently;
- ``logprobs`` (when the server returns prompt log-probs: ``echo`` with
  ``logprobs``; checked once when the model is loaded): teacher-forced
  log-probs of every token of a row, and whether it was the top prediction,
  read from ``token_logprobs`` and ``top_logprobs``;
- no ``internals``: audits that need weights or activations are not offered.

Requests retry on connection errors, 429 and 5xx with exponential back-off;
a server that lacks a feature is a one-line error.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import httpx
import numpy as np
from transformers import AutoTokenizer

from lab.core.backend import Backend, ModelInfo, TokenScores
from lab.core.errors import LabError
from lab.core.prompts import PromptFormat
from lab.core.refs import ModelRef

CONCURRENCY = 8  # requests in flight per model
RETRIES = 4
BACKOFF_S = 0.5  # first wait; doubles with each retry
TIMEOUT_S = 120.0
TOKENIZER_MARK = "?tokenizer="
# Greedy means the plain argmax: llama.cpp's server penalises repeats by default (repeat_penalty 1.1), which
# changes greedy answers; a server that refuses the field (checked once at load) gets requests without it.
GREEDY_EXTRAS = {"repeat_penalty": 1.0}


def api_key() -> str | None:
    return os.environ.get("LAB_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


class Server:
    """One OpenAI-compatible server: JSON requests with retries and back-off."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(timeout=TIMEOUT_S, limits=httpx.Limits(max_connections=CONCURRENCY * 2))

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON answer of one request; transient failures are retried, the rest are one-line errors."""
        key = api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        url = f"{self.base_url}{path}"
        for attempt in range(RETRIES + 1):
            try:
                response = self.client.request(method, url, json=body, headers=headers)
            except httpx.TransportError as exc:
                if attempt == RETRIES:
                    raise LabError(f"cannot reach the inference server at {self.base_url} "
                                   f"({type(exc).__name__}: {exc})") from None
            else:
                if response.status_code < 400:
                    return response.json()
                if response.status_code != 429 and response.status_code < 500 or attempt == RETRIES:
                    detail = response.text.strip().splitlines()[0][:300] if response.text.strip() else ""
                    raise LabError(f"the inference server at {self.base_url} answered {response.status_code} to "
                                   f"{path}: {detail}")
            time.sleep(BACKOFF_S * 2**attempt)
        raise AssertionError("unreachable")

    def served_models(self) -> list[str]:
        return [m.get("id", "") for m in self.request("GET", "/models").get("data", [])]


def split_model(fragment: str) -> tuple[str, str]:
    """``MODEL?tokenizer=T`` -> (MODEL, T); the tokenizer defaults to the model name."""
    if TOKENIZER_MARK in fragment:
        model, tokenizer = fragment.split(TOKENIZER_MARK, 1)
        return model, tokenizer
    return fragment, fragment


class RemoteEngine(Backend):
    """A served model: generation always, token log-probs when the server returns them, no internals."""

    capabilities = frozenset({"generate"})  # "logprobs" is added when the server echoes prompt log-probs

    def __init__(self, server: Server, model: str, tokenizer: Any, info: ModelInfo, prompt_format: PromptFormat):
        super().__init__(tokenizer, info, prompt_format)
        self.server = server
        self.model_name = model
        self.token_prompts = True  # False when the server takes text prompts only (checked at load)
        self.echo_shift = 0  # 1 when the server's echo leaves out the BOS (llama.cpp): our token j is its j-1
        self.greedy: dict[str, Any] = {"temperature": 0.0, **GREEDY_EXTRAS}  # trimmed at load if refused

    def payload(self, row: Sequence[int]) -> list[int] | str:
        """A row as the ``prompt`` of a request: its ids, or (text-only servers) its text without our BOS."""
        if self.token_prompts:
            return list(row)
        bos = self.tokenizer.bos_token_id
        ids = list(row[1:]) if bos is not None and row and row[0] == bos else list(row)
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        choices = self.server.request("POST", "/completions", {"model": self.model_name, **body}).get("choices")
        if not choices:
            raise LabError(f"the inference server at {self.server.base_url} returned no completion")
        return choices[0]

    def _many(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Concurrent requests, answers in order."""
        with self.lock, ThreadPoolExecutor(CONCURRENCY) as pool:
            return list(pool.map(self._completion, bodies))

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 24, desc: str | None = None,
                 temperature: float = 0.0, seed: int = 0) -> list[str]:
        """Completions of each prompt's token ids: greedy, or sampled at ``temperature`` with ``seed``."""
        sampling = {"temperature": temperature, "seed": seed} if temperature > 0 else self.greedy
        return self._complete(prompts, max_new_tokens, [sampling] * len(prompts))

    def sample(self, prompts: Sequence[str], n: int, max_new_tokens: int = 24, temperature: float = 1.0,
               seed: int = 0, desc: str | None = None) -> list[list[str]]:
        """``n`` draws per prompt, each a request with a seed of its own (``seed``, ``seed + 1``, ...): a server
        draws the same answer again for the same prompt and seed."""
        flat = self._complete([p for p in prompts for _ in range(n)], max_new_tokens,
                              [{"temperature": temperature, "seed": seed + j} for _ in prompts for j in range(n)])
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _complete(self, prompts: Sequence[str], max_new_tokens: int, samplings: list[dict[str, Any]]) -> list[str]:
        """One completion per prompt, each with its own sampling settings, answers in order."""
        bodies = [{"prompt": self.payload(self.encode(p)), "max_tokens": max_new_tokens, **sampling}
                  for p, sampling in zip(prompts, samplings)]
        return [choice.get("text", "").strip() for choice in self._many(bodies)]

    def token_scores(self, rows: Sequence[Sequence[int]], starts: Sequence[int], distribution: bool = False,
                     desc: str | None = None) -> list[TokenScores]:
        """Prompt log-probs echoed by the server for each row; the top candidate gives the greedy match."""
        self.require("logprobs", "scoring given text")
        if distribution:
            self.require("internals", "Min-K%++ (full-vocabulary statistics)")
        for row, start in zip(rows, starts):
            if not 1 <= start < len(row):
                raise ValueError("every row needs a non-empty prefix and a non-empty target")
        bodies = [{"prompt": self.payload(row), "max_tokens": 1, "echo": True, "logprobs": 1, **self.greedy}
                  for row in rows]
        return [self._scores(choice, row, start) for choice, row, start in zip(self._many(bodies), rows, starts)]

    def _scores(self, choice: dict[str, Any], row: Sequence[int], start: int) -> TokenScores:
        length = len(row)
        logprobs = choice.get("logprobs") or {}
        shift = self.echo_shift
        values = logprobs.get("token_logprobs") or []
        tops = logprobs.get("top_logprobs") or []
        if len(values) < length - shift:
            raise LabError(f"the inference server at {self.server.base_url} returned {len(values)} prompt log-probs "
                           f"for {length} tokens: it does not echo prompt log-probs (llama.cpp: start it with "
                           "logits_all; vLLM: any recent version)")
        if not self.token_prompts and not self.same_tokens(row[shift:], logprobs.get("tokens") or []):
            raise LabError(f"the inference server at {self.server.base_url} split a text prompt into other tokens "
                           "than the local tokenizer: serve the model with the tokenizer named in the reference")
        picked = np.asarray([float(v) for v in values[start - shift:length - shift]], dtype=float)
        match = [bool(top) and math.isclose(max(top.values()), value, abs_tol=1e-5)
                 for top, value in zip(tops[start - shift:length - shift], picked)] if tops else [False] * len(picked)
        return TokenScores(picked, greedy_match=np.asarray(match, dtype=bool))

    def same_tokens(self, ids: Sequence[int], echoed: Sequence[str]) -> bool:
        """The server's echoed tokens (of a text prompt) are our ``ids``, piece by piece."""
        return list(echoed[:len(ids)]) == [self.tokenizer.decode([i]) for i in ids]


def probe_prompts(engine: RemoteEngine) -> None:
    """Token-id prompts when the server takes them, else text prompts; the greedy extras when it takes them
    (a few small requests; when every way fails, the last error is the server's answer)."""
    row = engine.encode("a b c")
    plain = {"temperature": 0.0}
    last: LabError | None = None
    for token_prompts, greedy in ((True, engine.greedy), (False, engine.greedy), (True, plain), (False, plain)):
        engine.token_prompts, engine.greedy = token_prompts, greedy
        try:
            engine._completion({"prompt": engine.payload(row), "max_tokens": 1, **greedy})
            return
        except LabError as exc:
            last = exc
    raise last


def probe_logprobs(engine: RemoteEngine) -> bool:
    """Whether the server echoes prompt log-probs for exactly our tokens (one small request), and how its echo
    lines up with our row: every prompt token (vLLM: BOS first, then the generated token), or every token
    after the BOS (llama.cpp's server through llama-cpp-python)."""
    row = engine.encode("The capital of France is Paris.")
    try:
        choice = engine._completion({"prompt": engine.payload(row), "max_tokens": 1, "echo": True, "logprobs": 1,
                                     **engine.greedy})
    except LabError:
        return False
    echoed = choice.get("logprobs") or {}
    values, tokens = echoed.get("token_logprobs") or [], echoed.get("tokens") or []
    if engine.same_tokens(row, tokens):
        engine.echo_shift = 0
    elif engine.same_tokens(row[1:], tokens):
        engine.echo_shift = 1
    else:  # other tokens: the server tokenizes differently, so its log-probs are not of our tokens
        return False
    return all(v is not None for v in values[2 - engine.echo_shift:len(row) - engine.echo_shift])


def load_remote(parsed: ModelRef, prompt_format: PromptFormat) -> RemoteEngine:
    """A served model, checked: the server answers, serves the model, and the tokenizer loads locally."""
    model, tokenizer_ref = split_model(parsed.model)
    server = Server(parsed.location)
    served = server.served_models()
    if model not in served:
        raise LabError(f"the inference server at {parsed.location} does not serve '{model}' (it serves: "
                       f"{', '.join(served) or 'nothing'})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_ref)
    except Exception as exc:  # noqa: BLE001 - a missing or broken tokenizer fails in many ways
        raise LabError(f"'{parsed.text}': the tokenizer '{tokenizer_ref}' does not load locally "
                       f"({type(exc).__name__}); name one with #{model}{TOKENIZER_MARK}PATH_OR_HUB_ID") from None
    digest = hashlib.sha256(f"{parsed.location}#{model}".encode()).hexdigest()[:16]
    info = ModelInfo(ref=parsed.text, path=parsed.location, content_hash=f"remote:{digest}", device="remote",
                     dtype="server", parameters=0, architecture="served model",
                     extra={"server": parsed.location, "model": model, "tokenizer": tokenizer_ref})
    engine = RemoteEngine(server, model, tokenizer, info, prompt_format)
    probe_prompts(engine)
    if probe_logprobs(engine):
        engine.capabilities = frozenset({"generate", "logprobs"})
    info.extra["capabilities"] = sorted(engine.capabilities)
    return engine
