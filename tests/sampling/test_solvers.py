"""The samplers against closed forms: a Gaussian's probability-flow ODE (convergence order), a Gaussian target's
moments (the stochastic samplers), the 64-D mixture, the noise stream (CPU = Triton, the fused op used), and the
denoiser."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from ncsn_fast import techniques as T
from ncsn_fast.sampler_specs import SPECS
from ncsn_fast.sampling import Denoiser, get_sampler, minimum_nfe, prior_samples, recommended
from ncsn_fast.sampling.registry import SAMPLERS
from tests.conftest import cpu_backends
from tests.gmm import GaussianMixture
from tests.sampling.moments import TARGETS, Z_BOUND, mean_chi2, variance_ratio

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


# Every sampler at its DEFAULT options (the ones users run), with the budget and the variance bias it is allowed on
# the Gaussian targets, measured on 4000 chains (relative to s⁴/(s² + σ_min²)): cas' default η shrinks the variance
# by 3-6% (its docstring: within 8%); pc at 400 is 2-3% wide, euler at 400 1-2% narrow (first order); adaptive has
# Algorithm 1's own excess at the paper's tolerances, 1-2% on the issue's zero-mean target and 4-7% on the shifted
# ones (the authors' loop, written out in test_adaptive.py, gives the same samples); ald is tested against its own
# exact recursion below. The rest are within 1%.
DEFAULT_RUNS = {
    "dpmpp_2m_sde": (100, 0.02),
    "cas": (200, 0.08),
    "pc": (400, 0.05),
    "heun": (101, 0.02),
    "euler": (400, 0.03),
    "dpmpp_2m": (100, 0.02),
    "adaptive": (10**5, 0.08),
    "dpmpp_3m_sde": (100, 0.02),
    "unipc": (100, 0.02),
    "ipndm": (100, 0.02),
}


def test_every_registered_sampler_has_a_default_run():
    """A new sampler (one declaration in ncsn_fast.sampler_specs) cannot skip the moments test below."""
    assert set(DEFAULT_RUNS) | {"ald"} == set(SAMPLERS)


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("name", sorted(DEFAULT_RUNS))
def test_every_sampler_at_its_default_options_reaches_the_gaussian_targets_moments(name, target):
    """Mean (χ² of the standardised mean vector) and pooled variance within their sampling distributions' 1e-4
    bounds (4000 chains), plus the sampler's measured bias allowance on the variance (DEFAULT_RUNS)."""
    g, n, smin = TARGETS[target], 4000, 0.01
    nfe, allowance = DEFAULT_RUNS[name]
    out = get_sampler(name)(g.score, g.prior(n, 2), nfe, g.sigma_max, smin, torch.Generator().manual_seed(3))
    var = g.output_variance(smin)
    stat, bound = mean_chi2(out, g.mu, var)
    assert stat <= bound, (name, target, stat, bound)
    ratio, se = variance_ratio(out, var)
    assert abs(ratio - 1) <= Z_BOUND * se + allowance, (name, target, ratio, se)


def test_heun_with_churn_reaches_the_gaussian_targets_moments():
    g, n, smin = TARGETS["aniso16"], 4000, 0.01
    out = get_sampler("heun")(g.score, g.prior(n, 2), 201, g.sigma_max, smin, torch.Generator().manual_seed(3),
                              churn=10.0)  # fmt: skip
    var = g.output_variance(smin)
    stat, bound = mean_chi2(out, g.mu, var)
    ratio, se = variance_ratio(out, var)
    assert stat <= bound and abs(ratio - 1) <= Z_BOUND * se + 0.02, (stat, bound, ratio)


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("nfe", [51, 201])
def test_ald_at_its_default_options_matches_its_exact_gaussian_recursion(target, nfe):
    """On Gaussian data every Langevin step x ← x + α·(μ − x)/(s² + σ²) + √(2α)·z is linear, so the output's
    mean and variance follow exactly from m ← m + α(μ − m)/v, V ← (1 − α/v)²·V + 2α, then the denoising step: the
    truth for ALD, whose output is not the data distribution at a finite step size (Eq. (6) of the paper)."""
    g, n, smin = TARGETS[target], 4000, 0.01
    L = (nfe - 1) // 5  # ald's default: T = 5 steps per level, denoising last
    sigmas = torch.tensor([g.sigma_max * (smin / g.sigma_max) ** (i / (L - 1)) for i in range(L)], dtype=torch.float64)
    eps = T.langevin_step_lr(T.geometric_ratio(g.sigma_max, smin, L), smin, 5)  # the default ε: an input here
    m, V = g.mu.clone(), torch.full_like(g.mu, g.sigma_max**2)
    for sig in sigmas.tolist():
        a = eps * sig**2 / smin**2
        v = g.s**2 + sig**2
        for _ in range(5):
            m, V = m + a * (g.mu - m) / v, (1 - a / v) ** 2 * V + 2 * a
    k = smin**2 / (g.s**2 + smin**2)  # the denoising step x + σ_L²·s(x, σ_L) is x·(1 − k) + μ·k
    m, V = m * (1 - k) + g.mu * k, V * (1 - k) ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the coarse-schedule warning at 51 evaluations is the point of the test
        out = get_sampler("ald")(g.score, g.prior(n, 2), nfe, g.sigma_max, smin, torch.Generator().manual_seed(3))
    stat, bound = mean_chi2(out, m, V)
    assert stat <= bound, (target, stat, bound)
    ratio, se = variance_ratio(out, V)
    assert abs(ratio - 1) <= Z_BOUND * se, (target, ratio, se)


