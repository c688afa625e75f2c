"""Named outputs for Gradio handlers: a handler returns the components it changes, by name.

Gradio takes a handler's outputs as a list and its return value as a tuple in
that order, so one more output meant editing every ``return`` and ``yield``
(and padding the rest with ``gr.skip()``).  A handler can instead return a
dict keyed by component; components it leaves out keep their value.
:class:`Outputs` names a handler's output components once, so a handler says
``out(status="Done", table=frame)`` and nothing else changes.  An update that
names nothing (``out()``) skips every output: Gradio reads an empty dict as one
value, not as "no change".
"""

from __future__ import annotations

from typing import Any

import gradio as gr


class Outputs:
    """The output components of one or more handlers, by name."""

    def __init__(self, **components: gr.components.Component | gr.State | gr.Tabs):
        self.components = components

    @property
    def list(self) -> list[Any]:
        """The components, for an event's ``outputs``."""
        return list(self.components.values())

    def __call__(self, **values: Any) -> dict[Any, Any]:
        """The update that sets the named components (unknown names are a programming error, raised); with no
        names, one that leaves every component as it is."""
        unknown = set(values) - set(self.components)
        if unknown:
            raise KeyError(f"no output named {', '.join(sorted(unknown))}")
        if not values:
            return {component: gr.skip() for component in self.components.values()}
        return {self.components[name]: value for name, value in values.items()}

    def __add__(self, other: "Outputs") -> "Outputs":
        return Outputs(**self.components, **other.components)

    def __getitem__(self, name: str) -> Any:
        return self.components[name]
