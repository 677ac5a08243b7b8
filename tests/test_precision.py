"""bf16/fp16 inference with the weights converted once: the model's own conversion (σ stays float32), the
float32-faced copy of ``precision.half_network``, and the samplers' choice between it and autocast."""

from __future__ import annotations

import pytest
import torch

import ncsn_fast as nf
from ncsn_fast.precision import HalfNetwork, half_network, hardware_half
from ncsn_fast.sampling import runtime
from tests.conftest import rel_err

HALF = [torch.bfloat16, torch.float16]
NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def small_model(name: str = "ncsnv2", ngf: int = 8):
    cfg = nf.load_config({"model": {"name": name, "ngf": ngf, "num_classes": 10}, "data": {"image_size": 16}})
    torch.manual_seed(0)
    return nf.build_model(cfg).eval(), cfg


def inputs(n: int = 3):
    return torch.rand(n, 3, 16, 16), torch.tensor([0, 4, 9][:n])


@pytest.mark.parametrize("dtype", HALF)
def test_to_half_keeps_sigma_float32_and_divides_in_float32(dtype):
    model, _ = small_model()
    sigmas = model.sigmas.clone()
    half = small_model()[0].to(dtype=dtype, memory_format=torch.channels_last)
    assert half.sigmas.dtype == torch.float32 and torch.equal(half.sigmas, sigmas)
    assert half.begin_conv.weight.dtype == dtype
    assert half.res1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x, y = inputs()
    xh = x.to(dtype=dtype, memory_format=torch.channels_last)
    with torch.no_grad():
        out, feats = half(xh, y), half.features(xh, None)
        sigma = torch.tensor([0.3, 1.7, 20.0])
        score = half.score(xh, sigma)
        want = model(x, y)
    # Technique 3 in float32: exactly the bf16 features over the float32 σ (not σ rounded to bf16)
    assert out.dtype == score.dtype == torch.float32
    assert torch.equal(out, feats.float() / sigmas[y].view(-1, 1, 1, 1))
    assert torch.equal(score, feats.float() / sigma.view(-1, 1, 1, 1))
    assert rel_err(out, want) <= 2e-2
    # converting back and forth never rounds σ; float64 widens it
    assert torch.equal(half.float().sigmas, sigmas) and half.double().sigmas.dtype == torch.float64


@pytest.mark.parametrize("dtype", HALF)
def test_half_network_is_a_float32_faced_copy(dtype):
    model, _ = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = half_network(model, NAMES[dtype])
    assert isinstance(net, HalfNetwork) and net.net is not model
    assert all(torch.equal(v, before[k]) and v.dtype == before[k].dtype for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in net.parameters())
    assert {p.dtype for p in net.parameters()} == {dtype}
    x, y = inputs()
    with torch.no_grad():
        out, score = net(x, y), net.score(x, torch.tensor([0.5, 1.0, 2.0]))
        want, want_score = model(x, y), model.score(x, torch.tensor([0.5, 1.0, 2.0]))
    assert out.dtype == score.dtype == torch.float32 and out.is_contiguous()
    assert rel_err(out, want) <= 2e-2 and rel_err(score, want_score) <= 2e-2
    assert half_network(model, "fp32") is model


def test_half_network_of_the_conditional_ncsn():
    model, cfg = small_model("ncsn")
    net = half_network(model, "bf16")
    x, y = inputs()
    with torch.no_grad():
        assert rel_err(net(x, y), model(x, y)) <= 2e-2


def test_samplers_use_the_copy_for_models_and_autocast_for_other_callables():
    model, cfg = small_model()
    x, y = inputs()
    sig = nf.get_sigmas(cfg)[y]
    with torch.no_grad():
        fwd = runtime.network(model, x.device, precision="bf16")
        bound = runtime.network(model.score, x.device, precision="bf16")
        assert isinstance(fwd.__self__, HalfNetwork) and fwd.__name__ == "forward"
        assert isinstance(bound.__self__, HalfNetwork) and bound.__name__ == "score"
        assert torch.equal(fwd(x, y), bound(x, sig))  # σ_y is what forward divides by
        plain = runtime.network(lambda x, c: model(x, c), x.device, precision="bf16")
        assert not hasattr(plain, "__self__")
        got, want = plain(x, y), model(x, y)
    assert got.dtype == torch.float32 and rel_err(got, want) <= 2e-2
    assert runtime.network(model, x.device, precision="fp32") is model


def test_autocast_training_keeps_float32_master_weights():
    """Training keeps autocast: gradients reach the float32 parameters through the bf16 fused norm."""
    model, cfg = small_model()
    model.train()
    x, y = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, y).square().mean()
    loss.backward()
    norm = model.res1[0].normalize1
    assert norm.alpha.dtype == torch.float32 and norm.alpha.grad is not None and torch.isfinite(norm.alpha.grad).all()


def test_hardware_half_answers_for_cpu():
    assert hardware_half("cpu", "fp32") is None
    for p in ("bf16", "fp16"):
        assert isinstance(hardware_half("cpu", p), bool)
    with pytest.raises(ValueError, match="precision: unknown precision"):
        hardware_half("cpu", "fp8")


def test_half_network_warns_where_the_cpu_emulates_the_precision(monkeypatch):
    import warnings

    import ncsn_fast.precision as precision

    model, _ = small_model()
    monkeypatch.setattr(precision, "hardware_half", lambda device, p: False)
    with pytest.warns(RuntimeWarning, match="bf16 on this CPU is emulated"):
        half_network(model, "bf16")
    monkeypatch.setattr(precision, "hardware_half", lambda device, p: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        half_network(model, "bf16")
