"""The models users have, through every door: a chat-template model audited from the CLI, a sweep spec and the
web lab's HTTP API with identical stored prompts, and a LoRA adapter that audits like the merged model it equals."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from lab.core.store import Store
from lab.shell.cli import main

LLAMA31_CHAT = ("{{ bos_token }}{% if date_string is not defined %}{% set date_string = '26 Jul 2024' %}{% endif %}"
                "<|start_header_id|>system<|end_header_id|>\n\nToday Date: {{ date_string }}\n"
                "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}{% endif %}{% endfor %}"
                "<|eot_id|>{% for m in messages %}{% if m['role'] != 'system' %}<|start_header_id|>{{ m['role'] }}"
                "<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endif %}{% endfor %}{% if add_generation_prompt %}"
                "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
FORMAT = {"chat_template": True, "system_prompt": "Answer in a few words.", "chat_vars": ["date_string=1 Jan 2026"]}
AUDITS = ["direct", "incontext"]  # plain questions and few-shot chat turns


@pytest.fixture(scope="module")
def chat_pair(tiny_demo, tmp_path_factory):
    """A Llama-3.1-style pair (its chat template prints a date) and a small facts file of the tiny demo."""
    from families import FAMILIES, build_pair, corpus

    from lab.core.facts import load_facts, save_facts

    facts = load_facts(tiny_demo / "facts.jsonl").of_kinds(("qa",))
    folder = tmp_path_factory.mktemp("llama31")
    family = dataclasses.replace(FAMILIES["llama3"], name="llama31", chat_template=LLAMA31_CHAT)
    base, unlearned = build_pair(family, corpus(facts), folder)
    save_facts(facts.facts, folder / "facts.jsonl")
    return base, unlearned, folder / "facts.jsonl"


def prompts(db: Path) -> list[tuple[str, str, str, str]]:
    with Store(db, read_only=True) as store:
        run_id = store.runs().iloc[-1]["run_id"]
        items = store.items(run_id)
    return sorted(zip(items["audit"], items["fact_id"], items["category"].fillna(""), items["prompt"]))


def test_a_chat_model_gets_the_same_prompts_from_every_door(chat_pair, tmp_path, monkeypatch):
    from gradio_client import Client

    from lab.shell.ui import running

    base, unlearned, facts = chat_pair
    common = {"base": str(base), "audits": AUDITS, "facts": str(facts), "limit": 2, "max_new_tokens": 6,
              "device": "cpu", **FORMAT}
    cli = ["audit", "--base", str(base), "--unlearned", str(unlearned), "--audits", ",".join(AUDITS), "--facts",
           str(facts), "--limit", "2", "--max-new-tokens", "6", "--device", "cpu", "--chat-template",
           "--system-prompt", FORMAT["system_prompt"], "--chat-var", FORMAT["chat_vars"][0]]
    assert main([*cli, "--db", str(tmp_path / "cli.duckdb")]) == 0
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps({**common, "unlearned": [str(unlearned)]}))
    assert main(["sweep", str(spec), "--local", "--db", str(tmp_path / "sweep.duckdb")]) == 0

    monkeypatch.setenv("LAB_DB", str(tmp_path / "web.duckdb"))
    with running(server_name="127.0.0.1", quiet=True) as (url, lab):
        client = Client(url, verbose=False)
        status = client.predict(source_="Your models", demo_="npo", base_=str(base), unlearned_=str(unlearned),
                                device_="cpu", dtype_="auto", trust_=False, device_map_="none",
                                template_="Question: {question}\nAnswer:", chat_=True,
                                system_=FORMAT["system_prompt"], vars_=FORMAT["chat_vars"][0],
                                api_name="/load_models")[0]
        assert "Loaded" in status
        options = {"headers": ["audit", "option", "type", "default", "value", "help"], "data": []}
        client.predict(source_="Server path", upload_=None, path_=str(facts), names_=AUDITS, options_=options,
                       limit_=2, max_new_=6, reference_="", api_name="/run_audit")
    asked = prompts(tmp_path / "cli.duckdb")
    assert asked and prompts(tmp_path / "sweep.duckdb") == asked == prompts(tmp_path / "web.duckdb")
    first = asked[0][3]
    assert "Today Date: 1 Jan 2026" in first and FORMAT["system_prompt"] in first
    assert first.rstrip().endswith("assistant<|end_header_id|>")


@pytest.fixture(scope="module")
def adapter(tiny_demo, tmp_path_factory):
    """A LoRA adapter trained here on the tiny demo's base (gradient ascent on forget answers: an unlearning
    adapter), saved as PEFT saves it, and the merged model it equals, saved as an ordinary checkpoint."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lab.core.facts import load_facts
    from lab.demo.train import answer_rows
    from lab.demo.world import qa_prompt
    from lab.core.finetune import pad_batch

    folder = tmp_path_factory.mktemp("adapter")
    base = tiny_demo / "models" / "base"
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    forget = [f for f in load_facts(tiny_demo / "facts.jsonl").of_kinds(("qa",)) if f.split == "forget"]
    rows = answer_rows(tokenizer, [qa_prompt(f.question) for f in forget], [f.answer for f in forget])
    torch.manual_seed(0)
    tuned = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"]))
    optimizer = torch.optim.Adam([p for p in tuned.parameters() if p.requires_grad], lr=2e-2)
    for _ in range(8):
        ids, mask, labels = pad_batch(rows, tokenizer.pad_token_id)
        (-tuned(input_ids=ids, attention_mask=mask, labels=labels).loss).backward()
        optimizer.step()
        optimizer.zero_grad()
    tuned.save_pretrained(folder / "adapter")
    tuned.merge_and_unload().save_pretrained(folder / "merged")
    tokenizer.save_pretrained(folder / "merged")
    return base, folder / "adapter", folder / "merged"


