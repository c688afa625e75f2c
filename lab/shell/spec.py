"""The run spec: one declaration of what defines a run, one builder, and its command-line form.

Every door builds its run from the same declaration: the CLI (its ``audit``
flags are generated from these fields), the web lab (the Models tab fills the
pair part, the Audit and Verdicts tabs the rest), its HTTP API, sweep specs
(every field for all pairs or per pair), ``calibrate``, the bench and the GPU
check.  They hand :func:`build_spec` a mapping of field names to values (text
from a form or a flag, JSON or YAML values from a file) and get a typed,
frozen spec, or one :class:`LabError` naming the field.  Nothing else
constructs a spec field by field (a test checks), so a field added here
reaches every door.

The spec has two parts: :class:`PairSpec`, what defines a loaded pair (the
models, where and how they run, and the prompt format: the web lab's session
keeps one per browser tab), and :class:`RunSpec`, a pair plus what one run
asks of it (audits, facts, reference, limits, options).  What depends on the
deployment (Space caps, server paths, model references) is the run policy's
decision, taken by :func:`lab.shell.runner.check` on the built spec.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import MISSING, dataclass
from typing import Any, Callable, Literal, Mapping, TypeVar

from lab.core.errors import LabError
from lab.core.options import OptionSpec, check_bounds, option, option_specs, option_text, parse_value
from lab.core.prompts import DEFAULT_TEMPLATE, PromptFormat, TokenSplit
from lab.core.refs import DEMO_PREFIX

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
DeviceMap = Literal["auto"]
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
S = TypeVar("S", bound="PairSpec")


@dataclass(frozen=True)
class PairSpec:
    """A base model and its unlearned version as loaded: where, in which precision, prompted how."""

    base: str = option(MISSING, "base model: Hugging Face id, local folder, demo:<name>, openai+URL#MODEL, or "
                       "BASE+ADAPTER (a PEFT adapter on a base)", kind="model")
    unlearned: str = option(MISSING, "unlearned model (same forms as the base)", kind="model")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps")
    dtype: Dtype = option("auto", "weights' precision (auto: bfloat16 on a CUDA GPU that has it, else float32)")
    device_map: DeviceMap | None = option(None, "auto: spread each model over the GPUs and the CPU (accelerate)")
    trust_remote_code: bool = option(False, "allow model code from the hub (never on unless asked)")
    prompt_template: str = option(DEFAULT_TEMPLATE, "prompt template with {question} (plain models)",
                                  kind="text")
    chat_template: bool = option(False, "use the tokenizer's chat template (chat and instruct models)")
    system_prompt: str = option("", "system prompt under the chat template (folded into the user turn where the "
                                "template has no system role)", kind="text")
    chat_vars: tuple[str, ...] = option((), "extra variables of the chat template, NAME=VALUE (Llama 3's "
                                        "date_string, for instance)", flag="--chat-var", kind="text")
    token_split: TokenSplit = option("lab", "where the space between a plain prompt and its answer goes: lab "
                                     "(TOFU's answer tokens) or open-unlearning (its plain-template labels, for "
                                     "comparison with its published numbers)")

    @property
    def prompt_format(self) -> PromptFormat:
        variables = tuple(tuple(item.split("=", 1)) for item in self.chat_vars)
        return PromptFormat(self.prompt_template, self.chat_template, self.system_prompt,
                            self.token_split, variables)  # type: ignore[arg-type]

    @property
    def is_demo(self) -> bool:
        return self.base.startswith(DEMO_PREFIX) and self.unlearned.startswith(DEMO_PREFIX)

    @property
    def label(self) -> str:
        return f"{self.base} → {self.unlearned}"

    def pair(self) -> "PairSpec":
        """The pair part of this spec (itself for a pair)."""
        return build_spec(PairSpec, {f.name: getattr(self, f.name) for f in dataclasses.fields(PairSpec)})

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data, what :func:`build_spec` reads back (the stored config)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else (
                {k: dict(v) for k, v in value.items()} if isinstance(value, Mapping) else value)
        return out


@dataclass(frozen=True)
class RunSpec(PairSpec):
    """A pair and what one run asks of it (stored as the run's config)."""

    audits: tuple[str, ...] = option((), "comma-separated audit names (python -m lab audits lists them)")
    facts: str | None = option(None, "facts file (JSONL, CSV, Parquet, TOFU/MUSE/RWKU JSON) or a suite reference "
                               "(tofu:DIR[:SUBSET], muse:, rwku:, wmdp:); default: the demo's facts", kind="path")
    reference: str | None = option(None, "reference model, ideally retrained without the forget set: the "
                                   "control every attack's rate is read against", kind="model")
    limit: int | None = option(None, "at most N facts of each split and kind (questions, multiple choice, "
                               "passages), in file order", low=1)
    max_new_tokens: int = option(24, "answer length in new tokens", low=1, kind="tokens")
    options: Mapping[str, Mapping[str, Any]] = option(None, "audit options, AUDIT.OPTION=VALUE (python -m lab "
                                                      "audits lists them)", factory=dict, flag="--set")


def fields_of(cls: type[PairSpec]) -> list[OptionSpec]:
    """The declared fields of a spec class, described (type, default, help, flag, kind)."""
    return option_specs(cls)


def _parse_audits(raw: Any, where: str) -> tuple[str, ...]:
    from audits import parse_audits

    if isinstance(raw, str):
        return tuple(parse_audits(raw))
    if not isinstance(raw, (list, tuple)) or not all(isinstance(a, str) for a in raw):
        raise LabError(f"{where}: expected a list of audit names or a comma-separated text")
    return tuple(parse_audits(",".join(raw)))


def _parse_options(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    """``{audit: {option: value}}`` (values are checked by each audit's own options class at run time), or
    ``AUDIT.OPTION=VALUE`` texts as the command line gives them."""
    from lab.core.options import parse_sets

    if isinstance(raw, (list, tuple)) and all(isinstance(p, str) for p in raw):
        return parse_sets(list(raw))
    if not isinstance(raw, Mapping):
        raise LabError(f"{where}: expected a mapping of audits to their options")
    out: dict[str, dict[str, Any]] = {}
    for audit, values in raw.items():
        if not isinstance(values, Mapping):
            raise LabError(f"{where}, audit '{audit}': expected a mapping of option names to values, got "
                           f"{type(values).__name__}")
        for name, value in values.items():
            if not isinstance(value, (str, int, float, bool, list)) and value is not None:
                raise LabError(f"{where}, option {audit}.{name}: expected a text, number, true/false or list, "
                               f"got {type(value).__name__}")
        out[str(audit)] = {str(k): v for k, v in values.items()}
    return out


def _parse_chat_vars(raw: Any, where: str) -> tuple[str, ...]:
    """Chat-template variables as ``NAME=VALUE`` texts (a mapping is accepted from files)."""
    if isinstance(raw, Mapping):
        raw = [f"{k}={option_text(v)}" for k, v in raw.items()]
    elif isinstance(raw, str):
        raw = [line for line in raw.splitlines() if line.strip()]
    if not isinstance(raw, (list, tuple)) or not all(isinstance(v, str) for v in raw):
        raise LabError(f"{where}: expected NAME=VALUE texts or a mapping of names to values")
    out = []
    for item in raw:
        name, sep, value = item.partition("=")
        if not sep or not _VARIABLE.match(name.strip()):
            raise LabError(f"{where}: '{item}' is not NAME=VALUE with a plain name (letters, digits, _)")
        out.append(f"{name.strip()}={value.strip()}")
    return tuple(dict.fromkeys(out))


_MAPPED = {"audits": _parse_audits, "options": _parse_options, "chat_vars": _parse_chat_vars}


def _value(spec: OptionSpec, raw: Any, where: str) -> Any:
    """One field's value: the mapped fields by their own reader, the rest by the one option parser."""
    if spec.name in _MAPPED:
        return _MAPPED[spec.name](raw, where)
    if spec.base_type is str and not spec.choices and not isinstance(raw, str) and raw is not None:
        raise LabError(f"{where}: expected a text, got {type(raw).__name__}")
    value = parse_value(raw, spec, where)
    check_bounds(value, spec, where)
    if spec.name == "device" and not _DEVICE.match(value):
        raise LabError(f"{where}: unknown device '{value}' (use auto, cpu, cuda, cuda:N or mps)")
    return value.strip() if spec.kind == "model" and isinstance(value, str) else value


def build_spec(cls: type[S], data: Mapping[str, Any], where: str = "the run",
               label: Callable[[OptionSpec], str] | None = None) -> S:
    """The one builder: a spec of ``cls`` from ``data`` (field name -> text or JSON value), every field checked
    by its declared type; unknown, missing and mistyped fields are one :class:`LabError` naming the field
    (as ``label`` names it: the command line says ``--limit``, a sweep file ``field 'limit'``).
    A field given as None (or left out) takes its default."""
    if not isinstance(data, Mapping):
        raise LabError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    specs = {s.name: s for s in fields_of(cls)}
    unknown = sorted(str(k) for k in data if k not in specs)
    if unknown:
        raise LabError(f"{where}: unknown field '{unknown[0]}' (fields: {', '.join(specs)})")
    values = {}
    for name, spec in specs.items():
        raw = data.get(name)
        if raw is None:
            if spec.required:
                raise LabError(f"{where}: field '{name}' is missing")
            continue
        named = label(spec) if label else f"{where}: field '{name}'"
        values[name] = _value(spec, raw, named)
    return cls(**values)


def replaced(spec: S, **changes: Any) -> S:
    """``spec`` with some fields changed, through the builder (so the changes are checked too)."""
    return build_spec(type(spec), {**spec.to_dict(), **changes})


def command_line(fields: Mapping[str, Any]) -> list[str]:
    """``python -m lab audit`` arguments that build a run of these fields again (a spec's :meth:`to_dict`, or a
    stored run's config: the report's "repeat this run").  Fields at their defaults are left out; a newline in
    a prompt text is written ``\\n``, as the command line reads it back."""
    args = ["python", "-m", "lab", "audit"]
    for field in fields_of(RunSpec):
        value = fields.get(field.name)
        if value is None or value == field.default or value in ((), [], {}, ""):
            continue
        flag = cli_flag(field)
        if field.base_type is bool:
            args += [flag] if value else []
        elif field.name == "options":
            args += [part for audit, values in value.items() for name, v in values.items()
                     for part in (flag, f"{audit}.{name}={option_text(v)}")]
        elif field.name == "chat_vars":
            args += [part for item in value for part in (flag, item)]
        else:
            text = option_text(value)
            args += [flag, text.replace("\n", "\\n") if field.kind == "text" else text]
    return args


def cli_flag(field: OptionSpec) -> str:
    """The command-line flag of a field: ``--name-with-dashes`` unless the field declares its own."""
    meta = next(f.metadata for f in dataclasses.fields(RunSpec) if f.name == field.name)
    return meta.get("flag") or "--" + field.name.replace("_", "-")
