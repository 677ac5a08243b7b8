"""Annealed Langevin dynamics (NCSN Algorithm 1, NCSNv2 Section 3) with denoising.

For noise level i (σ_i descending, label i) with α_i = ε·(σ_i/σ_L)², T updates

    x ← x + α_i·s_θ(x, i) + √(2α_i)·z,    z ~ N(0, I)

then, with ``denoise``, one Tweedie step x ← x + σ_L²·s_θ(x, L) (NCSNv2 Appendix; Jolicoeur-Martineau et al.).
``backend="torch"`` draws z exactly as the official sampler does (one ``torch.randn`` of x's shape per step, in
order, from ``generator``), so with the same seed it reproduces the official samples. Every other backend runs the
fused op :func:`ncsn_fast.ops.langevin_step_` (one pass, noise generated in the kernel from Philox keyed by
``seed`` at counter (element, global step)): the run is deterministic and resumable from any level
(``start_level``), and the same seed gives the same samples on the CPU and on a GPU up to the network's
floating-point differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ncsn_fast.sampling import runtime
from ncsn_fast.sampling.runtime import Score
from ncsn_fast.sampling.schedules import check_sigmas, warn_if_too_coarse
from ncsn_fast.validation import check_int, check_positive, describe


def level_labels(sigmas: torch.Tensor, labels: Sequence[int] | torch.Tensor | None) -> list[int]:
    if labels is None:
        return list(range(len(sigmas)))
    out = [int(v) for v in labels]
    if len(out) != len(sigmas):
        raise ValueError(f"labels: need one label per σ ({len(sigmas)}), got {len(out)}")
    return out


class TorchUpdate:
    """x + α·s + √(2α)·z with z from ``noise_fn`` (the official sampler's arithmetic and noise stream)."""

    fused = False

    def __init__(self, noise_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.noise_fn = noise_fn

    def __call__(self, x: torch.Tensor, grad: torch.Tensor, alpha: float, step: int, want_stats: bool):
        z = self.noise_fn(x)
        x = x + alpha * grad.to(x.dtype) + math.sqrt(2.0 * alpha) * z
        if not want_stats:
            return x, None
        norms = [t.flatten(1).norm(dim=1).mean().item() for t in (grad.float(), z, x)]
        return x, norms


class FusedUpdate:
    """The fused op, in place on a float32 NCHW-contiguous state; its per-sample sums give the diagnostics and a
    cheap non-finite check (every step on the CPU; once per level on a GPU, where the check would synchronize)."""

    fused = True

    def __init__(self, seed: int, backend: str, n: int, device: torch.device) -> None:
        from ncsn_fast.ops.langevin_step import langevin_step_

        self.op, self.seed, self.backend = langevin_step_, seed, backend
        self.stats = torch.zeros(n, 3, device=device)
        self.check_every_step = device.type == "cpu"

    def __call__(self, x: torch.Tensor, grad: torch.Tensor, alpha: float, step: int, want_stats: bool):
        if grad.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            grad = grad.float()
        self.op(x, grad, alpha, self.seed, step, self.stats, backend=self.backend)
        if not want_stats:
            return x, None
        return x, [v.item() for v in self.stats.sqrt().mean(dim=0)]


def tweedie_denoise(score: Score, x: torch.Tensor, sigma: float, label: torch.Tensor) -> torch.Tensor:
    """Tweedie's formula E[x_0 | x] = x + σ²·s(x, σ) at the last noise level (the final denoising step, NCSNv2
    Appendix; Jolicoeur-Martineau et al. 2021); ``label`` is what ``score`` takes for σ (a label or σ itself)."""
    out = x + sigma**2 * score(x, label).to(x.dtype)
    if not torch.isfinite(out).all():
        raise FloatingPointError("sampling diverged: non-finite values after the denoising step")
    return out


def _diverged(level: int, sigma: float, step: int | str) -> FloatingPointError:
    return FloatingPointError(
        f"sampling diverged: non-finite score or state at level {level} (σ = {sigma:.4g}), step {step}"
    )


@torch.no_grad()
def langevin_loop(
    score: Score,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    labels: list[int],
    n_steps_each: int,
    step_lr: float,
    denoise: bool,
    update: TorchUpdate | FusedUpdate,
    pre_step: Callable[[torch.Tensor, int, float], torch.Tensor] | None = None,
    final_only: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
    start_level: int = 0,
) -> torch.Tensor | list[torch.Tensor]:
    """The loop behind :func:`annealed_langevin` and the ALD applications (inpainting's ``pre_step``)."""
    sig = [float(s) for s in sigmas]
    sigma_last = sig[-1]
    n = x.shape[0]
    images: list[torch.Tensor] = []
    bar = runtime.progress_bar((len(sig) - start_level) * n_steps_each + int(denoise), "sampling", progress)
    try:
        for level in range(start_level, len(sig)):
            sigma, label = sig[level], labels[level]
            y = torch.full((n,), label, dtype=torch.long, device=x.device)
            alpha = step_lr * (sigma / sigma_last) ** 2
            for step in range(n_steps_each):
                if pre_step is not None:
                    x = pre_step(x, level, sigma)
                grad = score(x, y)
                want = callback is not None and step == n_steps_each - 1
                x, norms = update(x, grad, alpha, level * n_steps_each + step, want)
                if update.fused and update.check_every_step and not torch.isfinite(update.stats).all():
                    raise _diverged(level, sigma, step)
                if not final_only:
                    images.append(x.to("cpu", copy=True))  # x is updated in place by the fused op
                if want:
                    g, zz, xx = norms
                    snr = math.sqrt(alpha / 2.0) * g / max(zz, 1e-30)
                    callback(
                        {"level": level, "sigma": sigma, "step_size": alpha, "grad_norm": g, "noise_norm": zz,
                         "x_norm": xx, "snr": snr}
                    )  # fmt: skip
                bar.update(1)
            # One check per level (at least): a diverging chain stops here instead of writing a grid of NaNs.
            if not (torch.isfinite(update.stats).all() if update.fused else torch.isfinite(x).all()):
                raise _diverged(level, sigma, n_steps_each)
        if denoise:
            y = torch.full((n,), labels[-1], dtype=torch.long, device=x.device)
            if pre_step is not None:
                x = pre_step(x, len(sig) - 1, sigma_last)
            x = tweedie_denoise(score, x, sigma_last, y)
            bar.update(1)
            if not final_only:
                images.append(x.to("cpu"))
    finally:
        bar.close()
    return x if final_only else images


def annealed_langevin(
    score: Score,
    x0: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    n_steps_each: int,
    step_lr: float,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    backend: str = "auto",
    final_only: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    labels: Sequence[int] | None = None,
    progress: bool | Any = False,
    noise_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int | None = None,
    start_level: int = 0,
    precision: str = "fp32",
    cuda_graphs: bool = False,
) -> torch.Tensor | list[torch.Tensor]:
    """Annealed Langevin dynamics from ``x0``; returns the final x (or every intermediate state, on the CPU).

    Shapes and units: ``x0`` (N, C, H, W) — or (N, D) for an analytic score — in the config's data space (see
    :func:`~ncsn_fast.sampling.init_samples`); ``sigmas`` (L,) strictly decreasing noise levels σ_1 > … > σ_L;
    ``step_lr`` ε > 0 in the units of σ² (α_i = ε·(σ_i/σ_L)²); ``n_steps_each`` T ≥ 1. ``score(x, labels)`` is any
    callable: a model or an analytic score; ``labels`` maps each level to the label passed to ``score`` (default:
    its position; give the model's own indices when ``sigmas`` is a subset of its schedule). ``callback`` receives
    per-level diagnostics (‖s‖, ‖z‖, ‖x‖, SNR), computed only when it is given. ``noise_fn(x)`` replaces the
    standard-normal draw (interpolation uses it) and implies the torch update.

    Backends (see :mod:`ncsn_fast.sampling.runtime`): every one but ``torch`` runs the fused op, whose noise at step
    t of level i is keyed by ``seed`` (default: drawn from ``generator``) at offset i·T + t, so ``start_level=k``
    with x0 = the state after level k − 1 continues a run exactly. ``precision`` "bf16"/"fp16" runs the network
    under autocast; the state stays float32. ``cuda_graphs`` (CUDA tensors only) replays the network from a graph.

    Raises ValueError/TypeError naming the argument (x0 of a shape the model cannot take, σ not decreasing,
    n_steps_each < 1, ε ≤ 0, an unknown backend or precision), FloatingPointError naming the level and step when
    the chain diverges. Warns when consecutive σ are too far apart for the chain to mix (see
    :func:`~ncsn_fast.sampling.schedules.warn_if_too_coarse`).
    """
    if not callable(score):
        raise TypeError(f"score: expected a model or a score function score(x, labels), got {describe(score)}")
    runtime.check_x0(x0, score)
    sigmas = check_sigmas(sigmas)
    check_int("n_steps_each", n_steps_each, 1)
    check_positive("step_lr", step_lr)
    runtime.check_backend("backend", backend)
    check_int("start_level", start_level, 0, len(sigmas) - 1)
    labels_ = level_labels(sigmas, labels)
    warn_if_too_coarse(sigmas, step_lr, n_steps_each)
    net = runtime.network(score, x0.device, precision, backend, cuda_graphs)
    if backend == "torch" or noise_fn is not None or (backend == "auto" and x0.dtype == torch.float64):
        # float64 chains (analytic scores, tests of the discretization) keep float64 arithmetic
        noise = noise_fn if noise_fn is not None else (lambda x: runtime.randn_like(x, generator))
        update: TorchUpdate | FusedUpdate = TorchUpdate(noise)
        x = x0.clone()
    else:
        seed = runtime.draw_seed(generator) if seed is None else seed
        update = FusedUpdate(seed, backend, x0.shape[0], x0.device)
        x = x0.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    return langevin_loop(
        net, x, sigmas, labels_, n_steps_each, step_lr, denoise, update, None, final_only, callback, progress,
        start_level,
    )  # fmt: skip
