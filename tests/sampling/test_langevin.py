"""Annealed Langevin dynamics against closed forms: a Gaussian's discretized-chain moments, a 64-D Gaussian
mixture's modes; interpolation endpoints; inpainting; errors."""

from __future__ import annotations

import math

import pytest
import torch

from ncsn_fast import techniques as T
from ncsn_fast.sampling import annealed_langevin, init_samples, inpaint, interpolate, interpolation_weights
from tests.gmm import GaussianMixture
from tests.sampling.moments import Z_BOUND, mean_chi2


def test_gaussian_stationary_moments_of_the_discretized_chain():
    # Target N(μ, s²I) seen at noise σ: score (μ − x)/v, v = s² + σ². The chain x ← x + α(μ − x)/v + √(2α)z
    # has stationary mean μ and variance 2α/(1 − (1 − α/v)²), slightly above v.
    dim, chains, s, sigma, alpha = 8, 4000, 0.7, 0.5, 0.08
    mu = torch.randn(dim, dtype=torch.float64) * 3
    v = s**2 + sigma**2
    score = lambda x, y: (mu - x) / v  # noqa: E731
    x0 = torch.rand(chains, dim, dtype=torch.float64)
    out = annealed_langevin(score, x0, [sigma], 400, alpha, denoise=False, generator=torch.Generator().manual_seed(7))
    var_theory = 2 * alpha / (1 - (1 - alpha / v) ** 2)
    n = chains * dim
    # bounds on the statistics' own distributions at a false-alarm rate of 1e-4 (tests/sampling/moments.py)
    stat, bound = mean_chi2(out, mu, torch.full((dim,), var_theory, dtype=torch.float64))
    assert stat <= bound, (stat, bound)
    centred = (out - mu).flatten()
    var_hat = float(centred.square().mean())
    assert abs(var_hat - var_theory) <= Z_BOUND * var_theory * math.sqrt(2 / (n - 1))
    assert abs(var_theory - v) > Z_BOUND * var_theory * math.sqrt(2 / (n - 1))  # the test tells the two apart


@pytest.fixture(scope="module")
def mixture_run():
    gm = GaussianMixture(dim=64, weights=(0.2, 0.3, 0.5))
    data = gm.sample(20000, torch.Generator().manual_seed(1)).float()
    sigma_1 = T.initial_sigma(data)  # Technique 1
    L = T.num_noise_levels(sigma_1, 0.01, 64)  # Technique 2
    gamma = T.geometric_ratio(sigma_1, 0.01, L)
    eps = T.langevin_step_lr(gamma, 0.01, 100)  # Technique 4, T = 100
    sigmas = torch.tensor([sigma_1 * gamma**-i for i in range(L)], dtype=torch.float64)
    score = lambda x, y: gm.score_at(x, sigmas[y])  # noqa: E731
    x0 = init_samples(4000, (64,), torch.Generator().manual_seed(2)).double()
    out = annealed_langevin(score, x0, sigmas, 100, eps, generator=torch.Generator().manual_seed(3))
    return gm, out


@pytest.mark.slow
def test_gaussian_mixture_modes(mixture_run):
    gm, out = mixture_run
    rep = gm.report(out)
    for i, w in enumerate(gm.weights.tolist()):
        assert abs(rep["weight"][i] - w) <= 0.04, rep
        assert rep["mean_err"][i] <= 0.03, rep
        assert abs(rep["std"][i] - gm.std) / gm.std <= 0.10, rep


