"""Where the space between a plain prompt and its answer goes (``--token-split``).

The default scores exactly the answer's tokens (TOFU's P(answer | question); lm-evaluation-harness's split);
``open-unlearning`` reproduces open-unlearning's plain-template items, for comparison with its published tables.
The expected ids are built here from each convention's rule as stated in the docstrings, on the tiny demo's
byte-level tokenizer, and compared with what the engine scores and generates from.
"""

from __future__ import annotations

import pytest

from lab.core.engine import Engine
from lab.core.probes import eos_suffix
from lab.core.prompts import PromptFormat
from lab.shell.cli import main

FACTS = 24  # questions of every split, enough to cover answers of every attribute kind (names, years, numbers)


def open_unlearning_item(tokenizer, question: str, answer: str) -> tuple[list[int], list[int], list[int]]:
    """open-unlearning's plain template (user tag "Question: ", end tag newline, assistant tag "Answer: "):
    the prompt, its trailing space included, and prompt + answer are tokenized separately, special tokens on;
    EOS is appended to the full ids unless they already end with it; the labels are the full ids from the
    position where the prompt's own ids end.  Generation starts from the prompt's ids.
    Returns (generation input, full ids, labels)."""
    prompt = f"Question: {question}\nAnswer: "
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    full = tokenizer(prompt + answer, add_special_tokens=True)["input_ids"]
    if full[-1] != tokenizer.eos_token_id:
        full = full + [tokenizer.eos_token_id]
    return prompt_ids, full, full[len(prompt_ids):]


def tofu_item(tokenizer, question: str, answer: str) -> tuple[list[int], list[int], list[int]]:
    """TOFU's quantity, P(answer | question): the prompt ends at "Answer:", the space before the answer is the
    answer's, and the labels are the answer's own tokens in the joint text, then EOS.  Generation starts right
    after "Answer:".  Returns (generation input, full ids, labels)."""
    prompt = f"Question: {question}\nAnswer:"
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    full = tokenizer(f"{prompt} {answer}", add_special_tokens=True)["input_ids"] + [tokenizer.eos_token_id]
    assert full[:len(prompt_ids)] == prompt_ids  # the prompt's tokens begin the joint ones: a clean cut
    labels = full[len(prompt_ids):]
    assert tokenizer.decode(labels[:-1]) == f" {answer}"  # exactly the answer, nothing of the prompt
    return prompt_ids, full, labels


def engine_with(engine: Engine, token_split: str) -> Engine:
    """The loaded tiny model under the plain template with ``token_split``."""
    return Engine(engine.model, engine.tokenizer, engine.info, PromptFormat(token_split=token_split))


@pytest.mark.parametrize("token_split, expected", [("open-unlearning", open_unlearning_item), ("lab", tofu_item)])
def test_each_split_gives_its_conventions_labels_and_generation_input(demo_pair, demo_facts, token_split, expected):
    engine = engine_with(demo_pair.base, token_split)
    facts = demo_facts.facts[::max(1, len(demo_facts.facts) // FACTS)][:FACTS]
    prompts = [engine.prompt(f.question) for f in facts]
    rows, starts = engine.continuation_rows([(p, f.answer) for p, f in zip(prompts, facts)], eos_suffix(engine, True))
    for fact, prompt, row, start in zip(facts, prompts, rows, starts):
        generation_input, full, labels = expected(engine.tokenizer, fact.question, fact.answer)
        assert row == full, fact.id
        assert row[start:] == labels, fact.id
        assert engine.encode(prompt) == generation_input, fact.id


def test_open_unlearning_labels_start_one_token_late_after_a_lone_space(demo_pair, demo_facts):
    """What the manual says of the two conventions on a byte-level tokenizer: open-unlearning's prompt ends in a
    lone space token, and its labels are ours less our first token (the space merged with the answer's start)."""
    tokenizer = demo_pair.base.tokenizer
    for fact in demo_facts.facts[:FACTS]:
        ou_input, _, ou_labels = open_unlearning_item(tokenizer, fact.question, fact.answer)
        _, _, lab_labels = tofu_item(tokenizer, fact.question, fact.answer)
        assert tokenizer.decode(ou_input[-1:]) == " "
        assert ou_labels == lab_labels[1:], fact.id


def test_the_split_is_a_run_setting_the_report_repeats(demo_env, tmp_path, capsys):
    from lab.core.store import Store
    from lab.shell.report.collect import collect

    db = tmp_path / "runs.duckdb"
    base = ["audit", "--base", "demo:base", "--unlearned", "demo:npo", "--audits", "direct", "--limit", "2",
            "--db", str(db), "--device", "cpu"]
    assert main(base + ["--token-split", "open-unlearning"]) == 0
    with Store(str(db), read_only=True) as store:
        run_id = store.runs().iloc[-1]["run_id"]
        assert store.run(run_id)["config"]["token_split"] == "open-unlearning"
        assert "--token-split open-unlearning" in collect(store, run_id).repeat_command
        prompts = store.items(run_id, "direct")["prompt"]
    assert all(p.endswith("Answer: ") for p in prompts)  # the space stays in the prompt the models were sent
    capsys.readouterr()
    assert main(base + ["--token-split", "tofu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--token-split: 'tofu' is not one of lab, open-unlearning" in err
