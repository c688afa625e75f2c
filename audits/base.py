"""The common interface of every audit.

An audit is a class with a name, the paper it comes from, an ``Options``
class (:class:`lab.core.options.AuditOptions`: its knobs, validated before a
run exists), and a ``run(ctx)`` method that reads facts from the context,
calls the models only through the engines in ``ctx.pair``, records items as
it goes, and returns an :class:`AuditResult`.  The plain-question baseline
that ``recovery_rate`` is defined against is computed once per run and
shared (``ctx.baseline``).

Two optional hooks let the web lab use an audit's method on one fact without
importing the audit's module: :meth:`Audit.rewrite` (a prompt transform the
Probe tab offers, named in ``rewrites``) and :meth:`Audit.fact_view` (a
figure for one fact, the Internals tab's views, when ``has_fact_view``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generic, TypeVar

from lab.core.backend import CAPABILITIES, CAPABILITY_TEXT, Backend
from lab.core.errors import LabError
from lab.core.facts import Fact, FactSet
from lab.core.fitting import row_tokens
from lab.core.models import ModelPair
from lab.core.options import AuditOptions
from lab.core.records import AuditResult, ItemRecord
from lab.core.scoring import AnswerScore, rate, score_answer
from lab.core.stats import difference_with_interval, rate_with_interval

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go


# Roles an audit can play in the benchmark (``Audit.bench_role``): lettered multiple-choice scoring, timed against
# lm-evaluation-harness's loglikelihood requests; and a token-row scoring workload (``Audit.workload``) timed
# against a per-row loop.
CHOICE_SCORING, ROW_SCORING = "choice_scoring", "row_scoring"


@dataclass(frozen=True)
class Answered:
    """Both models' greedy answers to one prompt, scored against the gold answer."""

    output_base: str
    output_unlearned: str
    score_base: AnswerScore
    score_unlearned: AnswerScore


def answer_both(pair: ModelPair, prompts: list[str], answers: list[str], max_new_tokens: int,
                desc: str) -> list[Answered]:
    """Greedy answers from both models for many prompts, batched, then scored."""
    outs_b = pair.base.generate(prompts, max_new_tokens, desc=f"{desc} (base)")
    outs_u = pair.unlearned.generate(prompts, max_new_tokens, desc=f"{desc} (unlearned)")
    return [Answered(b, u, score_answer(b, a), score_answer(u, a)) for b, u, a in zip(outs_b, outs_u, answers)]


def answer_and_logprobs(pair: ModelPair, prompts: list[str], answers: list[str], max_new_tokens: int,
                        desc: str) -> tuple[list[Answered], list[float], list[float]]:
    """:func:`answer_both`, plus each gold answer's mean log-prob under both models (batched)."""
    answered = answer_both(pair, prompts, answers, max_new_tokens, desc)
    lp_b = pair.base.answer_logprobs(prompts, answers, desc=f"{desc} log-probs (base)")
    lp_u = pair.unlearned.answer_logprobs(prompts, answers, desc=f"{desc} log-probs (unlearned)")
    return answered, lp_b, lp_u


@dataclass
class Baseline:
    """The plain question asked to both models, for every fact."""

    facts: list[Fact]
    prompts: list[str]
    answered: dict[str, Answered]
    logprob_base: dict[str, float]
    logprob_unlearned: dict[str, float]

    def knows_base(self, fact: Fact) -> bool:
        return self.answered[fact.id].score_base.hit

    def knows_unlearned(self, fact: Fact) -> bool:
        return self.answered[fact.id].score_unlearned.hit

    def targets(self) -> list[Fact]:
        """Forget facts the base knows and the unlearned model misses: what attacks try to recover."""
        return [f for f in self.facts if f.split == "forget" and self.knows_base(f) and not self.knows_unlearned(f)]

    def suppressed_candidates(self) -> list[Fact]:
        """Retain facts the base model knows (where unfair suppression can show)."""
        return [f for f in self.facts if f.split == "retain" and self.knows_base(f)]

    def retain_sample(self, size: int) -> list[Fact]:
        """At most ``size`` known retain facts, evenly spread over the file (0: all of them).

        Retain-side controls (suppression, attribution shift) estimate a rate;
        a fixed, deterministic sample keeps their cost independent of the retain
        set's size, which is usually far larger than the forget set.
        """
        known = self.suppressed_candidates()
        if size <= 0 or size >= len(known):
            return known
        step = len(known) / size
        return [known[int(i * step)] for i in range(size)]

    def accuracy(self, split: str, model: str) -> dict[str, float]:
        """``<split>_accuracy_<model>`` on the plain questions, with its interval."""
        pick = self.knows_base if model == "base" else self.knows_unlearned
        return rate_with_interval(f"{split}_accuracy_{model}", [pick(f) for f in self.facts if f.split == split])


