"""The RTN weight quantizer on hand-checked tensors, and its in-place apply/restore."""

import math

import pytest
import torch
from torch import nn

from audits.quantization.bnb import bitsandbytes_available, load_bitsandbytes
from audits.quantization.rtn import (
    QuantSpec,
    fake_quantize,
    grid_agreement,
    grid_of,
    quantized,
    target_weights,
    tied_head,
)
from lab.core.errors import LabError


def test_symmetric_int4_by_hand():
    # max |w| = 1 -> scale 1/7; 0.6 * 7 = 4.2 rounds to 4, 0.3 * 7 = 2.1 to 2
    w = torch.tensor([[0.6, -1.0, 0.3, 0.0]])
    expected = torch.tensor([[4 / 7, -1.0, 2 / 7, 0.0]])
    assert torch.allclose(fake_quantize(w, QuantSpec(4, 0, symmetric=True)), expected)


def test_asymmetric_2bit_by_hand():
    # range [-1, 2] in 3 steps: scale 1, zero point 1, grid {-1, 0, 1, 2}
    w = torch.tensor([[-1.0, 2.0, 0.4, 1.6]])
    assert torch.equal(fake_quantize(w, QuantSpec(2, 0, symmetric=False)), torch.tensor([[-1.0, 2.0, 0.0, 2.0]]))
    # all-positive row: the range is widened to include 0 (GPTQ convention), grid step 1.5 / 15 = 0.1
    w = torch.tensor([[0.0, 1.5, 0.74, 0.76]])
    assert torch.allclose(fake_quantize(w, QuantSpec(4, 0, symmetric=False)), torch.tensor([[0.0, 1.5, 0.7, 0.8]]))


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("symmetric", [True, False])
def test_values_on_grid_and_error_within_half_step(bits, symmetric):
    torch.manual_seed(0)
    w = torch.randn(6, 40) * torch.linspace(0.1, 3, 6)[:, None]
    q = fake_quantize(w, QuantSpec(bits, 8, symmetric))
    for row in range(6):
        for start in range(0, 40, 8):
            group, qgroup = w[row, start:start + 8], q[row, start:start + 8]
            if symmetric:
                step = group.abs().max() / (2 ** (bits - 1) - 1)
                codes = qgroup / step
            else:
                low, high = group.min().clamp(max=0), group.max().clamp(min=0)
                step = (high - low) / (2**bits - 1)
                codes = (qgroup - qgroup.min()) / step
            assert torch.allclose(codes, codes.round(), atol=1e-3)  # on the grid
            assert len(qgroup.unique()) <= 2**bits
            assert (group - qgroup).abs().max() <= step / 2 + 1e-6


def test_groups_have_their_own_scales_and_a_ragged_tail():
    w = torch.tensor([[100.0, 0.1, 0.2, 0.3, 0.11, 0.21, 0.31, 0.41, 0.05, 0.07]])
    spec = QuantSpec(4, 4, symmetric=True)
    q = fake_quantize(w, spec)
    manual = torch.cat([grid_of(w[:, a:b], 4, True).values() for a, b in ((0, 4), (4, 8), (8, 10))], dim=1)
    assert torch.equal(q, manual)
    assert torch.allclose(q[0, 4:], w[0, 4:], atol=0.41 / 7 / 2 + 1e-6)  # small groups keep small steps
    assert torch.equal(q[0, 1:4], torch.zeros(3))  # swamped by the 100 in their own group only
    per_row = fake_quantize(w, QuantSpec(4, 0, symmetric=True))
    assert torch.equal(fake_quantize(w, QuantSpec(4, 128, symmetric=True)), per_row)  # group wider than the row
    assert not torch.equal(per_row, q)


def test_symmetric_and_asymmetric_differ_on_a_one_sided_row():
    w = torch.linspace(0, 1, 33)[None, :]
    sym = fake_quantize(w, QuantSpec(4, 0, symmetric=True))
    asym = fake_quantize(w, QuantSpec(4, 0, symmetric=False))
    assert len(sym.unique()) == 8 and len(asym.unique()) == 16  # symmetric wastes the negative half
    assert (asym - w).abs().max() < (sym - w).abs().max()
    assert sym[0, 0] == 0 and asym[0, 0] == 0  # zero stays exactly representable in both


