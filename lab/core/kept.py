"""Kept results: what an engine computed, given again for the same inputs while its weights are unchanged.

A sweep (or ``calibrate``) audits one base against many unlearned models, and the base's answers, scores and
states are the same in every pair.  :func:`kept` wraps an engine call so that its results are kept (whole, or
row by row), keyed by every input that decides them and by the weights' state; :class:`Results` holds them
under a byte budget.  Measured on ``calibrate`` over four unlearners: 1.66x faster, results identical
(docs/sweeps.md, "Kept results").
"""

from __future__ import annotations

import functools
import inspect
import itertools
import threading
from collections import OrderedDict
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch

from lab.core import settings
from lab.core.batching import check_cancelled

T = TypeVar("T")

KEPT_BYTES = 512 * 2**20  # what an engine's kept results may hold (see ``kept``); the least recently used go first
KEPT_STATES = 4096  # weights states an engine remembers the number of (see ``Results.canonical``)
_MISSING = object()


def frozen(value: object) -> object:
    """A call argument as a hashable key: sequences become tuples, all the way down (a flat sequence of numbers
    or strings, the common case, in one step)."""
    if isinstance(value, (list, tuple)):
        flat = tuple(value)
        try:
            hash(flat)
            return flat
        except TypeError:
            return tuple(frozen(v) for v in flat)
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    return value