def test_adaptive_takes_fewer_evaluations_as_the_tolerance_loosens():
    """NFE falls as rel_tol loosens, and the zero-mean target's std stays within max(2%, 2·rel_tol). (On shifted
    targets Algorithm 1's per-sample rejection, whose relative tolerance grows with |x'|, keeps a variance excess
    that tightening rel_tol does not remove — the authors' loop does the same: test_adaptive.py.)"""
    g = TARGETS["iso64"]
    x0 = g.prior(1000, 2)
    used, errors = [], []
    for rel in (0.005, 0.02, 0.1):
        info: dict = {}
        out = get_sampler("adaptive")(g.score, x0, 10**5, g.sigma_max, 0.01, torch.Generator().manual_seed(3),
                                      rel_tol=rel, info=info)  # fmt: skip
        assert not info["capped"]
        used.append(info["nfe"])
        errors.append(abs(float(out.std(0).mean()) / float(g.output_variance(0.01).sqrt().mean()) - 1))
    assert used[0] > used[1] > used[2], used
    assert all(err <= max(0.02, 2 * rel) for err, rel in zip(errors, (0.005, 0.02, 0.1), strict=True)), errors


@pytest.mark.parametrize(("nfe", "weight", "mean", "std"), [(10, 0.03, 0.03, 0.05), (15, 0.02, 0.02, 0.03),
                                                          (25, 0.02, 0.02, 0.03), (50, 0.02, 0.02, 0.05)])  # fmt: skip
def test_the_recommended_sampler_finds_the_mixtures_modes(nfe, weight, mean, std):
    """The recommended sampler per budget on the 64-D three-mode mixture (closed form), 4000 samples. Measured
    (docs/sampling.md): 0.025/2.7%/3.7% (weight, mean, std errors) at 10 — issue 25's 0.02 and 2% are not met there
    by any stochastic sampler (ipndm order 3 meets them, 0.016/2.0%/1.7%, but leaves the digits speckled) —,
    0.011/1.2%/0.6% at 15, 0.005/1.0%/1.4% at 25, 0.003/1.1%/4.0% at 50."""
    gm = GaussianMixture(dim=64, weights=(0.2, 0.3, 0.5))
    sigma_1 = T.initial_sigma(gm.sample(20000, torch.Generator().manual_seed(1)))
    name, options = recommended(nfe)
    x0 = prior_samples(4000, (64,), sigma_1, torch.Generator().manual_seed(2)).double()
    score = lambda x, s: gm.score_at(x, s.double())  # noqa: E731
    out = get_sampler(name)(score, x0, nfe, sigma_1, 0.01, torch.Generator().manual_seed(3), **options)
    rep = gm.report(out)
    for i, w in enumerate(gm.weights.tolist()):
        assert abs(rep["weight"][i] - w) <= weight, rep
        assert rep["mean_err"][i] <= mean, rep
        assert abs(rep["std"][i] - 1.0) <= std, rep


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
    stochastic = SPECS[name].family != "ode"  # the ODE solvers (heun at its default churn 0) draw no noise
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
