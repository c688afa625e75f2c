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
:meth:`lab.core.backend.Backend.answer_budget` caps to the room left.  An audit that wraps a question in a long
template of its own can still meet the context; that stays a one-line error naming the audit.

Measures take all of an audit's items at once: one tokenizer call per model, not one per item.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from lab.core.probes import passage_parts

if TYPE_CHECKING:
    from lab.core.backend import Backend
    from lab.core.facts import Fact

Measure = Callable[["Backend", Sequence["Fact"]], list[int]]  # tokens of the longest row each fact makes for a model
Pairs = Sequence[tuple[str, str]]  # (prompt, answer) rows of one item or probe


def longest_rows(engine: "Backend", groups: Sequence[Pairs], eos: bool = True) -> list[int]:
    """For each group of (prompt, answer) pairs, the tokens of its longest row as the engine scores it (plus the
    EOS the standard metrics append, with ``eos``): one tokenizer call for all groups."""
    flat = [engine.encoder.joined(prompt, answer) for group in groups for prompt, answer in group if answer.strip()]
    lengths = iter(len(row) for row in engine.encoder.encode_many(flat))  # a scored row is the joint encoding
    return [max((next(lengths) for prompt, answer in group if answer.strip()), default=0) + eos for group in groups]


def fits(engines: Sequence["Backend"], groups: Sequence[Pairs]) -> list[bool]:
    """Whether each group's rows fit the context of every engine that states one (probes an audit builds beyond
    an item's own fields)."""
    verdicts = [True] * len(groups)
    for engine in engines:
        if engine.context:
            verdicts = [ok and n <= engine.context for ok, n in zip(verdicts, longest_rows(engine, groups))]
    return verdicts


def row_tokens(engine: "Backend", facts: Sequence["Fact"]) -> list[int]:
    """Tokens of the longest row each fact's own fields make for ``engine``: a text whole (membership inference
    scores it so); a passage's continuation after one token of its prompt; a question's prompt followed by each
    of its answers (gold, paraphrased, perturbed; the paraphrased question too), plus the EOS the standard
    metrics append, or the prompt alone; a multiple-choice question's prompt followed by its longest choice."""
    out = [0] * len(facts)
    whole = [(i, f.text if f.kind == "text" else f.answer) for i, f in enumerate(facts)
             if f.kind in ("text", "continuation")]
    for (i, _), ids in zip(whole, engine.encoder.encode_many([text for _, text in whole])):
        out[i] = len(ids) + 1
    asked = [(i, f) for i, f in enumerate(facts) if f.kind not in ("text", "continuation")]
    groups = []
    for _, fact in asked:
        prompts = [engine.prompt(q) for q in (fact.question, fact.paraphrased_question) if q]
        answers = [a for a in (fact.answer, fact.paraphrased_answer, *fact.perturbed_answers, *fact.choices) if a]
        groups.append([(p, a) for p in prompts for a in answers])
    prompts = engine.encoder.encode_many([engine.prompt(f.question) for _, f in asked])
    for (i, _), rows, prompt in zip(asked, longest_rows(engine, groups), prompts):
        out[i] = max(rows, len(prompt))
    return out


def passage_tokens(engine: "Backend", facts: Sequence["Fact"]) -> list[int]:
    """:func:`row_tokens` for the audits that read passages as a prompt and its gold continuation
    (:func:`lab.core.probes.passage_parts`: a raw text is cut into its opening words and the next ones): the
    prompt is cut from the left to fit, so only one token of it and the continuation must."""
    parts = [passage_parts(f) if f.kind in ("continuation", "text") else None for f in facts]
    others = iter(row_tokens(engine, [f for f, p in zip(facts, parts) if p is None]))
    sequels = iter(engine.encoder.encode_many([p[1] for p in parts if p]))
    return [len(next(sequels)) + 1 if p else next(others) for p in parts]


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
    how = measure if how is None else how
    over: dict[str, tuple[int, int, int, str]] = {}  # fact id -> (tokens past the context, tokens, context, model)
    for engine in [e for e in engines if e is not None and e.context]:
        todo = [f for f in facts if (id(engine), how, f.id) not in memo]
        memo.update({(id(engine), how, f.id): n for f, n in zip(todo, measure(engine, todo) if todo else [])})
        for fact in facts:
            tokens = memo[(id(engine), how, fact.id)]
            if tokens > engine.context and tokens - engine.context > over.get(fact.id, (0,))[0]:
                over[fact.id] = (tokens - engine.context, tokens, engine.context, engine.info.ref)  # worst overflow
    fit = Fit(kept=[f for f in facts if f.id not in over], skipped=[f for f in facts if f.id in over])
    if over:
        _, fit.longest, fit.context, fit.model = max(over.values(), key=lambda o: o[1])
    return fit