def _size(value: object) -> int:
    """Roughly the bytes a kept result holds (its tensors and arrays; a small constant for the rest)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, str):
        return len(value) + 64
    if isinstance(value, (list, tuple)):
        return 64 + sum(_size(v) for v in value)
    if hasattr(value, "__dict__"):
        return 64 + sum(_size(v) for v in vars(value).values())
    return 64


def _compact(value: object) -> object:
    """A result to keep, holding only its own memory: a tensor that views a whole batch's states (one row's
    slice) is copied out, so keeping the row does not keep the batch."""
    if isinstance(value, torch.Tensor) and value.untyped_storage().nbytes() > 2 * value.element_size() * value.nelement():
        return value.clone()
    return value


def kept(method: Callable[..., T] | None = None, *, decodes: bool = False, rows: tuple[str, ...] = ()) -> Any:
    """An engine call whose result is kept and given again for the same inputs while the weights are unchanged.

    A sweep (or ``calibrate``) audits one base against many unlearned models: the base's answers, scores and
    states are the same in every pair, so they are computed once.  The key is everything that decides the
    result (the method, every argument but the progress label, the prompt format, and for a call that decodes
    (``decodes=True``) its stop tokens) and the weights' state: each parameter's own number and in-place version
    (torch bumps a tensor's version on every in-place change, so quantizing, fine-tuning or wrapping layers with
    adapters changes the key and nothing is reused across it; weights restored bit for bit count as the weights
    before, see :meth:`lab.core.engine.Engine.restored_after`).  Nothing is kept or given while a residual edit is in force
    (``edit_batch``, or inside :meth:`lab.core.engine.Engine.editing`: hooks change the result, not the weights).  ``LAB_MEMO=0``
    turns keeping off.

    ``rows`` names the arguments that hold one entry per result row (prompts, token rows and their starts): such
    a call is kept row by row, so a pair that asks the base about its own targets computes only the rows no
    earlier pair asked about.  A row's result does not depend on the rows batched with it, up to float rounding:
    a CPU matrix product rounds by how many rows it multiplies (log-probs measured within 4e-6; greedy answers
    and hidden states identical).  Sampled generation (``temperature`` > 0) draws every row from one generator,
    so a sampled call is kept whole."""
    if method is None:
        return functools.partial(kept, decodes=decodes, rows=rows)
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self: Any, *args: object, **kwargs: object) -> T:  # self: an Engine (lab.core.engine)
        check_cancelled()  # a stop is honoured even where every row is kept and no batch runs
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        given = {k: v for k, v in bound.arguments.items() if k not in ("self", "desc")}
        if given.get("edit_batch") is not None or not keeping(self):
            return method(self, *args, **kwargs)
        rowwise = rows and not given.get("temperature", 0) > 0
        shared = {k: v for k, v in given.items() if not (rowwise and k in rows)}
        key = key_of(self, method.__name__, tuple(shared.items()), decodes)
        if not rowwise:
            return list(self.results.keep(key, lambda: method(self, *args, **kwargs)))  # type: ignore[arg-type]
        row_keys = [(key, frozen(entry)) for entry in zip(*(given[name] for name in rows))]

        def compute(missing: list[int]) -> list[object]:
            part = dict(given, **{name: [given[name][i] for i in missing] for name in rows})
            return method(self, **part, desc=bound.arguments.get("desc"))  # type: ignore[return-value]

        return self.results.keep_rows(row_keys, compute)  # type: ignore[return-value]

    return wrapper


def keeping(engine: Any) -> bool:
    """Whether ``engine`` may keep or give results now: not while a residual edit is in force, nor with
    ``LAB_MEMO=0``."""
    return not engine.results.editing and settings.memo_enabled()


def key_of(engine: Any, name: str, inputs: object, decodes: bool) -> tuple:
    """The key of a result of ``engine``: ``name``, the ``inputs`` that decide it, the prompt format, the stop
    tokens where it decodes, and the number of the weights it was computed on."""
    stops = tuple(engine.encoder.stop_ids) if decodes else ()
    return (name, frozen(inputs), engine.prompt_format, stops, engine.results.canonical(engine.weights_state()))


_UIDS = itertools.count()


def tensor_uid(tensor: torch.Tensor) -> int:
    """A number unique to this tensor object for the life of the process (set on it the first time it is asked)."""
    uid = getattr(tensor, "_lab_uid", None)
    if uid is None:
        uid = next(_UIDS)
        tensor._lab_uid = uid  # type: ignore[attr-defined] - tensors take Python attributes
    return uid


class Results:
    """The results an engine keeps (see :func:`kept`): whole calls and single rows, the most recently used, up
    to ``budget`` bytes."""

    def __init__(self, budget: int = KEPT_BYTES):
        self.budget = budget
        self.held = 0
        self.entries: OrderedDict[object, tuple[object, int]] = OrderedDict()  # key -> (value, its bytes)
        self.lock = threading.Lock()
        self.editing = 0  # residual edits in force on the model (Engine.editing): nothing is kept or given then
        self.aliases: dict[object, int] = {}  # a weights state -> the number of the weights it holds
        self.numbers = itertools.count()  # never reused, so forgetting the aliases can never mix up two weights

    def same_weights(self, restored: object, original: object) -> None:
        """``restored`` holds the same weights as ``original`` (see :meth:`lab.core.engine.Engine.restored_after`)."""
        self.aliases[restored] = self.canonical(original)

    def canonical(self, state: object) -> int:
        """A small number for the weights ``state`` holds (the same for states that hold the same weights): keys
        carry it instead of the state, whose tuple of every parameter would be hashed again for every row."""
        if state not in self.aliases:
            if len(self.aliases) >= KEPT_STATES:  # relearning sees new states at every step: forget, never confuse
                self.aliases.clear()
            self.aliases[state] = next(self.numbers)
        return self.aliases[state]

    def _get(self, key: object) -> object:
        """A kept value, now the most recently used (``_MISSING`` if none; the caller holds the lock)."""
        if key not in self.entries:
            return _MISSING
        self.entries.move_to_end(key)
        return self.entries[key][0]

    def _put(self, key: object, value: object) -> object:
        """Keep ``value`` (compacted), dropping the least recently used past the budget; returns what is kept
        (the caller holds the lock)."""
        value = [_compact(v) for v in value] if isinstance(value, list) else _compact(value)
        size = _size(value)
        if key not in self.entries and size <= self.budget:
            self.entries[key] = (value, size)
            self.held += size
            while self.held > self.budget:
                self.held -= self.entries.popitem(last=False)[1][1]
        return value

    def keep(self, key: object, compute: Callable[[], T]) -> T:
        """The value kept under ``key``, or ``compute()`` kept there."""
        with self.lock:
            value = self._get(key)
        if value is _MISSING:
            computed = compute()
            with self.lock:
                value = self._put(key, computed)
        return value  # type: ignore[return-value]

    def keep_rows(self, keys: Sequence[object], compute: Callable[[list[int]], list[object]]) -> list[object]:
        """One value per row key: the kept ones given, the rest computed in one call (``compute(indices)``,
        each distinct missing key once) and kept."""
        with self.lock:
            found = [self._get(key) for key in keys]
        first: dict[object, int] = {}
        for i, (key, value) in enumerate(zip(keys, found)):
            if value is _MISSING:
                first.setdefault(key, i)
        if first:
            computed = dict(zip(first, compute(list(first.values()))))
            with self.lock:
                computed = {key: self._put(key, value) for key, value in computed.items()}
            found = [computed[key] if value is _MISSING else value for key, value in zip(keys, found)]
        return found
