"""Items longer than a model's context: skipped with a count and a reason, never a failed audit.

Benchmarks are written for models that read thousands of tokens; a small model cannot read a 5,550-token MUSE
passage, nor score a TOFU answer of 270 tokens after its question in a 256-token context.  One such item used to
fail a whole audit.  Before an audit runs, every item it would be given is measured with each model's own
tokenizer and prompt format (:func:`row_tokens`, or the audit's own measure, :meth:`audits.base.Audit.row_tokens`):
the longest row the item's own fields make, as the scoring paths build it (prompt and answer, the paraphrased
and perturbed answers too, with the EOS open-unlearning appends; a text whole).  Items that do not fit some
model's context are left out of that audit, and a note says how many, of which subsets, and why.

Two things are not counted as the item's own length: a passage prompt (MUSE's VerbMem), which the audits that
read passages cut from the left as lm-evaluation-harness does, so only its gold continuation must fit
(:func:`passage_tokens`); and the answer length a generation asks for, which
:meth:`lab.core.backend.Backend.answer_budget` caps to the room left.
An audit that wraps a question in a long template of its own can still meet the context; that stays a one-line
error naming the audit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from lab.core.probes import passage_parts

if TYPE_CHECKING:
    from lab.core.backend import Backend
    from lab.core.facts import Fact

Measure = Callable[["Backend", "Fact"], int]  # tokens of the longest row a fact makes for a model


def pair_tokens(engine: "Backend", pairs: Sequence[tuple[str, str]]) -> int:
    """Tokens of the longest (prompt, answer) row of ``pairs`` as the engine scores it, plus the EOS the standard
    metrics append."""
    rows, _ = engine.continuation_rows([(prompt, answer) for prompt, answer in pairs if answer.strip()])
    return max((len(row) for row in rows), default=0) + 1


def fits(engines: Sequence["Backend"], pairs: Sequence[tuple[str, str]]) -> bool:
    """Whether every (prompt, answer) row of ``pairs`` fits the context of every engine that states one (a probe
    an audit builds beyond the item's own fields)."""
    return all(pair_tokens(engine, pairs) <= engine.context for engine in engines if engine.context)


def row_tokens(engine: "Backend", fact: "Fact") -> int:
    """Tokens of the longest row ``fact``'s own fields make for ``engine``: a text whole (membership inference
    scores it so); a passage's continuation after one token of its prompt; a question's prompt followed by each
    of its answers (gold, paraphrased, perturbed; the paraphrased question too), plus the EOS the standard
    metrics append; a multiple-choice question's prompt followed by its longest choice."""
    if fact.kind == "text":
        return len(engine.encode(fact.text)) + 1
    if fact.kind == "continuation":
        return len(engine.encode(fact.answer)) + 1
    questions = [fact.question] + ([fact.paraphrased_question] if fact.paraphrased_question else [])
    answers = [fact.answer, fact.paraphrased_answer, *fact.perturbed_answers, *fact.choices]
    return max(len(engine.encode(engine.prompt(fact.question))),
               pair_tokens(engine, [(engine.prompt(q), a) for q in questions for a in answers if a]))


def passage_tokens(engine: "Backend", fact: "Fact") -> int:
    """:func:`row_tokens` for the audits that read passages as a prompt and its gold continuation
    (:func:`lab.core.probes.passage_parts`: a raw text is cut into its opening words and the next ones): the
    prompt is cut from the left to fit, so only one token of it and the continuation must."""
    parts = passage_parts(fact) if fact.kind in ("continuation", "text") else None
    return len(engine.encode(parts[1])) + 1 if parts else row_tokens(engine, fact)


@dataclass
class Fit:
    """The items that fit every model of the run, and those left out (with what a note needs)."""

    kept: list["Fact"]
    skipped: list["Fact"] = field(default_factory=list)
    longest: int = 0  # tokens of the longest item left out
    context: int = 0  # the context it met
    model: str = ""  # the model whose context that is

    @property
    def note(self) -> str:
        """One line: how many items were left out, which, and why (empty when none was)."""
        if not self.skipped:
            return ""
        total = len(self.kept) + len(self.skipped)
        groups = Counter(f"{f.kind} {f.split}" + (f" ({f.subset})" if f.subset else "") for f in self.skipped)
        which = ", ".join(f"{n} {group}" for group, n in groups.most_common())
        return (f"{len(self.skipped)} of {total} items skipped: longer than {self.model}'s context of "
                f"{self.context} tokens (the longest needs {self.longest:,}); {which}. The numbers are over the "
                f"other {len(self.kept)}")


def fitting(facts: Sequence["Fact"], engines: Sequence["Backend | None"], measure: Measure = row_tokens,
            memo: dict | None = None, how: object = None) -> Fit:
    """``facts`` split into those whose rows fit the context of every engine that states one, and the rest.
    ``memo`` keeps measurements across the audits of a run, keyed by engine, fact and ``how`` (what names the
    measure: audits that measure alike share it), so each item is tokenized once per model and measure."""
    memo = {} if memo is None else memo
    bounded = [e for e in engines if e is not None and e.context]
    how = measure if how is None else how
    fit = Fit(kept=[])
    for fact in facts:
        over = None
        for engine in bounded:
            key = (id(engine), how, fact.id)
            if key not in memo:
                memo[key] = measure(engine, fact)
            if memo[key] > engine.context and (over is None or memo[key] - engine.context > over[0] - over[1]):
                over = (memo[key], engine.context, engine.info.ref)
        if over is None:
            fit.kept.append(fact)
            continue
        fit.skipped.append(fact)
        if over[0] > fit.longest:
            fit.longest, fit.context, fit.model = over
    return fit
