"""Turns for long model work (an audit run, a verdict sweep, an Internals view): how many run at once, and what a
visitor who waits for one is told.

How many at once: :func:`lab.core.settings.model_slots` jobs (two by default: the engine cache keeps four
engines, two pairs side by side).  Browser sessions share loaded weights, and every engine runs one model call
at a time under its own lock, held through a residual edit as well (``Backend.lock``, ``Engine.editing``).  So
two jobs on the same model take turns batch by batch and never see each other's edits, and jobs on different
models run side by side: a visitor's audit never waits for the whole of another visitor's audit, only for the
batch in hand.  A third job waits in line.

Why not Gradio's queue for that line: a wait in Gradio's queue shows only on the event's message place, and its
estimate is the average length of past events (a first launch's demo build made it read "1851s").  Here a
waiting job streams its own progress bar: its place in line and, from the running jobs' own progress, when a
turn should free (:meth:`Turn.wait`).  Its Stop leaves the line.

Short model events (loading a pair, the Probe) stay in Gradio's model queue, one at a time: they take seconds,
and they run between the long jobs' batches.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterator

import gradio as gr

from lab.core.batching import Cancelled
from lab.shell.ui.background import clock, waiting_html

JOB_EVENTS = dict(concurrency_id="jobs", concurrency_limit=16)  # Gradio lets this many long jobs in (then: Turns)


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``... ``11th``, ``21st``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass
class Job:
    """A running job: what it is, and the share done of the step in hand (as it reports) since that step began
    (a whole run is one step; a view's steps are its phases, such as training the SAE)."""

    kind: str
    since: float = field(default_factory=time.monotonic)
    step: str = ""
    done: float = 0.0

    def left(self, now: float) -> float | None:
        """Seconds left in the step in hand at its pace so far, or None before it reported any progress."""
        if not 0 < self.done < 1:
            return None
        return (now - self.since) / self.done * (1 - self.done)


class Turns:
    """At most ``slots`` long jobs at once; the others wait in arrival order (see the module docstring)."""

    def __init__(self, slots: int):
        self.slots = max(1, int(slots))
        self._changed = threading.Condition()
        self._running: dict[int, Job] = {}
        self._line: list[int] = []
        self._ids = itertools.count()

    def line_up(self, kind: str) -> "Turn":
        """A place in line for a job of ``kind`` (``audit``, ``sweep``, ``SAE view``); use it as a context manager,
        which leaves the line or frees the turn at the end, whatever happened."""
        return Turn(self, next(self._ids), kind)

    def waiting_note(self, ident: int) -> str:
        """Where ``ident`` stands: ``2nd in line · 2 jobs running · a turn should free in about 1:10``."""
        with self._changed:
            place = self._line.index(ident) + 1 if ident in self._line else 0
            now = time.monotonic()
            lefts = sorted(left for job in self._running.values() if (left := job.left(now)) is not None)
            running = list(self._running.values())
        kinds = ", ".join(sorted({job.kind for job in running})) or "none"
        text = f"waiting for a turn: {ordinal(place)} in line · {len(running)} running ({kinds}) · "
        if place <= len(lefts):
            return text + f"a turn should free in about {clock(lefts[place - 1])}"
        return text + "no estimate yet (the jobs ahead have not reported progress)"

    # ------------------------------------------------------------- internals
    def _join(self, ident: int) -> None:
        with self._changed:
            self._line.append(ident)

    def _try_start(self, ident: int, kind: str) -> bool:
        with self._changed:
            if self._line and self._line[0] == ident and len(self._running) < self.slots:
                self._line.pop(0)
                self._running[ident] = Job(kind)
                self._changed.notify_all()
                return True
            return False

    def _wait(self, seconds: float) -> None:
        with self._changed:
            self._changed.wait(seconds)

    def _report(self, ident: int, done: float, step: str) -> None:
        with self._changed:
            job = self._running.get(ident)
            if job is not None:
                if step != job.step:
                    job.step, job.since = step, time.monotonic()
                job.done = min(max(done, 0.0), 1.0)

    def _leave(self, ident: int) -> None:
        with self._changed:
            self._running.pop(ident, None)
            if ident in self._line:
                self._line.remove(ident)
            self._changed.notify_all()

    @property
    def running(self) -> int:
        with self._changed:
            return len(self._running)

    @property
    def waiting(self) -> int:
        with self._changed:
            return len(self._line)


@dataclass
class Turn:
    """One job's place in :class:`Turns`: wait for it, report progress while it runs, leave at the end."""

    turns: Turns
    ident: int
    kind: str

    def __enter__(self) -> "Turn":
        self.turns._join(self.ident)
        return self

    def __exit__(self, *exc: object) -> None:
        self.turns._leave(self.ident)

    def wait(self, stop: threading.Event | None = None, every: float = 1.0) -> Iterator[str]:
        """Until this job's turn comes, yield where it stands every ``every`` seconds (nothing when a slot is
        free at once); a stop asked for meanwhile leaves the line (:class:`~lab.core.batching.Cancelled`)."""
        while not self.turns._try_start(self.ident, self.kind):
            if stop is not None and stop.is_set():
                raise Cancelled("stopped while waiting for a turn")
            yield self.turns.waiting_note(self.ident)
            self.turns._wait(every)

    def progress(self, done: float, step: str = "") -> None:
        """The share done (0..1) of this job, or of its ``step`` in hand: what a waiting visitor's estimate is
        made of."""
        self.turns._report(self.ident, done, step)


def waited(turn: Turn, stop: threading.Event | None, out: Callable[..., Any]) -> Generator[Any, None, bool]:
    """A run form's updates (``out`` of its ``status``, ``progress`` and ``run``) while ``turn`` waits; returns
    whether the turn came (False: stopped while waiting, which it says).  In a handler:
    ``if not (yield from waited(turn, stop, out)): return``."""
    try:
        for note in turn.wait(stop):
            yield out(status="Waiting for a turn…", progress=waiting_html(note), run=gr.Button(interactive=False))
    except Cancelled:
        yield out(status="Stopped while waiting for a turn: nothing ran.", progress="")
        return False
    return True
