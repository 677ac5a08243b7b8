"""Models against the official implementation's own outputs (../shared/reference)."""

from __future__ import annotations

import pytest
import torch

import ncsn_fast as nf
from ncsn_fast.models import NCSN, NCSNv2, NCSNv2Deeper, NCSNv2Deepest
from ncsn_fast.ops._backend import use_backend
from ncsn_fast.sampling import annealed_langevin
from tests.conftest import CASES, cpu_backends, rel_err

EXPECTED_CLASS = {
    "ncsnv2_32": NCSNv2,
    "ncsn_32": NCSN,
    "ncsnv2deeper_64": NCSNv2Deeper,
    "ncsnv2deepest_64": NCSNv2Deepest,
}


@pytest.fixture(scope="module", params=CASES)
def case(request, reference_dir):
    folder = reference_dir / request.param
    cfg = nf.load_config(folder / "config.yml")
    vectors = torch.load(folder / "vectors.pt", weights_only=True)
    return request.param, folder, cfg, vectors


def test_architecture_selected_like_the_official_runner(case):
    name, _, cfg, _ = case
    assert type(nf.build_model(cfg)) is EXPECTED_CLASS[name]


@pytest.mark.parametrize(
    "backend", [pytest.param(b, marks=pytest.mark.slow) if b == "triton" else b for b in cpu_backends()]
)  # the Triton interpreter runs a whole network in minutes: the slow lane
def test_forward_raw_and_ema_weights(case, backend):
    name, folder, cfg, v = case
    model = nf.build_model(cfg).eval()
    nf.load_checkpoint(model, folder / "checkpoint.pth", ema=False)
    with torch.no_grad(), use_backend(backend):
        assert rel_err(model(v["forward_x"], v["forward_labels"]), v["forward_out"]) <= 1e-5
    if backend == "triton":
        return  # the Triton interpreter takes ~30-60 s per forward on the CPU; one set of weights is enough
    nf.load_checkpoint(model, folder / "checkpoint.pth", ema=True)
    with torch.no_grad(), use_backend(backend):
        assert rel_err(model(v["forward_x"], v["forward_labels"]), v["forward_out_ema"]) <= 1e-5


def test_forward_channels_last(case):
    """The whole model in channels-last memory format (the fused op's NHWC kernels) gives the official output."""
    _, folder, cfg, v = case
    model = nf.build_model(cfg).eval().to(memory_format=torch.channels_last)
    nf.load_checkpoint(model, folder / "checkpoint.pth", ema=False)
    x = v["forward_x"].to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert rel_err(model(x, v["forward_labels"]), v["forward_out"]) <= 1e-5


def test_dsm_loss_matches(case):
    _, folder, cfg, v = case
    model = nf.build_model(cfg)
    nf.load_checkpoint(model, folder / "checkpoint.pth", ema=False)
    sigmas = nf.get_sigmas(cfg)
    assert torch.equal(sigmas, v["sigmas"])
    with torch.no_grad():
        loss = nf.dsm_loss(model, v["dsm_samples"], sigmas, v["dsm_labels"], v["dsm_unit_noise"])
        per = nf.dsm_loss(model, v["dsm_samples"], sigmas, v["dsm_labels"], v["dsm_unit_noise"], reduction="none")
    assert rel_err(loss, v["dsm_loss"]) <= 1e-5
    assert rel_err(per, v["dsm_loss_per_sample"]) <= 1e-5


def test_langevin_reproduces_official_sampler(case):
    _, folder, cfg, v = case
    model = nf.build_model(cfg).eval()
    nf.load_checkpoint(model, folder / "checkpoint.pth", ema=False)
    g = torch.Generator().manual_seed(int(v["langevin_rng_seed"]))
    out = annealed_langevin(
        model,
        v["langevin_x0"],
        v["langevin_sigmas"],
        int(v["langevin_n_steps_each"]),
        float(v["langevin_step_lr"]),
        denoise=True,
        generator=g,
        backend="torch",
    )
    assert rel_err(out, v["langevin_out_denoised"]) <= 1e-4


def test_checkpoint_keys_are_the_official_ones(case):
    _, folder, cfg, _ = case
    official = torch.load(folder / "checkpoint.pth", weights_only=True)
    ours = nf.build_model(cfg).state_dict()
    assert {k.removeprefix("module.") for k in official[0]} == set(ours)
    assert set(official[4]) == {k for k, _ in nf.build_model(cfg).named_parameters()}