@dataclass(frozen=True)
class Rewritten:
    """A prompt an audit's transform made: a question (the prompt template goes around it) or a raw prompt."""

    text: str
    raw: bool


ModelLoader = Callable[[str], Backend]  # a model reference -> an engine on the run's device (policy applied)
ROLES = ("base", "unlearned", "reference")
O = TypeVar("O", bound=AuditOptions)


@dataclass
class AuditContext(Generic[O]):
    """Everything an audit needs: models, facts, its options (of its own ``Options`` class), and where items go."""

    pair: ModelPair
    facts: FactSet
    options: O
    record: Callable[[list[ItemRecord]], None]
    reference: Backend | None = None
    max_new_tokens: int = 24
    load_model: ModelLoader | None = None
    _shared: dict[str, Any] = dataclasses.field(default_factory=dict)

    @cached_property
    def baseline(self) -> Baseline:
        """The plain questions (question-answer items) asked to both models, computed once per run."""
        if "baseline" not in self._shared:
            questions = [f for f in self.facts if f.kind == "qa"]
            self._shared["baseline"] = compute_baseline(self.pair, questions, self.max_new_tokens)
        return self._shared["baseline"]

    def model(self, ref: str) -> Backend:
        """A model by role (base, unlearned, reference) or by reference, loaded through the run's loader."""
        roles = {"base": self.pair.base, "unlearned": self.pair.unlearned, "reference": self.reference}
        if ref in roles:
            if roles[ref] is None:
                raise LabError(f"'{ref}' needs a run with --reference")
            return roles[ref]  # type: ignore[return-value]
        if self.load_model is None:
            raise LabError(f"this run cannot load further models (asked for '{ref}')")
        return self.load_model(ref)


def compute_baseline(pair: ModelPair, facts: list[Fact], max_new_tokens: int) -> Baseline:
    prompts = [pair.base.prompt(f.question) for f in facts]
    answers = [f.answer for f in facts]
    answered, lp_b, lp_u = answer_and_logprobs(pair, prompts, answers, max_new_tokens, "plain questions")
    return Baseline(
        facts=facts,
        prompts=prompts,
        answered={f.id: a for f, a in zip(facts, answered)},
        logprob_base={f.id: v for f, v in zip(facts, lp_b)},
        logprob_unlearned={f.id: v for f, v in zip(facts, lp_u)},
    )


def item_for(audit: str, fact: Fact, prompt: str, answered: Answered, category: str = "",
             recovered: bool | None = None, logprobs: tuple[float, float] | None = None,
             extra: dict[str, Any] | None = None) -> ItemRecord:
    """An item record for one prompt answered by both models."""
    return ItemRecord(
        audit=audit, fact_id=fact.id, split=fact.split, prompt=prompt, answer=fact.answer, category=category,
        output_base=answered.output_base, output_unlearned=answered.output_unlearned,
        hit_base=answered.score_base.hit, hit_unlearned=answered.score_unlearned.hit,
        rouge_base=answered.score_base.rouge_l, rouge_unlearned=answered.score_unlearned.rouge_l,
        logprob_base=logprobs[0] if logprobs else None, logprob_unlearned=logprobs[1] if logprobs else None,
        recovered=recovered, extra=extra or {},
    )


