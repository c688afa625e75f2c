"""The compatibility matrix: every audit, the probe, attribution, the logit lens and the SAE view on tiny
random-init models of every supported family, each with a tokenizer of its family's kind (tests/families.py).

A random model knows nothing, so the facts are made to fit it: a forget or retain fact's answer is the base
model's own greedy answer (the base "knows" it; the perturbed "unlearned" copy often answers otherwise, so
there are targets to attack), while holdout facts keep answers no model produces (the unknown entities).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from families import CACHE, FAMILIES, build_pair, corpus

NEW_TOKENS = 24  # the run's answer length, and what the SAE view asks the base model with
FAST = {"sae": {"steps": "60", "width": "2", "batch_size": "64", "prompts_per_entity": "2", "made_up_entities": "4",
                "min_explained_variance": "0"},  # a 60-step SAE on a random model: the path runs, the fit is poor
        "remind": {"max_radius": "2", "variants_per_radius": "2"},
        "reasoning": {"prompts_per_category": "1", "retain_facts": "4"},
        "keywords": {"retain_facts": "4"}, "quantization": {"group_size": "16"},
        "surrogates": {"embedder": "base"}}


def fitted_facts(engine, facts, path: Path) -> Path:
    """Forget and retain facts re-answered with the base model's greedy answers (see the module docstring)."""
    from lab.core.facts import save_facts
    from lab.core.scoring import normalize

    chosen = []
    for split in ("forget", "retain", "holdout"):  # two facts of each of five people per split
        people = list(dict.fromkeys(f.entity for f in facts.split(split)))[:5]
        chosen += [f for person in people for f in [g for g in facts.split(split) if g.entity == person][:2]]
    asked = [f for f in chosen if f.split != "holdout"]
    outputs = engine.generate([engine.prompt(f.question) for f in asked], NEW_TOKENS)
    # The whole greedy answer at the run's length (and at the SAE view's 24 tokens): the base model hits it.
    answers = {f.id: o.strip() for f, o in zip(asked, outputs) if normalize(o)}  # answers the scorer can match
    fitted = [f.__class__(**{**f.__dict__, "answer": answers.get(f.id) or f.answer}) for f in chosen]
    choices = [f.__class__(**{**f.__dict__, "id": f"mc-{f.id}", "kind": "mc", "choices": (f.answer, *f.perturbed_answers),
                                "answer_index": 0}) for f in chosen if f.perturbed_answers]
    return save_facts(fitted + choices, path)


