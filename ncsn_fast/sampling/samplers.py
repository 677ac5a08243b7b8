"""Samplers with an evaluation budget, in the shape of k-diffusion's: ``NAME(score, x0, nfe, sigma_max, sigma_min,
generator=None, **options)``.

``score(x, sigma)`` takes a per-sample σ tensor of shape (N,) — e.g. ``model.score`` of an NCSNv2, which Technique
3 makes σ-continuous (a model passed itself runs as its ``score``) — and ``nfe`` bounds the number of score calls.
``x0`` (N, ...) is the start: the prior N(0, σ_max² I) (:func:`~ncsn_fast.sampling.prior_samples`) for every
sampler but ``ald``, which starts like the official sampler (:func:`~ncsn_fast.sampling.init_samples`). Every
sampler takes the runtime options ``precision``, ``backend``, ``cuda_graphs``, ``seed`` and ``progress``
(:mod:`ncsn_fast.sampling.runtime`); every stochastic step draws its noise through one
:class:`~ncsn_fast.sampling.runtime.NoiseStream` (the fused op's Philox stream, keyed by ``seed`` — drawn from
``generator`` when not given — or, with ``backend="torch"``, ``torch.randn``).

The σ-schedule solvers (``euler``, ``heun`` here; :mod:`~.dpm`, :mod:`~.multistep`) also takes ``schedule``
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
from ncsn_fast.sampling.langevin import annealed_langevin
from ncsn_fast.sampling.runtime import NoiseStream, Score
from ncsn_fast.sampling.schedules import geometric_sigmas
from ncsn_fast.techniques import geometric_ratio, langevin_step_lr
from ncsn_fast.validation import check_positive


def min_nfe(name: str, nfe: int, minimum: int) -> None:
    if isinstance(nfe, bool) or not isinstance(nfe, int):
        raise TypeError(f"nfe: expected an integer number of score evaluations, got {nfe!r}")
    if nfe < minimum:
        raise ValueError(f"nfe: the {name} sampler needs at least {minimum} score evaluations, got {nfe}")


def sigma_tensor(x: torch.Tensor, value: float) -> torch.Tensor:
    return torch.full((x.shape[0],), float(value), dtype=torch.float32, device=x.device)


def denoised(net: Score, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """D(x, σ) = x + σ²·s(x, σ): Tweedie's estimate of the clean sample, the data prediction of k-diffusion's
    denoiser convention and every sampler's final denoising step (NCSNv2 Appendix). Shape of ``x``."""
    return x + sigma**2 * net(x, sigma_tensor(x, sigma)).to(x.dtype)


def prepare(
    score: Score,
    x0: torch.Tensor,
    sigma_max: float,
    sigma_min: float,
    generator: torch.Generator | None,
    seed: int | None,
    precision: str,
    backend: str,
    cuda_graphs: bool,
) -> tuple[Score, NoiseStream, torch.Tensor]:
    """(the network wrapped for the run, the noise stream, the state: a contiguous copy of x0). A model passed as
    ``score`` runs as its ``score`` method (:func:`~ncsn_fast.sampling.runtime.score_function`)."""
    score = runtime.score_function(score)
    runtime.check_x0(x0, score)
    check_positive("sigma_max", sigma_max)
    check_positive("sigma_min", sigma_min)
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_min: must be below sigma_max ({sigma_max}), got {sigma_min}")
    noise = NoiseStream(seed, backend, generator)
    return runtime.network(score, x0.device, precision, backend, cuda_graphs), noise, runtime.state(x0, noise)