class Audit(Generic[O]):
    """Base class: subclasses set the class attributes and implement ``run``.

    An audit describes itself, so the shell (CLI, web lab, report, verdict,
    bench) iterates the registry and never names an audit: what it needs and
    runs on, how the verdict judges it, where the Probe and the Internals tab
    offer its method, whether it is ticked by default.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str]  # the paper the method comes from (title), for docs and reports
    summary: ClassVar[str]  # one sentence: what a high headline number means
    Options: ClassVar[type[AuditOptions]] = AuditOptions
    # The metric the release gate compares with --fail-above (None: not a recovery audit).
    recovery_key: ClassVar[str | None] = "recovery_rate"
    # The metric keys every complete run of this audit reports (the registry contract test checks them).
    headline_keys: ClassVar[tuple[str, ...]] = ("recovery_rate",)
    uses: ClassVar[tuple[str, ...]] = ("qa",)  # item kinds it runs on (lab.core.facts.KINDS); others are not given
    # What it needs of both models (lab.core.backend.CAPABILITIES): a served model may offer less than a local one.
    needs: ClassVar[frozenset[str]] = frozenset({"generate"})
    rewrites: ClassVar[tuple[str, ...]] = ()  # prompt transforms offered to the Probe tab (see rewrite)
    # Item categories whose ``recovered`` flags do not count toward the headline (reasoning: prompts carrying
    # forget-split text).
    outside_headline: ClassVar[tuple[str, ...]] = ()
    has_fact_view: ClassVar[bool] = False  # a per-fact figure for the Internals tab (see fact_view)
    # The Internals tab's controls of that view: an id for its elements, its button's label, the fact fields it
    # reads (question, answer, entity; a question may be sent as a raw prompt), the options it shows.
    view_id: ClassVar[str] = ""
    view_label: ClassVar[str] = ""
    view_reads: ClassVar[tuple[str, ...]] = ()
    view_options: ClassVar[tuple[str, ...]] = ()
    # The Probe's transform buttons (with ``rewrites``): an element-id prefix and the label before each name.
    probe_group: ClassVar[tuple[str, str] | None] = None
    # How the verdict judges it (lab.shell.verdict): an audit that asks the forget questions directly reads
    # "leaked" when the unlearned model answers them beyond chance; a recovery audit (``recovery_key``) reads
    # "hidden" when its rate clears the control (or, without one, ``chance_key``: a chance level it measures
    # beside the rate, because the attack also "recovers" facts a model never knew); others are detectors.
    asks_directly: ClassVar[bool] = False
    chance_key: ClassVar[str | None] = None
    default_on: ClassVar[bool] = False  # ticked when a run or the verdict dashboard is set up
    suite: ClassVar[bool] = False  # one of the design's five attacks: the suite the bench times
    check_options: ClassVar[dict[str, str]] = {}  # options of the GPU check's short run (an SAE's steps)
    # What the benchmark compares this audit with, if anything (BENCH_ROLES): the bench finds audits by role.
    bench_role: ClassVar[str | None] = None

    @classmethod
    def rule(cls) -> str:
        """``leak``, ``recovery`` or ``detector``: which verdict rule applies (see ``asks_directly``)."""
        return "leak" if cls.asks_directly else ("recovery" if cls.recovery_key else "detector")

    def run(self, ctx: AuditContext[O]) -> AuditResult:
        raise NotImplementedError

    @classmethod
    def unavailable(cls, pair: ModelPair) -> str | None:
        """Why this audit cannot run on ``pair`` (a capability a model lacks), or None when it can."""
        for role, model in pair.roles():
            missing = [c for c in CAPABILITIES if c in cls.needs and not model.can(c)]
            if missing:
                return (f"needs {', '.join(CAPABILITY_TEXT[c] for c in missing)}, which the {role} model "
                        f"({model.info.ref}) does not offer")
        return None

    def row_tokens(self, engine: Backend, facts: list[Fact], options: O) -> list[int]:
        """Tokens of the longest row this audit builds from each fact's own fields for ``engine`` (all facts in one
        tokenizer call): the runner leaves out items longer than a model's context, with a note
        (:mod:`lab.core.fitting`).  An audit whose prompts are not the prompt format's (multiple choice) or that
        cuts passages to fit measures its own."""
        return row_tokens(engine, facts)

    def figures(self, artifacts: dict[str, Any], items: "pd.DataFrame") -> dict[str, "go.Figure"]:
        """Plotly figures rebuilt from what the store kept (UI and report call this)."""
        return {}

    def verdict(self, metrics: dict[str, float | None]) -> str:
        """One line for the executive summary: the headline number and what it means."""
        key = self.recovery_key
        value = metrics.get(key) if key else None
        if value is None:
            return self.summary
        return f"{key} = {value:.1%}: {self.summary}"

    def headline(self, metrics: dict[str, float | None]) -> list[tuple[str, float | None, float | None, float | None]]:
        """(key, value, 95% low, 95% high) of the headline keys present, then the control-adjusted rate:
        what the terminal and the page show first (every key stays in the JSON, the store and the report)."""
        keys = [k for k in (*self.headline_keys, f"{self.recovery_key}_adjusted") if k in metrics]
        return [(k, metrics[k], metrics.get(f"{k}_ci_low"), metrics.get(f"{k}_ci_high")) for k in keys]

    def targets(self, ctx: AuditContext[O]) -> list[Fact]:
        """The facts the headline rate is a share of: the run's targets (``Baseline.targets``); an audit that
        spends some of them on its own calibration (directional ablation) returns the rest."""
        return ctx.baseline.targets()

    def attempts(self, items: list[ItemRecord]) -> list[ItemRecord]:
        """The items that decide the headline rate: a target's prompt with its ``recovered`` flag."""
        return [i for i in items if i.recovered is not None and i.category not in self.outside_headline]

    def recovered_ids(self, items: list[ItemRecord]) -> set[str]:
        """The targets the headline counts as recovered: recovered by at least one attempt."""
        return {i.fact_id for i in self.attempts(items) if i.recovered}

    def reference_recovered(self, ctx: AuditContext, items: list[ItemRecord]) -> set[str]:
        """The targets the reference model (``--reference``, ideally retrained without the forget set) gives
        the answer for under the same attack: the control that an attack's rate is read against.

        For prompt attacks, the reference answers every attempt's recorded
        prompt (batched) and is scored against the same gold; audits whose
        attack changes the model (quantization) or reads internals (logit
        lens) override this.
        """
        tries = self.attempts(items)
        outputs = ctx.model("reference").generate([i.prompt for i in tries], ctx.max_new_tokens,
                                                  desc=f"{self.name}: reference control")
        return {i.fact_id for i, out in zip(tries, outputs) if score_answer(out, i.answer).hit}

    def rewrite(self, pair: ModelPair, fact: Fact, related: list[Fact], transform: str) -> list[Rewritten]:
        """The fact's question rewritten by one of ``rewrites`` (the audit's own method), every variant in order.

        ``related`` are the other facts about the same entity.  Raises
        :class:`LabError` when the fact lacks what the transform needs.
        """
        raise LabError(f"the {self.name} audit offers no prompt rewrites")

    def workload(self, engine: Backend, facts: list[Fact]) -> list[tuple[int, ...]]:
        """The token rows this audit scores in its heaviest batched call (the benchmark times them)."""
        raise LabError(f"the {self.name} audit declares no scoring workload")

    def choice_prompts(self, facts: list[Fact]) -> list[str]:
        """Each multiple-choice question's prompt as this audit scores it (default options): the benchmark puts
        lm-eval's requests on the same prompts."""
        raise LabError(f"the {self.name} audit scores no multiple-choice questions")

    def choice_scores(self, engine: Backend, facts: list[Fact]) -> list[list[float]]:
        """Every choice's log-likelihood after :meth:`choice_prompts` (default options): what the benchmark times
        against lm-eval."""
        raise LabError(f"the {self.name} audit scores no multiple-choice questions")

    def fact_view(self, pair: ModelPair, fact: Fact, facts: list[Fact], options: AuditOptions,
                  memo: Callable[[Any, Callable[[], Any]], Any]) -> "go.Figure":
        """A figure of what this audit sees inside both models for one fact.

        ``memo(key, make)`` keeps expensive shared work (an SAE, an axis) across calls.
        """
        raise LabError(f"the {self.name} audit has no per-fact view")


