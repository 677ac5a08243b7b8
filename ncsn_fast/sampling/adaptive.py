"""The adaptive SDE solver of Jolicoeur-Martineau et al. 2021, "Gotta Go Fast When Generating Data with
Score-Based Models" (Algorithm 1; the authors' ``AdaptivePredictor``), for VE models such as NCSN/NCSNv2.

The reverse VE SDE in the time t ∈ [0, 1] of σ(t) = σ_min·(σ_max/σ_min)^t, g(t)² = dσ²/dt = 2σ(t)²·ln(σ_max/σ_min):

    dx = −g(t)²·s(x, σ(t))·dt + g(t)·dw̄   (integrated from t = 1 down to t = 0).

Every sample keeps its own time t, step size h, previous proposal x_prev and accept/reject decision (as the
authors' code: samples of one batch need different steps). An attempt of size h from t draws one z and forms two
stochastic increments with it, each with its own diffusion coefficient (Section 3.1):

    K1 = h·g(t)²·s(x, σ(t)) + g(t)·√h·z                      (Euler–Maruyama: x' = x + K1)
    K2 = h·g(t − h)²·s(x', σ(t − h)) + g(t − h)·√h·z         (stochastic improved Euler: x'' = x + (K1 + K2)/2)

The scaled error E = ‖(K2 − K1)/2 / δ‖₂/√D, δ = max(abs_tol, rel_tol·max(|x'|, |x'_prev|)) elementwise, with
x'_prev the Euler–Maruyama proposal of the sample's last accepted step, decides per sample: E ≤ 1 accepts x''
(extrapolation), moves t to t − h and keeps x' as x'_prev; either way h ← min(t, θ·h·E^{−r}) (θ = 0.9, r = 0.9).
Two score evaluations per attempt (of the samples still running); the run stops when every sample reaches t = 0
and ends with the denoising step x + σ_min²·s(x, σ_min) (Tweedie). When the NFE cap comes first, the last
evaluation is that denoising step at each sample's own noise level σ(t) ≥ σ_min: the posterior mean there
(blurrier), never a jump across the rest of the range.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ncsn_fast.sampling import runtime
from ncsn_fast.sampling.runtime import Score
from ncsn_fast.sampling.samplers import min_nfe, prepare
from ncsn_fast.validation import check_positive


def _rows(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample (N,) vector shaped to broadcast over samples (N, ...) like ``like`` (floats in its dtype)."""
    v = v if v.dtype == torch.bool else v.to(like.dtype)
    return v.view(-1, *([1] * (like.dim() - 1)))


