"""Annealed Langevin dynamics (NCSN Algorithm 1, NCSNv2 Section 3) with denoising, interpolation, inpainting.

For noise level i (σ_i descending, label i) with α_i = ε·(σ_i/σ_L)², T updates

    x ← x + α_i·s_θ(x, i) + √(2α_i)·z,    z ~ N(0, I)

then, with ``denoise``, one Tweedie step x ← x + σ_L²·s_θ(x, L) (NCSNv2 Appendix; Jolicoeur-Martineau et al.).
``backend="torch"`` draws z exactly as the official sampler does (one ``torch.randn`` of x's shape per step, in
order, from ``generator``), so with the same seed it reproduces the official samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm import tqdm

from ncsn_fast.techniques import geometric_ratio, langevin_step_lr

Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BACKENDS = ("auto", "torch")


def init_samples(
    n: int,
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    data: torch.Tensor | None = None,
    sigma: float | None = None,
) -> torch.Tensor:
    """Initial state as the official sampler: uniform in [0, 1]; or, with ``data``, data + σ_1·noise."""
    if n < 1:
        raise ValueError(f"n: number of samples must be at least 1, got {n}")
    if data is None:
        return torch.rand((n, *shape), generator=generator).to(device)
    if sigma is None:
        raise ValueError("sigma: data initialization needs σ_1 (sigma=None given)")
    idx = torch.randint(0, data.shape[0], (n,), generator=generator)
    x = data[idx].float()
    return (x + sigma * torch.randn(x.shape, generator=generator)).to(device)


def _randn(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None or generator.device == x.device:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def _level_labels(sigmas: torch.Tensor, labels: Sequence[int] | torch.Tensor | None) -> list[int]:
    if labels is None:
        return list(range(len(sigmas)))
    out = [int(v) for v in labels]
    if len(out) != len(sigmas):
        raise ValueError(f"labels: need one label per σ ({len(sigmas)}), got {len(out)}")
    return out


def _check(x0: torch.Tensor, sigmas: torch.Tensor, n_steps_each: int, step_lr: float, backend: str) -> None:
    if not torch.is_tensor(x0) or not x0.is_floating_point():
        raise TypeError(f"x0: expected a floating-point tensor, got {getattr(x0, 'dtype', type(x0).__name__)}")
    if x0.dim() < 2 or x0.shape[0] < 1:
        raise ValueError(f"x0: expected a non-empty batch (N, ...), got shape {tuple(x0.shape)}")
    if len(sigmas) < 1:
        raise ValueError("sigmas: empty noise schedule")
    if n_steps_each < 0:
        raise ValueError(f"n_steps_each: must be ≥ 0, got {n_steps_each}")
    if not step_lr > 0:
        raise ValueError(f"step_lr: must be positive, got {step_lr}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown sampler backend {backend!r}; choose one of {BACKENDS}")


@torch.no_grad()
def _langevin(
    score: Score,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    labels: list[int],
    n_steps_each: int,
    step_lr: float,
    denoise: bool,
    noise_fn: Callable[[torch.Tensor], torch.Tensor],
    pre_step: Callable[[torch.Tensor, int, float], torch.Tensor] | None,
    final_only: bool,
    callback: Callable[[dict[str, Any]], None] | None,
    progress: bool,
) -> torch.Tensor | list[torch.Tensor]:
    sig = [float(s) for s in sigmas]
    sigma_last = sig[-1]
    n = x.shape[0]
    images: list[torch.Tensor] = []
    bar = tqdm(total=len(sig) * n_steps_each, desc="sampling", disable=not progress, dynamic_ncols=True, leave=False)
    for level, (sigma, label) in enumerate(zip(sig, labels, strict=False)):
        y = torch.full((n,), label, dtype=torch.long, device=x.device)
        alpha = step_lr * (sigma / sigma_last) ** 2
        noise_scale = math.sqrt(2.0 * alpha)
        for step in range(n_steps_each):
            if pre_step is not None:
                x = pre_step(x, level, sigma)
            grad = score(x, y)
            z = noise_fn(x)
            x = x + alpha * grad + noise_scale * z
            if not final_only:
                images.append(x.to("cpu"))
            if callback is not None and step == n_steps_each - 1:
                g, zz, xx = (t.flatten(1).norm(dim=1).mean().item() for t in (grad, z, x))
                callback(
                    {
                        "level": level,
                        "sigma": sigma,
                        "step_size": alpha,
                        "grad_norm": g,
                        "noise_norm": zz,
                        "x_norm": xx,
                        "snr": math.sqrt(alpha / 2.0) * g / max(zz, 1e-30),
                    }
                )
            bar.update(1)
        # One reduction per level: a diverging chain stops here instead of writing a grid of NaNs.
        if not torch.isfinite(x).all():
            bar.close()
            raise FloatingPointError(
                f"sampling diverged: non-finite values at level {level} (σ = {sigma:.4g}), step {n_steps_each}"
            )
    bar.close()
    if denoise:
        y = torch.full((n,), labels[-1], dtype=torch.long, device=x.device)
        if pre_step is not None:
            x = pre_step(x, len(sig) - 1, sigma_last)
        x = x + sigma_last**2 * score(x, y)  # Tweedie's formula: E[x_0 | x] for the last level
        if not torch.isfinite(x).all():
            raise FloatingPointError("sampling diverged: non-finite values after the denoising step")
        if not final_only:
            images.append(x.to("cpu"))
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
    progress: bool = False,
    noise_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """Annealed Langevin dynamics from ``x0``; returns the final x (or all intermediates, on the CPU).

    ``score(x, labels)`` is any callable: a model or an analytic score. ``labels`` maps each level to the
    label passed to ``score`` (default: its position; give the model's own indices when ``sigmas`` is a
    subset of its schedule). ``callback`` receives per-level diagnostics (‖s‖, ‖z‖, ‖x‖, SNR), which are
    computed only when it is given. ``noise_fn(x)`` replaces the standard-normal draw (interpolation uses it).
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    _check(x0, sigmas, n_steps_each, step_lr, backend)
    noise = noise_fn if noise_fn is not None else (lambda x: _randn(x, generator))
    return _langevin(
        score,
        x0.clone(),
        sigmas,
        _level_labels(sigmas, labels),
        n_steps_each,
        step_lr,
        denoise,
        noise,
        None,
        final_only,
        callback,
        progress,
    )


