"""SDEdit against its closed form on Gaussian data N(μ, diag(s²)) with the exact score.

Given x, SDEdit draws y = x + σ_t·z and samples x_{σ_min} from the reverse SDE started at y; with the exact score
that is the posterior of the forward blur: x_{σ_min} | y ~ N(μ + a(y − μ), a(σ_t² − σ_min²)), a = (s² + σ_min²)/(s²
+ σ_t²). The final denoising step maps it by b = s²/(s² + σ_min²) around μ. Averaged over z:

    mean μ + s²/(s² + σ_t²)·(x − μ),   variance (s²/(s² + σ_t²))²·σ_t² + s⁴(σ_t² − σ_min²)/((s² + σ_min²)(s² + σ_t²))

(at σ_min → 0: s²σ_t²/(s² + σ_t²) + s⁴σ_t²/(s² + σ_t²)², the posterior p(x₀ | y) averaged over y). Bounds on the
statistics' own distributions (tests/sampling/moments.py).
"""

from __future__ import annotations

import math

import pytest
import torch

from ncsn_fast.sampling import sdedit, strength_sigma
from tests.sampling.moments import TARGETS, Z_BOUND, mean_chi2, variance_ratio


def closed_form(g, x, sigma_t, sigma_min):
    s2 = g.s**2
    k = s2 / (s2 + sigma_t**2)
    mean = g.mu + k * (x - g.mu)
    var = k**2 * sigma_t**2 + s2**2 * (sigma_t**2 - sigma_min**2) / ((s2 + sigma_min**2) * (s2 + sigma_t**2))
    return mean, var


def test_closed_form_reduces_to_the_posterior_average_at_sigma_min_zero():
    g, st = TARGETS["aniso16"], 0.7
    _, var = closed_form(g, g.mu, st, 0.0)
    s2 = g.s**2
    assert torch.allclose(var, s2 * st**2 / (s2 + st**2) + s2**2 * st**2 / (s2 + st**2) ** 2)


@pytest.mark.parametrize(
    ("target", "sigma_t", "dtype"),
    [("aniso16", 0.8, torch.float64), ("pixels16", 0.3, torch.float64), ("aniso16", 3.0, torch.float32)],
)
def test_sdedit_matches_the_gaussian_closed_form(target, sigma_t, dtype):
    """dpmpp_2m_sde (the reverse SDE, denoising last) at 200 evaluations from σ_t, 4000 chains of one input x: mean
    within its χ² bound, pooled variance within Z_BOUND standard errors, no bias allowance (measured: within 0.4%,
    under one standard error of 0.56%); float32 runs the fused noise stream."""
    g, n, smin = TARGETS[target], 4000, 0.01
    x1 = g.mu + 2.0 * g.s * torch.linspace(-1, 1, g.mu.numel(), dtype=torch.float64)  # an input far from μ
    x = x1.expand(n, -1).to(dtype)
    out = sdedit(g.score, x, sigma_t, smin, sampler="dpmpp_2m_sde", nfe=200, seed=5).double()
    mean, var = closed_form(g, x1, sigma_t, smin)
    stat, bound = mean_chi2(out, mean, var)
    assert stat <= bound, (stat, bound)
    ratio, se = variance_ratio(out, var)
    assert abs(ratio - 1) <= Z_BOUND * se, (ratio, se)
    # the test tells the edit apart from "return the input" and from "sample the prior"
    assert mean_chi2(out, x1, var)[0] > bound and mean_chi2(out, g.mu, var)[0] > bound


def test_sdedit_at_strength_zero_returns_the_input_denoised():
    """S = 0 → σ_start = σ_min: one Tweedie step on x + σ_min·z, close to x (within a few σ_min), its residuals
    standardised by the closed form at σ_t = σ_min of unit mean square."""
    g, smin = TARGETS["pixels16"], 0.01
    x = g.mu + g.s * torch.randn(300, g.mu.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert strength_sigma(0.0, smin, g.sigma_max) == smin
    out = sdedit(g.score, x, strength_sigma(0.0, smin, g.sigma_max), smin, nfe=10, seed=1)
    assert float((out - x).abs().max()) <= 6 * smin
    mean, var = closed_form(g, x, smin, smin)
    assert float(((out - mean) ** 2 / var).mean()) == pytest.approx(1.0, abs=Z_BOUND * math.sqrt(2 / out.numel()))
    # a small strength is close to it too, through the sampler
    st = strength_sigma(1e-3, smin, g.sigma_max)
    assert smin < st < 1.01 * smin
    near = sdedit(g.score, x, st, smin, sampler="dpmpp_2m_sde", nfe=4, seed=1)
    assert float((near - x).abs().max()) <= 6 * smin


def test_strength_maps_geometrically_and_bad_inputs_name_the_argument():
    assert strength_sigma(1.0, 0.01, 50.0) == 50.0
    assert strength_sigma(0.5, 0.01, 100.0) == pytest.approx(1.0)
    for bad in (-0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="strength"):
            strength_sigma(bad, 0.01, 50.0)
    g = TARGETS["pixels16"]
    x = g.mu.expand(4, -1).clone()
    with pytest.raises(ValueError, match="sigma_start"):
        sdedit(g.score, x, 0.001, 0.01)
    with pytest.raises(ValueError, match="sampler"):
        sdedit(g.score, x, 1.0, 0.01, sampler="ddim")
    with pytest.raises(ValueError, match="nfe"):
        sdedit(g.score, x, 1.0, 0.01, sampler="heun", nfe=2)
