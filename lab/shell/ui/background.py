"""Long work (a run, a sweep) in a worker thread, its progress events streamed to a Gradio generator.

The runner and the sweep report progress through callbacks on the thread that
does the work; a Gradio handler streams to the page only by yielding.  This
joins the two: :func:`in_background` runs ``work(emit)`` on a thread and
yields every event it emits, then the work's result (a :class:`Finished`),
or raises its error on the handler's thread, where the error boundary
(:mod:`lab.shell.ui.feedback`) turns it into a message.  :func:`progress_html`
draws one bar over the whole job (step k of n, fact checks done, elapsed, time
left).  A *fact check* is one fact under one audit: the runner hands each audit
the facts of the kinds it uses, so a run of 30 facts and 4 audits is 120 checks.
The runner reports whole audits only, so checks advance an audit at a time.
"""

from __future__ import annotations

import html
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

R = TypeVar("R")
_DONE = object()


@dataclass(frozen=True)
class Finished(Generic[R]):
    """The work's return value (the last thing :func:`in_background` yields)."""

    value: R


def in_background(work: Callable[[Callable[[Any], None]], R], name: str = "lab-job") -> Iterator[Any]:
    """Run ``work(emit)`` on a thread; yield what it emits as it comes, then ``Finished(result)``."""
    events: queue.Queue = queue.Queue()

    def target() -> None:
        try:
            events.put(Finished(work(events.put)))
        except BaseException as error:  # noqa: BLE001 - raised again on the reading thread
            events.put(error)
        finally:
            events.put(_DONE)

    threading.Thread(target=target, daemon=True, name=name).start()
    while (item := events.get()) is not _DONE:
        if isinstance(item, BaseException):
            raise item
        yield item


def clock(seconds: float) -> str:
    """``1:05`` for 65 seconds (``1:02:05`` past an hour)."""
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def time_left(done: int, total: int, elapsed: float) -> str:
    """The time left at the pace so far, or "" before the first step finished."""
    if done <= 0 or done >= total:
        return ""
    return f"about {clock(elapsed / done * (total - done))} left"


def checks_text(checks: tuple[int, int] | None) -> str:
    """``120 of 400 fact checks`` (see the module docstring), or "" while the facts are not known yet: the
    page never shows a count the runner did not give."""
    if checks is None or checks[1] <= 0:
        return ""
    return f"{checks[0]} of {checks[1]} fact checks"


def bar_html(done: float, total: float, parts: list[str], css: str = "") -> str:
    """A progress bar at ``done`` of ``total`` with its text (the non-empty ``parts``, escaped, joined by dots)."""
    share = done / total if total else 0.0
    text = " · ".join(html.escape(p) for p in parts if p)
    return (f"<div class='lab-progress {css}'{' ' if css else ''}role='progressbar' aria-valuemin='0' "
            f"aria-valuemax='{total:g}' aria-valuenow='{done:g}'><div class='lab-progress-bar'><span "
            f"style='width:{share:.1%}'></span></div><div class='lab-progress-text'>{text}</div></div>")


def progress_html(done: int, total: int, started: float, doing: str, unit: str = "audit",
                  checks: tuple[int, int] | None = None) -> str:
    """One bar over the whole job: ``audit 3 of 8 · 60 of 240 fact checks · npo: reasoning · 0:42 elapsed ·
    about 1:10 left``; ``checks`` is (done, in all), None when unknown."""
    elapsed = time.monotonic() - started
    step = min(done + 1, total)
    return bar_html(done, total, [f"{unit} {step} of {total}" if done < total else f"{total} of {total} {unit}s done",
                                  checks_text(checks), doing, f"{clock(elapsed)} elapsed",
                                  time_left(done, total, elapsed)])


def phase_html(what: str, done: int, total: int, started: float, since: float) -> str:
    """A bar over the step of work in hand, for work that reports its steps as it goes (an Internals view):
    ``training the SAE: 120 of 400 · 1:02 elapsed · about 2:30 left``; ``started``: the whole job's start,
    ``since``: this step's (its pace gives the time left)."""
    now = time.monotonic()
    return bar_html(done, total, [f"{what}: {done} of {total}", f"{clock(now - started)} elapsed",
                                  time_left(done, total, now - since)])


def waiting_html(note: str) -> str:
    """A job waiting for its turn (:mod:`lab.shell.ui.turns`): an empty bar and where it stands."""
    return bar_html(0, 1, [note], css="lab-waiting")
