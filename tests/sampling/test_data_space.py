"""Every path by which images enter or leave the model's data space goes through the config's data_transform /
inverse_data_transform, for every transform the official configs allow (issue: data-space transforms skipped).

The truth is a closed form: a "model" whose score is that of N(m, s²I) with m = data_transform(target) computed
here independently (2t − 1, logit(λ + (1 − 2λ)t), …). Every sampler then ends near m in the model's space, so every
path must hand back ≈ target in [0, 1]; a path that skips a transform is off by up to 0.5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import ncsn_fast as nf
from ncsn_fast.cli import common, main
from ncsn_fast.data import data_transform, inverse_data_transform
from ncsn_fast.sampling import SamplingPlan, sample_batches

LAM = 1e-6
TRANSFORMS = {
    "none": ({}, lambda t: t),
    "rescaled": ({"rescaled": True}, lambda t: 2 * t - 1),
    "logit": (
        {"logit_transform": True},
        lambda t: torch.log(LAM + (1 - 2 * LAM) * t) - torch.log1p(-LAM - (1 - 2 * LAM) * t),
    ),
    "uniform_dequantization": ({"uniform_dequantization": True}, lambda t: t),
    "gaussian_dequantization+rescaled": ({"gaussian_dequantization": True, "rescaled": True}, lambda t: 2 * t - 1),
}


def make_cfg(data: dict) -> nf.Config:
    return nf.load_config(
        {
            "data": {"dataset": "TOY", "image_size": 4, "channels": 1, **data},
            "model": {"sigma_begin": 60.0, "sigma_end": 0.01, "num_classes": 40, "ngf": 4},
            "sampling": {"n_steps_each": 5, "batch_size": 8},
        }
    )


class GaussianTarget(nn.Module):
    """s(x, σ) = (m − x)/(s² + σ²): the exact score of N(m, s²I) blurred by N(0, σ²I); m in the model's space."""

    downsample_factor = 1
    conditional = False

    def __init__(self, cfg: nf.Config, mean: torch.Tensor, s: float = 0.01) -> None:
        super().__init__()
        self.config = cfg
        self.register_buffer("mean", mean)
        self.register_buffer("sigmas", nf.get_sigmas(cfg))
        self.anchor = nn.Parameter(torch.zeros(1))  # the samplers find the device through the parameters
        self.s2 = s * s

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        return (self.mean - x) / (self.s2 + sigma.view(-1, 1, 1, 1) ** 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.score(x, self.sigmas[y])


@pytest.fixture(params=list(TRANSFORMS))
def case(request):
    data, forward = TRANSFORMS[request.param]
    cfg = make_cfg(data)
    target = 0.05 + 0.9 * torch.rand(1, 4, 4)
    return request.param, cfg, target, GaussianTarget(cfg, forward(target))


def test_the_transform_is_the_official_formula(case):
    name, cfg, target, model = case
    got = data_transform(cfg, target[None], torch.Generator().manual_seed(0), dequantize=False)[0]
    assert torch.allclose(got, model.mean, atol=1e-5)
    assert torch.allclose(inverse_data_transform(cfg, model.mean[None])[0], target, atol=1e-5)


@pytest.mark.parametrize("plan", [SamplingPlan(), SamplingPlan(sampler="heun", nfe=40)], ids=["ald", "heun"])
def test_sampling_ends_at_the_target_image(case, plan):
    name, cfg, target, model = case
    images = torch.cat([b.images for b in sample_batches(model, cfg, plan, 6, 4, progress=False)])
    assert images.shape == (6, 1, 4, 4) and images.min() >= 0 and images.max() <= 1
    assert (images - target).abs().max() < 0.06, name


def test_initial_samples_are_uniform_images_in_the_model_space(case):
    name, cfg, target, model = case
    x0 = nf.init_samples(4000, (1, 4, 4), torch.Generator().manual_seed(1), config=cfg)
    back = inverse_data_transform(cfg, x0)  # uniform [0, 1] again, whatever the transform
    assert abs(float(back.mean()) - 0.5) < 0.01 and abs(float(back.var()) - 1 / 12) < 0.005
    if cfg.data.rescaled:
        assert x0.min() < -0.9 and x0.max() > 0.9


def test_data_initialisation_starts_from_transformed_images(case):
    name, cfg, target, model = case
    data = target[None].expand(5, -1, -1, -1)
    x0 = nf.init_samples(3, (1, 4, 4), torch.Generator().manual_seed(2), data=data, sigma=1e-9, config=cfg)
    tol = 0.1 if "dequantization" in name else 1e-5  # dequantization noise (σ 0.01, ×2 rescaled) is part of it
    assert (x0 - model.mean).abs().max() < tol * (30 if name == "logit" else 1)


def _patched_cli(monkeypatch, model, cfg):
    monkeypatch.setattr(common, "load_model", lambda args, device, ckpt=None: (model, cfg))


def test_cli_paths_hand_back_the_target_image(case, tmp_path, monkeypatch, capsys):
    """`sample` (plain, --data-init, --interpolate) and the training snapshot grid through the command line."""
    name, cfg, target, model = case
    _patched_cli(monkeypatch, model, cfg)
    monkeypatch.setattr("ncsn_fast.cli.sample._data_init_images", lambda args, cfg: target[None].expand(4, -1, -1, -1))
    for extra, n_images in (([], 3), (["--data-init"], 3), (["--interpolate", "2"], 12)):
        out = tmp_path / f"o{len(extra)}"
        assert main(["sample", "--n", "3", "--quiet", "--out", str(out), *extra]) == 0, capsys.readouterr().err
        got = torch.load(out / "samples.pt", weights_only=True)
        assert got.shape == (n_images, 1, 4, 4)
        assert (got - target).abs().max() < 0.06, (name, extra)
        assert Image.open(out / "samples.png").size[0] >= 256  # small images are upscaled in the grid


def test_cli_inpainting_keeps_the_given_pixels_exactly(case, tmp_path, monkeypatch, capsys):
    """The issue's failing input: with data.rescaled the known pixels came back as (img + 1)/2."""
    from torchvision.utils import save_image

    name, cfg, target, model = case
    _patched_cli(monkeypatch, model, cfg)
    image = torch.rand(1, 4, 4) * 0.8 + 0.1
    mask = torch.zeros(1, 4, 4)
    mask[:, :, :2] = 1
    save_image(image, tmp_path / "img.png")
    save_image(mask, tmp_path / "mask.png")
    given = torch.floor(image * 255 + 0.5) / 255  # what the PNG holds
    out = tmp_path / "inp"
    args = ["--inpaint", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png")]
    assert main(["sample", "--n", "2", "--quiet", "--out", str(out), *args]) == 0, capsys.readouterr().err
    got = torch.load(out / "samples.pt", weights_only=True)
    assert torch.allclose(got[:, :, :, :2], given[:, :, :2].expand(2, 1, 4, 2), atol=1e-6), name
    # the unknown half is sampled from the model's target there
    assert (got[:, :, :, 2:] - target[:, :, 2:]).abs().max() < 0.06, name


def test_fid_sampling_and_training_snapshots_see_images_in_zero_one(case, tmp_path):
    from ncsn_fast.evaluation.fid import sample_statistics
    from ncsn_fast.train import _snapshot_samples

    name, cfg, target, model = case
    seen = []

    def features(images):
        seen.append(images)
        return images.flatten(1).double().repeat(1, 128)[:, :2048]

    sample_statistics(model, cfg, SamplingPlan(), 4, 2, features, both_modes=True, progress=False)
    got = torch.cat(seen)
    assert got.shape == (8, 1, 4, 4) and (got - target).abs().max() < 0.06, name
    nf_ema = nf.EMA(model, 0.9)
    _snapshot_samples(model, nf_ema, cfg, tmp_path / "snap.png")

    grid = torch.from_numpy(np.asarray(Image.open(tmp_path / "snap.png").convert("L"))).float() / 255
    f = math.ceil(256 / (6 * 4))  # 36 samples of 4 px in 6 columns, upscaled to ≥ 256 px, padding 1·f
    first = grid[f : f + 4 * f : f, f : f + 4 * f : f]  # one pixel of each upscaled block of the first sample
    assert (first - target[0]).abs().max() < 0.06, name
