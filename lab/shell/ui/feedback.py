"""Errors become messages in the page, never stack traces, and the app keeps working.

Every event handler of the lab is wrapped by :func:`user_errors`, which puts
the CLI's error boundary (:func:`lab.core.errors.describe`) around it: a
:class:`~lab.core.errors.LabError` shows its own message, running out of memory
shows what to change, and anything else (a bug) is logged with its traceback
to the lab's log file while the page gets one line naming it.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import gradio as gr

from lab.core.errors import describe


def as_gr_error(error: BaseException) -> gr.Error:
    """The page's message for ``error``: the lab's one error boundary (unexpected errors are logged)."""
    return gr.Error(describe(error), print_exception=False)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an event handler (plain or generator) so every failure reaches the page as gr.Error."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as error:  # noqa: BLE001 - turned into a message for the page
                raise as_gr_error(error) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001 - turned into a message for the page
            raise as_gr_error(error) from None

    return wrapper
