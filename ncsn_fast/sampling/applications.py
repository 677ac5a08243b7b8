"""Annealed Langevin dynamics applied: interpolation between samples (Appendix B.2) and inpainting (any mask)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ncsn_fast.sampling import runtime
from ncsn_fast.sampling.inverse import Mask, langevin_solve
from ncsn_fast.sampling.langevin import annealed_langevin
from ncsn_fast.sampling.runtime import Score
from ncsn_fast.validation import check_int


def interpolation_weights(n_interpolations: int) -> torch.Tensor:
    """(cos, sin) of kπ/(2(N+1)) for k = 0 … N+1 (Appendix B.2): endpoints included, shape (N+2, 2)."""
    check_int("n_interpolations", n_interpolations, 1)
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
    precision: str = "fp32",
    backend: str = "auto",
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> torch.Tensor:
    """Interpolate between samples by mixing their Langevin noise (paper Appendix B.2).

    For each row r of ``x0`` (R rows, (R, C, H, W) in the model's data space), two noise sequences z⁽¹⁾ (drawn from
    ``generators[0]``) and z⁽²⁾ (from ``generators[1]``), each of x0's shape per step, and the shared start x0[r]:
    the k-th of the N+2 samples (k = 0 … N+1) uses cos(kπ/(2(N+1)))·z⁽¹⁾ + sin(kπ/(2(N+1)))·z⁽²⁾ at every step.
    k = 0 is exactly the plain sample with generator 1 (``annealed_langevin(..., backend="torch")``), k = N+1 the
    one with generator 2. The noise is mixed in PyTorch (the fused op cannot share one draw across a row);
    ``precision`` and ``backend`` apply to the network. Returns (R·(N+2), C, H, W), row-major.
    """
    runtime.check_x0(x0, score)
    w = interpolation_weights(n_interpolations).to(x0.dtype)
    rows, k = x0.shape[0], w.shape[0]
    cos = w[:, 0].to(x0.device).view(1, k, *([1] * (x0.dim() - 1)))
    sin = w[:, 1].to(x0.device).view(1, k, *([1] * (x0.dim() - 1)))
    base = x0.clone()

    def noise(x: torch.Tensor) -> torch.Tensor:
        z1 = runtime.randn_like(base, generators[0]).unsqueeze(1)
        z2 = runtime.randn_like(base, generators[1]).unsqueeze(1)
        return (cos * z1 + sin * z2).reshape(x.shape)

    start = x0.unsqueeze(1).expand(rows, k, *x0.shape[1:]).reshape(rows * k, *x0.shape[1:])
    return annealed_langevin(
        score, start, sigmas, n_steps_each, step_lr, denoise, labels=labels, progress=progress, noise_fn=noise,
        precision=precision, backend=backend, callback=callback,
    )  # fmt: skip


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
    precision: str = "fp32",
    backend: str = "torch",
    seed: int | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> torch.Tensor:
    """Inpainting for any image size and mask: before every step the known pixels (``mask`` = 1) are set to
    data + σ_i·z, and the rest evolves by annealed Langevin dynamics (official ``..._inpainting``, generalised
    from "the right half of 32×32" to any mask). ``restore_known`` pastes the exact data back at the end.

    ``x0`` (N, C, H, W) and ``data`` ((C, H, W) or (N, C, H, W), broadcast) are in the model's data space (apply
    the config's ``data_transform`` to [0, 1] images first); ``mask`` broadcasts against them. The known pixels'
    noise comes from ``generator``; the Langevin update is the official one (``backend="torch"``) or the fused op
    keyed by ``seed`` (any other backend). The linear inverse problem of :class:`~ncsn_fast.sampling.inverse.Mask`
    through :func:`~ncsn_fast.sampling.inverse.langevin_solve` (the mechanism of colorization and super-resolution).
    """
    return langevin_solve(
        score, Mask(data, mask), x0, sigmas, n_steps_each, step_lr, denoise, generator, labels, restore_known,
        progress, precision, backend, seed, callback,
    )  # fmt: skip
