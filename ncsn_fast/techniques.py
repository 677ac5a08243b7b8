"""The paper's Techniques 1, 2 and 4: choosing σ_1, the number of noise levels L and the Langevin step size ε.

Technique 3 (s_θ(x, σ) = s_θ(x)/σ) lives in the NCSNv2 forward; Technique 5 is :class:`ncsn_fast.EMA`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from ncsn_fast.config import Config


def get_sigmas(cfg: Config) -> torch.Tensor:
    """Noise levels σ_1 > … > σ_L (float32), geometric or uniform, computed in float64 as the official code."""
    m = cfg.model
    if m.sigma_dist == "geometric":
        values = np.exp(np.linspace(np.log(m.sigma_begin), np.log(m.sigma_end), m.num_classes))
    elif m.sigma_dist == "uniform":
        values = np.linspace(m.sigma_begin, m.sigma_end, m.num_classes)
    else:
        raise ValueError(f"model.sigma_dist: must be 'geometric' or 'uniform', got {m.sigma_dist!r}")
    return torch.tensor(values).float()


def initial_sigma(
    data: torch.Tensor | np.ndarray,
    max_points: int = 60000,
    subsample: int = 10000,
    batch_size: int = 2048,
    seed: int = 0,
) -> float:
    """Technique 1: σ_1 = the maximum Euclidean distance between any two training points (N, ...).

    With more than ``max_points`` points the first ``subsample`` of ``torch.randperm(N)`` drawn from
    ``torch.Generator().manual_seed(seed)`` are used (Appendix B.1). The data are centred and every block of the
    distance matrix is computed in float64 (‖a‖² + ‖b‖² − 2a·b, so that 60000 × 3072 fits in memory); the best pair
    is then measured directly, ‖a − b‖ in float64. Centring matters: for data far from the origin (pixels offset by
    1000) the float32 block formula cancels catastrophically (19.6 for a true 6.66).
    """
    x = torch.as_tensor(data)
    if x.dim() < 2 or x.shape[0] < 2:
        raise ValueError(f"data: need at least 2 points of shape (N, ...), got shape {tuple(x.shape)}")
    x = x.reshape(x.shape[0], -1)
    if not x.is_floating_point():
        x = x.double()
    if x.shape[0] > max_points:
        g = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(x.shape[0], generator=g)[:subsample]]
    if not torch.isfinite(x).all():
        raise ValueError("data: has non-finite values")
    mean = x.double().mean(dim=0)
    best, pair = -1.0, (0, 1)
    n = x.shape[0]
    for i in range(0, n, batch_size):
        a = x[i : i + batch_size].double() - mean
        sa = a.square().sum(dim=1)
        for j in range(i, n, batch_size):  # blocks j >= i: the distance matrix is symmetric
            b = a if j == i else x[j : j + batch_size].double() - mean
            d2 = sa[:, None] + b.square().sum(dim=1)[None] - 2.0 * (a @ b.T)
            k = int(d2.argmax())
            if float(d2.flatten()[k]) > best:
                best, pair = float(d2.flatten()[k]), (i + k // d2.shape[1], j + k % d2.shape[1])
    return float((x[pair[0]].double() - x[pair[1]].double()).norm())


def _phi(t: float) -> float:
    return 0.5 * math.erfc(-t / math.sqrt(2.0))


def _ratio_equation(gamma: float, dim: int) -> float:
    r = math.sqrt(2.0 * dim) * (gamma - 1.0)
    return _phi(r + 3.0 * gamma) - _phi(r - 3.0 * gamma) - 0.5


def noise_ratio(dim: int) -> float:
    """Technique 2: γ = σ_{i-1}/σ_i solving Φ(√(2D)(γ−1)+3γ) − Φ(√(2D)(γ−1)−3γ) = 0.5.

    The rule comes from the Gaussian approximation of ‖x‖ in high dimension (Proposition 2), so it is meant
    for large D (images: D ≥ 10³). For small D it still has a root but a large one (D = 64 gives γ ≈ 1.36,
    D = 8 gives γ ≈ 4.0, D = 5 gives γ ≈ 19.5) and the approximation behind it is poor; for D ≤ 4 there is
    no root at all (√(2D) ≤ 3: the left side never falls to 0.5), and a ValueError says so.
    """
    if dim < 1:
        raise ValueError(f"dim: must be a positive number of dimensions, got {dim}")
    if math.sqrt(2.0 * dim) <= 3.0:
        raise ValueError(f"dim: Technique 2 has no solution for D = {dim} (needs √(2D) > 3, i.e. D ≥ 5)")
    lo, hi = 1.0, 2.0
    while _ratio_equation(hi, dim) > 0:
        hi = 1.0 + 2.0 * (hi - 1.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _ratio_equation(mid, dim) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def num_noise_levels(sigma_1: float, sigma_L: float, dim: int) -> int:
    """Technique 2: L such that a geometric sequence from σ_1 to σ_L has ratio γ = :func:`noise_ratio`."""
    if not (sigma_1 > sigma_L > 0):
        raise ValueError(f"sigma_1, sigma_L: need sigma_1 > sigma_L > 0, got {sigma_1}, {sigma_L}")
    gamma = noise_ratio(dim)
    return int(math.ceil(math.log(sigma_1 / sigma_L) / math.log(gamma))) + 1


def geometric_ratio(sigma_1: float, sigma_L: float, num_levels: int) -> float:
    """γ implied by a geometric schedule of ``num_levels`` levels from σ_1 to σ_L."""
    if num_levels < 2:
        raise ValueError(f"num_levels: need at least 2 levels, got {num_levels}")
    return (sigma_1 / sigma_L) ** (1.0 / (num_levels - 1))


def step_lr_objective(eps: float, gamma: float, sigma_L: float, n_steps_each: int) -> float:
    """Eq. (6): s_T²/σ_i², the variance ratio after T Langevin steps at one level, for step size ε."""
    a = eps / sigma_L**2
    tail = 2.0 * a / (1.0 - (1.0 - a) ** 2)  # = 2ε / (σ_L² − σ_L²(1 − ε/σ_L²)²)
    return (1.0 - a) ** (2 * n_steps_each) * (gamma**2 - tail) + tail


def langevin_step_lr(gamma: float, sigma_L: float, n_steps_each: int) -> float:
    """Technique 4: the ε that brings Eq. (6) closest to 1.

    Eq. (6) is > 1 for every ε in (0, σ_L²) (it is at least min(γ², 2/(2 − ε/σ_L²))), so "closest to 1" is its
    minimum: a dense log-spaced search over ε/σ_L² ∈ [1e-10, 1), then golden-section refinement.
    """
    if gamma <= 1.0:
        raise ValueError(f"gamma: must be > 1, got {gamma}")
    if sigma_L <= 0:
        raise ValueError(f"sigma_L: must be positive, got {sigma_L}")
    if n_steps_each < 1:
        raise ValueError(f"n_steps_each: must be at least 1, got {n_steps_each}")
    s2 = sigma_L**2
    grid = np.logspace(-10, math.log10(0.999999), 20001)
    values = [step_lr_objective(a * s2, gamma, sigma_L, n_steps_each) for a in grid]
    k = int(np.argmin(values))
    lo, hi = math.log(grid[max(k - 1, 0)]), math.log(grid[min(k + 1, len(grid) - 1)])
    invphi = (math.sqrt(5.0) - 1.0) / 2.0

    def f(log_a: float) -> float:
        return step_lr_objective(math.exp(log_a) * s2, gamma, sigma_L, n_steps_each)

    for _ in range(100):
        c, d = hi - invphi * (hi - lo), lo + invphi * (hi - lo)
        if f(c) < f(d):
            hi = d
        else:
            lo = c
    return math.exp(0.5 * (lo + hi)) * s2


def step_lr_for(sigmas: Sequence[float] | torch.Tensor, n_steps_each: int) -> float:
    """Technique 4's ε for T = ``n_steps_each`` on a schedule σ_1 > … > σ_L (γ: the schedule's mean ratio)."""
    sig = [float(v) for v in sigmas]
    if len(sig) < 2:
        raise ValueError(f"sigmas: Technique 4 needs at least 2 noise levels, got {len(sig)}")
    return langevin_step_lr(geometric_ratio(sig[0], sig[-1], len(sig)), sig[-1], n_steps_each)


def resolve_step_lr(cfg: Config, n_steps_each: int | None = None, section: str = "sampling") -> tuple[float, str]:
    """The Langevin step size ε for sampling with ``cfg`` at T = ``n_steps_each`` (default: the section's T), and
    where it came from.

    The configured ε of ``section`` ("sampling" or "fast_fid") when the config sets one for this T; for fast_fid,
    else sampling's ε when its T is the same; else Technique 4 (Eq. (6)) for *this* config's σ schedule and T —
    never another dataset's number (ε is tied to σ_L, γ and T). Returns (ε, origin), origin a phrase such as
    "config sampling.step_lr" or "Technique 4 for γ = 1.1528, σ_L = 0.01, T = 5".
    """
    if section not in ("sampling", "fast_fid"):
        raise ValueError(f"section: 'sampling' or 'fast_fid', got {section!r}")
    own = getattr(cfg, section)
    sampling_t = cfg.sampling.n_steps_each
    section_t = own.n_steps_each if own.n_steps_each is not None else sampling_t
    t = section_t if n_steps_each is None else n_steps_each
    if own.step_lr is not None and t == section_t:
        return float(own.step_lr), f"config {section}.step_lr"
    if section == "fast_fid" and cfg.sampling.step_lr is not None and t == sampling_t:
        return float(cfg.sampling.step_lr), "config sampling.step_lr (same T)"
    sigmas = get_sigmas(cfg)
    gamma = geometric_ratio(float(sigmas[0]), float(sigmas[-1]), len(sigmas))
    return step_lr_for(sigmas, t), f"Technique 4 for γ = {gamma:.4f}, σ_L = {float(sigmas[-1]):.4g}, T = {t}"
