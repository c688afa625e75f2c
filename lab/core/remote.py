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
- ``exact_tokens``: ``logprobs`` of any row, when the server takes token-id
  prompts; a text-only server splits a row's text again, so rows that are not
  the tokenizer's own split (an answer followed by EOS, a prompt with tokens
  taken out) cannot be scored there, and the audits that build them
  (``Audit.needs``) are skipped with the reason;
- no ``internals``: audits that need weights or activations are not offered.

Every wait is bounded and the bound is stated in the message that reports it:
connecting (``CONNECT_S``), the next bytes of an answer (``PROBE_READ_S``
while the model loads, ``READ_S`` for work), and one request in all
(``TOTAL_S``).  Connection errors, 429 and 5xx are retried with exponential
back-off until ``RETRIES`` tries or ``RETRY_BUDGET_S`` seconds; a server that
accepted a request and did not answer in time is not asked again.  Answers are
checked at this boundary: a redirect, a body that is not a JSON object, a
``/models`` list of another shape, a completion without text, log-probs that
are not numbers: each is one line naming the server and what it sent.  A
server that lacks a feature is a one-line error too.
"""

from __future__ import annotations

import hashlib
import json
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
RETRIES = 4  # tries after the first, on connection errors, 429 and 5xx
RETRY_BUDGET_S = 30.0  # no retry starts once a request has spent this long
BACKOFF_S = 0.5  # first wait; doubles with each retry
CONNECT_S = 5.0  # a server that does not accept a connection in this long is unreachable
PROBE_READ_S = 10.0  # while the model loads (/models, one-token probes), a live server answers at once
READ_S = 120.0  # during work: the longest wait for the next bytes of an answer (a long batch of generations)
TOTAL_S = 600.0  # one request in all, however slowly its bytes trickle in
MAX_ANSWER_BYTES = 256 * 1024 * 1024  # a larger answer is not one the lab asked for
TOKENIZER_MARK = "?tokenizer="
# Greedy means the plain argmax: llama.cpp's server penalises repeats by default (repeat_penalty 1.1), which
# changes greedy answers; a server that refuses the field (checked once at load) gets requests without it.
GREEDY_EXTRAS = {"repeat_penalty": 1.0}


def api_key() -> str | None:
    return os.environ.get("LAB_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


class Refused(LabError):
    """The server answered the request with an error status (it lacks a feature, or refused the body)."""


def shown(data: bytes | str, limit: int = 80) -> str:
    """The start of what a server sent, for a one-line message."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


