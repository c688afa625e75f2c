"""Errors become messages in the page, never stack traces, and the app keeps working.

Every event handler of the lab is wrapped by :func:`user_errors`: a
:class:`~lab.errors.LabError` shows its own message, running out of memory
shows what to change, and anything else (a bug) is logged with its traceback
on the server while the page gets one line.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable

import gradio as gr

from lab.batching import is_oom
from lab.errors import LabError

log = logging.getLogger("lab.ui")
OOM_HINT = "out of memory: use a smaller limit, fewer new tokens, a smaller model or dtype bfloat16"


def message_for(error: BaseException) -> str:
    """The one line a user sees for ``error``."""
    if isinstance(error, LabError):
        return str(error)
    if isinstance(error, MemoryError) or is_oom(error):
        return OOM_HINT
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"unexpected error ({type(error).__name__}{': ' + first if first else ''}); details are in the server log"


def as_gr_error(error: BaseException) -> gr.Error:
    if not isinstance(error, (LabError, MemoryError)) and not is_oom(error):
        log.error("handler failed", exc_info=error)
    return gr.Error(message_for(error), print_exception=False)


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