def test_dtype_is_kept_and_bad_specs_are_user_errors():
    w = torch.randn(3, 5, dtype=torch.bfloat16)
    assert fake_quantize(w, QuantSpec(8)).dtype == torch.bfloat16
    with pytest.raises(LabError):
        QuantSpec(1)
    with pytest.raises(LabError):
        QuantSpec(4, -1)


class Tiny(nn.Module):
    def __init__(self, tie: bool):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.proj = nn.Linear(6, 6)
        self.head = nn.Linear(6, 10, bias=False)
        if tie:
            self.head.weight = self.embed.weight

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.head


def test_target_weights_skip_embeddings_and_head_unless_asked():
    model = Tiny(tie=False)
    assert list(target_weights(model)) == ["proj.weight"]
    assert set(target_weights(model, embeddings=True, head=True)) == {"embed.weight", "proj.weight", "head.weight"}
    tied = Tiny(tie=True)
    assert tied_head(tied) and not tied_head(model)
    assert len(target_weights(tied, embeddings=True, head=True)) == 2  # the shared weight once


def test_quantized_applies_in_place_and_restores_exactly():
    torch.manual_seed(0)
    model = Tiny(tie=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = target_weights(model)
    spec = QuantSpec(4, 4)
    with quantized(weights, spec):
        assert torch.equal(model.proj.weight, fake_quantize(before["proj.weight"], spec))
        assert torch.equal(model.proj.bias, before["proj.bias"])  # biases untouched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(RuntimeError), quantized(weights, spec):
        raise RuntimeError("a failing evaluation")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_changes_below_half_a_step_keep_the_grid_code():
    """The paper's mechanism: a small weight update lands on the same grid points, a large one does not."""
    torch.manual_seed(0)
    spec = QuantSpec(4, 0, symmetric=True)
    grid = fake_quantize(torch.randn(8, 16), spec)
    absmax = grid.abs().amax(dim=1, keepdim=True)
    step = absmax / 7
    inner = grid.abs() < absmax  # nudging the largest weight would move the scale itself
    base = nn.Parameter(grid)
    nudged = nn.Parameter(grid + 0.1 * step * torch.sign(torch.randn(8, 16)) * inner)
    moved = nn.Parameter(grid + 0.6 * step * inner)
    small = grid_agreement({"w": base}, {"w": nudged}, spec)
    assert small.same_code == 1.0 and small.within_half_step == 1.0
    assert small.median_change_steps == pytest.approx(0.1, abs=1e-4)
    large = grid_agreement({"w": base}, {"w": moved}, spec)
    share_inner = float(inner.float().mean())
    assert large.within_half_step == pytest.approx(1 - share_inner)  # only the untouched maxima stay close
    assert large.same_code < 0.5
    with quantized({"w": base}, spec), quantized({"w": nudged}, spec):
        assert torch.equal(base, nudged)  # equal codes and scales: the quantized models are the same
    assert grid_agreement({"w": base}, {"x": base}, spec) is None  # no weight to compare


def test_bitsandbytes_loads_with_the_papers_settings(demo_pair):
    """bitsandbytes (requirements-gpu.txt) on the CPU: fp4 with float32 compute and bf16 elsewhere at 4 bits,
    LLM.int8 at 8 bits, as the quantization paper's code loads its models."""
    pytest.importorskip("bitsandbytes", reason="installed by make test from requirements-gpu.txt")
    four = load_bitsandbytes(demo_pair.unlearned, 4)
    config = four.model.config.quantization_config
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "fp4"
    assert config.bnb_4bit_compute_dtype in (None, torch.float32, "float32")
    assert type(four.model.model.layers[0].mlp.down_proj).__name__ == "Linear4bit"
    eight = load_bitsandbytes(demo_pair.unlearned, 8)
    assert type(eight.model.model.layers[0].mlp.down_proj).__name__ == "Linear8bitLt"
    prompt = demo_pair.unlearned.prompt("Where was Ada born?")
    assert all(math.isfinite(e.answer_logprobs([prompt], ["Velmora"])[0]) for e in (four, eight))
    assert not bitsandbytes_available() or torch.cuda.is_available()  # auto takes it only on CUDA


def test_bitsandbytes_path_refuses_cleanly_without_the_package(monkeypatch):
    from audits.quantization import bnb

    monkeypatch.setattr(bnb, "bitsandbytes_installed", lambda: False)
    with pytest.raises(LabError, match="needs the bitsandbytes package"):
        load_bitsandbytes(None, 4)  # type: ignore[arg-type]
