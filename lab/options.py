"""Audit options: typed dataclasses set from ``audit.key=value`` strings.

The CLI's ``--set reasoning.prompts_per_category=2`` and the UI's option
fields both end up here, so both validate the same way.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from lab.errors import LabError


def _convert(raw: str, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise LabError(f"{where}: expected true or false, got '{raw}'")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise LabError(f"{where}: expected a {kind.__name__}, got '{raw}'") from None
    if origin in (list, tuple):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if raw.strip().lower() in {"", "none"}:
            return None
        return _convert(raw, inner[0], where)
    return raw


def build_options(options_cls: type, audit: str, values: dict[str, str]) -> Any:
    """An options instance for ``audit`` with string ``values`` converted by field type."""
    hints = typing.get_type_hints(options_cls)
    fields = {f.name for f in dataclasses.fields(options_cls)}
    kwargs = {}
    for key, raw in values.items():
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise LabError(f"audit '{audit}' has no option '{key}' (options: {known})")
        kwargs[key] = _convert(str(raw), hints[key], f"option {audit}.{key}")
    return options_cls(**kwargs)


def parse_sets(pairs: list[str]) -> dict[str, dict[str, str]]:
    """``["a.k=v", ...]`` -> ``{"a": {"k": "v"}}``."""
    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        if "=" not in pair or "." not in pair.split("=", 1)[0]:
            raise LabError(f"--set expects audit.option=value, got '{pair}'")
        key, value = pair.split("=", 1)
        audit, option = key.split(".", 1)
        out.setdefault(audit.strip(), {})[option.strip()] = value.strip()
    return out


def options_dict(options: Any) -> dict[str, Any]:
    """Options as JSON-ready data, for the run's stored config."""
    return json.loads(json.dumps(dataclasses.asdict(options), default=str))
