"""Which prompt tokens carry an answer, in the base and in the unlearned model.

"Understanding the Dilemma of Unlearning for Large Language Models" (unPact)
measures each prompt token's contribution to the answer by leaving it out:

    C(x_i, y) = LP(x, y) - LP(x without x_i, y),
    LP(x, y)  = (1/T) * sum_k log p(y_k | x, y_<k),

and finds that unlearning mostly breaks the model's focus on a few keywords.
This is captum's ``FeatureAblation`` through ``LLMAttribution`` with a token
*deleted* rather than replaced, divided by T (captum attributes the summed
log-prob).  Captum runs one forward per ablated token; :func:`leave_one_out`
builds every ablated variant of every prompt and scores them all in one
batched ``Engine.token_scores`` call, and :func:`captum_leave_one_out` is the
captum computation it is checked against (tests, and a live check in the
``keywords`` audit).  :func:`integrated_gradients` gives the gradient view
(captum's ``LayerIntegratedGradients`` on the input embeddings).

:func:`attribute_prompt` and :func:`attribution_figure` are the attribution
view the UI and the report show: both models side by side and their difference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from captum.attr import (
    FeatureAblation,
    LayerIntegratedGradients,
    LLMAttribution,
    LLMGradientAttribution,
    TextTokenInput,
)

from lab.core.errors import LabError
from lab.core.models import PAIR_ROLES

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from lab.core.engine import Engine
    from lab.core.models import ModelPair

METHODS = ("feature_ablation", "integrated_gradients")
METHOD_TITLES = {
    "feature_ablation": "Leave-one-out (FeatureAblation)",
    "integrated_gradients": "LayerIntegratedGradients (input embeddings)",
}


@dataclass
class PromptTokens:
    """A prompt and its answer as the engine tokenizes them, with the tokens that can be attributed."""

    ids: list[int]
    target: list[int]
    positions: list[int]  # indices in ``ids`` of the non-special tokens (the features)
    spans: list[tuple[int, int]]  # character span in the prompt of each feature
    labels: list[str]  # the prompt text of each feature, newlines shown as "\\n"


@dataclass
class Contributions:
    """Leave-one-out contributions C(x_i, y) of one prompt's features, and LP(x, y)."""

    tokens: PromptTokens
    logprob: float
    values: np.ndarray


def prompt_tokens(engine: "Engine", prompt: str, answer: str) -> PromptTokens:
    """Ids exactly as the engine scores them, with character offsets (needs a fast tokenizer)."""
    if not answer.strip():
        raise LabError("attribution needs a non-empty target answer")
    ids, target = engine.encode_continuation(prompt, answer)
    try:
        offsets = engine.encoder.offsets(engine.encoder.joined(prompt, answer))[:len(ids)]
    except NotImplementedError:
        raise LabError("token attribution needs a fast (Rust) tokenizer for character offsets") from None
    special = set(engine.tokenizer.all_special_ids)
    positions = [i for i, token in enumerate(ids) if token not in special and offsets[i] is not None]
    if len(ids) < 2 or not positions:
        raise LabError(f"prompt too short to attribute (needs two tokens or more): {prompt!r}")
    spans = [(min(offsets[i][0], len(prompt)), min(offsets[i][1], len(prompt))) for i in positions]
    labels = [prompt[s:e].replace("\n", "\\n") or engine.tokenizer.convert_ids_to_tokens(ids[i])
              for i, (s, e) in zip(positions, spans)]
    return PromptTokens(ids, target, positions, spans, labels)


def leave_one_out(engine: "Engine", prompts: Sequence[str], answers: Sequence[str],
                  desc: str | None = None) -> list[Contributions]:
    """C(x_i, y) for every feature of every prompt: all deletions scored in one batched call."""
    toks = [prompt_tokens(engine, p, a) for p, a in zip(prompts, answers)]
    rows, starts = [], []
    for tok in toks:
        variants = [tok.ids] + [tok.ids[:i] + tok.ids[i + 1:] for i in tok.positions]
        rows.extend(v + tok.target for v in variants)
        starts.extend(len(v) for v in variants)
    scores = engine.token_scores(rows, starts, desc=desc)
    out, cursor = [], 0
    for tok in toks:
        means = np.array([s.mean for s in scores[cursor: cursor + 1 + len(tok.positions)]])
        cursor += 1 + len(tok.positions)
        out.append(Contributions(tok, float(means[0]), means[0] - means[1:]))
    return out


class _EngineTokenInput(TextTokenInput):
    """Captum's token input built from the engine's own ids (its special tokens and chat template).

    The features are the non-special tokens; an absent feature is replaced by
    ``baseline_id`` (what the gradient methods interpolate from).
    """

    def __init__(self, tok: PromptTokens, tokenizer, baseline_id: int):  # noqa: D107 - see class
        ids = torch.tensor([tok.ids])
        mask = torch.zeros_like(ids, dtype=torch.bool)
        mask[0, tok.positions] = True
        self.inp_tensor = ids
        self.itp_mask = mask
        self.itp_tensor = ids[mask].unsqueeze(0)
        self.skip_tokens = None
        self.values = list(tok.labels)
        self.tokenizer = tokenizer
        self.n_itp_features = len(tok.positions)
        self.baselines = baseline_id


class _DeletionInput(_EngineTokenInput):
    """The same features, but an absent token is deleted: C(x_i, y) compares x with x without x_i."""

    def to_model_input(self, perturbed_tensor: torch.Tensor | None = None) -> torch.Tensor:
        if perturbed_tensor is None:
            return self.inp_tensor
        if perturbed_tensor.size(0) != 1:
            raise ValueError("deletion changes the length: ablate one variant per forward")
        keep = torch.ones(self.inp_tensor.size(1), dtype=torch.bool)
        keep[self.itp_mask[0]] = perturbed_tensor[0].cpu() == 1
        return self.inp_tensor[:, keep]