def ald(
    score: Score,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    generator: torch.Generator | None = None,
    n_steps_each: int = 5,
    step_lr: float | None = None,
    denoise: bool = True,
    progress: bool | Any = False,
    precision: str = "fp32",
    backend: str = "auto",
    cuda_graphs: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """Annealed Langevin dynamics (NCSNv2 Algorithm 1) on L = ⌊(nfe − denoise)/T⌋ geometric levels, ε from
    Technique 4 (Eq. (6)) unless given. With the model's own schedule and ε it is :func:`annealed_langevin`."""
    score = runtime.score_function(score)
    runtime.check_x0(x0, score)
    min_nfe("ald", nfe, 2 * n_steps_each + int(denoise))
    L = (nfe - int(denoise)) // n_steps_each
    sigmas = geometric_sigmas(sigma_max, sigma_min, L)
    if step_lr is None:
        step_lr = langevin_step_lr(geometric_ratio(sigma_max, sigma_min, L), sigma_min, n_steps_each)
    sig32 = sigmas.float().to(x0.device)
    return annealed_langevin(
        lambda x, y: score(x, sig32[y]), x0, sigmas.float(), n_steps_each, step_lr, denoise, generator,
        backend=backend, progress=progress, precision=precision, cuda_graphs=cuda_graphs, seed=seed,
    )  # fmt: skip


@torch.no_grad()
def cas(
    score: Score,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    generator: torch.Generator | None = None,
    eta: float | None = None,
    denoise: bool = True,
    progress: bool | Any = False,
    precision: str = "fp32",
    backend: str = "auto",
    cuda_graphs: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """Consistent annealed sampling (Jolicoeur-Martineau et al., ICLR 2021, Algorithm 2).

    One step per level on a geometric schedule σ_0 = σ_max … σ_{L−1} = σ_min, γ = σ_i/σ_{i+1}:

        x ← x + η·σ_i²·s(x, σ_i) + β·σ_{i+1}·z,   β = √(1 − ((1 − η)·γ)²),

    β chosen so that, if x has noise level σ_i and the score is exact, x has noise level σ_{i+1} after the step
    (the step keeps (1 − η)σ_i of the old noise and adds βσ_{i+1} of new). Needs η > 1 − 1/γ; η = 1 is "denoise,
    then re-noise to σ_{i+1}". The consistency argument assumes a perfect denoiser; a real one leaves posterior
    variance behind, so large η shrinks the samples (on the 64-D mixture of the tests, η = 1 gives per-mode
    standard deviations 30% too small). The default η = 1 − 0.95/γ, just above the bound, keeps them within 8%
    from 25 evaluations on. With ``denoise`` the last level is followed by x ← x + σ_min²·s(x, σ_min).
    Score evaluations: L − 1 updates (+1 for the denoising step) = nfe.
    """
    min_nfe("cas", nfe, 2)
    net, noise, x = prepare(score, x0, sigma_max, sigma_min, generator, seed, precision, backend, cuda_graphs)
    L = nfe + (0 if denoise else 1)
    sigmas = geometric_sigmas(sigma_max, sigma_min, L).tolist()
    gamma = sigmas[0] / sigmas[1]
    if eta is None:
        eta = 1 - 0.95 / gamma
    if not (1 - 1 / gamma < eta <= 1):
        raise ValueError(f"eta: must be in ({1 - 1 / gamma:.4f}, 1] for this schedule (γ = {gamma:.4f}), got {eta}")
    beta = math.sqrt(max(0.0, 1 - ((1 - eta) * gamma) ** 2))
    bar = runtime.progress_bar(L - 1 + int(denoise), "cas", progress)
    for i in range(L - 1):
        s_i, s_next = sigmas[i], sigmas[i + 1]
        noise.step_(x, net(x, sigma_tensor(x, s_i)), 1.0, eta * s_i**2, beta * s_next)
        if not noise.finite(x):
            runtime.check_finite(x, "cas", i, s_i)
        bar.update(1)
    if denoise:
        x = denoised(net, x, sigmas[-1])
        runtime.check_finite(x, "cas", L - 1, sigmas[-1])
        bar.update(1)
    bar.close()
    return x


@torch.no_grad()
def pc(
    score: Score,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    generator: torch.Generator | None = None,
    snr: float = 0.16,
    n_corrector: int = 1,
    progress: bool | Any = False,
    precision: str = "fp32",
    backend: str = "auto",
    cuda_graphs: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """Predictor–corrector sampling of the VE SDE (Song et al., ICLR 2021, Algorithms 2–4).

    On N = ⌊nfe/(1 + n_corrector)⌋ geometric levels σ_0 = σ_max … σ_{N−1} = σ_min (σ_N = 0), at each level
    ``n_corrector`` Langevin corrector steps with the step size set by the signal-to-noise ratio r = ``snr``,
    ε = 2(r‖z‖/‖s‖)² (batch-mean norms, Algorithm 5), x ← x + ε·s + √(2ε)·z; then one reverse-diffusion
    predictor step x ← x + (σ_i² − σ_{i+1}²)·s(x, σ_i) + √(σ_i² − σ_{i+1}²)·z. The last predictor step returns
    its mean (no noise), i.e. the denoised sample. Score evaluations: N·(1 + n_corrector) ≤ nfe.

    Both steps go through the fused noise stream; the corrector's ‖z‖ is then its expectation √D rather than the
    draw's own norm (the noise never exists as a tensor; the batch mean of ‖z‖ differs from √D by ~1/√(2·N·D),
    0.3% at D = 256, N = 36). With ``backend="torch"`` z is drawn and its own norm used, as the reference code.
    """
    if n_corrector < 0:
        raise ValueError(f"n_corrector: must be ≥ 0, got {n_corrector}")
    check_positive("snr", snr)
    min_nfe("pc", nfe, 2 * (1 + n_corrector))
    net, noise, x = prepare(score, x0, sigma_max, sigma_min, generator, seed, precision, backend, cuda_graphs)
    N = nfe // (1 + n_corrector)
    sigmas = geometric_sigmas(sigma_max, sigma_min, N).tolist() + [0.0]
    dim = x[0].numel()
    bar = runtime.progress_bar(N * (1 + n_corrector), "pc", progress)
    for i in range(N):
        s_i, s_next = sigmas[i], sigmas[i + 1]
        sig = sigma_tensor(x, s_i)
        for _ in range(n_corrector):
            grad = net(x, sig).to(x.dtype)
            g_norm = float(grad.flatten(1).norm(dim=1).mean())
            if noise.fused(x):
                eps = 2 * (snr * math.sqrt(dim) / max(g_norm, 1e-30)) ** 2
                noise.step_(x, grad, 1.0, eps, math.sqrt(2 * eps))
            else:
                z = runtime.randn_like(x, noise.generator)
                eps = 2 * (snr * float(z.flatten(1).norm(dim=1).mean()) / max(g_norm, 1e-30)) ** 2
                x = x + eps * grad + math.sqrt(2 * eps) * z
        var = s_i**2 - s_next**2
        if i < N - 1:
            noise.step_(x, net(x, sig), 1.0, var, math.sqrt(var))
        else:
            x = x + var * net(x, sig).to(x.dtype)
        runtime.check_finite(x, "pc", i, s_i)
        bar.update(1 + n_corrector)
    bar.close()
    return x


@torch.no_grad()
def heun(
    score: Score,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    generator: torch.Generator | None = None,
    rho: float = 7.0,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
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
    """Heun's method on the probability-flow ODE dx/dσ = −σ·s(x, σ) (Karras et al., NeurIPS 2022, Algorithm 2).

    σ schedule of Eq. (5) with ρ = ``rho`` over N = ⌊(nfe + 1)/2⌋ levels from σ_max to σ_min, then σ_N = 0; the
    last step (σ_min → 0) is an Euler step, as in that paper. ``churn`` > 0 adds the stochastic "churn":
    σ̂ = σ_i(1 + γ_i), γ_i = min(churn/N, √2 − 1) for σ_i in [s_tmin, s_tmax], x̂ = x + √(σ̂² − σ_i²)·s_noise·z.
    Score evaluations: 2N − 1 ≤ nfe. Global error O(h²) (second order) on a smooth flow.
    """
    min_nfe("heun", nfe, 3)
    if churn < 0:
        raise ValueError(f"churn: must be ≥ 0, got {churn}")
    corrector = LangevinCorrector(corrector_steps, corrector_levels, corrector_snr)
    net, noise, x = prepare(score, x0, sigma_max, sigma_min, generator, seed, precision, backend, cuda_graphs)
    sigmas = solver_schedule(corrector, "heun", 3, nfe, schedule, sigma_max, sigma_min, rho)
    N = len(sigmas) - 1
    bar = runtime.progress_bar(2 * N - 1 + corrector.evaluations, "heun", progress)
    for i in range(N):
        s_cur, s_next = sigmas[i], sigmas[i + 1]
        g = min(churn / N, math.sqrt(2) - 1) if (churn > 0 and s_tmin <= s_cur <= s_tmax) else 0.0
        s_hat = s_cur * (1 + g)
        if g > 0:
            noise.step_(x, None, 1.0, 0.0, math.sqrt(s_hat**2 - s_cur**2) * s_noise)
        d = -s_hat * net(x, sigma_tensor(x, s_hat)).to(x.dtype)  # dx/dσ
        x_next = x + (s_next - s_hat) * d
        if s_next > 0:
            d2 = -s_next * net(x_next, sigma_tensor(x, s_next)).to(x.dtype)
            x_next = x + (s_next - s_hat) * 0.5 * (d + d2)
        x = x_next.contiguous()
        runtime.check_finite(x, "heun", i, s_cur)
        bar.update(2 if s_next > 0 else 1)
        x = corrector.after_step(net, noise, x, s_next, bar)
    bar.close()
    return x


@torch.no_grad()
def euler(
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
    """Euler's method on the probability-flow ODE dx/dσ = −σ·s(x, σ) = (x − D(x, σ))/σ (Karras et al. 2022,
    k-diffusion's ``sample_euler``): N = nfe steps on the Karras schedule (ρ = ``rho``) from σ_max to σ_min and
    then 0. First order: the global error falls as 1/N. Deterministic (``generator``/``seed`` unused)."""
    min_nfe("euler", nfe, 1)
    corrector = LangevinCorrector(corrector_steps, corrector_levels, corrector_snr)
    net, noise, x = prepare(score, x0, sigma_max, sigma_min, generator, seed, precision, backend, cuda_graphs)
    sigmas = solver_schedule(corrector, "euler", 1, nfe, schedule, sigma_max, sigma_min, rho)
    bar = runtime.progress_bar(nfe, "euler", progress)
    for i in range(len(sigmas) - 1):
        s_cur, s_next = sigmas[i], sigmas[i + 1]
        x = x + (s_next - s_cur) * (-s_cur) * net(x, sigma_tensor(x, s_cur)).to(x.dtype)
        runtime.check_finite(x, "euler", i, s_cur)
        bar.update(1)
        x = corrector.after_step(net, noise, x, s_next, bar)
    bar.close()
    return x
