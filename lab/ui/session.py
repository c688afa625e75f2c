"""What every browser session of the web lab shares: loaded models, the store, stop buttons.

One process serves many browser sessions.  Loaded models live in a small LRU
cache keyed by everything that defines them, so sessions that audit the same
pair share its weights; a session only remembers *which* pair it chose (a
:class:`PairSpec` in its ``gr.State``) and gets it back from the cache, reloaded
if it was evicted.  Every result goes through one :class:`~lab.store.Store` (one
DuckDB connection behind a lock): the single writer that keeps concurrent runs
from losing rows.  Events that call a model also share one Gradio concurrency
group (:data:`MODEL_QUEUE`), so model calls run one at a time, in arrival order.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable

from lab import settings
from lab.engine import Engine
from lab.errors import LabError
from lab.models import DEMO_PREFIX, ModelPair, load_engine, resolve_ref
from lab.store import Store

MODEL_QUEUE = "model"  # Gradio concurrency_id of every event that runs a model
DEMO_UNLEARNED = ("npo", "graddiff", "ga", "retrain")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


@dataclass(frozen=True)
class Limits:
    """Per-request limits: generous locally, tight in a hosted Space (``LAB_SPACE=1``)."""

    max_new_tokens: int
    max_prompt_chars: int
    max_upload: str | None
    server_paths: bool  # may a user name files and model folders on the server?
    remote_code: bool  # may a user allow model code from the hub?


def limits() -> Limits:
    if settings.space_mode():
        return Limits(max_new_tokens=64, max_prompt_chars=2_000, max_upload="10mb", server_paths=False,
                      remote_code=False)
    return Limits(max_new_tokens=512, max_prompt_chars=20_000, max_upload=None, server_paths=True, remote_code=True)


def check_model_ref(ref: str) -> str:
    """A model reference a user may load here: any in local mode; in a Space only what looks like a hub id.

    ``load_engine`` itself refuses server paths in Space mode; this also refuses malformed ids early.
    """
    ref = ref.strip()
    if not ref:
        raise LabError("give a model: a Hugging Face id, a local directory or demo:<name>")
    if limits().server_paths or ref.startswith(DEMO_PREFIX):
        return ref
    if not HUB_ID.match(ref) or ".." in ref:
        raise LabError(f"'{ref}' is not a Hugging Face model id (owner/name); server paths are disabled here")
    return ref


@dataclass(frozen=True)
class PairSpec:
    """Everything that defines a loaded base/unlearned pair (what a session remembers)."""

    base: str
    unlearned: str
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False

    @classmethod
    def demo(cls, unlearned: str = DEMO_UNLEARNED[0], device: str = "auto", dtype: str = "auto") -> "PairSpec":
        return cls(f"{DEMO_PREFIX}base", f"{DEMO_PREFIX}{unlearned}", device, dtype)

    @property
    def is_demo(self) -> bool:
        return self.base.startswith(DEMO_PREFIX) and self.unlearned.startswith(DEMO_PREFIX)

    @property
    def label(self) -> str:
        return f"{self.base} → {self.unlearned}"


class Lab:
    """The process-wide state behind the UI: engine cache, store writer, stop events."""

    def __init__(self, db_path: str | Path | None = None, max_engines: int = 4):
        self.store = Store(db_path or settings.default_db())
        self.max_engines = max_engines
        self._engines: OrderedDict[tuple, Engine] = OrderedDict()
        self._loading = threading.Lock()
        self._stops: dict[str, threading.Event] = {}
        self._stops_lock = threading.Lock()
        self._memo: OrderedDict[Hashable, Any] = OrderedDict()
        self.max_memo = 4

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------ models
    def engine(self, ref: str, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False) -> Engine:
        """A loaded engine for ``ref``, from the cache when the same model was loaded before."""
        ref = check_model_ref(ref)
        if trust_remote_code and not limits().remote_code:
            raise LabError("trusting remote model code is disabled here")
        key = (ref, resolve_ref(ref), device, dtype, trust_remote_code)
        with self._loading:
            if key in self._engines:
                self._engines.move_to_end(key)
                return self._engines[key]
            engine = load_engine(ref, device, dtype, trust_remote_code)
            self._engines[key] = engine
            while len(self._engines) > self.max_engines:
                self._engines.popitem(last=False)  # a job still holding it keeps it alive until done
            return engine

    def pair(self, spec: PairSpec) -> ModelPair:
        """The base and unlearned engines of ``spec``, checked to share a tokenizer."""
        check_model_ref(spec.base), check_model_ref(spec.unlearned)
        resolve_ref(spec.base), resolve_ref(spec.unlearned)  # both checked before loading either
        args = (spec.device, spec.dtype, spec.trust_remote_code)
        return ModelPair(self.engine(spec.base, *args), self.engine(spec.unlearned, *args))

    def remember(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()`` computed once per key and kept (a few at most): analyses reused across requests.

        Called from model events only, which run one at a time, so no two threads compute one key.
        """
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        value = self._memo[key] = make()
        while len(self._memo) > self.max_memo:
            self._memo.popitem(last=False)
        return value

    # ------------------------------------------------------------------- stops
    def stop_event(self, session: str) -> threading.Event:
        """A cleared stop event for a new job of this browser session."""
        with self._stops_lock:
            event = self._stops.setdefault(session, threading.Event())
            event.clear()
            return event

    def stop(self, session: str) -> bool:
        """Ask the session's running job to stop before its next batch; False if none was started."""
        with self._stops_lock:
            event = self._stops.get(session)
        if event is None:
            return False
        event.set()
        return True


def require_pair(lab: Lab, spec: PairSpec | None) -> ModelPair:
    """The session's pair, or a clear message telling the user to load one first."""
    if spec is None:
        raise LabError("no models loaded yet: load a pair on the Models tab first")
    return lab.pair(spec)
