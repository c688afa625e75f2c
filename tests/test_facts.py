"""Fact readers on good and bad files, in every supported format."""

import json

import pandas as pd
import pytest

from lab.core.errors import LabError
from lab.core.facts import FactSet, load_facts, save_facts

GOOD = [
    {"id": "a", "split": "forget", "entity": "Ola Venn", "question": "Where was Ola Venn born?", "answer": "Brisk",
     "perturbed_answers": ["Tarn", "Mole", "Quay"]},
    {"id": "b", "split": "retain", "question": "Who taught Ola Venn?", "answer": "Ida Rusk"},
]


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_round_trip(tmp_path):
    facts = load_facts(write_jsonl(tmp_path / "f.jsonl", GOOD))
    assert [f.id for f in facts] == ["a", "b"]
    assert facts.facts[0].perturbed_answers == ("Tarn", "Mole", "Quay")
    assert facts.counts() == {"forget": 1, "retain": 1, "holdout": 0}
    save_facts(facts, tmp_path / "again.jsonl")
    assert load_facts(tmp_path / "again.jsonl").facts == facts.facts
    assert len(facts.sha256) == 64


def test_csv_and_parquet(tmp_path):
    frame = pd.DataFrame(GOOD)
    frame["perturbed_answers"] = frame["perturbed_answers"].apply(lambda v: json.dumps(v) if isinstance(v, list) else "")
    frame.to_csv(tmp_path / "f.csv", index=False)
    assert load_facts(tmp_path / "f.csv").facts[0].perturbed_answers == ("Tarn", "Mole", "Quay")
    pd.DataFrame(GOOD).to_parquet(tmp_path / "f.parquet")
    parquet = load_facts(tmp_path / "f.parquet")
    assert parquet.facts[0].perturbed_answers == ("Tarn", "Mole", "Quay")
    assert parquet.facts[1].split == "retain"


def test_file_without_split_is_a_forget_set(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [{"question": "q?", "answer": "x"}])
    fact = load_facts(path).facts[0]
    assert fact.split == "forget" and fact.id == "fact-00000"


def test_tofu_muse_rwku_mapped(tmp_path):
    tofu = [{"question": "Q1?", "answer": "A1", "paraphrased_answer": "P1", "paraphrased_question": "PQ1?",
             "perturbed_answer": ["W1", "W2", "W3"]}]
    (tmp_path / "tofu.json").write_text(json.dumps(tofu))
    f = load_facts(tmp_path / "tofu.json").facts[0]
    assert f.perturbed_answers == ("W1", "W2", "W3") and f.paraphrased_question == "PQ1?"
    (tmp_path / "muse.json").write_text(json.dumps([{"question": "Q?", "answer": "A"}]))
    assert load_facts(tmp_path / "muse.json").facts[0].answer == "A"
    rwku = [{"subject": "Stephen King", "level": "1", "query": "Stephen King wrote ___.", "type": "cloze",
             "answer": "Carrie"}]
    (tmp_path / "rwku.json").write_text(json.dumps(rwku))
    r = load_facts(tmp_path / "rwku.json").facts[0]
    assert (r.entity, r.question, r.answer, r.attribute) == ("Stephen King", "Stephen King wrote ___.", "Carrie", "1:cloze")


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"question": "q", "answer": "a"}\n{"question": "q2"\n', "f.jsonl: line 2: invalid JSON"),
        ('{"question": "q", "answer": "a"}\n{"question": "q2"}\n', "f.jsonl: line 2: field 'answer' is missing"),
        ('{"question": "q", "answer": "a", "split": "train"}\n', "line 1: field 'split' must be one of"),
        ('{"question": ["q"], "answer": "a"}\n', "line 1: field 'question' must be text"),
        ('{"question": "q", "answer": "a", "perturbed_answers": 3}\n', "field 'perturbed_answers' must be a list"),
        ('\n\n', "contains no facts"),
        ('{"id": "x", "question": "q", "answer": "a"}\n{"id": "x", "question": "q", "answer": "a"}\n',
         "duplicate fact id 'x'"),
    ],
)
def test_bad_jsonl_names_file_line_field(tmp_path, content, message):
    path = tmp_path / "f.jsonl"
    path.write_text(content)
    with pytest.raises(LabError, match=message):
        load_facts(path)


def test_bad_csv_names_line(tmp_path):
    (tmp_path / "f.csv").write_text("question,answer\nq1,a1\nq2,\n")
    with pytest.raises(LabError, match="f.csv: line 3: field 'answer'"):
        load_facts(tmp_path / "f.csv")


def test_unsupported_and_missing(tmp_path):
    (tmp_path / "f.xml").write_text("x")
    with pytest.raises(LabError, match="unsupported facts format"):
        load_facts(tmp_path / "f.xml")
    with pytest.raises(LabError, match="not found"):
        load_facts(tmp_path / "nope.jsonl")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(LabError, match="bad.parquet: cannot be read"):
        load_facts(tmp_path / "bad.parquet")


def test_limit_keeps_each_split(tmp_path):
    rows = [{"id": str(i), "question": "q", "answer": "a", "split": s} for i, s in
            enumerate(["forget", "retain", "forget", "retain", "holdout"])]
    facts = load_facts(write_jsonl(tmp_path / "f.jsonl", rows)).limited(1)
    assert [f.id for f in facts] == ["0", "1", "4"]
    with pytest.raises(LabError):
        FactSet([]).limited(0)
