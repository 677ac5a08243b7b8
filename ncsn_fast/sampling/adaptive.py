"""The adaptive SDE solver of Jolicoeur-Martineau et al. 2021, "Gotta Go Fast When Generating Data with
Score-Based Models" (Algorithm 1), for VE models such as NCSN/NCSNv2.

The reverse VE SDE in the time t ∈ [0, 1] of σ(t) = σ_min·(σ_max/σ_min)^t, g(t)² = dσ²/dt = 2σ(t)²·ln(σ_max/σ_min):

    dx = −g(t)²·s(x, σ(t))·dt + g(t)·dw̄   (integrated from t = 1 down to t = 0).

Each attempted step of size h from t draws one z and takes two solutions with it (Section 3.1):
Euler–Maruyama x' = x + h·g²(t)·s(x, t) + g(t)·√h·z and improved Euler
x'' = x + ½h·(g²(t)·s(x, t) + g²(t − h)·s(x', t − h)) + g(t)·√h·z = x' + ½h·(g²(t − h)·s(x', t − h) − g²(t)·s(x, t)).
The scaled error E = ‖(x' − x'')/δ‖₂/√D, δ = max(abs_tol, rel_tol·max(|x'|, |x_prev|)) elementwise, decides: E ≤ 1
accepts x'' (extrapolation) and moves t to t − h; either way h ← min(t, θ·h·E^{−r}) (θ = 0.9, r = 0.9, the paper's
values). Two score evaluations per attempt; the run stops at t = 0 and ends with the denoising step
x + σ_min²·s(x, σ_min) (Tweedie). When the NFE cap comes first, the last evaluation is that denoising step at the
noise level reached, σ(t) > σ_min: the posterior mean there (blurrier), never a jump across the rest of the range.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ncsn_fast.sampling import runtime
from ncsn_fast.sampling.runtime import Score
from ncsn_fast.sampling.samplers import denoised, min_nfe, prepare, sigma_tensor
from ncsn_fast.validation import check_positive


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
    range of 1) up to the cap. ``x0`` (N, …) at σ_max. ``info`` (a dict), when given, receives the evaluations
    used, steps accepted and rejected, and whether the cap stopped the run."""
    min_nfe("adaptive", nfe, 4)
    for name, value in (("abs_tol", abs_tol), ("rel_tol", rel_tol), ("h_init", h_init)):
        check_positive(name, value)
    net, noise, x = prepare(score, x0, sigma_max, sigma_min, generator, seed, precision, backend, cuda_graphs)
    log_ratio = math.log(sigma_max / sigma_min)

    def sigma(t: float) -> float:
        return sigma_min * math.exp(t * log_ratio)

    def drift(xx: torch.Tensor, t: float) -> torch.Tensor:  # g(t)²·s(x, σ(t)): the reverse SDE's drift per dt
        s = sigma(t)
        return 2 * s * s * log_ratio * net(xx, sigma_tensor(xx, s)).to(xx.dtype)

    t, h = 1.0, min(h_init, 1.0)
    used, accepted, rejected, capped = 0, 0, 0, False
    x_prev = x.clone()
    budget = nfe - 1  # one evaluation is kept for the final denoising step
    bar = runtime.progress_bar(nfe, "adaptive", progress)
    while t > 0:
        if budget - used < 2:  # no room for another attempt: denoise from here (below)
            capped = True
            break
        f = drift(x, t)
        g = math.sqrt(2 * log_ratio) * sigma(t)
        x1 = x.clone()
        noise.step_(x1, f, 1.0, h, g * math.sqrt(h))  # Euler–Maruyama with this attempt's z
        f1 = drift(x1, t - h)
        x2 = x1 + 0.5 * h * (f1 - f)  # improved Euler with the same z
        used += 2
        bar.update(2)
        delta = torch.maximum(torch.full_like(x1, abs_tol), rel_tol * torch.maximum(x1.abs(), x_prev.abs()))
        err = float(((x1 - x2) / delta).flatten(1).square().mean(1).sqrt().max())
        if not math.isfinite(err):
            runtime.check_finite(x2, "adaptive", accepted + rejected, sigma(t))
        if err <= 1:
            x_prev, x = x, x2.contiguous()
            t, accepted = t - h, accepted + 1
            t = 0.0 if t < 1e-12 else t
        else:
            rejected += 1
        h = min(t, safety * h * max(err, 1e-10) ** (-exponent)) if t > 0 else h
    if denoise or capped:
        s_end = sigma(t)
        x = denoised(net, x, s_end)
        used += 1
        bar.update(1)
    bar.close()
    runtime.check_finite(x, "adaptive", accepted + rejected, sigma_min)
    if info is not None:
        info.update(nfe=used, accepted=accepted, rejected=rejected, capped=capped)
    return x
