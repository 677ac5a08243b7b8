from __future__ import annotations

import pytest
import torch

import ncsn_fast as nf
from tests.conftest import rel_err


def test_optimal_score_gives_zero_loss_and_power_weighting():
    sigmas = torch.tensor([5.0, 1.0, 0.1])
    x = torch.randn(8, 3, 4, 4)
    labels = torch.randint(0, 3, (8,))
    z = torch.randn_like(x)
    used = sigmas[labels].view(-1, 1, 1, 1)

    def perfect(xt, y):  # score of N(x, σ²I) evaluated at x + σz: −z/σ
        return -(xt - x) / used**2

    assert float(nf.dsm_loss(perfect, x, sigmas, labels, z)) < 1e-8

    def zero(xt, y):
        return torch.zeros_like(xt)

    # with s = 0 the loss is ½‖z/σ‖²·σ^p: check p = 2 and p = 1 against that closed form
    per = nf.dsm_loss(zero, x, sigmas, labels, z, reduction="none")
    assert rel_err(per, 0.5 * z.flatten(1).square().sum(1)) < 1e-6
    per1 = nf.dsm_loss(zero, x, sigmas, labels, z, anneal_power=1.0, reduction="none")
    assert rel_err(per1, 0.5 * z.flatten(1).square().sum(1) / sigmas[labels]) < 1e-6


def test_half_precision_scores_do_not_overflow():
    sigmas = torch.tensor([0.002])
    x = torch.rand(4, 3, 8, 8)
    z = torch.randn_like(x)
    labels = torch.zeros(4, dtype=torch.long)
    scores = (torch.randn_like(x) * 30).half()  # an untrained network: far from the target −z/σ ≈ 500·z

    loss = nf.dsm_loss(lambda xt, y: scores, x, sigmas, labels, z)
    expected = 0.5 * ((scores.double() * 0.002 + z.double()).flatten(1).square().sum(1)).mean()
    assert abs(float(loss) - float(expected)) / float(expected) < 1e-5
    # the naive official form in half precision overflows on the same input
    target = (-z / 0.002).half()
    naive = 0.5 * ((scores - target) ** 2).flatten(1).sum(1) * torch.tensor(0.002).half() ** 2
    assert not torch.isfinite(naive).all()


def test_bad_noise_shape():
    with pytest.raises(ValueError, match="unit_noise"):
        nf.dsm_loss(lambda a, b: a, torch.rand(2, 3), torch.tensor([1.0]), unit_noise=torch.rand(3, 3))
