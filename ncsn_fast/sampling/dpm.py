"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models"): second-order multistep solvers in data prediction, in the σ parametrisation of k-diffusion.

With the denoiser D(x, σ) = x + σ²·s(x, σ) (Tweedie) and λ = −ln σ, the probability-flow ODE of a VE model is
dx/dλ = D(x, σ) − x, whose exact solution from λ_i to λ_{i+1} (h = λ_{i+1} − λ_i) is

    x_{i+1} = (σ_{i+1}/σ_i)·x_i + σ_{i+1} ∫ e^{λ} D dλ   (DPM-Solver++ Eq. (9), α = 1 for VE).

DPM-Solver++(2M) approximates D on the interval by the linear extrapolation of the last two denoised values
(Algorithm 2). Its SDE variant solves the reverse SDE instead (Eq. (18) with η = 1), adding fresh noise each step.
Both take ``schedule`` and the Langevin corrector options (see :mod:`~ncsn_fast.sampling.samplers`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ncsn_fast.sampling import runtime
from ncsn_fast.sampling.correctors import LangevinCorrector, solver_schedule
from ncsn_fast.sampling.runtime import Score
from ncsn_fast.sampling.samplers import denoised, min_nfe, prepare
from ncsn_fast.validation import check_positive


@torch.no_grad()
def dpmpp_2m(
    score: Score,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    generator: torch.Generator | None = None,
    rho: float = 7.0,
    schedule: str | Sequence[float] = "karras",
    corrector_steps: int = 0,
    corrector_levels: int = 1,
    corrector_snr: float | None = None,
    progress: bool | Any = False,
    precision: str = "fp32",
    backend: str = "auto",
    cuda_graphs: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2; k-diffusion ``sample_dpmpp_2m``), deterministic.

    N = nfe steps on the Karras schedule (ρ = ``rho``) σ_0 = σ_max … σ_{N−1} = σ_min, σ_N = 0. Step i (h = λ_{i+1} −
    λ_i, λ = −ln σ, r = h_{i−1}/h): D_i = D(x_i, σ_i); D' = (1 + 1/(2r))·D_i − (1/(2r))·D_{i−1} (D_i at the first
    step); x_{i+1} = (σ_{i+1}/σ_i)·x_i − expm1(−h)·D'; the last step (σ_N = 0) returns the current prediction
    D_{N−1} = D(x_{N−1}, σ_min), not the extrapolation D' (as k-diffusion). Second order: the global error falls as
    1/N². Shapes: ``x0`` (N, …) at noise level σ_max; ``generator``/``seed`` unused.
    """
    min_nfe("dpmpp_2m", nfe, 2)
    corrector = LangevinCorrector(corrector_steps, corrector_levels, corrector_snr)
    net, noise, x = prepare(score, x0, sigma_max, sigma_min, generator, seed, precision, backend, cuda_graphs)
    sigmas = solver_schedule(corrector, "dpmpp_2m", 2, nfe, schedule, sigma_max, sigma_min, rho)
    steps = len(sigmas) - 1
    old: torch.Tensor | None = None
    bar = runtime.progress_bar(nfe, "dpmpp_2m", progress)
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = denoised(net, x, s)
        if s_next == 0:
            x = d  # σ = 0: the data prediction itself
        else:
            h = math.log(s / s_next)
            dd = d
            if old is not None:
                r = math.log(sigmas[i - 1] / s) / h
                dd = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * old
            x = (s_next / s) * x - math.expm1(-h) * dd
        old = d
        runtime.check_finite(x, "dpmpp_2m", i, s)
        bar.update(1)
        x = corrector.after_step(net, noise, x, s_next, bar)
    bar.close()
    return x


@torch.no_grad()
def dpmpp_2m_sde(
    score: Score,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    generator: torch.Generator | None = None,
    rho: float = 7.0,
    eta: float = 1.0,
    s_noise: float = 1.0,
    schedule: str | Sequence[float] = "karras",
    corrector_steps: int = 0,
    corrector_levels: int = 1,
    corrector_snr: float | None = None,
    progress: bool | Any = False,
    precision: str = "fp32",
    backend: str = "auto",
    cuda_graphs: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, Eq. (18); k-diffusion ``sample_dpmpp_2m_sde``, midpoint), stochastic.

    N = nfe steps on the Karras schedule as :func:`dpmpp_2m`. Step i (h = λ_{i+1} − λ_i, r = h_{i−1}/h):
    D' = D_i + (1/(2r))·(D_i − D_{i−1}) (D_i at the first step), then in one fused pass

        x_{i+1} = (σ_{i+1}/σ_i)·e^{−ηh}·x_i − expm1(−h − ηh)·D' + σ_{i+1}·√(−expm1(−2ηh))·s_noise·z,

    z from the run's noise stream (Philox at the step's offset); the last step (σ_N = 0) returns D_{N−1}. η = 1 is
    the reverse SDE, η = 0 the probability-flow ODE. First order in the strong sense; the Gaussian target's mean
    and variance are reproduced at a generous NFE (the tests).
    """
    min_nfe("dpmpp_2m_sde", nfe, 2)
    if not 0 <= check_positive("eta", eta, allow_zero=True) <= 1:
        raise ValueError(f"eta: must be in [0, 1], got {eta}")
    corrector = LangevinCorrector(corrector_steps, corrector_levels, corrector_snr)
    net, noise, x = prepare(score, x0, sigma_max, sigma_min, generator, seed, precision, backend, cuda_graphs)
    sigmas = solver_schedule(corrector, "dpmpp_2m_sde", 2, nfe, schedule, sigma_max, sigma_min, rho)
    steps = len(sigmas) - 1
    old: torch.Tensor | None = None
    h_last = 0.0
    bar = runtime.progress_bar(nfe, "dpmpp_2m_sde", progress)
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = denoised(net, x, s)
        if s_next == 0:
            x = d
        else:
            h = math.log(s / s_next)
            eta_h = eta * h
            dd = d if old is None else d + (h / (2 * h_last)) * (d - old)  # midpoint: 1/(2r), r = h_last/h
            c = (s_next / s) * math.exp(-eta_h)
            a = -math.expm1(-h - eta_h)
            b = s_next * math.sqrt(max(0.0, -math.expm1(-2 * eta_h))) * s_noise
            noise.step_(x, dd.contiguous(), c, a, b)
            h_last = h
        old = d
        runtime.check_finite(x, "dpmpp_2m_sde", i, s)
        bar.update(1)
        x = corrector.after_step(net, noise, x, s_next, bar)
    bar.close()
    return x
