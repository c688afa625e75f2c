"""Errors become messages beside the control that caused them, never stack traces, and never over the user's input.

Every event handler of the lab is wrapped by a :class:`Beside`: the message
place next to one control (a button, a file picker).  The wrapper puts the
CLI's error boundary (:func:`lab.core.errors.describe`) around the handler: a
:class:`~lab.core.errors.LabError` shows its own message, running out of
memory shows what to change, and anything else (a bug) is logged with its
traceback to the lab's log file while the page gets one line naming it.

How it reaches the page without covering anything:

- the handler raises a silent ``gr.Error`` (no toast), so API clients
  (``gradio_client``) still get the failure and its message;
- the event shows its progress and error status only on the message place
  (``show_progress_on``), so no "Error" badge lands on the user's prompt or
  on a loaded pair: those keep their content;
- a ``.failure`` listener writes the message into the place, a ``.success``
  listener clears it.  The message travels through a small per-session board
  (:class:`Board`) because a failed event returns no outputs.
"""

from __future__ import annotations

import functools
import html
import inspect
import threading
from collections import OrderedDict
from typing import Any, Callable

import gradio as gr

from lab.core.errors import describe


class Board:
    """The last error message of each (browser session, control), a bounded number of them."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._messages: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def post(self, session: str, key: str, text: str) -> None:
        with self._lock:
            self._messages[(session, key)] = text
            self._messages.move_to_end((session, key))
            while len(self._messages) > self.size:
                self._messages.popitem(last=False)

    def take(self, session: str, key: str) -> str | None:
        with self._lock:
            return self._messages.pop((session, key), None)


BOARD = Board()


def error_html(text: str) -> str:
    """One error message as the page shows it (escaped; the CSS colours it from the theme)."""
    return f"<div class='lab-msg-error' role='alert'>⚠ {html.escape(text)}</div>"


def note_html(text: str) -> str:
    """A neutral note in a message place (a hint, not an error)."""
    return f"<div class='lab-msg-note'>{html.escape(text)}</div>"


def warning_html(text: str) -> str:
    """A warning in a message place: nothing failed, but what will happen is not what was typed."""
    return f"<div class='lab-msg-warn' role='status'>⚠ {html.escape(text)}</div>" if text else ""


def _session(args: tuple, kwargs: dict) -> str | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, gr.Request):
            return value.session_hash
    return None


class Beside:
    """The message place beside one control, and the guard for the handlers that control runs.

    Create it where the message should appear (it adds a ``gr.HTML`` with
    ``elem_id="<key>-msg"`` to the current layout).  Handlers it guards take a
    ``request: gr.Request`` argument, so the message reaches the right browser
    session.
    """

    def __init__(self, key: str, board: Board = BOARD):
        self.key, self.board = key, board
        self.box = gr.HTML("", elem_id=f"{key}-msg", elem_classes="lab-msg", min_height=0)

    @property
    def events(self) -> dict[str, Any]:
        """Event arguments that keep progress and error status on the message place only."""
        return {"show_progress_on": [self.box]}

    def _fail(self, error: BaseException, args: tuple, kwargs: dict) -> gr.Error:
        text = error.message if isinstance(error, gr.Error) else describe(error)
        session = _session(args, kwargs)
        if session is None:  # no session to address: fall back to a toast
            return gr.Error(text, print_exception=False)
        self.board.post(session, self.key, text)
        return gr.Error(text, visible=False, print_exception=False)

    def guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a handler (plain or generator): every failure becomes this place's message."""
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    yield from fn(*args, **kwargs)
                except Exception as error:  # noqa: BLE001 - turned into a message for the page
                    raise self._fail(error, args, kwargs) from None

            return gen_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - turned into a message for the page
                raise self._fail(error, args, kwargs) from None

        return wrapper

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return self.guard(fn)

    def watch(self, dependency: Any) -> Any:
        """After ``dependency``: its error written here when it failed, the place cleared when it succeeded."""
        key, board = self.key, self.board

        def show(request: gr.Request) -> str:
            text = board.take(request.session_hash, key)
            return error_html(text) if text else ""

        quiet = dict(queue=False, show_progress="hidden", api_visibility="private")
        dependency.failure(show, None, self.box, **quiet)
        dependency.success(lambda: "", None, self.box, **quiet)
        return dependency
