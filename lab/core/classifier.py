"""A text classifier named by a model reference, and the probability it gives one class.

open-unlearning's gibberish rate (``forget_Q_A_gibberish``, ``classifier_prob`` in its
``metrics/utility.py``) is the mean softmax probability of class 0 that a sequence classifier from the model
hub (``madhurjindal/autonlp-Gibberish-Detector-492513457``) gives each greedy answer, each truncated to
``max_length`` tokens.  The lab ships no classifier: a run names one (a local folder, or a hub id where the hub
is reachable), loaded here under the run policy as every model is, never with remote code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from lab.core.batching import BatchPolicy, run_batched
from lab.core.errors import LabError, is_oom
from lab.core.models import check_hub_model, first_line, location
from lab.core.policy import current as current_policy
from lab.core.refs import require_local

BATCH_ROWS = 32  # open-unlearning's batch size for the classifier


@dataclass
class Classifier:
    """A sequence classifier and its tokenizer, on one device."""

    ref: str
    tokenizer: Any
    model: Any
    device: Any

    def class_probabilities(self, texts: Sequence[str], class_id: int, max_length: int,
                            desc: str | None = None) -> list[float]:
        """Softmax probability of ``class_id`` for each text, truncated to ``max_length`` tokens, batched."""
        classes = int(self.model.config.num_labels)
        if not 0 <= class_id < classes:
            raise LabError(f"classifier {self.ref} has {classes} classes: class {class_id} does not exist")
        if not texts:
            return []
        lengths = [len(ids) for ids in self.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]

        @torch.no_grad()
        def batch(indices: list[int]) -> list[float]:
            inputs = self.tokenizer([texts[i] for i in indices], return_tensors="pt", padding=True, truncation=True,
                                    max_length=max_length, return_attention_mask=True)
            logits = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits.float()
            return torch.softmax(logits, dim=-1)[:, class_id].cpu().tolist()

        return run_batched(lengths, batch, BatchPolicy(max_tokens=BATCH_ROWS * max_length, max_rows=BATCH_ROWS), desc)


def load_classifier(ref: str, device: Any) -> Classifier:
    """The sequence classifier ``ref`` names (a folder or a hub id, no adapter, no served model) on ``device``,
    under the run policy; a clear error when it is missing or is not a classifier."""
    parsed = current_policy().check_ref(ref)
    if parsed.kind == "remote":
        raise LabError(f"classifier '{ref}': a served model cannot classify text here; give a folder or a hub id")
    parsed = require_local(ref)
    if parsed.adapter is not None:
        raise LabError(f"classifier '{ref}': an adapter is not a classifier; give the classifier's folder or hub id")
    if parsed.kind == "hub":
        check_hub_model(parsed)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = location(parsed)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - a folder that holds no classifier fails in many ways
        if is_oom(exc):
            raise
        raise LabError(f"could not load classifier '{ref}': {type(exc).__name__}: {first_line(exc)[:300]}") from None
    return Classifier(ref, tokenizer, model.to(device).eval(), device)
