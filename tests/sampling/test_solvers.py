"""The samplers against closed forms: a Gaussian's probability-flow ODE (convergence order), a Gaussian target's
moments (the stochastic samplers), the 64-D mixture, the noise stream (CPU = Triton, the fused op used), and the
denoiser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ncsn_fast import techniques as T
from ncsn_fast.sampling import Denoiser, get_sampler, minimum_nfe, prior_samples, recommended
from ncsn_fast.sampling.registry import SAMPLERS
from tests.conftest import cpu_backends
from tests.gmm import GaussianMixture

FUSED = [b for b in cpu_backends("sde_step_") if b != "reference"]


class Gaussian:
    """Data N(μ, s²I): blurred by N(0, σ²I) its score is (μ − x)/(s² + σ²), and the probability-flow ODE
    dx/dσ = −σ·s(x, σ) has the exact solution x(σ) = μ + (x(σ₀) − μ)·√((s² + σ²)/(s² + σ₀²))."""

    def __init__(self, dim: int = 16, s: float = 0.5, dtype=torch.float64) -> None:
        self.mu = torch.randn(dim, generator=torch.Generator().manual_seed(11), dtype=dtype)
        self.s, self.dim = s, dim

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        v = self.s**2 + sigma.to(x.dtype).view(-1, *([1] * (x.dim() - 1))) ** 2
        return (self.mu.to(x.dtype) - x) / v

    def flow(self, x0: torch.Tensor, sigma0: float, sigma: float) -> torch.Tensor:
        return self.mu + (x0 - self.mu) * math.sqrt((self.s**2 + sigma**2) / (self.s**2 + sigma0**2))


@pytest.mark.parametrize(("name", "order"), [("euler", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_deterministic_solvers_converge_at_their_order(name, order):
    g = Gaussian()
    smax, smin = 20.0, 0.01
    x0 = g.mu + smax * torch.randn(200, g.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = g.flow(x0, smax, 0.0)
    nfes, errs = [], []
    for n in (8, 16, 32, 64):
        nfe = 2 * n - 1 if name == "heun" else n
        out = get_sampler(name)(g.score, x0, nfe, smax, smin)
        nfes.append(nfe)
        errs.append(float((out - exact).square().mean().sqrt()))
    slope = -np.polyfit(np.log(nfes), np.log(errs), 1)[0]
    assert abs(slope - order) <= 0.3, (name, slope, errs)


@pytest.mark.parametrize(
    ("name", "nfe", "options"),
    [
        ("dpmpp_2m_sde", 200, {}),
        ("cas", 200, {}),
        ("pc", 400, {}),
        ("heun", 201, {"churn": 10.0}),
        ("adaptive", 4000, {"rel_tol": 0.005, "abs_tol": 0.001}),  # EM overshoots the noise: small steps
    ],
)
def test_stochastic_samplers_reach_the_gaussian_targets_moments(name, nfe, options):
    """Mean and variance of N(μ, s²I) within 3 standard errors (4000 chains × 8 dimensions)."""
    g = Gaussian(dim=8, s=0.5)
    n, smax = 4000, 10.0
    x0 = prior_samples(n, (8,), smax, torch.Generator().manual_seed(2)).double() + g.mu
    out = get_sampler(name)(g.score, x0, nfe, smax, 0.01, torch.Generator().manual_seed(3), **options)
    centred = out - g.mu
    mean_se = g.s / math.sqrt(n)
    assert (centred.mean(0).abs() <= 3 * mean_se + 2e-3).all(), (name, centred.mean(0))
    var, var_se = float(centred.var(0).mean()), g.s**2 * math.sqrt(2 / (n - 1)) / math.sqrt(8)
    assert abs(var - g.s**2) <= 3 * var_se + 0.02 * g.s**2, (name, var)


def test_adaptive_takes_fewer_evaluations_as_the_tolerance_loosens_and_stays_within_it():
    g = Gaussian(dim=8, s=0.5)
    x0 = prior_samples(2000, (8,), 10.0, torch.Generator().manual_seed(2)).double() + g.mu
    used, errors = [], []
    for rel in (0.005, 0.02, 0.1):
        info: dict = {}
        out = get_sampler("adaptive")(g.score, x0, 10**5, 10.0, 0.01, torch.Generator().manual_seed(3),
                                      rel_tol=rel, info=info)  # fmt: skip
        assert not info["capped"]
        used.append(info["nfe"])
        errors.append(abs(float((out - g.mu).std()) - g.s) / g.s)
    assert used[0] > used[1] > used[2], used
    assert all(err <= max(0.05, 2 * rel) for err, rel in zip(errors, (0.005, 0.02, 0.1), strict=True)), errors


def test_the_recommended_sampler_finds_the_mixtures_modes_at_25_evaluations():
    gm = GaussianMixture(dim=64, weights=(0.2, 0.3, 0.5))
    sigma_1 = T.initial_sigma(gm.sample(20000, torch.Generator().manual_seed(1)))
    name, options = recommended(25)
    x0 = prior_samples(4000, (64,), sigma_1, torch.Generator().manual_seed(2)).double()
    score = lambda x, s: gm.score_at(x, s.double())  # noqa: E731
    out = get_sampler(name)(score, x0, 25, sigma_1, 0.01, torch.Generator().manual_seed(3), **options)
    rep = gm.report(out)
    for i, w in enumerate(gm.weights.tolist()):
        assert abs(rep["weight"][i] - w) <= 0.03, rep
        assert rep["mean_err"][i] <= 0.03, rep
        assert abs(rep["std"][i] - 1.0) <= 0.10, rep


@pytest.mark.skipif(len(FUSED) < 2, reason="needs two fused backends (the CPU extension and Triton)")
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_same_seed_same_samples_on_the_cpu_and_triton_backends(name):
    g = Gaussian(dim=12, s=0.5, dtype=torch.float32)
    x0 = prior_samples(6, (3, 2, 2), 5.0, torch.Generator().manual_seed(4)) + g.mu.view(3, 2, 2)
    score = lambda x, s: g.score(x.flatten(1), s).view_as(x)  # noqa: E731
    options = {"n_steps_each": 2} if name == "ald" else {}
    nfe = max(minimum_nfe(name, **options), 12)
    runs = [get_sampler(name)(score, x0, nfe, 5.0, 0.05, seed=123, backend=b, **options) for b in FUSED[:2]]
    again = get_sampler(name)(score, x0, nfe, 5.0, 0.05, seed=123, backend=FUSED[0], **options)
    assert torch.equal(runs[0], again)  # deterministic per seed
    assert (runs[0] - runs[1]).abs().max() <= 1e-5, name
    other = get_sampler(name)(score, x0, nfe, 5.0, 0.05, seed=124, backend=FUSED[0], **options)
    stochastic = name not in ("euler", "dpmpp_2m") and not (name == "heun")
    assert (not torch.equal(other, runs[0])) == stochastic, name


@pytest.mark.parametrize(("name", "options"), [("pc", {}), ("cas", {}), ("dpmpp_2m_sde", {}), ("heun", {"churn": 5.0})])
def test_stochastic_steps_go_through_the_fused_op(name, options, monkeypatch):
    import ncsn_fast.ops.sde_step as op

    calls = []
    real = op.sde_step_

    def counting(*args, **kwargs):
        calls.append(args[6])  # the offset: one per noisy step, never reused
        return real(*args, **kwargs)

    monkeypatch.setattr(op, "sde_step_", counting)
    x0 = torch.randn(3, 2, 4, 4)
    get_sampler(name)(lambda x, s: -x / (1 + s.view(-1, 1, 1, 1) ** 2), x0, 12, 5.0, 0.05, seed=1, **options)
    assert calls and calls == list(range(len(calls))), calls


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("nfe", [11, 20, 37])
def test_nfe_is_a_bound_and_is_used(name, nfe):
    """At most nfe score calls, and not far fewer: a sampler that evaluated once would fail."""
    calls = []

    def score(x, s):
        assert s.shape == (x.shape[0],) and bool((s > 0).all())
        calls.append(1)
        return -x / (1 + s.view(-1, 1) ** 2)

    options = {"n_steps_each": 3} if name == "ald" else {}
    if name == "adaptive":
        options["abs_tol"] = options["rel_tol"] = 1e-6  # a tolerance that needs the whole budget
    get_sampler(name)(score, torch.randn(3, 4), nfe, 5.0, 0.01, torch.Generator().manual_seed(0), **options)
    slack = {"ald": 3, "pc": 1, "heun": 1, "adaptive": 1}.get(name, 0)  # whole steps, attempts of 2 evaluations
    assert nfe - slack <= len(calls) <= nfe, (name, len(calls))


def test_the_denoiser_is_tweedies_posterior_mean():
    g = Gaussian(dim=6, s=0.7)

    class Model(torch.nn.Module):
        def score(self, x, sigma):
            return g.score(x, sigma)

    x = torch.randn(5, 6, dtype=torch.float64) * 3
    sigma = torch.rand(5, dtype=torch.float64) * 4 + 0.1
    d = Denoiser(Model())(x, sigma)
    v = (g.s**2 + sigma**2).view(-1, 1)
    expected = (g.s**2 * x + sigma.view(-1, 1) ** 2 * g.mu) / v  # E[x_0 | x] for Gaussian data
    assert torch.allclose(d, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="model"):
        Denoiser(torch.nn.Linear(2, 2))
