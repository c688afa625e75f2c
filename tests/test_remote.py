"""Models behind a real OpenAI-compatible server (llama.cpp's, via llama-cpp-python, on the CPU): the
remote backend generates and scores like the local engine on the same model, audits run through it, and
what a served model cannot offer is said, not attempted."""

import json

import pytest

from lab.core.errors import LabError
from lab.core.models import load_engine
from lab.core.store import Store
from lab.shell.cli import main

pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by make test (requirements-serve.txt)")
pytest.importorskip("gguf", reason="gguf is installed by make test (requirements-serve.txt)")

from llama_server import LlamaServer  # noqa: E402

from lab.core.gguf import write_gguf  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny_demo, tmp_path_factory):
    """The tiny demo's NPO model served by llama.cpp."""
    folder = tiny_demo / "models" / "npo"
    gguf_path = write_gguf(folder, tmp_path_factory.mktemp("gguf") / "npo.gguf")
    served = LlamaServer(gguf_path, "demo-npo", context=256).wait()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def remote_ref(server, tiny_demo):
    return f"openai+{server.url}#demo-npo?tokenizer={tiny_demo / 'models' / 'npo'}"


def test_remote_generation_and_scores_match_the_local_engine(remote_ref, tiny_demo, demo_facts):
    remote = load_engine(remote_ref)
    local = load_engine(str(tiny_demo / "models" / "npo"), device="cpu")
    assert remote.capabilities == {"generate", "logprobs"} and remote.info.device == "remote"
    facts = demo_facts.limited(6).facts
    prompts = [local.prompt(f.question) for f in facts]
    assert remote.prompt(facts[0].question) == prompts[0]  # the same prompt format
    ours, theirs = local.generate(prompts, 16), remote.generate(prompts, 16)
    assert ours == theirs  # greedy, float32 on both sides, the same tokens: the same answers
    scored_local = local.answer_scores(prompts, [f.answer for f in facts])
    scored_remote = remote.answer_scores(prompts, [f.answer for f in facts])
    for a, b in zip(scored_local, scored_remote):
        assert len(a.logprobs) == len(b.logprobs)
        assert max(abs(a.logprobs - b.logprobs)) < 1e-2
        assert (a.greedy_match == b.greedy_match).all()


def test_audits_through_the_server_match_the_local_run(remote_ref, demo_env, tmp_path):
    """reasoning and direct with the unlearned model served: the same numbers as with it loaded here; an
    audit that needs the model's internals is skipped, and says why."""
    runs = {}
    for name, unlearned in (("local", "demo:npo"), ("remote", remote_ref)):
        out = tmp_path / f"{name}.json"
        code = main(["audit", "--base", "demo:base", "--unlearned", unlearned, "--audits",
                     "direct,reasoning,logit_lens", "--facts", str(demo_env / "facts.jsonl"), "--limit", "6",
                     "--db", str(tmp_path / "runs.duckdb"), "--json", str(out), "--device", "cpu",
                     "--set", "reasoning.prompts_per_category=1"])
        assert code == 0
        runs[name] = json.loads(out.read_text())
    local, remote = runs["local"]["audits"], runs["remote"]["audits"]
    assert "logit_lens" in local and "logit_lens" not in remote
    for audit in ("direct", "reasoning"):
        for key, value in local[audit].items():
            if value is not None and not key.endswith(("_ci_low", "_ci_high")) and "logprob" not in key:
                assert remote[audit][key] == pytest.approx(value, abs=0.1), (audit, key)
    with Store(tmp_path / "runs.duckdb", read_only=True) as store:
        audits = store.audits(runs["remote"]["run_id"]).set_index("audit")
        assert audits.loc["logit_lens", "status"] == "skipped"
        assert "weights, activations" in audits.loc["logit_lens", "notes"] and "does not offer" in audits.loc["logit_lens", "notes"]
        run = store.run(runs["remote"]["run_id"])
    assert run["unlearned_ref"] == remote_ref and run["unlearned_hash"].startswith("remote:")