def test_same_seed_same_samples_and_intermediates():
    score = lambda x, y: -x  # noqa: E731
    x0 = torch.rand(3, 2, 4, 4)
    a = annealed_langevin(score, x0, [1.0, 0.1], 3, 0.01, generator=torch.Generator().manual_seed(5))
    b = annealed_langevin(score, x0, [1.0, 0.1], 3, 0.01, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    steps = annealed_langevin(
        score, x0, [1.0, 0.1], 3, 0.01, generator=torch.Generator().manual_seed(5), final_only=False
    )
    assert len(steps) == 2 * 3 + 1 and torch.equal(steps[-1], a) and steps[0].device.type == "cpu"


def test_callback_diagnostics_per_level():
    seen = []
    annealed_langevin(lambda x, y: -x, torch.rand(4, 5), [2.0, 1.0, 0.5], 2, 0.1, callback=seen.append)
    assert [d["level"] for d in seen] == [0, 1, 2]
    assert all(d["grad_norm"] > 0 and d["snr"] > 0 for d in seen)
    assert seen[0]["step_size"] == pytest.approx(0.1 * 16)


def test_interpolation_endpoints_reproduce_plain_samples():
    score = lambda x, y: -x / (1 + y.float().view(-1, 1, 1, 1))  # noqa: E731
    x0 = torch.rand(2, 1, 4, 4)
    sig = [3.0, 1.0, 0.3]
    out = interpolate(
        score, x0, sig, 4, 0.01, 3, (torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
    ).view(2, 5, 1, 4, 4)
    # Interpolation mixes torch noise streams: its endpoints are the plain samples of the torch update.
    plain1 = annealed_langevin(score, x0, sig, 4, 0.01, generator=torch.Generator().manual_seed(1), backend="torch")
    plain2 = annealed_langevin(score, x0, sig, 4, 0.01, generator=torch.Generator().manual_seed(2), backend="torch")
    assert torch.allclose(out[:, 0], plain1, atol=1e-6)
    assert torch.allclose(out[:, -1], plain2, atol=1e-6)
    assert not torch.allclose(out[:, 2], plain1, atol=1e-3)
    w = interpolation_weights(3)
    assert torch.allclose(w.square().sum(1), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(w[2], torch.tensor([math.cos(math.pi / 4), math.sin(math.pi / 4)], dtype=torch.float64))


def test_inpainting_keeps_known_pixels():
    gm = GaussianMixture(dim=36, weights=(0.5, 0.5), spread=4.0)
    sigmas = torch.tensor([4.0 * 0.5**i for i in range(10)]).double()
    score = lambda x, y: gm.score_at(x.flatten(1), sigmas[y]).view_as(x)  # noqa: E731
    data = gm.sample(1, torch.Generator().manual_seed(4)).view(1, 6, 6)
    mask = torch.zeros(1, 6, 6, dtype=torch.float64)
    mask[:, :, :2] = 1  # left third known; any mask works
    mask[:, 5, 5] = 1
    x0 = torch.rand(16, 1, 6, 6, dtype=torch.float64)
    g = torch.Generator().manual_seed(9)
    out = inpaint(score, x0, data, mask, sigmas, 20, 2e-5, generator=g, restore_known=False)
    err = (out - data)[mask.expand_as(out) > 0]
    assert float(err.square().mean().sqrt()) <= 2 * float(sigmas[-1])
    exact = inpaint(score, x0, data, mask, sigmas, 20, 2e-5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(exact[mask.expand_as(exact) > 0], data.expand_as(exact)[mask.expand_as(exact) > 0])


def test_inpainting_bad_mask():
    with pytest.raises(ValueError, match="mask"):
        inpaint(lambda x, y: -x, torch.rand(2, 1, 6, 6), torch.rand(1, 6, 6), torch.ones(1, 5, 5), [1.0], 1, 0.1)


def test_divergence_stops_with_level_and_no_nans_returned():
    def exploding(x, y):
        return x * 1e30 if int(y[0]) == 1 else -x

    with pytest.raises(FloatingPointError, match="level 1"):
        annealed_langevin(exploding, torch.rand(2, 3), [1.0, 0.5, 0.1], 5, 0.1)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"x0": torch.zeros(2, 3, dtype=torch.long)}, "x0"),
        ({"step_lr": -1.0}, "step_lr"),
        ({"n_steps_each": -1}, "n_steps_each"),
        ({"backend": "fused"}, "backend"),
        ({"sigmas": []}, "sigmas"),
        ({"sigmas": [0.1, 1.0]}, "sigmas: must decrease"),
        ({"sigmas": [1.0, -0.5]}, "sigmas: noise levels must be positive"),
        ({"n_steps_each": 0}, "n_steps_each: must be at least 1, got 0"),
        ({"step_lr": float("nan")}, "step_lr"),
        ({"start_level": 3}, "start_level"),
        ({"precision": "fp8"}, "precision"),
    ],
)
def test_bad_input(kwargs, needle):
    args = {"score": lambda x, y: -x, "x0": torch.rand(2, 3), "sigmas": [1.0], "n_steps_each": 1, "step_lr": 0.1}
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=needle):
        annealed_langevin(**args)


def test_model_inputs_are_checked_at_the_public_boundary():
    import ncsn_fast as nf

    model, cfg = nf.load_pretrained("digits")
    sig = nf.get_sigmas(cfg)[:2]
    takes = r"x0: NCSNv2 takes images \(N, 1, H, W\) with N ≥ 1, got a float32 tensor of shape "
    for x0, needle in (
        (torch.rand(2, 16, 16), takes + r"\(2, 16, 16\)"),
        (torch.rand(2, 3, 16, 16), takes + r"\(2, 3, 16, 16\)"),
        (torch.rand(2, 1, 15, 16), "x0: NCSNv2 downsamples by 2"),
    ):
        with pytest.raises(ValueError, match=needle):
            annealed_langevin(model, x0, sig, 1, 1e-5)