@pytest.fixture(scope="module")
def family_pairs(tiny_demo):
    from lab.core.facts import load_facts

    facts = load_facts(tiny_demo / "facts.jsonl").of_kinds(("qa",))
    texts = corpus(facts)
    return {name: build_pair(family, texts, CACHE / name) for name, family in FAMILIES.items()}, facts


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_audit_on_every_family(family_pairs, name, tmp_path, monkeypatch):
    from audits import available, get_audit
    from lab.core.attribution import attribute_prompt
    from lab.core.models import load_engine
    from lab.core.options import build_options
    from lab.core.prompts import PromptFormat
    from lab.core.store import Store
    from lab.shell.spec import RunSpec, build_spec
    from lab.shell.runner import check, execute, prepare

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pairs, facts = family_pairs
    base_dir, unlearned_dir = pairs[name]
    family = FAMILIES[name]
    chat = family.chat_template is not None
    base = load_engine(str(base_dir), device="cpu", prompt_format=PromptFormat(use_chat_template=chat))
    facts_file = fitted_facts(base, facts, tmp_path / "facts.jsonl")
    names = available()
    spec = build_spec(RunSpec, dict(base=str(base_dir), unlearned=str(unlearned_dir), audits=names, facts=str(facts_file),
                   device="cpu", max_new_tokens=NEW_TOKENS, options={n: FAST[n] for n in names if n in FAST},
                   chat_template=chat))
    prepared = prepare(spec, checked=check(spec))
    with Store(tmp_path / "f.duckdb") as store:
        outcome = execute(prepared, store)
        statuses = store.audits(outcome.run_id).set_index("audit")["status"].to_dict()
    assert outcome.errors == {}, outcome.errors
    assert set(statuses.values()) == {"complete"}, statuses
    for audit in names:
        missing = set(get_audit(audit).headline_keys) - set(outcome.metrics[audit])
        assert not missing, (audit, missing)
    assert outcome.metrics["direct"]["forget_accuracy_base"] > 0  # the facts fit the base model
    assert prepared.pair.base.chunked_scoring  # backbone + head reproduce the model's logits

    # The probe's streaming, attribution and both per-fact views on the same pair.
    pair = prepared.pair
    fact = next(f for f in prepared.facts if f.split == "forget" and f.kind == "qa")
    prompt = pair.base.prompt(fact.question)
    assert "".join(pair.base.stream(prompt, 4))[-1:] is not None
    view = attribute_prompt(pair, prompt, fact.answer, ["feature_ablation", "integrated_gradients"])
    assert len(view.labels) == len(view.scores["integrated_gradients"]["base"])
    lens = get_audit("logit_lens")().fact_view(pair, fact, list(prepared.facts), get_audit("logit_lens").Options(),
                                               lambda key, make: make())
    assert lens.data
    sae_options = build_options(get_audit("sae").Options, "sae", FAST["sae"])
    sae = get_audit("sae")().fact_view(pair, fact, list(prepared.facts), sae_options, lambda key, make: make())
    assert fact.entity in json.dumps(sae.to_plotly_json()["layout"]["title"])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_prompt_assembly_per_family(family_pairs, name):
    """BOS exactly once (plain, chat with a system prompt, raw completion), continuations without a doubled
    space marker, and generation stopping at the family's end-of-turn tokens."""
    from lab.core.models import load_engine
    from lab.core.prompts import PromptFormat

    pairs, _ = family_pairs
    family = FAMILIES[name]
    for fmt in (PromptFormat(), PromptFormat(use_chat_template=True, system_prompt="Answer briefly.")):
        engine = load_engine(str(pairs[name][0]), device="cpu", prompt_format=fmt)
        tok = engine.tokenizer
        bos = tok.bos_token_id if family.adds_bos else None
        for text in (engine.prompt("Where was Ada born?"), "Ada was born in"):
            ids = engine.encode(text)
            assert ids.count(bos) == (1 if bos is not None else 0) or bos is None, (name, text, ids[:4])
            if bos is not None:
                assert ids[0] == bos
        if fmt.use_chat_template and family.chat_template:
            assert "Answer briefly." in engine.prompt("Q?")  # the system prompt, or merged for Gemma
        prefix, target = engine.encode_continuation(engine.prompt("Where was Ada born?"), "Velmora")
        pieces = tok.convert_ids_to_tokens(target)
        assert pieces[0] not in ("▁", "Ġ") and "▁▁" not in "".join(pieces), pieces
        assert tok.decode(target).strip() == "Velmora"
        end_of_turn = [t for t in ("<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>") if t in family.extra_tokens]
        for token in end_of_turn:
            assert tok.convert_tokens_to_ids(token) in engine.encoder.stop_ids


@pytest.mark.parametrize("name", list(FAMILIES))
def test_decode_loop_matches_generate_per_family(family_pairs, name):
    """The engine's own decode loop (finished rows leave the batch) gives the texts ``model.generate`` gives
    on the same left-padded batch, on every family's attention, cache and position scheme."""
    import torch

    from lab.core.models import load_engine

    pairs, facts = family_pairs
    engine = load_engine(str(pairs[name][0]), device="cpu")
    prompts = [engine.prompt(f.question) for f in facts.facts[:6]] + ["Ada", "Ada was born in the city of"]
    ids, mask = engine._pad(engine.encoder.encode_many(prompts), left=True)

    def hf_generate() -> tuple[list[str], torch.Tensor]:
        with torch.no_grad():
            out = engine.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS,
                                        do_sample=False, pad_token_id=engine.pad_id,
                                        eos_token_id=engine.encoder.stop_ids or None)
        new = out[:, ids.shape[1]:]
        return [t.strip() for t in engine.tokenizer.batch_decode(new, skip_special_tokens=True)], new

    theirs, new = hf_generate()
    assert engine.generate(prompts, NEW_TOKENS) == theirs
    # A random model seldom says EOS: make two of its own tokens stops, so rows finish at different steps
    engine.encoder.__dict__["stop_ids"] = [*engine.encoder.stop_ids, int(new[0, 2]), int(new[1, 5])]
    theirs, new = hf_generate()
    assert (new == engine.pad_id).any(dim=1).sum() >= 1  # some rows did stop early
    assert engine.generate(prompts, NEW_TOKENS) == theirs
