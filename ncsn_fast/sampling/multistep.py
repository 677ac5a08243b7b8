"""Multistep samplers of higher order, one score evaluation per step, in the σ parametrisation of k-diffusion:
DPM-Solver++(3M) SDE, improved PNDM and UniPC.

With the denoiser D(x, σ) = x + σ²·s(x, σ) and λ = −ln σ, the probability-flow ODE of a VE model is
dx/dσ = (x − D)/σ, or dx/dλ = D − x, whose exact step from λ_i to λ_{i+1} (h = λ_{i+1} − λ_i) is
x_{i+1} = (σ_{i+1}/σ_i)·x_i + σ_{i+1} ∫ e^{λ} D dλ (DPM-Solver++ Eq. (9), α = 1 for VE). The samplers differ in how
they approximate D (or dx/dσ) on the step from the evaluations of earlier steps. Each runs N = nfe steps on the
Karras schedule σ_0 = σ_max … σ_{N−1} = σ_min, σ_N = 0, and its last step returns the data prediction
D(x_{N−1}, σ_min) itself (as k-diffusion's samplers do at σ = 0).

Every σ-schedule solver here (and ``euler``, ``heun``, ``dpmpp_2m``, ``dpmpp_2m_sde``) also takes ``schedule``
("karras", "geometric" or an explicit list of σ: :func:`~ncsn_fast.sampling.schedules.solver_sigmas`) and a Langevin
corrector, ``corrector_steps`` steps at each of the last ``corrector_levels`` levels (:mod:`~.correctors`), whose
evaluations come out of ``nfe``: the solver itself then takes nfe − corrector_steps·corrector_levels steps.
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

# Adams–Bashforth coefficients for orders 1–4, newest derivative first (iPNDM; Zhang & Chen 2023, Eq. (29)).
AB_COEFFICIENTS = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)
UNIPC_VARIANTS = ("bh1", "bh2")


def _check_order(order: Any, highest: int) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= highest:
        raise ValueError(f"order: must be an integer in 1..{highest}, got {order!r}")
    return order


@torch.no_grad()
def dpmpp_3m_sde(
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
    """DPM-Solver++(3M) SDE (k-diffusion ``sample_dpmpp_3m_sde``; Lu et al. 2022, Eq. (18) with the multistep
    third-order data-prediction expansion), stochastic.

    N = nfe steps on the Karras schedule (ρ = ``rho``). Step i (h = λ_{i+1} − λ_i, λ = −ln σ, h_η = (1 + η)·h,
    D_i = D(x_i, σ_i)), with r_0 = h_{i−1}/h, r_1 = h_{i−2}/h, δ_0 = (D_i − D_{i−1})/r_0, δ_1 = (D_{i−1} − D_{i−2})/r_1,
    d_1 = δ_0 + (δ_0 − δ_1)·r_0/(r_0 + r_1), d_2 = (δ_0 − δ_1)/(r_0 + r_1), φ_2 = expm1(−h_η)/h_η + 1,
    φ_3 = φ_2/h_η − 1/2, in one fused pass

        x_{i+1} = e^{−h_η}·x_i − expm1(−h_η)·D_i + φ_2·d_1 − φ_3·d_2 + σ_{i+1}·√(−expm1(−2ηh))·s_noise·z,

    with only φ_2·δ_0 at the second step and neither term at the first; z from the run's noise stream (Philox at
    the step's offset; ``torch.randn`` from ``generator`` for float64 states or ``backend="torch"``). The last step
    (σ_N = 0) returns D_{N−1}. η = 1 is the reverse SDE, η = 0 the probability-flow ODE. As written (k-diffusion,
    diffusers' third-order multistep update), d_2 ≈ h²·D''/2 is weighted by φ_3 where the exact step's expansion
    needs 2φ_3, so at η = 0 the global error falls as 1/N², not 1/N³ (measured in the tests); kept for parity.

    Shapes: ``x0`` (N, …) at noise level σ_max; returns the same shape. Raises ValueError for nfe < 2 (``nfe``) or
    η outside [0, 1] (``eta``); FloatingPointError if the chain diverges.
    """
    min_nfe("dpmpp_3m_sde", nfe, 2)
    if not 0 <= check_positive("eta", eta, allow_zero=True) <= 1:
        raise ValueError(f"eta: must be in [0, 1], got {eta}")
    corrector = LangevinCorrector(corrector_steps, corrector_levels, corrector_snr)
    net, noise, x = prepare(score, x0, sigma_max, sigma_min, generator, seed, precision, backend, cuda_graphs)
    sigmas = solver_schedule(corrector, "dpmpp_3m_sde", 2, nfe, schedule, sigma_max, sigma_min, rho)
    steps = len(sigmas) - 1
    d_1: torch.Tensor | None = None
    d_2: torch.Tensor | None = None
    h_1 = h_2 = 0.0
    bar = runtime.progress_bar(nfe, "dpmpp_3m_sde", progress)
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = denoised(net, x, s)
        if s_next == 0:
            x = d  # σ = 0: the data prediction itself
        else:
            h = math.log(s / s_next)
            h_eta = h * (eta + 1)
            a = -math.expm1(-h_eta)
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            drift = d
            if d_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                delta_0 = (d - d_1) / r0
                delta_1 = (d_1 - d_2) / r1
                d1 = delta_0 + (delta_0 - delta_1) * (r0 / (r0 + r1))
                d2 = (delta_0 - delta_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                drift = d + (phi_2 / a) * d1 - (phi_3 / a) * d2
            elif d_1 is not None:
                drift = d + (phi_2 / a) * ((d - d_1) / (h_1 / h))
            b = s_next * math.sqrt(max(0.0, -math.expm1(-2 * h * eta))) * s_noise
            noise.step_(x, drift.contiguous(), math.exp(-h_eta), a, b)
            h_1, h_2 = h, h_1
        d_1, d_2 = d, d_1
        runtime.check_finite(x, "dpmpp_3m_sde", i, s)
        bar.update(1)
        x = corrector.after_step(net, noise, x, s_next, bar)
    bar.close()
    return x


@torch.no_grad()
def ipndm(
    score: Score,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    generator: torch.Generator | None = None,
    rho: float = 7.0,
    order: int = 4,
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
    """Improved PNDM (iPNDM; Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator",
    Eq. (29) and App. B; zju-pi/diff-sampler's ``ipndm``), deterministic.

    Adams–Bashforth on the probability-flow ODE dx/dσ = d(x, σ) = (x − D(x, σ))/σ, one evaluation per step: N = nfe
    steps on the Karras schedule (ρ = ``rho``); step i with k = min(``order``, i + 1) (lower orders warm up) is

        x_{i+1} = x_i + (σ_{i+1} − σ_i)·Σ_{j<k} b_{k,j}·d_{i−j},

    b_1 = (1), b_2 = (3, −1)/2, b_3 = (23, −16, 5)/12, b_4 = (55, −59, 37, −9)/24; the last step (σ_N = 0) returns
    D(x_{N−1}, σ_min). The coefficients are those of equal steps: on a grid uniform in σ (ρ = 1) the global error
    falls as 1/N^order, on a graded one such as Karras' (ρ = 7) the step-size mismatch leaves a local error of
    ~(Δσ)³·d′·(grading) and the method is second order asymptotically for order ≥ 2 (the tests measure both).
    ``generator``/``seed`` are unused (deterministic).

    Shapes: ``x0`` (N, …) at noise level σ_max; returns the same shape. Raises ValueError for nfe < 2 (``nfe``) or
    an order outside 1..4 (``order``); FloatingPointError if the chain diverges.
    """
    min_nfe("ipndm", nfe, 2)
    order = _check_order(order, 4)
    corrector = LangevinCorrector(corrector_steps, corrector_levels, corrector_snr)
    net, noise, x = prepare(score, x0, sigma_max, sigma_min, generator, seed, precision, backend, cuda_graphs)
    sigmas = solver_schedule(corrector, "ipndm", 2, nfe, schedule, sigma_max, sigma_min, rho)
    steps = len(sigmas) - 1
    history: list[torch.Tensor] = []  # d_i, d_{i−1}, … newest first
    bar = runtime.progress_bar(nfe, "ipndm", progress)
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = denoised(net, x, s)
        if s_next == 0:
            x = d
        else:
            history.insert(0, (x - d) / s)
            del history[order:]
            coefficients = AB_COEFFICIENTS[len(history) - 1]
            slope = coefficients[0] * history[0]
            for c, past in zip(coefficients[1:], history[1:], strict=True):
                slope = slope + c * past
            x = x + (s_next - s) * slope
        runtime.check_finite(x, "ipndm", i, s)
        bar.update(1)
        x = corrector.after_step(net, noise, x, s_next, bar)
    bar.close()
    return x


def _unipc_rhos(h: float, rks: list[float], variant: str, corrector: bool) -> tuple[float, list[float]]:
    """(B(h), ρ) of UniP/UniC in data prediction (Zhao et al. 2023, Algorithms 2–3; diffusers'
    ``multistep_uni_p_bh_update``/``multistep_uni_c_bh_update``). ``rks`` = r_1 … r_{p−1} (earlier log-SNR points
    relative to the step's start, over h); p = len(rks) + 1. With h̃ = −h, φ̂_1 = expm1(h̃)/h̃ − 1 and φ̂_{k+1} =
    φ̂_k/h̃ − 1/(k+1)!, g_k = φ̂_k·k!/B(h̃), B(h̃) = h̃ (bh1) or expm1(h̃) (bh2): the predictor's ρ solves
    Σ_m r_m^{k−1} ρ_m = g_k for k < p (ρ = 1/2 for p = 2), the corrector's the p × p system with r_p = 1 appended
    (ρ = 1/2 for p = 1)."""
    hh = -h
    b_h = hh if variant == "bh1" else math.expm1(hh)
    p = len(rks) + 1
    g, phi_k, factorial = [], math.expm1(hh) / hh - 1, 1
    for k in range(1, p + 1):
        g.append(phi_k * factorial / b_h)
        factorial *= k + 1
        phi_k = phi_k / hh - 1 / factorial
    if corrector:
        if p == 1:
            return b_h, [0.5]
        r = rks + [1.0]
        system = torch.tensor([[rk ** (k - 1) for rk in r] for k in range(1, p + 1)], dtype=torch.float64)
        return b_h, torch.linalg.solve(system, torch.tensor(g, dtype=torch.float64)).tolist()
    if p == 1:
        return b_h, []
    if p == 2:
        return b_h, [0.5]
    system = torch.tensor([[rk ** (k - 1) for rk in rks] for k in range(1, p)], dtype=torch.float64)
    return b_h, torch.linalg.solve(system, torch.tensor(g[:-1], dtype=torch.float64)).tolist()


def _unipc_update(
    x: torch.Tensor, s: float, s_next: float, outputs: list[torch.Tensor], lambdas: list[float], rhos: list[float],
    b_h: float, new: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """(σ_{t}/σ_s)·x − expm1(−h)·m_0 − B(h)·(Σ_k ρ_k·(m_k − m_0)/r_k [+ ρ_p·(new − m_0)]): the UniP step (new
    None) or the UniC correction, in the VE form of diffusers' data-prediction update (divided by α_t).
    ``outputs``/``lambdas`` newest first: m_0 at the step's start s, then earlier ones."""
    h = math.log(s / s_next)
    m0 = outputs[0]
    out = (s_next / s) * x - math.expm1(-h) * m0
    terms = [(rhos[k - 1] * h / (lambdas[k] - lambdas[0])) * (outputs[k] - m0) for k in range(1, len(outputs))]
    if new is not None:
        terms.append(rhos[-1] * (new - m0))
    res = sum(terms[1:], terms[0]) if terms else None
    return out if res is None else out - b_h * res


@torch.no_grad()
def unipc(
    score: Score,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    generator: torch.Generator | None = None,
    rho: float = 7.0,
    order: int = 3,
    variant: str = "bh2",
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
    """UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
    Models", Algorithms 2–3, data prediction; diffusers' ``UniPCMultistepScheduler``), deterministic.

    N = nfe steps on the Karras schedule (ρ = ``rho``), λ = −ln σ (a VE model's log-SNR; the VP form
    α = 1/√(1 + σ²), σ_vp = ασ, x_vp = αx has the same λ and the same update divided by α). Step i evaluates
    m_i = D(x_i, σ_i) once; then (i ≥ 1) UniC-p' corrects x_i with it, p' the predictor order of step i − 1,

        x_i^c = (σ_i/σ_{i−1})·x_{i−1}^c − expm1(−h)·m_{i−1} − B(h)·(Σ_{k<p'} ρ^c_k·D_k + ρ^c_{p'}·(m_i − m_{i−1})),

    and UniP-p predicts x_{i+1} = (σ_{i+1}/σ_i)·x_i^c − expm1(−h)·m_i − B(h)·Σ_{k<p} ρ_k·D_k, with
    D_k = (m_{·−k} − m_·)/r_k, r_k = (λ_{·−k} − λ_·)/h, h the step's λ increment, B(h) = −h (``variant`` "bh1")
    or expm1(−h) ("bh2") and ρ from the order conditions (:func:`_unipc_rhos`). p = min(``order``, i + 1, N − i):
    lower orders warm up and the final steps drop order as diffusers' ``lower_order_final``. The corrector reuses
    the next step's evaluation (m_i is taken at the uncorrected x_i), so the run makes exactly nfe evaluations;
    the last step (σ_N = 0) returns m_{N−1} = D(x_{N−1}, σ_min), with no corrector after it. UniPC-p is of order
    p + 1 with the corrector (the uncorrected order-2 step into σ_min formally caps ``order=3`` at third order; on
    a Gaussian flow, where D barely moves in λ at small σ, it measures 4.2).
    ``generator``/``seed`` are unused (deterministic).

    Shapes: ``x0`` (N, …) at noise level σ_max; returns the same shape. Raises ValueError for nfe < 2 (``nfe``), an
    order outside 1..3 (``order``) or an unknown ``variant``; FloatingPointError if the chain diverges.
    """
    min_nfe("unipc", nfe, 2)
    order = _check_order(order, 3)
    if variant not in UNIPC_VARIANTS:
        raise ValueError(f"variant: must be one of {', '.join(UNIPC_VARIANTS)}, got {variant!r}")
    corrector = LangevinCorrector(corrector_steps, corrector_levels, corrector_snr)
    net, noise, x = prepare(score, x0, sigma_max, sigma_min, generator, seed, precision, backend, cuda_graphs)
    sigmas = solver_schedule(corrector, "unipc", 2, nfe, schedule, sigma_max, sigma_min, rho)
    steps = len(sigmas) - 1
    outputs: list[torch.Tensor] = []  # m_i, m_{i−1}, … newest first
    lambdas: list[float] = []
    last: torch.Tensor | None = None  # x_{i−1}^c, the corrector's start
    last_order = 1
    bar = runtime.progress_bar(nfe, "unipc", progress)
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        m = denoised(net, x, s)
        if s_next == 0:
            x = m
        else:
            if last is not None:  # UniC: correct x_i with m_i
                prev = sigmas[i - 1]
                rks = [(lambdas[k] - lambdas[0]) / math.log(prev / s) for k in range(1, last_order)]
                b_h, rhos = _unipc_rhos(math.log(prev / s), rks, variant, corrector=True)
                x = _unipc_update(last, prev, s, outputs[:last_order], lambdas[:last_order], rhos, b_h, new=m)
            outputs.insert(0, m)
            lambdas.insert(0, -math.log(s))
            del outputs[order:], lambdas[order:]
            p = min(order, i + 1, steps - i)
            h = math.log(s / s_next)
            rks = [(lambdas[k] - lambdas[0]) / h for k in range(1, p)]
            b_h, rhos = _unipc_rhos(h, rks, variant, corrector=False)
            last, last_order = x, p
            x = _unipc_update(x, s, s_next, outputs[:p], lambdas[:p], rhos, b_h)
        runtime.check_finite(x, "unipc", i, s)
        bar.update(1)
        if s_next in corrector.levels_at:  # Langevin moved x: UniC would undo it from x_i^c, so it starts afresh
            x, last = corrector.after_step(net, noise, x.contiguous(), s_next, bar), None
    bar.close()
    return x
