"""The one place that picks batch sizes and backs off on out-of-memory.

Every model call in the lab goes through :func:`run_batched`: rows are sorted
by length (little padding), cut into batches under a token budget, and a batch
that runs out of memory is split in half and retried, shrinking the budget for
the rest of the call.  Results come back in the caller's order.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Sequence, TypeVar

from tqdm.auto import tqdm

from lab.core.errors import is_oom

T = TypeVar("T")
_cancel = threading.local()
_listener = threading.local()
Listener = Callable[[str, int, int], None]  # (what, done, total) of a step of work


class Cancelled(KeyboardInterrupt):
    """The caller asked to stop (the UI's Stop button).

    A ``KeyboardInterrupt`` so that it passes through audits' ``except Exception``
    and the runner marks the run interrupted, exactly as Ctrl-C does in the CLI.
    """


@contextmanager
def _on_this_thread(local: threading.local, value: object) -> Iterator[None]:
    """``local.value`` is ``value`` on this thread within the block, and what it was before after it."""
    previous = getattr(local, "value", None)
    local.value = value
    try:
        yield
    finally:
        local.value = previous


def cancellable(stop: threading.Event) -> ContextManager[None]:
    """Within this block, batched calls on this thread stop before their next batch once ``stop`` is set."""
    return _on_this_thread(_cancel, stop)


def check_cancelled() -> None:
    """Raise :class:`Cancelled` if this thread's stop event (see :func:`cancellable`) is set."""
    stop = getattr(_cancel, "value", None)
    if stop is not None and stop.is_set():
        raise Cancelled("stopped by the user")


def reporting(listener: Listener) -> ContextManager[None]:
    """Within this block, work on this thread tells ``listener(what, done, total)`` how far it got: every
    named batched call after each batch, and long loops such as SAE training (:func:`report`).  A page that
    does not drive the work step by step (the web lab's Internals views) shows its progress this way."""
    return _on_this_thread(_listener, listener)


def report(what: str, done: int, total: int) -> None:
    """Tell this thread's listener (see :func:`reporting`), if any, that ``done`` of ``total`` steps of ``what``
    are done."""
    listener = getattr(_listener, "value", None)
    if listener is not None:
        listener(what, done, total)


@dataclass
class BatchPolicy:
    """Token budget per batch (rows x longest row) and a cap on rows."""

    max_tokens: int = 8192
    max_rows: int = 128



def plan_batches(lengths: Sequence[int], policy: BatchPolicy) -> list[list[int]]:
    """Indices grouped into batches, longest first, each within the budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = lengths[current[0]] if current else lengths[index]
        if current and ((len(current) + 1) * width > policy.max_tokens or len(current) >= policy.max_rows):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def run_batched(
    lengths: Sequence[int],
    fn: Callable[[list[int]], list[T]],
    policy: BatchPolicy,
    desc: str | None = None,
) -> list[T]:
    """Call ``fn`` on batches of indices; return one result per index, in order."""
    results: list[T | None] = [None] * len(lengths)
    pending = plan_batches(lengths, policy)
    bar = tqdm(total=len(lengths), desc=desc, disable=desc is None or len(lengths) < 2, leave=False)
    finished = 0
    try:
        while pending:
            check_cancelled()
            batch = pending.pop(0)
            try:
                outputs = fn(batch)
            except Exception as error:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not is_oom(error) or len(batch) == 1:
                    raise
                import torch  # loaded by whatever ran out of memory; the command line's stop needs no torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                policy.max_tokens = max(1, policy.max_tokens // 2)
                half = len(batch) // 2
                pending[:0] = [batch[:half], batch[half:]]
                continue
            for index, output in zip(batch, outputs):
                results[index] = output
            bar.update(len(batch))
            finished += len(batch)
            if desc:
                report(desc, finished, len(lengths))
    finally:
        bar.close()  # a stopped run leaves no half-drawn bar before its message
    return results  # type: ignore[return-value]