def fit_both(pair: ModelPair, prompt: str, new_tokens: int) -> str:
    """A raw passage prompt cut from the left until it fits both models' contexts with room for ``new_tokens``
    (lm-evaluation-harness's rule: the end of a passage is what its continuation depends on)."""
    return pair.unlearned.fit_prompt(pair.base.fit_prompt(prompt, new_tokens), new_tokens)


def fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    """A metric for a verdict line: ``n/a`` when it is missing or not finite."""
    return "n/a" if value is None or not math.isfinite(value) else pattern.format(value)


def interval(metrics: dict[str, float | None], key: str) -> str:
    """``[low, high]`` of a rate's 95% interval as whole percentages, or "" when it has none."""
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return ""
    return f"[95% CI {low:.0%}-{high:.0%}]"


def pct(metrics: dict[str, float | None], key: str) -> str:
    """A metric as a whole percentage for a verdict line (``n/a`` when missing)."""
    return fmt(metrics.get(key), "{:.0%}")


def recovery_rate(targets: list[Fact], recovered_ids: set[str]) -> float:
    """Share of target facts (see ``Baseline.targets``) that an attack brought back."""
    return rate(f.id in recovered_ids for f in targets)


def recovery(key: str, targets: list[Fact], recovered_ids: set[str]) -> dict[str, float]:
    """``recovery_rate`` under ``key``, with its 95% bootstrap interval over the target facts."""
    return rate_with_interval(key, [f.id in recovered_ids for f in targets])


def control_adjusted(key: str, targets: list[str], raw: set[str], reference: set[str]) -> dict[str, float]:
    """The reference model's rate on the same attack (``<key>_reference``) and the audit's rate less it
    (``<key>_adjusted``), each with a 95% interval; the adjusted one is Newcombe's interval for paired
    proportions over the targets (recovered by the audit, recovered from the reference)."""
    out = rate_with_interval(f"{key}_reference", [t in reference for t in targets])
    out.update(difference_with_interval(f"{key}_adjusted", [t in raw for t in targets],
                                        [t in reference for t in targets]))
    return out
