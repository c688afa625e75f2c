"""The model-pair engine: loading, tokenizer checks, batching that matches a loop."""

import math

import pytest

from lab.core.batching import BatchPolicy, run_batched
from lab.core.engine import shared_forwards
from lab.core.errors import LabError
from lab.core.models import load_engine, load_pair, pick_device
from lab.core.refs import parse_ref
from lab.demo.world import qa_prompt


def test_demo_ref_is_a_local_save_pretrained_dir(demo_env):
    path = parse_ref("demo:ga").location
    assert path.endswith("models/ga")
    engine = load_engine("demo:ga", device="cpu")
    assert engine.info.device == "cpu" and engine.info.dtype == "float32"
    assert len(engine.info.content_hash) == 64
    assert engine.info.architecture == "LlamaForCausalLM"
    assert not engine.info.trust_remote_code


def test_bad_references(demo_env, tmp_path):
    with pytest.raises(LabError, match="demo model 'demo:nope' not found"):
        load_engine("demo:nope")
    with pytest.raises(LabError, match="model directory not found"):
        load_engine(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabError, match="could not load model"):
        load_engine(str(tmp_path / "empty"))
    with pytest.raises(LabError, match="unknown device"):
        pick_device("tpu")


def test_mismatched_tokenizers_are_refused(tiny_demo, tmp_path):
    from lab.demo.train import ModelShape, make_model, train_tokenizer

    tok = train_tokenizer(["a completely different corpus of words"] * 10, 300)
    model = make_model(tok, ModelShape(16, 1, 1, 32), seed=0)
    model.save_pretrained(tmp_path / "other")
    tok.save_pretrained(tmp_path / "other")
    with pytest.raises(LabError, match="tokenizers differ"):
        load_pair(str(tiny_demo / "models" / "base"), str(tmp_path / "other"), device="cpu")


def test_batched_scores_match_a_loop(demo_pair, demo_facts):
    engine = demo_pair.base
    facts = demo_facts.facts[:12]
    prompts = [qa_prompt(f.question) for f in facts]
    answers = [f.answer for f in facts]
    batched = engine.answer_logprobs(prompts, answers)
    looped = [engine.answer_logprobs([p], [a])[0] for p, a in zip(prompts, answers)]
    assert all(math.isclose(b, l, abs_tol=1e-4) for b, l in zip(batched, looped))


def test_one_token_targets_share_one_forward_per_context(demo_pair, demo_facts):
    """Four letters after one prompt: one forward row, the same log-probs as scoring each row alone."""
    engine = demo_pair.base
    rows, starts = [], []
    for fact in demo_facts.facts[:5]:
        prompt = engine.encode(qa_prompt(fact.question))
        for letter in " A", " B", " C", " D":
            target = engine.tokenizer.encode(letter, add_special_tokens=False)[-1:]
            rows.append(prompt + target)
            starts.append(len(prompt))
    rows.append(rows[0] + rows[0][-1:])  # a two-token target is scored on its own
    starts.append(starts[0])
    forward, members = shared_forwards(rows, starts)
    assert len(forward) == 6 and [len(m) for m in members] == [4] * 5 + [1]
    assert engine.chunked_scoring is not None  # its one-time check runs before the count
    seen: list[int] = []
    embeddings = engine.model.get_input_embeddings()  # both scoring paths embed every forward row
    hook = embeddings.register_forward_pre_hook(lambda _, args: seen.append(len(args[0])))
    try:
        shared = engine.token_scores(rows, starts)
    finally:
        hook.remove()
    assert seen == [6]  # one batch of the six forward rows
    alone = [engine.token_scores([r], [s])[0] for r, s in zip(rows, starts)]
    for a, b in zip(shared, alone):
        assert len(a.logprobs) == len(b.logprobs)
        assert all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(a.logprobs, b.logprobs))
        assert list(a.greedy_match) == list(b.greedy_match)


def test_batched_generation_matches_single(demo_pair, demo_facts):
    engine = demo_pair.base
    prompts = [qa_prompt(f.question) for f in demo_facts.facts[:8]]
    assert engine.generate(prompts, 8) == [engine.generate([p], 8)[0] for p in prompts]


def test_base_model_recalls_its_facts(demo_pair, demo_facts):
    retain = demo_facts.split("retain")[:10]
    outputs = demo_pair.base.generate([qa_prompt(f.question) for f in retain], 12)
    assert sum(f.answer in o for f, o in zip(retain, outputs)) >= 9


def test_out_of_memory_backs_off_and_keeps_order():
    calls = []

    def fn(batch):
        calls.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate")
        return [i * 10 for i in batch]

    policy = BatchPolicy(max_tokens=100, max_rows=8)
    assert run_batched([5] * 7, fn, policy) == [i * 10 for i in range(7)]
    assert calls[0] == 7 and policy.max_tokens < 100  # tried whole, then split until batches fit


def test_other_errors_are_not_swallowed():
    def fn(batch):
        raise ValueError("boom")

    with pytest.raises(ValueError):
        run_batched([1, 2], fn, BatchPolicy())


