"""Annealed denoising score matching (NCSN Eq. (5); NCSNv2 Section 2)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def dsm_loss(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    labels: torch.Tensor | None = None,
    unit_noise: torch.Tensor | None = None,
    anneal_power: float = 2.0,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ℓ(θ) = E_i E_z ½·σ_i^p·‖s_θ(x + σ_i z, i) + z/σ_i‖², the official ``anneal_dsm_score_estimation``.

    ``labels``: noise-level indices (random when None); ``unit_noise``: z (standard normal when None);
    ``reduction``: ``"mean"`` (scalar, the official value) or ``"none"`` (per sample).

    For anneal_power 2 the loss is computed as ½‖σ·s + z‖² in float32: the naive form squares values of order
    1/σ_L² ≈ 1e4, which overflows float16 and loses bits in bfloat16 under autocast.
    """
    from ncsn_fast.validation import check_input_for, check_labels, describe

    if not callable(model):
        raise TypeError(f"model: expected a score model s(x, labels), got {describe(model)}")
    check_input_for(model, "x", x)
    if not isinstance(sigmas, torch.Tensor) or not sigmas.is_floating_point() or sigmas.dim() != 1 or not len(sigmas):
        raise TypeError(f"sigmas: expected the noise levels as a 1-D float tensor (L,), got {describe(sigmas)}")
    n = x.shape[0]
    if labels is None:
        labels = torch.randint(0, len(sigmas), (n,), device=x.device, generator=generator)
    else:
        check_labels("labels", labels, n, len(sigmas))
    if unit_noise is None:
        unit_noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    elif not isinstance(unit_noise, torch.Tensor) or unit_noise.shape != x.shape:
        raise ValueError(f"unit_noise: expected a tensor of x's shape {tuple(x.shape)}, got {describe(unit_noise)}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction: must be 'mean' or 'none', got {reduction!r}")
    used = sigmas[labels].view(n, *([1] * (x.dim() - 1)))
    perturbed = x + unit_noise * used
    scores = model(perturbed, labels).float()
    z = unit_noise.float()
    s32 = used.float()
    if anneal_power == 2.0:
        per_sample = 0.5 * (scores * s32 + z).flatten(1).square().sum(dim=1)
    else:
        target = -z / s32
        per_sample = 0.5 * (scores - target).flatten(1).square().sum(dim=1) * s32.flatten() ** anneal_power
    return per_sample.mean() if reduction == "mean" else per_sample
