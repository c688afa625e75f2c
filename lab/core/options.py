"""Audit options: one declaration, one validation path, one text form, one documentation.

Every audit's knobs are a dataclass deriving from :class:`AuditOptions`, each
field declared with :func:`option` (default, one line of help, bounds, and
what kind of value it is).  Choices are ``Literal[...]`` types (a list of
choices: ``tuple[Literal[...], ...]``), so the CLI, the UI and the manual
list the same choices.

- :func:`build_options` is the only way an options instance is made from
  user input (``--set audit.key=value``, the UI's options table, a sweep
  file): it converts text by field type, checks choices and bounds, then the
  class's own cross-field rules (:meth:`AuditOptions.check`).  The runner
  calls it before any run exists, so a bad option never leaves a stored run.
- :func:`option_text` is the one text form of a value (what
  :func:`build_options` reads back): the UI table, the report's repeat
  command and the stored config use it.
- :func:`option_specs` describes every field (type, choices, default, help,
  bounds), for ``python -m lab audits`` and the manual's audit pages.

The field's ``kind`` tells the run policy (:mod:`lab.core.policy`) what the
value is: ``size`` (a count that scales the work, capped in Space mode),
``tokens`` (a generation length, capped like ``--max-new-tokens``), ``text``
(free text put into prompts, capped like a prompt), ``index`` (a seed, a
layer or a period: a number that picks rather than scales, never capped),
``model`` (a model reference, resolved under the policy) or ``path`` (a file
on the server, refused in Space mode; ``reads`` is the function that reads
it, called by :func:`check_inputs` before any run exists).  Every integer
and every free-text option declares its kind (a test holds every audit to
it), so no size escapes the caps.  ``words`` are values of a model or path
option that are not references (``base``, ``train``).
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal

from lab.core.errors import LabError

Kind = Literal["size", "tokens", "text", "index", "model", "path"]
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def option(default: Any, help: str, *, low: float | None = None, high: float | None = None,
           kind: Kind | None = None, words: tuple[str, ...] = (), prefixes: tuple[str, ...] = (),
           space_cap: int | None = None, reads: Callable[[str], Any] | None = None, factory: Any = None,
           **extra: Any) -> Any:
    """A dataclass field of an options class, with what the policy, the UI and the docs need to know.

    ``default`` may be ``dataclasses.MISSING`` (a required field: the run spec's models); ``extra`` carries
    what one declaring class needs beside these (the run spec's command-line flag); ``factory`` makes a
    mutable default (an empty mapping)."""
    meta = {"help": help, "low": low, "high": high, "kind": kind, "words": words, "prefixes": prefixes,
            "space_cap": space_cap, "reads": reads, **extra}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class AuditOptions:
    """Base of every audit's options; :meth:`check` holds rules that involve several fields."""

    def check(self) -> None:
        """Raise :class:`LabError` for a combination of values that cannot work."""


@dataclass(frozen=True)
class OptionSpec:
    """One option as the CLI, the UI and the docs describe it."""

    name: str
    type: str
    choices: tuple[str, ...]
    many: bool  # a comma-separated list
    default: Any
    help: str
    low: float | None
    high: float | None
    kind: str | None
    words: tuple[str, ...]
    prefixes: tuple[str, ...]
    space_cap: int | None
    base_type: Any  # int, float, bool or str (after Optional and tuple are unwrapped)
    optional: bool
    reads: Callable[[str], Any] | None = None  # a path option: reads (and so checks) the file it names
    required: bool = False  # no default: a request must give it

    @property
    def default_text(self) -> str:
        return option_text(self.default)

    def names_reference(self, value: Any) -> bool:
        """True when ``value`` of a model or path option names something (not one of its words)."""
        text = option_text(value).strip()
        return bool(text) and text.lower() != "none" and text not in self.words \
            and not any(text.startswith(p) for p in self.prefixes)


def _unwrap(kind: Any) -> tuple[Any, bool, bool, tuple[str, ...]]:
    """(base type, optional, many, choices) of an annotation."""
    optional = many = False
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        optional, kind = True, args[0]
        origin = typing.get_origin(kind)
    if origin is tuple:
        many, kind = True, typing.get_args(kind)[0]
        origin = typing.get_origin(kind)
    choices: tuple[str, ...] = ()
    if origin is Literal:
        choices = tuple(str(c) for c in typing.get_args(kind))
        kind = str
    return kind, optional, many, choices


def _type_text(base: Any, optional: bool, many: bool, choices: tuple[str, ...]) -> str:
    text = "|".join(choices) if choices else base.__name__
    if many:
        text = f"list of {text}"
    return f"{text} or none" if optional else text


def option_specs(options_cls: type) -> list[OptionSpec]:
    """Every field of an options class, described."""
    hints = typing.get_type_hints(options_cls, include_extras=False)
    specs = []
    for f in dataclasses.fields(options_cls):
        base, optional, many, choices = _unwrap(hints[f.name])
        meta = f.metadata
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (
            f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc]
        specs.append(OptionSpec(
            name=f.name, type=_type_text(base, optional, many, choices), choices=choices, many=many,
            default=default, help=meta.get("help", ""), low=meta.get("low"), high=meta.get("high"),
            kind=meta.get("kind"), words=tuple(meta.get("words", ())), prefixes=tuple(meta.get("prefixes", ())),
            space_cap=meta.get("space_cap"), base_type=base, optional=optional, reads=meta.get("reads"),
            required=required))
    return specs


def option_text(value: Any) -> str:
    """The text form of an option value, as :func:`build_options` reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(option_text(v) for v in value)
    return str(value)


def parse_number(raw: str, where: str, integer: bool = False) -> int | float:
    """A number from text: an integer, or a finite number (NaN and infinity are refused: no bound or
    threshold can be checked against them, so a gate set to NaN could never fail)."""
    text = raw.strip()
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise LabError(f"{where}: expected {'an integer' if integer else 'a number'}, got '{raw}'") from None
    if not math.isfinite(value):
        raise LabError(f"{where}: expected a finite number, got '{raw}'")
    return value


def _scalar(raw: str, spec: OptionSpec, where: str) -> Any:
    text = raw.strip()
    if spec.base_type is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise LabError(f"{where}: expected true or false, got '{raw}'")
    if spec.base_type in (int, float):
        return parse_number(text, where, integer=spec.base_type is int)
    if spec.choices and text not in spec.choices:
        raise LabError(f"{where}: '{text}' is not one of {', '.join(spec.choices)}")
    return text


_JSON_TYPES = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}


def _check_json_type(raw: Any, spec: OptionSpec, where: str) -> None:
    """A value from JSON or YAML (a sweep spec) must already have the field's type: ``5`` is no model
    reference, ``[1]`` no number.  Text is always accepted (the command line and the UI give text)."""
    if raw is None or isinstance(raw, str):
        return
    values = raw if spec.many and isinstance(raw, (list, tuple)) else [raw]
    expected = _JSON_TYPES.get(spec.base_type, (str,))
    for value in values:
        if isinstance(value, str):
            continue
        if isinstance(value, bool) and spec.base_type is not bool or not isinstance(value, expected):
            wanted = spec.type if not spec.choices else f"one of {', '.join(spec.choices)}"
            raise LabError(f"{where}: expected {wanted}, got {type(value).__name__} {json.dumps(value)[:60]}")


def parse_value(raw: Any, spec: OptionSpec, where: str) -> Any:
    """One option value from text, or from a JSON value of the field's own type, by the field's type."""
    _check_json_type(raw, spec, where)
    text = option_text(raw)
    if spec.optional and text.strip().lower() in ("", "none"):
        return None
    if spec.many:
        return tuple(_scalar(part, spec, where) for part in text.split(",") if part.strip())
    return _scalar(text, spec, where)


def check_bounds(value: Any, spec: OptionSpec, where: str) -> None:
    values = value if spec.many else (value,)
    for v in values:
        if v is None or isinstance(v, (bool, str)):
            continue
        if not math.isfinite(v):
            raise LabError(f"{where} must be a finite number, got {option_text(v)}")
        if spec.low is not None and v < spec.low:
            raise LabError(f"{where} must be at least {option_text(spec.low)}, got {option_text(v)}")
        if spec.high is not None and v > spec.high:
            raise LabError(f"{where} must be at most {option_text(spec.high)}, got {option_text(v)}")
    if spec.many and spec.choices and not values:
        raise LabError(f"{where} is empty; use a comma-separated subset of {', '.join(spec.choices)}")


def validate(options: AuditOptions, audit: str) -> AuditOptions:
    """Choices and bounds of every field, then the class's own rules; returns ``options``."""
    for spec in option_specs(type(options)):
        value = getattr(options, spec.name)
        where = f"option {audit}.{spec.name}"
        if spec.choices:
            for v in (value if spec.many else (value,)):
                if v is not None and v not in spec.choices:
                    raise LabError(f"{where}: '{v}' is not one of {', '.join(spec.choices)}")
        check_bounds(value, spec, where)
    options.check()
    return options


def build_options(options_cls: type, audit: str, values: dict[str, Any] | None = None) -> AuditOptions:
    """A validated options instance for ``audit`` from text (or JSON) ``values`` keyed by option name."""
    specs = {s.name: s for s in option_specs(options_cls)}
    kwargs = {}
    for key, raw in (values or {}).items():
        if key not in specs:
            known = ", ".join(sorted(specs)) or "none"
            raise LabError(f"audit '{audit}' has no option '{key}' (options: {known})")
        kwargs[key] = parse_value(raw, specs[key], f"option {audit}.{key}")
    return validate(options_cls(**kwargs), audit)


def check_inputs(audit: str, options: AuditOptions) -> None:
    """Every model and file an option names exists and reads, before any run exists: a missing attacker
    folder, a binary relearning file or a missing SAE corpus is the request's error, not a failed run.
    Run this only after the policy allowed the references (so a Space visitor learns nothing about the
    server's files)."""
    from lab.core.refs import require_local

    for spec in option_specs(type(options)):
        value = getattr(options, spec.name)
        if spec.kind not in ("model", "path") or not spec.names_reference(value):
            continue
        try:
            if spec.kind == "model":
                require_local(option_text(value))
            elif spec.reads is not None:
                spec.reads(option_text(value))
        except LabError as exc:
            raise LabError(f"option {audit}.{spec.name}: {exc}") from None


def parse_sets(pairs: list[str]) -> dict[str, dict[str, str]]:
    """``["a.k=v", ...]`` -> ``{"a": {"k": "v"}}``."""
    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        if "=" not in pair or "." not in pair.split("=", 1)[0]:
            raise LabError(f"--set expects audit.option=value, got '{pair}'")
        key, value = pair.split("=", 1)
        audit, name = key.split(".", 1)
        out.setdefault(audit.strip(), {})[name.strip()] = value.strip()
    return out


def options_dict(options: Any) -> dict[str, Any]:
    """Options as JSON-ready data, for the run's stored config."""
    return json.loads(json.dumps(dataclasses.asdict(options), default=str))


def options_markdown(options_cls: type) -> str:
    """An options class as a Markdown table (the manual's audit pages): option, default, meaning, choices, bounds."""
    lines = ["| option | default | meaning |", "| --- | --- | --- |"]
    for spec in option_specs(options_cls):
        extra = []
        if spec.choices:
            extra.append(("any of " if spec.many else "one of ") + ", ".join(f"`{c}`" for c in spec.choices))
        if spec.low is not None or spec.high is not None:
            extra.append(f"range {option_text(spec.low) if spec.low is not None else ''}.."
                         f"{option_text(spec.high) if spec.high is not None else ''}")
        if spec.space_cap is not None:
            extra.append(f"Space cap {spec.space_cap}")
        tail = f" ({'; '.join(extra)})" if extra else ""
        default = f"`{spec.default_text}`" if spec.default_text else "(empty)"
        lines.append(f"| `{spec.name}` | {default} | {html.escape(spec.help + tail, quote=False)} |")
    return "\n".join(lines)
