"""Several clients at once (gradio_client): audits and probes interleave, nothing is lost or mixed up.

Each client holds its own session (its own loaded pair).  Long jobs take turns
(lab.shell.ui.turns): two run side by side by default, so one session's audit
never waits for another's to end; with one slot a second audit waits in line
and its progress says its place.  Every engine runs one batch at a time under
its lock, and every row goes through the one store writer.  Stop ends a
session's running audit, which is then stored as interrupted, stopped by the
user.
"""

from __future__ import annotations

import threading
import time

import pytest

from lab.shell.ui import running

AUDIT_ARGS = dict(source_="Demo facts", upload_=None, path_="", names_=["direct"],
                  options_={"headers": ["audit", "option", "type", "default", "value"], "data": []},
                  max_new_=16, reference_="")


@pytest.fixture()
def served(demo_env, monkeypatch):
    """The lab on the tiny demo with a fresh database: (url, Lab)."""
    monkeypatch.setenv("LAB_DEMO_PROFILE", "tiny")
    with running(server_name="127.0.0.1", quiet=True) as served:
        yield served


def client_for(url: str, unlearned: str):
    """A client session with the demo pair base -> ``unlearned`` loaded."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    status = client.predict("Demo pair", unlearned, "", "", "cpu", "auto", False, api_name="/load_models")[0]
    assert f"demo:base → demo:{unlearned}" in status
    return client


def test_two_clients_audit_and_probe_at_once(served, demo_facts):
    from lab.shell.ui.session import demo_pair

    url, lab = served
    clients = {"npo": client_for(url, "npo"), "ga": client_for(url, "ga")}
    questions = [f.question for f in demo_facts.split("forget")[:3]]
    limits = {"npo": 4, "ga": 2}
    results: dict[str, list] = {name: [] for name in clients}
    errors: list[BaseException] = []
    start = threading.Barrier(len(clients))

    def work(name: str) -> None:
        client = clients[name]
        try:
            start.wait()
            for round_ in range(2):
                results[name].append(("audit", client.predict(limit_=limits[name], api_name="/run_audit",
                                                              **AUDIT_ARGS)[0]))
                question = questions[round_]
                results[name].append(("probe", question, client.predict(
                    question, "Question (prompt template applied)", "", 12, api_name="/probe")))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(name,)) for name in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors

    runs = lab.store.runs()
    assert len(runs) == 4 and set(runs["status"]) == {"complete"}
    for name, client_results in results.items():
        pair = lab.pair(demo_pair(name))
        audits = [r[1] for r in client_results if r[0] == "audit"]
        assert len(audits) == 2
        for status in audits:
            run_id = next(r for r in runs["run_id"] if r in status)
            run = runs[runs["run_id"] == run_id].iloc[0]
            assert run["unlearned_ref"] == f"demo:{name}"  # each session audited its own pair
            items = lab.store.items(run_id)
            assert len(items) == 3 * limits[name]  # every row stored
            assert items.groupby("split").size().to_dict() == {s: limits[name] for s in ("forget", "retain", "holdout")}
        for _, question, (sent, out_base, out_unlearned, _) in [r for r in client_results if r[0] == "probe"]:
            assert sent == pair.base.prompt(question)
            assert out_base.strip() == pair.base.generate([sent], 12)[0]
            assert out_unlearned.strip() == pair.unlearned.generate([sent], 12)[0]


def slow_long_audit(lab, client):
    """Start a long audit (direct and reasoning on every fact of the client's npo pair, one prompt per batch:
    tens of seconds, it is stopped long before it ends) and return its job once its run is running."""
    from lab.shell.ui.session import demo_pair

    pair = lab.pair(demo_pair("npo"))
    for engine in (pair.base, pair.unlearned):
        engine.policy.max_rows = 1  # one fact per batch: a long run, and many points where a stop can land
    job = client.submit(limit_=0, api_name="/run_audit", **{**AUDIT_ARGS, "names_": ["direct", "reasoning"]})
    deadline = time.time() + 60
    while (lab.store.runs().empty or lab.store.runs().iloc[-1]["status"] != "running") and time.time() < deadline:
        time.sleep(0.05)
    return job


def test_a_session_does_not_wait_for_anothers_audit(served, demo_facts):
    """Two slots (the default): while one visitor's long audit runs, another loads a pair, probes and audits."""
    url, lab = served
    first = client_for(url, "npo")
    job = slow_long_audit(lab, first)
    long_run = lab.store.runs().iloc[-1]["run_id"]
    started = time.monotonic()
    second = client_for(url, "ga")  # loading the pair does not wait for the running audit either
    question = demo_facts.split("forget")[0].question
    sent = second.predict(question, "Question (prompt template applied)", "", 8, api_name="/probe")[0]
    status = second.predict(limit_=1, api_name="/run_audit", **AUDIT_ARGS)[0]
    waited = time.monotonic() - started
    runs = lab.store.runs().set_index("run_id")
    short_run = next(r for r in runs.index if r in status)
    assert runs.loc[short_run, "status"] == "complete" and runs.loc[short_run, "unlearned_ref"] == "demo:ga"
    assert runs.loc[long_run, "status"] == "running", f"the second session waited {waited:.0f} s for the first"
    assert sent.endswith("Answer:") and question in sent
    first.predict(api_name="/stop_audit")
    assert "Stopped" in job.result(timeout=120)[0]


def test_stop_interrupts_the_sessions_audit_and_the_next_in_line_runs(served):
    """One slot: a second session's audit waits in line, its progress saying its place; the first is stopped,
    stored as interrupted, stopped by the user; then the second runs."""
    url, lab = served
    lab.turns.slots = 1
    first, second = client_for(url, "npo"), client_for(url, "ga")
    job = slow_long_audit(lab, first)
    waiting = second.submit(limit_=1, api_name="/run_audit", **AUDIT_ARGS)
    deadline = time.time() + 60
    while lab.turns.waiting == 0 and time.time() < deadline:
        time.sleep(0.05)
    assert lab.turns.waiting == 1 and lab.turns.running == 1
    time.sleep(1.5)  # a streamed update or two
    notes = [str(update) for update in waiting.outputs()]
    assert any("waiting for a turn: 1st in line · 1 running (audit)" in note for note in notes), notes
    first.predict(api_name="/stop_audit")
    status = job.result(timeout=120)[0]
    runs = lab.store.runs()
    stopped = runs[runs["unlearned_ref"] == "demo:npo"].iloc[-1]
    assert stopped["status"] == "interrupted" and "Stopped" in status
    assert "** interrupted: stopped by the user" in status  # the audit it cut short, with the reason
    assert "interrupted" in set(lab.store.audits(stopped["run_id"])["status"])  # stopped before it finished
    after = waiting.result(timeout=120)[0]
    assert "complete" in after and lab.store.runs().iloc[-1]["unlearned_ref"] == "demo:ga"
