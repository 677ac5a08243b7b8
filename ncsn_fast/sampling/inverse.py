"""Linear inverse problems by one mechanism: an observation y = A·x with A of orthonormal rows (A·Aᵀ = I).

At every noise level σ the known component of the state is replaced by the observation at that level,

    x ← x − Aᵀ(A·x) + Aᵀ(y + σ·A·ε),    ε ~ N(0, I) of x's shape,

so that A·x carries y plus noise matched to the level (A·ε ~ N(0, I) because the rows are orthonormal), while the
rest of x evolves under the sampler; at the end the exact observation is restored (x − Aᵀ(A·x) + Aᵀy). This is
score_sde's inpainting and colorization (``get_inpaint_update_fn``, ``get_colorization_update_fn``: replace the
known part by the data marginal at t) for any such A:

- :class:`Mask` — inpainting: A selects the pixels where mask = 1;
- :class:`Grayscale` — colorization: A·x = (r + g + b)/√3 per pixel, the first row of score_sde's orthogonal
  decoupling matrix (its other two rows span the colour the sampler fills in), so y = √3·gray with gray the mean
  of the channels;
- :class:`BoxDownsample` — super-resolution: A·x = K·(mean of each K×K block), the block means' rows scaled to
  norm 1, so y = K·low with low the box-downsampled image.

Where it runs: annealed Langevin dynamics on a schedule replaces before every step (the ``pre_step`` of its loop,
:func:`langevin_solve`); every registry sampler replaces before every network evaluation, at the σ of that
evaluation (:func:`solve`, through :class:`ReplacingScore`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ncsn_fast.sampling import runtime
from ncsn_fast.sampling.langevin import FusedUpdate, TorchUpdate, langevin_loop, level_labels
from ncsn_fast.sampling.registry import get_sampler, recommended
from ncsn_fast.sampling.runtime import Score
from ncsn_fast.sampling.schedules import check_sigmas, warn_if_too_coarse
from ncsn_fast.validation import check_int, check_positive


def _rows(sigma: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
    """σ as a float, or a per-sample (N,) tensor shaped to broadcast over x."""
    if isinstance(sigma, torch.Tensor):
        return sigma.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return sigma


class Observation:
    """y = A·x with A of orthonormal rows: ``forward`` is A, ``adjoint`` Aᵀ, ``y`` the observed coefficients."""

    y: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, c: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def replace(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x with its known component set to c: x − Aᵀ(A·x) + Aᵀc."""
        return x - self.adjoint(self.forward(x)) + self.adjoint(c)

    def noisy(self, x: torch.Tensor, sigma: float | torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The replacement at level σ: x − Aᵀ(A·x) + Aᵀ(y + σ·A·ε), ε ~ N(0, I) of x's shape from ``generator``."""
        eps = runtime.randn_like(x, generator)
        return self.replace(x, self.y + _rows(sigma, x) * self.forward(eps))

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """x with the exact observation as its known component."""
        return self.replace(x, self.y)

    def to(self, x: torch.Tensor) -> Observation:
        """The observation on x's device and in its dtype, checked against x's shape."""
        raise NotImplementedError


class Mask(Observation):
    """Inpainting: the pixels where ``mask`` = 1 are known. The coefficients are kept at the image's shape (entries
    outside the mask are ignored: Aᵀ zeroes them), so A·x = x and Aᵀc = mask·c, and the replacement is written
    mask·c + (1 − mask)·x — for a 0/1 mask the same as x − mask·x + mask·c, and exact in floating point."""

    def __init__(self, data: torch.Tensor, mask: torch.Tensor) -> None:
        self.y, self.mask = data, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, c: torch.Tensor) -> torch.Tensor:
        return self.mask * c

    def replace(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.mask * c + (1 - self.mask) * x

    def to(self, x: torch.Tensor) -> Mask:
        data = self.y.to(x.device, x.dtype)
        mask = self.mask.to(x.device, x.dtype)
        try:
            _, data, mask = torch.broadcast_tensors(x, data, mask)
        except RuntimeError:
            raise ValueError(
                f"mask: shape {tuple(mask.shape)} and data shape {tuple(data.shape)} must broadcast to the samples' "
                f"shape {tuple(x.shape)}"
            ) from None
        if all(t.dim() < x.dim() or t.shape[0] == 1 for t in (self.y, self.mask)):
            data, mask = data[:1], mask[:1]  # shared by every sample: batch 1 (the values are the same)
        return Mask(data, mask)


class Grayscale(Observation):
    """Colorization: the grayscale channel known, A·x = (x_r + x_g + x_b)/√3 per pixel (score_sde's decoupling
    matrix's first row); ``gray`` (N or 1, 1, H, W) is the channel mean, y = √3·gray."""

    def __init__(self, gray: torch.Tensor) -> None:
        self.gray = gray
        self.y = math.sqrt(3.0) * gray

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True) / math.sqrt(3.0)

    def adjoint(self, c: torch.Tensor) -> torch.Tensor:
        return (c / math.sqrt(3.0)).expand(c.shape[0], 3, *c.shape[2:])

    def to(self, x: torch.Tensor) -> Grayscale:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x0: colorization needs RGB samples (N, 3, H, W), got shape {tuple(x.shape)}")
        gray = self.gray.to(x.device, x.dtype)
        if gray.dim() == 3:
            gray = gray[None]
        if gray.dim() != 4 or gray.shape[1] != 1 or gray.shape[2:] != x.shape[2:] or gray.shape[0] not in (1, len(x)):
            raise ValueError(
                f"gray: expected (1 or N, 1, H, W) with H, W = {tuple(x.shape[2:])} and N = {len(x)}, got shape "
                f"{tuple(self.gray.shape)}"
            )
        return Grayscale(gray)