class Server:
    """One OpenAI-compatible server: JSON requests with bounded waits, bounded retries and checked answers."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(limits=httpx.Limits(max_connections=CONCURRENCY * 2), follow_redirects=False)
        self.read_s = PROBE_READ_S  # raised to READ_S once the model has loaded (see load_remote)

    def fail(self, path: str, what: str) -> LabError:
        return LabError(f"the inference server at {self.base_url}, asked {path}, {what}")

    def _send(self, method: str, path: str, body: dict[str, Any] | None,
              headers: dict[str, str]) -> tuple[int, httpx.Headers, bytes]:
        """One request whose every wait is bounded (connecting, each read, the whole answer): its status,
        headers and body."""
        timeout = httpx.Timeout(self.read_s, connect=CONNECT_S)
        deadline = time.monotonic() + TOTAL_S
        with self.client.stream(method, f"{self.base_url}{path}", json=body, headers=headers,
                                timeout=timeout) as response:
            content = bytearray()
            for chunk in response.iter_bytes():
                content += chunk
                if time.monotonic() > deadline:
                    raise self.fail(path, f"took longer than {TOTAL_S:.0f} s to answer (the lab's limit per "
                                          "request)")
                if len(content) > MAX_ANSWER_BYTES:
                    raise self.fail(path, f"sent an answer larger than {MAX_ANSWER_BYTES >> 20} MiB")
            return response.status_code, response.headers, bytes(content)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON object one request answers; transient failures are retried (within ``RETRIES`` and
        ``RETRY_BUDGET_S``), everything else is a one-line error naming the server and what it sent."""
        key = api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        started = time.monotonic()
        for attempt in range(RETRIES + 1):
            last = attempt == RETRIES or time.monotonic() - started > RETRY_BUDGET_S
            try:
                status, answer_headers, content = self._send(method, path, body, headers)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout):
                    if last:
                        raise self.fail(path, f"did not accept a connection within {CONNECT_S:.0f} s "
                                              f"({attempt + 1} tries)") from None
                else:
                    raise self.fail(path, f"accepted the request but sent no answer within {self.read_s:.0f} s "
                                          "(the lab's read timeout; a busy or stuck server)") from None
            except httpx.TransportError as exc:
                if last:
                    raise LabError(f"cannot reach the inference server at {self.base_url} "
                                   f"({type(exc).__name__}: {exc}; {attempt + 1} tries)") from None
            else:
                if 300 <= status < 400:
                    where = answer_headers.get("location", "elsewhere")
                    raise self.fail(path, f"answered {status}, a redirect to {shown(where, 120)}: give the "
                                          "server's own base URL (the lab does not follow redirects)")
                if status < 300:
                    return self._json(answer_headers, content, path)
                if status != 429 and status < 500 or last:
                    raise Refused(f"the inference server at {self.base_url} answered {status} to {path}: "
                                  f"{shown(content, 200)}")
            time.sleep(BACKOFF_S * 2**attempt)
        raise AssertionError("unreachable")

    def _json(self, headers: httpx.Headers, content: bytes, path: str) -> dict[str, Any]:
        """The answer as a JSON object, or one line saying what the server sent instead."""
        kind = headers.get("content-type", "no content type").split(";")[0]
        try:
            data = json.loads(content)
        except (ValueError, RecursionError):
            raise self.fail(path, f"answered with something that is not JSON ({kind}: {shown(content)})") from None
        if not isinstance(data, dict):
            raise self.fail(path, f"answered with a JSON {type(data).__name__} where an object was expected "
                                  f"({shown(content)})")
        return data

    def served_models(self) -> list[str]:
        """The model ids ``/models`` lists (an object whose ``data`` holds objects with an ``id``)."""
        data = self.request("GET", "/models").get("data")
        if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
            raise self.fail("/models", f"sent a model list of another shape (data: {shown(json.dumps(data))}); an "
                                       "OpenAI-compatible server lists objects with an id")
        return [m["id"] for m in data]


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
        """The first choice of a completion, checked: an object with a text."""
        choices = self.server.request("POST", "/completions", {"model": self.model_name, **body}).get("choices")
        if not choices:
            raise LabError(f"the inference server at {self.server.base_url} returned no completion")
        choice = choices[0] if isinstance(choices, list) else None
        if not isinstance(choice, dict) or not isinstance(choice.get("text"), str):
            raise self.server.fail("/completions", f"sent a completion without text "
                                                   f"({shown(json.dumps(choices, default=str))})")
        return choice

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
        return [choice["text"].strip() for choice in self._many(bodies)]

    def token_scores(self, rows: Sequence[Sequence[int]], starts: Sequence[int], distribution: bool = False,
                     desc: str | None = None, edit_batch: Any = None) -> list[TokenScores]:
        """Prompt log-probs echoed by the server for each row; the top candidate gives the greedy match."""
        self.require("logprobs", "scoring given text")
        if edit_batch is not None:
            self.require("internals", "editing the residual stream")
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
        logprobs = echoed(self.server, choice)
        shift = self.echo_shift
        values = logprobs["token_logprobs"]
        tops = logprobs["top_logprobs"]
        if len(values) < length - shift:
            raise LabError(f"the inference server at {self.server.base_url} returned {len(values)} prompt log-probs "
                           f"for {length} tokens: it does not echo prompt log-probs (llama.cpp: start it with "
                           "logits_all; vLLM: any recent version)")
        if not self.token_prompts and not self.same_tokens(row[shift:], logprobs["tokens"]):
            raise LabError(f"the inference server at {self.server.base_url} split a text prompt into other tokens "
                           "than the local tokenizer: serve the model with the tokenizer named in the reference")
        wanted = values[start - shift:length - shift]
        if any(v is None for v in wanted):
            raise self.server.fail("/completions", "sent no log-prob for some prompt tokens")
        picked = np.asarray(wanted, dtype=float)
        match = [bool(top) and math.isclose(max(top.values()), value, abs_tol=1e-5)
                 for top, value in zip(tops[start - shift:length - shift], picked)] if tops else [False] * len(picked)
        return TokenScores(picked, greedy_match=np.asarray(match, dtype=bool))

    def same_tokens(self, ids: Sequence[int], echoed: Sequence[str]) -> bool:
        """The server's echoed tokens (of a text prompt) are our ``ids``, piece by piece."""
        return list(echoed[:len(ids)]) == [self.tokenizer.decode([i]) for i in ids]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def echoed(server: Server, choice: dict[str, Any]) -> dict[str, list[Any]]:
    """A completion's echoed prompt log-probs, checked: ``token_logprobs`` numbers (None where a server
    scores no token, the first), ``top_logprobs`` objects of numbers, ``tokens`` strings; empty lists when
    the server sent none."""
    logprobs = choice.get("logprobs") or {}
    if not isinstance(logprobs, dict):
        raise server.fail("/completions", f"sent log-probs of another shape ({shown(json.dumps(logprobs))})")
    values = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or []
    tokens = logprobs.get("tokens") or []
    fine = (isinstance(values, list) and all(v is None or _number(v) for v in values)
            and isinstance(tops, list) and all(t is None or (isinstance(t, dict) and all(map(_number, t.values())))
                                               for t in tops)
            and isinstance(tokens, list) and all(isinstance(t, str) for t in tokens))
    if not fine:
        raise server.fail("/completions", "sent log-probs that are not numbers "
                                          f"({shown(json.dumps(logprobs, default=str))})")
    return {"token_logprobs": values, "top_logprobs": [t or {} for t in tops], "tokens": tokens}


def probe_prompts(engine: RemoteEngine) -> None:
    """Token-id prompts when the server takes them, else text prompts; the greedy extras when it takes them
    (a few small requests; when every way fails, the last error is the server's answer)."""
    row = engine.encode("a b c")
    plain = {"temperature": 0.0}
    last: Refused | None = None
    for token_prompts, greedy in ((True, engine.greedy), (False, engine.greedy), (True, plain), (False, plain)):
        engine.token_prompts, engine.greedy = token_prompts, greedy
        try:
            engine._completion({"prompt": engine.payload(row), "max_tokens": 1, **greedy})
            return
        except Refused as exc:  # another way may suit it; a silent or garbled server fails at once
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
    except Refused:
        return False  # a server that refuses echo or log-probs: generation only
    scores = echoed(engine.server, choice)  # log-probs it did send must be numbers
    values, tokens = scores["token_logprobs"], scores["tokens"]
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
    if probe_logprobs(engine):  # exact token rows only where the server reads our ids, not a text to split again
        engine.capabilities = frozenset({"generate", "logprobs", *(["exact_tokens"] if engine.token_prompts else [])})
    info.extra["capabilities"] = sorted(engine.capabilities)
    server.read_s = READ_S  # loaded: work requests may take long (a batch of long generations)
    return engine