@torch.no_grad()
def adaptive(
    score: Score,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    generator: torch.Generator | None = None,
    abs_tol: float = 0.0078,
    rel_tol: float = 0.05,
    h_init: float = 0.01,
    safety: float = 0.9,
    exponent: float = 0.9,
    denoise: bool = True,
    progress: bool | Any = False,
    precision: str = "fp32",
    backend: str = "auto",
    cuda_graphs: bool = False,
    seed: int | None = None,
    info: dict | None = None,
) -> torch.Tensor:
    """Gotta Go Fast (see the module docstring). ``nfe`` is a cap, not a target: the solver takes as many
    evaluations as ``abs_tol``/``rel_tol`` need (in the data's units: the default abs_tol 0.0078 ≈ 1/128 of a pixel
    range of 1; the defaults are the paper's for VE models) up to the cap. ``x0`` (N, …) at σ_max; returns x0's
    shape. ``h_init`` is the first step in t ∈ [0, 1]; ``safety`` θ and ``exponent`` r set the step-size rule.
    ``info`` (a dict), when given, receives ``nfe`` (batch evaluations used), ``iterations`` (attempts),
    ``accepted``/``rejected`` (steps summed over the samples) and ``capped`` (whether the cap stopped the run).
    ValueError for nfe < 4 or a non-positive tolerance, h_init, safety or exponent."""
    min_nfe("adaptive", nfe, 4)
    for name, value in (("abs_tol", abs_tol), ("rel_tol", rel_tol), ("h_init", h_init), ("safety", safety)):
        check_positive(name, value)
    check_positive("exponent", exponent)
    net, noise, x = prepare(score, x0, sigma_max, sigma_min, generator, seed, precision, backend, cuda_graphs)
    log_ratio = math.log(sigma_max / sigma_min)
    n = x.shape[0]
    # Times and step sizes per sample, in float64 whatever the state's dtype (t must land on 0 exactly).
    t = torch.ones(n, dtype=torch.float64, device=x.device)
    h = torch.full_like(t, min(h_init, 1.0))

    def sigma(tt: torch.Tensor) -> torch.Tensor:
        return sigma_min * torch.exp(tt * log_ratio)

    def increment(xx: torch.Tensor, tt: torch.Tensor, hh: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """K = h·g(t)²·s(x, σ(t)) + g(t)·√h·z: one stochastic increment of the reverse SDE at time t."""
        s = sigma(tt)
        g = math.sqrt(2 * log_ratio) * s
        drift = net(xx, s.float()).to(xx.dtype)
        return _rows(hh * g * g, xx) * drift + _rows(g * hh.sqrt(), xx) * z

    used, iterations, accepted, rejected, capped = 0, 0, 0, 0, False
    x_prev = x.clone()
    budget = nfe - 1  # one evaluation is kept for the final denoising step (also made when the cap stops the run)
    bar = runtime.progress_bar(nfe, "adaptive", progress)
    running = t > 0
    while bool(running.any()):
        if budget - used < 2:  # no room for another attempt: denoise from here (below)
            capped = True
            break
        z = noise.normal(x)  # one z per sample and attempt, drawn for the whole batch (the stream stays aligned)
        # Samples that reached t = 0 are left out of the evaluations (their h is 0: nothing would change).
        idx = None if bool(running.all()) else running.nonzero().squeeze(1)
        xa, ta, ha, za, pa = (v if idx is None else v[idx] for v in (x, t, h, z, x_prev))
        k1 = increment(xa, ta, ha, za)
        x1 = xa + k1
        k2 = increment(x1, ta - ha, ha, za)
        used, iterations = used + 2, iterations + 1
        bar.update(2)
        delta = torch.clamp(rel_tol * torch.maximum(x1.abs(), pa.abs()), min=abs_tol)
        err = (0.5 * (k2 - k1) / delta).flatten(1).square().mean(1).sqrt().double()
        if not bool(torch.isfinite(err).all()):
            runtime.check_finite(x1 + 0.5 * (k2 - k1), "adaptive", iterations, float(sigma(ta).max()))
        ok = err <= 1
        new_x = torch.where(_rows(ok, xa), xa + 0.5 * (k1 + k2), xa)
        new_prev = torch.where(_rows(ok, xa), x1, pa)
        new_t = torch.where(ok, ta - ha, ta)
        new_t = torch.where(new_t < 1e-12, torch.zeros_like(new_t), new_t)
        # θ·h·E^(−r), capped by the time left (E = 0 gives ∞ → the time left, as in the authors' code)
        new_h = torch.minimum(new_t.clamp(min=0), safety * ha * err.pow(-exponent))
        accepted, rejected = accepted + int(ok.sum()), rejected + int((~ok).sum())
        if idx is None:
            x, x_prev, t, h = new_x, new_prev, new_t, new_h
        else:
            x[idx], x_prev[idx], t[idx], h[idx] = new_x, new_prev, new_t, new_h
        running = t > 0
    if denoise or capped:  # Tweedie at each sample's own level: σ_min, or where the cap stopped it
        s_end = sigma(t)
        x = x + _rows(s_end * s_end, x) * net(x, s_end.float()).to(x.dtype)
        used += 1
        bar.update(1)
    bar.close()
    runtime.check_finite(x, "adaptive", iterations, sigma_min)
    if info is not None:
        info.update(nfe=used, iterations=iterations, accepted=accepted, rejected=rejected, capped=capped)
    return x