def baseline_token(engine: "Engine") -> int:
    """The token an absent feature becomes for gradient methods: unk, else pad."""
    unk = engine.tokenizer.unk_token_id
    return unk if unk is not None else engine.pad_id


def captum_leave_one_out(engine: "Engine", prompt: str, answer: str, forward_in_tokens: bool = False) -> np.ndarray:
    """C(x_i, y) computed by captum's FeatureAblation (one forward per token): the reference."""
    tok = prompt_tokens(engine, prompt, answer)
    llm = LLMAttribution(FeatureAblation(engine.model), engine.tokenizer)
    with engine.lock, torch.no_grad():
        result = llm.attribute(_DeletionInput(tok, engine.tokenizer, baseline_token(engine)),
                               target=torch.tensor(tok.target), forward_in_tokens=forward_in_tokens,
                               use_cached_outputs=False)
    return result.seq_attr.float().cpu().numpy() / len(tok.target)


def integrated_gradients(engine: "Engine", prompt: str, answer: str, n_steps: int = 32) -> np.ndarray:
    """Captum's LayerIntegratedGradients on the input embeddings, towards LP(x, y) (mean log-prob).

    Each feature's embedding is interpolated from the baseline token's
    embedding; captum attributes each target token's log-prob, and the sum
    divided by T is the attribution of the mean (completeness holds up to the
    integral's approximation).
    """
    if n_steps < 2:
        raise LabError(f"integrated gradients needs n_steps >= 2, got {n_steps}")
    tok = prompt_tokens(engine, prompt, answer)
    lig = LayerIntegratedGradients(engine.model, engine.model.get_input_embeddings())
    llm = LLMGradientAttribution(lig, engine.tokenizer)
    with engine.lock, torch.enable_grad():
        result = llm.attribute(_EngineTokenInput(tok, engine.tokenizer, baseline_token(engine)),
                               target=torch.tensor(tok.target), n_steps=n_steps)
    return result.seq_attr.float().cpu().numpy().reshape(-1) / len(tok.target)


# --------------------------------------------------------------------------- #
# The attribution view
# --------------------------------------------------------------------------- #


@dataclass
class PromptAttribution:
    """Per-token attributions of one answer from both models, JSON-ready (artifacts, UI)."""

    prompt: str
    answer: str
    labels: list[str]
    scores: dict[str, dict[str, list[float]]]  # method -> model -> one value per label
    logprob: dict[str, float]  # model -> LP(x, y)
    marked: list[int]  # label indices to highlight (e.g. the keywords)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PromptAttribution":
        return cls(**data)


def check_methods(methods: Sequence[str]) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise LabError(f"unknown attribution methods {unknown or '(none given)'} (use {', '.join(METHODS)})")


def attribute_prompt(pair: "ModelPair", prompt: str, answer: str, methods: Sequence[str] = METHODS,
                     n_steps: int = 32) -> PromptAttribution:
    """Attributions of ``answer`` to the tokens of the raw ``prompt`` in both models."""
    check_methods(methods)
    engines = {"base": pair.base, "unlearned": pair.unlearned}
    loo = {m: leave_one_out(e, [prompt], [answer])[0] for m, e in engines.items()}
    scores: dict[str, dict[str, list[float]]] = {}
    if "feature_ablation" in methods:
        scores["feature_ablation"] = {m: c.values.tolist() for m, c in loo.items()}
    if "integrated_gradients" in methods:
        scores["integrated_gradients"] = {m: integrated_gradients(e, prompt, answer, n_steps).tolist()
                                          for m, e in engines.items()}
    return PromptAttribution(prompt, answer, loo["base"].tokens.labels, scores,
                             {m: c.logprob for m, c in loo.items()}, [])


def attribution_figure(attr: PromptAttribution, title: str | None = None) -> "go.Figure":
    """Per method: both models' attributions side by side, and below them the difference."""
    from plotly.subplots import make_subplots

    methods = list(attr.scores)
    titles = []
    for method in methods:
        titles += [f"{METHOD_TITLES.get(method, method)}: base vs unlearned", "difference (unlearned - base)"]
    fig = make_subplots(rows=2 * len(methods), cols=1, shared_xaxes=True, subplot_titles=titles,
                        vertical_spacing=0.08)
    marked = set(attr.marked)
    x = [f"{i}:{label}{' *' if i in marked else ''}" for i, label in enumerate(attr.labels)]
    colors = {"base": "#1f77b4", "unlearned": "#d62728"}
    for row, method in enumerate(methods):
        values = attr.scores[method]
        for model in PAIR_ROLES:
            fig.add_bar(x=x, y=values[model], name=model, marker_color=colors[model], legendgroup=model,
                        showlegend=row == 0, row=2 * row + 1, col=1)
        diff = np.asarray(values["unlearned"]) - np.asarray(values["base"])
        fig.add_bar(x=x, y=diff.tolist(), name="unlearned - base", marker_color="#7f7f7f",
                    legendgroup="diff", showlegend=row == 0, row=2 * row + 2, col=1)
    lp = ", ".join(f"{m} {attr.logprob[m]:.2f}" for m in PAIR_ROLES if m in attr.logprob)
    fig.update_layout(barmode="group", height=320 * len(methods) + 120,
                      title=title or f"Token attributions of '{attr.answer}' (answer mean log-prob: {lp})")
    for row in range(len(methods)):  # short axis titles: a long one overlaps its neighbour's in a stack
        fig.update_yaxes(title_text="to LP", row=2 * row + 1, col=1)
        fig.update_yaxes(title_text="Δ", row=2 * row + 2, col=1)
    return fig