def interpolation_weights(n_interpolations: int) -> torch.Tensor:
    """(cos, sin) of kπ/(2(N+1)) for k = 0 … N+1 (Appendix B.2): endpoints included, shape (N+2, 2)."""
    if n_interpolations < 1:
        raise ValueError(f"n_interpolations: must be at least 1, got {n_interpolations}")
    k = torch.arange(n_interpolations + 2, dtype=torch.float64)
    angle = k * math.pi / (2 * (n_interpolations + 1))
    return torch.stack([angle.cos(), angle.sin()], dim=1)


def interpolate(
    score: Score,
    x0: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    n_steps_each: int,
    step_lr: float,
    n_interpolations: int,
    generators: tuple[torch.Generator, torch.Generator],
    denoise: bool = True,
    labels: Sequence[int] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Interpolate between samples by mixing their Langevin noise (paper Appendix B.2).

    For each row r of ``x0`` (R rows), two noise sequences z⁽¹⁾ (drawn from ``generators[0]``) and z⁽²⁾ (from
    ``generators[1]``), each of shape x0 per step, and the shared start x0[r]: the k-th of the N+2 samples
    (k = 0 … N+1) uses cos(kπ/(2(N+1)))·z⁽¹⁾ + sin(kπ/(2(N+1)))·z⁽²⁾ at every step. k = 0 is exactly the plain
    sample with generator 1, k = N+1 the plain sample with generator 2. Returns (R·(N+2), C, H, W), row-major.
    """
    w = interpolation_weights(n_interpolations).to(x0.dtype)
    rows, k = x0.shape[0], w.shape[0]
    cos = w[:, 0].to(x0.device).view(1, k, *([1] * (x0.dim() - 1)))
    sin = w[:, 1].to(x0.device).view(1, k, *([1] * (x0.dim() - 1)))
    base = x0.clone()

    def noise(x: torch.Tensor) -> torch.Tensor:
        z1 = _randn(base, generators[0]).unsqueeze(1)
        z2 = _randn(base, generators[1]).unsqueeze(1)
        return (cos * z1 + sin * z2).reshape(x.shape)

    start = x0.unsqueeze(1).expand(rows, k, *x0.shape[1:]).reshape(rows * k, *x0.shape[1:])
    return annealed_langevin(
        score, start, sigmas, n_steps_each, step_lr, denoise, labels=labels, progress=progress, noise_fn=noise
    )


def inpaint(
    score: Score,
    x0: torch.Tensor,
    data: torch.Tensor,
    mask: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    n_steps_each: int,
    step_lr: float,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    labels: Sequence[int] | None = None,
    restore_known: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Inpainting for any image size and mask: before every step the known pixels (``mask`` = 1) are set to
    data + σ_i·z, and the rest evolves by annealed Langevin dynamics (official ``..._inpainting``, generalised
    from "the right half of 32×32" to any mask). ``restore_known`` pastes the exact data back at the end.

    ``data`` broadcasts against ``x0`` ((C, H, W) or (N, C, H, W)); ``mask`` broadcasts against it too.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    _check(x0, sigmas, n_steps_each, step_lr, "torch")
    data = data.to(x0.device, x0.dtype)
    mask = mask.to(x0.device, x0.dtype)
    try:
        known = torch.broadcast_tensors(x0, data, mask)
    except RuntimeError:
        raise ValueError(
            f"mask: shape {tuple(mask.shape)} and data shape {tuple(data.shape)} must broadcast to the samples' "
            f"shape {tuple(x0.shape)}"
        ) from None
    _, data, mask = known

    def pre_step(x: torch.Tensor, level: int, sigma: float) -> torch.Tensor:
        corrupted = data + sigma * _randn(x, generator)
        return mask * corrupted + (1 - mask) * x

    out = _langevin(
        score,
        x0.clone(),
        sigmas,
        _level_labels(sigmas, labels),
        n_steps_each,
        step_lr,
        denoise,
        lambda x: _randn(x, generator),
        pre_step,
        True,
        None,
        progress,
    )
    return mask * data + (1 - mask) * out if restore_known else out


def thin_schedule(sigmas: torch.Tensor, every: int, n_steps_each: int) -> tuple[torch.Tensor, list[int], float]:
    """Every ``every``-th σ (the last always kept) and the step size ε that Technique 4 gives for the thinned
    geometric schedule — for fast previews. Returns (sigmas, their labels in the full schedule, ε)."""
    if every < 1:
        raise ValueError(f"every: must be at least 1, got {every}")
    L = len(sigmas)
    idx = list(range(0, L, every))
    if idx[-1] != L - 1:
        idx.append(L - 1)
    thinned = sigmas[idx]
    if len(idx) < 2:
        raise ValueError(f"every: {every} leaves a single noise level of {L}; use a smaller value")
    gamma = geometric_ratio(float(thinned[0]), float(thinned[-1]), len(idx))
    return thinned, idx, langevin_step_lr(gamma, float(thinned[-1]), n_steps_each)
