"""The quantization audit end to end on the tiny demo, and both of issue 4's audits through the CLI."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from audits import get_audit
from audits.base import AuditContext
from audits.quantization.audit import QuantizationAudit, QuantizationOptions
from audits.quantization.bnb import bitsandbytes_available
from lab.core.errors import LabError
from lab.core.store import Store
from lab.shell.cli import main


def snapshot(pair):
    return [{k: v.clone() for k, v in engine.model.state_dict().items()} for engine in (pair.base, pair.unlearned)]


def test_quantization_audit_on_the_tiny_demo(demo_pair, demo_facts):
    facts = demo_facts.limited(6)
    before = snapshot(demo_pair)
    items = []
    ctx = AuditContext(pair=demo_pair, facts=facts, options=QuantizationOptions(), record=items.extend)
    audit = QuantizationAudit()
    result = audit.run(ctx)
    m = result.metrics

    # the models are exactly what they were: quantization was undone
    for was, engine in zip(before, (demo_pair.base, demo_pair.unlearned)):
        assert all(torch.equal(v, was[k]) for k, v in engine.model.state_dict().items())

    asked = [f for f in facts if f.split in ("forget", "retain")]
    frame = pd.DataFrame([i.__dict__ for i in items])
    assert len(frame) == 3 * len(asked) and set(frame["category"]) == {"fp", "int8", "int4"}

    base = ctx.baseline
    assert m["retention_fp"] == pytest.approx(base.accuracy("forget", "unlearned")["forget_accuracy_unlearned"]
                                             / base.accuracy("forget", "base")["forget_accuracy_base"])
    targets = base.targets()
    assert m["targets"] == len(targets)
    for p in ("int8", "int4"):
        rows = frame[frame["category"] == p]
        recovered = rows[rows["recovered"] == True]  # noqa: E712 - None marks non-targets
        assert set(rows.loc[rows["recovered"].notna(), "fact_id"]) == {f.id for f in targets}
        assert m[f"recovery_rate_{p}"] == pytest.approx(len(recovered) / len(targets))
        forget = rows[rows["split"] == "forget"]
        assert m[f"forget_accuracy_unlearned_{p}"] == pytest.approx(forget["hit_unlearned"].mean())
        assert m[f"retention_{p}"] == pytest.approx(forget["hit_unlearned"].mean() / m["forget_accuracy_base_fp"])
        assert 0.0 <= m[f"identical_weights_{p}"] <= m[f"within_half_step_{p}"] + 0.05 <= 1.05
        assert m[f"median_change_steps_{p}"] >= 0
        assert result.artifacts["recovered"][p] == list(recovered["fact_id"])
    assert m["recovery_rate"] == max(m["recovery_rate_int8"], m["recovery_rate_int4"])

    # quantization really changed the models, and 4 bits more than 8
    fp = frame[frame["category"] == "fp"].set_index("fact_id")["logprob_unlearned"]
    drift = {p: np.abs(frame[frame["category"] == p].set_index("fact_id")["logprob_unlearned"] - fp).mean()
             for p in ("int8", "int4")}
    assert 0 < drift["int8"] < drift["int4"]
    assert m["identical_weights_int8"] < m["identical_weights_int4"]  # coarser grid, more shared points
    assert m["within_half_step_int8"] < m["within_half_step_int4"]
    assert m["median_change_steps_int8"] > m["median_change_steps_int4"]

    assert set(audit.figures(result.artifacts, frame)) == {"accuracy", "forget_logprob"}
    assert "int4" in audit.verdict(m)


def test_bad_options_are_user_errors(demo_pair, demo_facts):
    from lab.core.options import build_options

    for values, message in (({"backend": "gptq"}, "'gptq' is not one of auto, rtn, bitsandbytes"),
                            ({"group_size": "-4"}, "group_size must be at least 0"),
                            ({"backend": "bitsandbytes", "symmetric": "true"}, "apply to backend=rtn only")):
        with pytest.raises(LabError, match=message):
            build_options(QuantizationOptions, "quantization", values)



def test_the_bitsandbytes_backend_runs_the_audit(demo_pair, demo_facts):
    """The paper's quantizer through the audit (its CPU path here); auto stays on RTN without CUDA."""
    pytest.importorskip("bitsandbytes", reason="installed by make test from requirements-gpu.txt")
    from lab.core.options import build_options

    opts = build_options(QuantizationOptions, "quantization", {"backend": "bitsandbytes"})
    ctx = AuditContext(pair=demo_pair, facts=demo_facts.limited(3), options=opts, record=lambda items: None)
    result = QuantizationAudit().run(ctx)
    assert result.notes[0] == "backend: bitsandbytes"
    for key in ("retention_int8", "retention_int4", "recovery_rate_int8", "recovery_rate_int4"):
        assert key in result.metrics
    assert result.metrics["forget_accuracy_base_int8"] >= 0.5  # LLM.int8 keeps the base model's answers
    auto = build_options(QuantizationOptions, "quantization", {})
    ctx = AuditContext(pair=demo_pair, facts=demo_facts.limited(1), options=auto, record=lambda items: None)
    assert QuantizationAudit().run(ctx).notes[0] == ("backend: bitsandbytes (auto)" if bitsandbytes_available()
                                                     else "backend: rtn (auto)")


def test_both_audits_through_the_cli(demo_env, tmp_path):
    out = tmp_path / "out.json"
    code = main(["audit", "--base", "demo:base", "--unlearned", "demo:graddiff", "--audits", "quantization,remind",
                 "--db", str(tmp_path / "r.duckdb"), "--json", str(out), "--device", "cpu", "--limit", "3",
                 "--set", "quantization.group_size=32", "--set", "quantization.symmetric=true",
                 "--set", "remind.max_radius=2", "--set", "remind.variants_per_radius=2"])
    assert code == 0
    payload = json.loads(out.read_text())
    audits = payload["audits"]
    for key in ("retention_fp", "retention_int8", "retention_int4", "recovery_rate_int8", "recovery_rate_int4"):
        assert key in audits["quantization"]["metrics"]
    for key in ("auc_forget_vs_holdout", "auc_forget_vs_retain", "tpr_at_1fpr"):
        assert 0.0 <= audits["remind"]["metrics"][key] <= 1.0
    with Store(tmp_path / "r.duckdb") as store:  # the figures come back from what the store kept
        for name, expected in (("quantization", {"accuracy", "forget_logprob"}),
                               ("remind", {"landscape", "flatness", "roc"})):
            artifacts = store.artifacts(payload["run_id"], name)[name]
            figures = get_audit(name)().figures(artifacts, store.items(payload["run_id"], name))
            assert set(figures) == expected
