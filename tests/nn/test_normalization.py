"""InstanceNorm++ and CondInstanceNorm++ layers against the official formula, and the CRP max pooling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ncsn_fast.nn.layers import MaxPool5x5
from ncsn_fast.nn.normalization import ConditionalInstanceNorm2dPlus, InstanceNorm2dPlus
from ncsn_fast.ops._backend import use_backend
from tests.conftest import rel_err


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


@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (1, 4, 1, 7), (3, 2, 9, 4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_separable_max_pool_is_the_official_5x5_pool(shape, channels_last):
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    want = F.max_pool2d(x, 5, stride=1, padding=2)  # the official CRP pooling
    assert torch.equal(MaxPool5x5()(x), want)
    with use_backend("reference"):
        assert torch.equal(MaxPool5x5()(x), want)