def test_a_lora_adapter_audits_like_the_merged_model(adapter, tiny_demo, tmp_path):
    base, lora, merged = adapter
    audits = "direct,keywords,logit_lens"
    results = {}
    for name, unlearned in (("adapter", f"{base}+{lora}"), ("merged", str(merged))):
        out = tmp_path / f"{name}.json"
        assert main(["audit", "--base", str(base), "--unlearned", unlearned, "--audits", audits, "--facts",
                     str(tiny_demo / "facts.jsonl"), "--limit", "6", "--device", "cpu", "--json", str(out),
                     "--db", str(tmp_path / f"{name}.duckdb")]) == 0
        results[name] = json.loads(out.read_text())["audits"]
    assert results["adapter"].keys() == results["merged"].keys()
    direct = results["adapter"]["direct"]["metrics"]
    assert direct["forget_accuracy_unlearned"] < direct["forget_accuracy_base"]  # the adapter changed the model
    for audit, values in results["merged"].items():
        for key, value in values["metrics"].items():
            other = results["adapter"][audit]["metrics"][key]
            assert (math.isnan(value) and math.isnan(other)) or abs(value - other) <= 1e-4, (audit, key)


def test_adapter_references_are_checked(demo_env, tiny_demo, tmp_path, capsys, monkeypatch):
    base = tiny_demo / "models" / "base"
    cases = [(f"{base}+{tmp_path / 'none'}", "model directory not found"),
             (f"{base}+{base}", "is not a PEFT adapter folder"),
             (f"{base}+openai+http://h:1/v1#m", "an adapter reference is BASE+ADAPTER")]
    for ref, message in cases:
        code = main(["audit", "--base", str(base), "--unlearned", ref, "--audits", "direct", "--facts",
                     str(tiny_demo / "facts.jsonl"), "--db", str(tmp_path / "x.duckdb")])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
    monkeypatch.setenv("LAB_SPACE", "1")
    code = main(["audit", "--base", "demo:base", "--unlearned", f"demo:base+{tmp_path}", "--audits", "direct",
                 "--db", str(tmp_path / "y.duckdb")])
    assert code == 2 and "server paths are disabled" in capsys.readouterr().err