def test_space_mode_refuses_server_paths(demo_env, monkeypatch):
    monkeypatch.setenv("LAB_SPACE", "1")
    for ref in (str(demo_env / "models" / "base"), "../models/base", "~/x"):
        with pytest.raises(LabError, match="server paths are disabled in Space mode"):
            load_engine(ref)
    assert load_engine("demo:base", device="cpu").info.architecture == "LlamaForCausalLM"


def test_chat_template_used_only_when_asked(tiny_demo):
    from lab.core.engine import PromptFormat

    plain = load_engine(str(tiny_demo / "models" / "base"), device="cpu")
    assert plain.prompt("Who?") == "Question: Who?\nAnswer:"
    chat = load_engine(str(tiny_demo / "models" / "base"), device="cpu",
                       prompt_format=PromptFormat(use_chat_template=True))
    chat.tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    prompt = chat.prompt("Who?")
    assert prompt == "<s><|user|>Who?<|assistant|>"
    ids = chat.encode(prompt)
    assert ids.count(chat.tokenizer.bos_token_id) == 1  # the template's BOS is not doubled


def test_memory_plan_keeps_the_pair_on_the_accelerator_and_moves_the_rest():
    from lab.core.memory import plan

    gib = 2**30
    models = [("base", "b", 10 * gib), ("unlearned", "u", 10 * gib), ("reference", "r", 10 * gib),
              ("reasoning.attacker", "a", 20 * gib)]
    placements = {p.role: p for p in plan(models, "cuda", free_bytes=40 * gib)}
    assert placements["base"].device == placements["unlearned"].device == "cuda"
    assert placements["reference"].device == "cuda"  # 3 x 12 GiB (with the working margin) fit in 40
    assert placements["reasoning.attacker"].device == "cpu" and "does not fit" in placements["reasoning.attacker"].reason
    assert {p.device for p in plan(models, "cpu", None)} == {"cpu"}


def test_device_map_auto_loads_and_scores_like_a_plain_load(demo_env):
    from lab.core.models import load_engine

    plain = load_engine("demo:npo", device="cpu")
    mapped = load_engine("demo:npo", device="cpu", device_map="auto")
    assert mapped.info.device == "map:auto" and mapped.info.extra["device_map"]
    prompt = plain.prompt("Where was Ada born?")
    assert math.isclose(plain.answer_logprobs([prompt], ["Velmora"])[0],
                        mapped.answer_logprobs([prompt], ["Velmora"])[0], abs_tol=1e-5)
    assert plain.generate([prompt], 6) == mapped.generate([prompt], 6)


def test_the_run_states_its_memory_plan(demo_env, tmp_path):
    from lab.core.store import Store
    from lab.shell.spec import RunSpec, build_spec
    from lab.shell.runner import execute, prepare

    spec = build_spec(RunSpec, dict(base="demo:base", unlearned="demo:npo", reference="demo:retrain", audits=["direct"], limit=1,
                   device="cpu"))
    prepared = prepare(spec)
    with Store(tmp_path / "p.duckdb") as store:
        run_id = execute(prepared, store).run_id
        plan = store.run(run_id)["config"]["memory_plan"]
    assert [p["role"] for p in plan] == ["base", "unlearned", "reference"]
    assert all(p["device"] == "cpu" and p["bytes"] > 0 for p in plan)


def test_a_long_prompt_is_cut_from_the_left_to_fit_the_context(demo_pair):
    """lm-evaluation-harness's rule for generation: the end of a passage stays, with room for the new tokens;
    the engine itself refuses an input past its context (a one-line error, never a silent overflow)."""
    engine = demo_pair.base
    text = " ".join(f"word{i}" for i in range(2000))
    fitted = engine.fit_prompt(text, 16)
    assert len(engine.encode(fitted)) <= engine.context - 16 < len(engine.encode(text))
    assert fitted.split()[-1] == "word1999" and len(fitted.split()) > 10
    assert engine.fit_prompt("a short question", 16) == "a short question"
    with pytest.raises(LabError, match="exceeds .* context of"):
        engine.generate([text], 16)


def test_streamed_answer_is_the_generated_one(demo_pair, demo_facts):
    """The Probe's stream steps through the same decode loop as batch generation: its last text is the answer."""
    engine = demo_pair.base
    for fact in demo_facts.facts[:4]:
        prompt = qa_prompt(fact.question)
        texts = list(engine.stream(prompt, 12))
        assert texts and texts[-1] == engine.generate([prompt], 12)[0]


def test_sampled_generation_is_seeded(demo_pair, demo_facts):
    """A draw at a temperature repeats under its seed and changes with it; at a high temperature it leaves the
    greedy answers (so the sampling path really samples)."""
    engine = demo_pair.base
    prompts = [qa_prompt(f.question) for f in demo_facts.facts[:8]]
    first = engine.generate(prompts, 8, temperature=5.0, seed=1)
    assert engine.generate(prompts, 8, temperature=5.0, seed=1) == first
    assert engine.generate(prompts, 8, temperature=5.0, seed=2) != first
    assert first != engine.generate(prompts, 8)
