"""Architectures, sizes and channel counts beyond the reference folder, checked against invariants and an
independent re-statement of the official InstanceNorm++ (nn.InstanceNorm2d plus the channel-mean term)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ncsn_fast as nf
from ncsn_fast.models import registered_models
from ncsn_fast.nn import ConditionalInstanceNorm2dPlus, InstanceNorm2dPlus
from tests.conftest import rel_err


def cfg_for(name: str | None, size: int, channels: int = 3, ngf: int = 4, levels: int = 7, dataset: str = "X"):
    raw = {
        "data": {"dataset": dataset, "image_size": size, "channels": channels},
        "model": {"ngf": ngf, "num_classes": levels, "sigma_begin": 20.0},
    }
    if name:
        raw["model"]["name"] = name
    return nf.load_config(raw)


@pytest.mark.parametrize(
    "name,size,channels,ngf,levels",
    [
        ("ncsnv2", 28, 1, 6, 5),  # MNIST-size variant
        ("ncsnv2", 16, 1, 8, 49),
        ("ncsnv2", 64, 3, 4, 3),
        ("ncsnv2_deeper", 96, 3, 4, 4),
        ("ncsnv2_deeper", 128, 3, 2, 2),
        ("ncsnv2_deepest", 256, 3, 2, 2),
        ("ncsn", 28, 1, 6, 10),
        ("ncsn", 32, 3, 5, 3),
        ("ncsn_deeper", 96, 3, 3, 4),
    ],
)
def test_shapes_and_technique_3(name, size, channels, ngf, levels):
    cfg = cfg_for(name, size, channels, ngf, levels)
    model = nf.build_model(cfg).eval()
    x = torch.rand(2, channels, size, size)
    y = torch.randint(0, levels, (2,))
    with torch.no_grad():
        out = model(x, y)
    assert out.shape == x.shape and torch.isfinite(out).all()
    if not name.startswith("ncsn_") and name != "ncsn":
        # Technique 3: the output is f(x)/σ_y — the same input at two levels differs exactly by the σ ratio.
        y2 = (y + 1) % levels
        with torch.no_grad():
            out2 = model(x, y2)
        ratio = (model.sigmas[y2] / model.sigmas[y]).view(2, 1, 1, 1)
        assert rel_err(out2 * ratio, out) < 1e-5


def test_registry_selection_by_dataset_and_resolution():
    assert registered_models() == ["ncsn", "ncsn_deeper", "ncsnv2", "ncsnv2_deeper", "ncsnv2_deepest"]
    pick = nf.models.architecture_name
    assert pick(cfg_for(None, 32, dataset="CIFAR10")) == "ncsnv2"
    assert pick(cfg_for(None, 64, dataset="CELEBA")) == "ncsnv2"
    assert pick(cfg_for(None, 64, dataset="LSUN")) == "ncsnv2_deeper"
    assert pick(cfg_for(None, 64, dataset="FFHQ")) == "ncsnv2_deepest"
    assert pick(cfg_for(None, 48)) == "ncsnv2"
    assert pick(cfg_for(None, 96)) == "ncsnv2_deeper"
    assert pick(cfg_for(None, 128)) == "ncsnv2_deeper"
    assert pick(cfg_for(None, 256)) == "ncsnv2_deepest"
    assert pick(cfg_for("ncsn", 32, dataset="CIFAR10")) == "ncsn"


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        nf.models.register_model("ncsnv2")(nn.Module)


def official_instance_norm_pp(x, alpha, gamma, beta):
    """The official InstanceNorm2dPlus forward, restated with nn.InstanceNorm2d (independent of our op)."""
    means = torch.mean(x, dim=(2, 3))
    m = torch.mean(means, dim=-1, keepdim=True)
    v = torch.var(means, dim=-1, keepdim=True)
    means = (means - m) / torch.sqrt(v + 1e-5)
    h = nn.InstanceNorm2d(x.shape[1], affine=False, track_running_stats=False).eval()(x)
    h = h + means[..., None, None] * alpha[..., None, None]
    return gamma.view(-1, x.shape[1], 1, 1) * h + beta.view(-1, x.shape[1], 1, 1)


@pytest.mark.parametrize("shape", [(1, 3, 5, 5), (4, 7, 33, 33), (2, 16, 1, 2), (3, 5, 6, 9)])
def test_instance_norm_pp_matches_official_formula(shape):
    x = torch.randn(shape) * 3 + torch.randn(shape[:2])[..., None, None]
    norm = InstanceNorm2dPlus(shape[1])
    with torch.no_grad():
        norm.beta.normal_()
        assert rel_err(norm(x), official_instance_norm_pp(x, norm.alpha, norm.gamma, norm.beta)) < 1e-5


def test_instance_norm_pp_single_pixel_keeps_only_the_channel_term():
    # nn.InstanceNorm2d refuses H = W = 1; there x − μ = 0, so h is the across-channel term alone.
    x = torch.randn(3, 6, 1, 1)
    norm = InstanceNorm2dPlus(6)
    mu = x[:, :, 0, 0]
    centred = (mu - mu.mean(1, keepdim=True)) / torch.sqrt(mu.var(1, keepdim=True) + 1e-5)
    expected = norm.gamma * norm.alpha * centred + norm.beta
    with torch.no_grad():
        assert rel_err(norm(x)[:, :, 0, 0], expected) < 1e-6


def test_conditional_instance_norm_pp_gathers_gamma_alpha_beta_by_label():
    c, k = 6, 4
    norm = ConditionalInstanceNorm2dPlus(c, k)
    with torch.no_grad():
        norm.embed.weight.normal_()
    x = torch.randn(5, c, 7, 7)
    y = torch.randint(0, k, (5,))
    gamma, alpha, beta = norm.embed.weight[y].chunk(3, dim=-1)
    with torch.no_grad():
        expected = torch.cat(
            [official_instance_norm_pp(x[i : i + 1], alpha[i : i + 1], gamma[i], beta[i]) for i in range(5)]
        )
        # channel statistics are per sample, so sample-by-sample evaluation is the same computation
        assert rel_err(norm(x, y), expected) < 1e-5


def test_activations_selectable():
    for act in ("relu", "lrelu", "swish", "elu"):
        cfg = cfg_for("ncsnv2", 16, 1, 4, 3)
        cfg.model.nonlinearity = act
        model = nf.build_model(cfg)
        assert torch.isfinite(model(torch.rand(1, 1, 16, 16), torch.tensor([0]))).all()
