"""What every browser session of the web lab shares: loaded models, the store, stop buttons, the demo world.

One process serves many browser sessions.  Loaded models live in a small LRU
cache keyed by everything that defines them, so sessions that audit the same
pair share its weights; a session only remembers *which* pair it chose (a
:class:`PairSpec` in its ``gr.State``) and gets it back from the cache, reloaded
if it was evicted.  Every result goes through one :class:`~lab.core.store.Store` (one
DuckDB connection behind a lock): the single writer that keeps concurrent runs
from losing rows.  A handler reads and writes it through :meth:`Lab.view`: in a
hosted Space that is the visitor's own view (their runs and sweeps, and those
no visitor made: the demo's), so one visitor never opens another's uploaded
questions, answers or outputs.  Short events that call a model (loading a pair, the Probe) share one
Gradio concurrency group (:data:`MODEL_QUEUE`) and run one at a time; long work (runs, sweeps, the Internals
views) takes turns in :attr:`Lab.turns`, several side by side (:mod:`lab.shell.ui.turns`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any, Callable, Hashable

import gradio as gr

from audits.base import ModelLoader
from lab.core import settings
from lab.core.backend import Backend
from lab.core.errors import LabError
from lab.core.prompts import PromptFormat
from lab.core.models import ModelPair, load_engine
from lab.core.policy import current as current_policy
from lab.core.refs import DEMO_PREFIX
from lab.core.store import Store
from lab.shell.spec import PairSpec, build_spec
from lab.shell.ui.demo_world import DemoWorlds
from lab.shell.ui.turns import Turns

MODEL_QUEUE = "model"  # Gradio concurrency_id of the short events that run a model (long work: lab.shell.ui.turns)
DEMO_UNLEARNED = ("npo", "graddiff", "ga", "npo_small", "graddiff_small", "rmu", "idk", "retrain")


def demo_pair(unlearned: str = DEMO_UNLEARNED[0], **fields: object) -> PairSpec:
    """The demo's base against one of its unlearned models (other pair fields as given)."""
    return build_spec(PairSpec, {**fields, "base": f"{DEMO_PREFIX}base", "unlearned": f"{DEMO_PREFIX}{unlearned}"},
                      "the demo pair")


class Lab:
    """The process-wide state behind the UI: engine cache, store writer, stop events."""

    def __init__(self, db_path: str | Path | None = None, max_engines: int = 4):
        self.demo = DemoWorlds()  # which demo world demo:<name> means, and the full one's background build
        self.store = Store(db_path or settings.default_db())
        self.max_engines = max_engines
        self._engines: OrderedDict[tuple, Backend] = OrderedDict()
        self._loading = threading.Lock()
        self._stops: dict[str, threading.Event] = {}
        self._stops_lock = threading.Lock()
        self._memo: OrderedDict[Hashable, Any] = OrderedDict()
        self._memo_lock = threading.Lock()
        self._computing: dict[Hashable, threading.Lock] = {}
        self.max_memo = 4
        # Long jobs side by side: as many as pairs the engine cache holds, unless LAB_MODEL_SLOTS says.
        self.turns = Turns(settings.model_slots() or max(1, max_engines // 2))

    def close(self) -> None:
        self.demo.close()
        self.store.close()

    def view(self, request: Any) -> Store:
        """The store as the browser session of ``request`` (a ``gr.Request``) may see and write it: all of it
        in the local lab; in a Space the visitor's own runs and those no visitor made (the demo's).  A Space
        request without a session sees nothing."""
        if not current_policy().space:
            return self.store
        return self.store.for_visitor(getattr(request, "session_hash", None) or "")

    # ------------------------------------------------------------------ models
    def engine(self, ref: str, spec: PairSpec) -> Backend:
        """A loaded engine for ``ref`` (under the run policy) where and as ``spec`` says, from the cache when
        its weights were loaded before: the cache keys what decides the weights, and the prompt format is a
        view on them (:meth:`lab.core.backend.Backend.formatted`), so changing it reloads nothing."""
        policy = current_policy()
        location = policy.check_ref(ref).location
        policy.check_remote_code(spec.trust_remote_code)
        key = (ref.strip(), location, spec.device, spec.dtype, spec.device_map, spec.trust_remote_code)
        with self._loading:
            if key in self._engines:
                self._engines.move_to_end(key)
                return self._engines[key].formatted(spec.prompt_format)
            engine = load_engine(ref, spec.device, spec.dtype, spec.trust_remote_code, PromptFormat(), policy,
                                 spec.device_map)
            self._engines[key] = engine
            while len(self._engines) > self.max_engines:
                self._engines.popitem(last=False)  # a job still holding it keeps it alive until done
            return engine.formatted(spec.prompt_format)

    def context(self, ref: str | None) -> int | None:
        """The context length of ``ref`` when a loaded engine has its weights (any device), else None: what
        bounds a form's answer length before a run loads anything."""
        ref = (ref or "").strip()
        return next((e.context for key, e in list(self._engines.items()) if key[0] == ref and e.context), None)

    def loader(self, spec: PairSpec) -> ModelLoader:
        """The runner's model loader for runs on this session's pair: the cache, on the pair's device, in its
        prompt format."""
        return partial(self.engine, spec=spec)

    def pair(self, spec: PairSpec) -> ModelPair:
        """The base and unlearned engines of ``spec``, checked to share a tokenizer."""
        policy = current_policy()
        policy.check_ref(spec.base), policy.check_ref(spec.unlearned)  # both checked before loading either
        load = self.loader(spec)
        return ModelPair(load(spec.base), load(spec.unlearned))

    def remember(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()`` computed once per key and kept (a few at most): analyses reused across requests.

        Jobs run side by side (:mod:`lab.shell.ui.turns`): a second job asking for a key being computed waits for
        that result instead of computing it again; other keys go on meanwhile.
        """
        with self._memo_lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
            computing = self._computing.setdefault(key, threading.Lock())
        with computing:
            with self._memo_lock:
                if key in self._memo:
                    return self._memo[key]
            value = make()
            with self._memo_lock:
                self._memo[key] = value
                self._computing.pop(key, None)
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


def stop_button(lab: Lab, button: gr.Button, api_name: str | None = None) -> None:
    """``button`` stops this browser session's running job (a run, a sweep, a view) before its next step, or
    its wait for a turn (``api_name``: offered to API clients under that name)."""

    def on_stop(request: gr.Request) -> None:
        lab.stop(request.session_hash)

    button.click(on_stop, None, None, queue=False,
                 **({"api_name": api_name} if api_name else {"api_visibility": "private"}))


def require_pair(lab: Lab, spec: PairSpec | None) -> ModelPair:
    """The session's pair, or a clear message telling the user to load one first."""
    if spec is None:
        raise LabError("no models loaded yet: load a pair on the Models tab first")
    return lab.pair(spec)