class BoxDownsample(Observation):
    """Super-resolution: the means of the K×K blocks known, A·x = K·avg_pool(x, K) (the block-mean rows, each of
    norm 1/K, scaled to norm 1) and Aᵀc = nearest-upsample(c)/K; ``low`` (N or 1, C, H/K, W/K), y = K·low."""

    def __init__(self, low: torch.Tensor, factor: int) -> None:
        self.low, self.factor = low, check_int("factor", factor, 1)
        self.y = factor * low

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * F.avg_pool2d(x, self.factor)

    def adjoint(self, c: torch.Tensor) -> torch.Tensor:
        k = self.factor
        return c.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1) / k

    def to(self, x: torch.Tensor) -> BoxDownsample:
        k = self.factor
        if x.dim() != 4 or x.shape[-1] % k or x.shape[-2] % k:
            raise ValueError(f"factor: {k} must divide the samples' height and width, shape {tuple(x.shape)}")
        low = self.low.to(x.device, x.dtype)
        if low.dim() == 3:
            low = low[None]
        want = (x.shape[1], x.shape[2] // k, x.shape[3] // k)
        if low.dim() != 4 or tuple(low.shape[1:]) != want or low.shape[0] not in (1, len(x)):
            raise ValueError(
                f"low: expected (1 or N, {', '.join(map(str, want))}) for samples {tuple(x.shape)} and factor {k}, "
                f"got shape {tuple(self.low.shape)}"
            )
        return BoxDownsample(low, k)


@torch.no_grad()
def langevin_solve(
    score: Score,
    observation: Observation,
    x0: torch.Tensor,
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
    """Annealed Langevin dynamics on the schedule ``sigmas`` (labels as :func:`annealed_langevin`'s) with the
    observation replaced before every step and before the denoising step (``observation.noisy`` at σ_i, ε from
    ``generator``); ``restore_known`` sets the exact observation at the end. The update is the official one
    (``backend="torch"``, z from ``generator``) or the fused op keyed by ``seed`` (any other backend)."""
    runtime.check_x0(x0, score)
    sigmas = check_sigmas(sigmas)
    check_int("n_steps_each", n_steps_each, 1)
    check_positive("step_lr", step_lr)
    runtime.check_backend("backend", backend)
    obs = observation.to(x0)
    warn_if_too_coarse(sigmas, step_lr, n_steps_each)

    if backend == "torch":
        update: TorchUpdate | FusedUpdate = TorchUpdate(lambda x: runtime.randn_like(x, generator))
        x = x0.clone()
    else:
        seed = runtime.draw_seed(generator) if seed is None else seed
        update = FusedUpdate(seed, backend, x0.shape[0], x0.device)
        x = x0.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        obs = obs.to(x)  # the replacement's output is a fresh contiguous float32 state

    def pre_step(x: torch.Tensor, level: int, sigma: float) -> torch.Tensor:
        return obs.noisy(x, sigma, generator)

    net = runtime.network(score, x0.device, precision, backend)
    out = langevin_loop(
        net, x, sigmas, level_labels(sigmas, labels), n_steps_each, step_lr, denoise, update, pre_step,
        True, callback, progress,
    )  # fmt: skip
    return obs.restore(out) if restore_known else out


class ReplacingScore:
    """``score(x, σ)`` that first replaces the observation in its input, in place, at that σ (per sample):
    x ← x − Aᵀ(A·x) + Aᵀ(y + σ·A·ε). Every registry sampler passes its state to the network, so the state itself
    is conditioned before each evaluation, at each of the sampler's σ. ε comes from ``generator``."""

    def __init__(self, score: Score, observation: Observation, generator: torch.Generator | None) -> None:
        self.score, self.observation, self.generator = score, observation, generator

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x.copy_(self.observation.noisy(x, sigma, self.generator))
        return self.score(x, sigma)


@torch.no_grad()
def solve(
    score: Score,
    observation: Observation,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    sampler: str | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    restore_known: bool = True,
    **options: Any,
) -> torch.Tensor:
    """Any registry sampler (default: the one recommended for ``nfe``) from ``x0`` at σ_max down to σ_min, the
    observation replaced before every network evaluation at its σ (:class:`ReplacingScore`), the exact observation
    restored at the end (``restore_known``). ``options`` go to the sampler (``cuda_graphs`` excepted: the graph
    would replace into its own input buffer, not the state)."""
    score = runtime.score_function(score)
    runtime.check_x0(x0, score)
    check_int("nfe", nfe, 1)
    if options.get("cuda_graphs"):
        raise ValueError("cuda_graphs: not with a linear inverse problem (the observation is replaced in the state)")
    if sampler is None:
        sampler, defaults = recommended(nfe)
        options = defaults | options
    fn = get_sampler(sampler)
    obs = observation.to(x0)
    if sampler == "adaptive" and obs.y.shape[0] > 1:
        raise ValueError(
            "sampler: adaptive evaluates a subset of the batch at a time, so it needs one observation shared by "
            f"every sample (batch 1), got {obs.y.shape[0]}"
        )
    if generator is None and seed is not None:
        from ncsn_fast.seeding import make_generator

        generator = make_generator(seed, "inverse")
    out = fn(ReplacingScore(score, obs, generator), x0, nfe, sigma_max, sigma_min, generator=generator, seed=seed,
             **options)  # fmt: skip
    return obs.to(out).restore(out) if restore_known else out


def colorize(
    score: Score,
    gray: torch.Tensor,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    sampler: str | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    restore_known: bool = True,
    **options: Any,
) -> torch.Tensor:
    """Colorization: ``gray`` ((N or 1, 1, H, W), the mean of the channels, in the model's data space) known, the
    colour sampled; ``x0`` (N, 3, H, W) at σ_max (e.g. :func:`~ncsn_fast.sampling.prior_samples`); the rest as
    :func:`solve`. The output's channel mean equals ``gray`` up to float rounding (``restore_known``)."""
    return solve(score, Grayscale(gray), x0, nfe, sigma_max, sigma_min, sampler, generator, seed, restore_known,
                 **options)  # fmt: skip


def super_resolve(
    score: Score,
    low: torch.Tensor,
    factor: int,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    sampler: str | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    restore_known: bool = True,
    **options: Any,
) -> torch.Tensor:
    """Super-resolution by ``factor`` K: ``low`` ((N or 1, C, H/K, W/K), box-downsampled, in the model's data
    space) known as the K×K block means; ``x0`` (N, C, H, W) at σ_max; the rest as :func:`solve`. The output's
    block means equal ``low`` up to float rounding (``restore_known``)."""
    return solve(score, BoxDownsample(low, factor), x0, nfe, sigma_max, sigma_min, sampler, generator, seed,
                 restore_known, **options)  # fmt: skip
