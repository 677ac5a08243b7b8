"""Gaussian targets with closed-form sampler outputs, and bounds on the statistics' own distributions.

Data N(μ, diag(s²)) blurred by N(0, σ²I) has the score (μ − x)/(s² + σ²). A sampler that ends with the denoising
step x + σ_min²·s(x, σ_min) from x ~ N(μ, s² + σ_min²) returns N(μ, s⁴/(s² + σ_min²)) exactly. The bounds are
taken on each statistic's sampling distribution at a false-alarm rate of about 1e-4 per test (not "3 standard
errors of each of D dimensions", whose verdict flips with the last bits of a machine's vector maths): the mean
through χ²_D of the standardised mean vector, the variance through the pooled variance ratio's standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy import stats

P_FALSE_ALARM = 1e-4


@dataclass
class GaussianTarget:
    mu: torch.Tensor  # (D,) float64
    s: torch.Tensor  # (D,) float64, per-dimension standard deviations
    sigma_max: float

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        v = self.s.to(x.dtype) ** 2 + sigma.to(x.dtype).view(-1, *([1] * (x.dim() - 1))) ** 2
        return (self.mu.to(x.dtype) - x) / v

    def prior(self, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return self.mu + self.sigma_max * torch.randn(n, self.mu.numel(), generator=g, dtype=torch.float64)

    def output_variance(self, sigma_min: float) -> torch.Tensor:
        return self.s**4 / (self.s**2 + sigma_min**2)


TARGETS = {
    # the target: N(0, 0.25·I) in 64 dimensions from σ = 8.543
    "iso64": GaussianTarget(torch.zeros(64, dtype=torch.float64), torch.full((64,), 0.5, dtype=torch.float64), 8.543),
    # image-like: pixels around 0.5 with spread 0.2
    "pixels16": GaussianTarget(
        torch.full((16,), 0.5, dtype=torch.float64), torch.full((16,), 0.2, dtype=torch.float64), 5.0
    ),
    # a shifted mean and standard deviations over a decade
    "aniso16": GaussianTarget(
        torch.linspace(-1, 1, 16, dtype=torch.float64), torch.logspace(-1, 0, 16, dtype=torch.float64), 10.0
    ),
}


def mean_chi2(out: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> tuple[float, float]:
    """(n·Σ_d (m̄_d − μ_d)²/v_d, its χ²_D bound at P_FALSE_ALARM): the mean vector's distance in standard errors."""
    n, d = out.shape
    stat = float((n * (out.mean(0) - mean) ** 2 / var).sum())
    return stat, float(stats.chi2.isf(P_FALSE_ALARM, d))


def variance_ratio(out: torch.Tensor, var: torch.Tensor) -> tuple[float, float]:
    """(the pooled ratio mean_d(var_d/v_d), its standard error √(2/(n−1))/√D under Gaussian output)."""
    n, d = out.shape
    return float((out.var(0) / var).mean()), math.sqrt(2 / (n - 1)) / math.sqrt(d)


Z_BOUND = float(stats.norm.isf(P_FALSE_ALARM / 2))  # two-sided, ≈ 3.9