def test_a_text_only_server_skips_the_audits_that_score_exact_token_rows(remote_ref, demo_env, tmp_path, capsys):
    """llama-cpp-python's server takes text prompts only: rows that are not the tokenizer's own split of their
    text (answers followed by EOS, prompts with a token taken out) cannot be scored there, so the audits that
    build them are skipped with the reason, and the run completes."""
    db = tmp_path / "text.duckdb"
    code = main(["audit", "--base", "demo:base", "--unlearned", remote_ref, "--audits",
                 "direct,keywords,metrics,surrogates", "--facts", str(demo_env / "facts.jsonl"), "--limit", "2",
                 "--db", str(db), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert load_engine(remote_ref).capabilities == {"generate", "logprobs"}  # no exact_tokens
    with Store(db, read_only=True) as store:
        audits = store.audits(store.runs()["run_id"].iloc[-1]).set_index("audit")
    assert dict(audits["status"]) == {"direct": "complete", "keywords": "skipped", "metrics": "skipped",
                                      "surrogates": "skipped"}
    for name in ("keywords", "metrics", "surrogates"):
        note = json.loads(audits.loc[name, "notes"])[0]
        assert note == (f"skipped: {name} needs log-probs of exact token rows (answers followed by EOS, prompts with "
                        "tokens taken out; a server that takes only text prompts splits them again), which the "
                        f"unlearned model ({remote_ref}) does not offer")


def test_the_api_key_is_sent_never_stored(remote_ref, demo_env, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_OPENAI_API_KEY", "sk-secret-test-key")
    code = main(["audit", "--base", "demo:base", "--unlearned", remote_ref, "--audits", "direct",
                 "--facts", str(demo_env / "facts.jsonl"), "--limit", "2", "--db", str(tmp_path / "k.duckdb"),
                 "--device", "cpu"])
    assert code == 0
    assert b"sk-secret-test-key" not in (tmp_path / "k.duckdb").read_bytes()


def test_server_errors_are_one_line(server, tiny_demo, monkeypatch, capsys):
    import lab.core.remote as remote

    monkeypatch.setattr(remote, "BACKOFF_S", 0.01)
    tokenizer = tiny_demo / "models" / "npo"
    with pytest.raises(LabError, match="does not serve 'nope' \\(it serves: demo-npo\\)"):
        load_engine(f"openai+{server.url}#nope?tokenizer={tokenizer}")
    with pytest.raises(LabError, match="cannot reach the inference server at http://127.0.0.1:9"):
        load_engine(f"openai+http://127.0.0.1:9/v1#demo-npo?tokenizer={tokenizer}")
    with pytest.raises(LabError, match="the tokenizer 'demo-npo' does not load locally"):
        load_engine(f"openai+{server.url}#demo-npo")
    engine = load_engine(f"openai+{server.url}#demo-npo?tokenizer={tokenizer}")
    with pytest.raises(LabError, match="Min-K%\\+\\+ .* needs weights, activations and gradients"):
        engine.token_scores([[1, 2, 3]], [1], distribution=True)


def test_a_server_that_tokenizes_differently_is_refused_not_trusted(tiny_demo, tmp_path):
    """llama.cpp's "default" split regex keeps "'" and "s" apart where the demo tokenizer has "'s": its
    log-probs would be of other tokens, so scoring such a row is a one-line error, never a wrong number."""
    folder = tiny_demo / "models" / "npo"
    served = LlamaServer(write_gguf(folder, tmp_path / "other.gguf", pre_tokenizer="default"), "other",
                         context=256).wait()
    try:
        engine = load_engine(f"openai+{served.url}#other?tokenizer={folder}")
        assert "logprobs" in engine.capabilities  # the load probe's plain sentence splits the same way
        row = engine.encode("Question: What is Shivaexslour's best known work?\nAnswer: The Silver Crown")
        with pytest.raises(LabError, match="split a text prompt into other tokens than the local tokenizer"):
            engine.token_scores([row], [len(row) - 3])
    finally:
        served.stop()


def test_sampled_leakage_through_a_served_model(remote_ref, demo_env, tmp_path):
    """leak@k from a llama.cpp server (a seed per draw), with the exact estimate from its echoed log-probs."""
    out = tmp_path / "served.json"
    code = main(["audit", "--base", "demo:base", "--unlearned", remote_ref, "--audits", "direct,sampling",
                 "--facts", str(demo_env / "facts.jsonl"), "--limit", "8", "--db", str(tmp_path / "s.duckdb"),
                 "--json", str(out), "--device", "cpu", "--set", "sampling.samples=8"])
    assert code == 0
    metrics = json.loads(out.read_text())["audits"]["sampling"]["metrics"]
    assert {"leak_at_1", "leak_at_4", "leak_at_8", "recovery_rate"} <= set(metrics)
    if metrics["targets"]:
        assert metrics["exact_within_interval"] == 1.0, metrics
