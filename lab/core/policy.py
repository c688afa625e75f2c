"""The run policy: what a request may ask for, decided in one place.

Locally the lab trusts its user (server paths, remote code when asked,
generous sanity caps); in a hosted Space (``LAB_SPACE=1``) a visitor may name
only the demo's models and hub ids, upload files instead of naming server
paths, never run model code from the hub, and every size a request can set
is capped.  The runner applies :meth:`Policy.check_request` before any run
exists and the model loader applies :meth:`Policy.check_ref`, so the CLI,
the UI and the API cannot differ.  Every refusal names the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from lab.core import settings
from lab.core.errors import LabError
from lab.core.options import OptionSpec, option_specs, option_text
from lab.core.refs import ModelRef, demo_names, parse_ref

O = TypeVar("O")  # an audit's options, or the run spec (its fields are declared the same way)


@dataclass(frozen=True)
class Policy:
    """Limits of one deployment (see the module docstring)."""

    space: bool
    max_new_tokens: int  # any generation length a request sets
    max_prompt_chars: int  # a typed prompt, template or system prompt
    max_upload: str | None  # uploaded file size (Gradio's syntax), None: no limit
    max_upload_bytes: int | None
    max_facts: int | None  # facts in one run
    default_limit: int | None  # facts per split when a request names none
    size_cap: int | None  # a count option without a cap of its own
    server_paths: bool  # may a request name files and model folders on this machine?
    remote_code: bool  # may a request allow model code from the hub?
    remote_models: bool  # may a request name a model behind an inference server?

    @property
    def name(self) -> str:
        return "Space mode" if self.space else "this lab"

    # ------------------------------------------------------------------ models
    def check_ref(self, text: str) -> ModelRef:
        """A model reference this request may use, parsed; refused ones raise with the rule named."""
        ref = parse_ref(text)
        for part in ref.parts():  # an adapter reference: the base and the adapter alike
            where = part.text
            if part.kind == "path" and not self.server_paths:
                raise LabError(f"'{where}': server paths are disabled in {self.name}; use a Hugging Face model id "
                               "or demo:<name>")
            if part.kind == "remote" and not self.remote_models:
                raise LabError(f"'{where}': models behind an inference server are disabled in {self.name}")
            if part.kind == "demo" and self.space:
                known = demo_names()
                name = Path(part.location).name
                if known and name not in known:
                    raise LabError(f"'{where}' is not a demo model (demo models: {', '.join(known)})")
        return ref

    def check_remote_code(self, trust: bool) -> None:
        if trust and not self.remote_code:
            raise LabError(f"trusting remote model code is disabled in {self.name}")

    # ------------------------------------------------------------------- sizes
    def check_tokens(self, value: int, what: str) -> int:
        if value > self.max_new_tokens:
            raise LabError(f"{what}={value} is above the cap of {self.max_new_tokens} new tokens in {self.name}")
        return value

    def check_size(self, value: int, cap: int | None, what: str) -> int:
        cap = cap if cap is not None else self.size_cap
        if self.space and cap is not None and value > cap:
            raise LabError(f"{what}={value} is above its cap of {cap} in {self.name}")
        return value

    def check_prompt(self, text: str, what: str) -> str:
        if len(text) > self.max_prompt_chars:
            raise LabError(f"{what} is longer than the cap of {self.max_prompt_chars} characters in {self.name}")
        return text

    def check_facts(self, count: int) -> int:
        if self.max_facts is not None and count > self.max_facts:
            raise LabError(f"{count} facts: {self.name} allows at most {self.max_facts} facts per run; use a "
                           "smaller limit")
        return count

    def check_path(self, value: str, what: str) -> str:
        """A file on this machine a request names; in a Space only files the visitor uploaded."""
        if value and not self.server_paths and not settings.is_upload(value):
            raise LabError(f"{what}: '{value}' names a server path, and those are disabled in {self.name}")
        return value

    # ------------------------------------------------------------------ options
    def check_options(self, audit: str, options: O, given: Iterable[str] | None = None,
                      name: Callable[[OptionSpec], str] | None = None) -> O:
        """Every option that sets a size, a length, a text, a model or a path, by what its declaration says it is.

        A value the request set (named in ``given``; all of them when ``given`` is None) above a cap is
        refused; a default above a cap (the reference's 200-token generations in a Space) is lowered to it.
        Returns the options to run with.  The run spec's own fields pass here too, each ``name``d by its flag.
        """
        explicit = None if given is None else set(given)
        lowered = {}
        for spec in option_specs(type(options)):
            value: Any = getattr(options, spec.name)
            what = name(spec) if name else f"{audit}.{spec.name}"
            label = what if name else f"option {what}"
            cap = self.max_new_tokens if spec.kind == "tokens" else (
                (spec.space_cap if spec.space_cap is not None else self.size_cap) if self.space else None)
            if spec.kind in ("tokens", "size") and value is not None and cap is not None and int(value) > cap \
                    and explicit is not None and spec.name not in explicit:
                lowered[spec.name] = cap
                continue
            if spec.kind == "tokens":
                self.check_tokens(int(value), what)
            elif spec.kind == "size" and value is not None:
                self.check_size(int(value), spec.space_cap, what)
            elif spec.kind == "text" and value:
                for text in (value if spec.many else (value,)):
                    self.check_prompt(option_text(text), label)
            elif spec.kind == "model" and spec.names_reference(value):
                self.check_ref(option_text(value))
            elif spec.kind == "path" and spec.names_reference(value):
                self.check_path(option_text(value), label)
        return replace(options, **lowered) if lowered else options


LOCAL = Policy(space=False, max_new_tokens=4096, max_prompt_chars=100_000, max_upload=None, max_upload_bytes=None,
               max_facts=None, default_limit=None, size_cap=None, server_paths=True, remote_code=True,
               remote_models=True)
SPACE = Policy(space=True, max_new_tokens=64, max_prompt_chars=2_000, max_upload="10mb",
               max_upload_bytes=10 * 1024 * 1024, max_facts=400, default_limit=50, size_cap=64, server_paths=False,
               remote_code=False, remote_models=False)


def current() -> Policy:
    """The policy of this process: Space mode when ``LAB_SPACE=1``."""
    return SPACE if settings.space_mode() else LOCAL
