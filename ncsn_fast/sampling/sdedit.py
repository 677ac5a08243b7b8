"""SDEdit (Meng et al., ICLR 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential
Equations"): perturb an image to a noise level σ_start, then run a sampler from σ_start down.

On a VE model the perturbation is x_t = x + σ_start·z, z ~ N(0, I) (the paper's Eq. (1) at t₀), and any sampler of
the registry runs from x_t with ``sigma_max = σ_start``. The edit's strength S ∈ [0, 1] is the paper's t₀ on the
geometric schedule σ(t) = σ_min·(σ_max/σ_min)^t of the VE SDE: log σ_start = log σ_min + S·(log σ_max − log σ_min)
(:func:`strength_sigma`). S = 0 leaves the image at σ_min: the output is the input, denoised
(x + σ_min·z, then Tweedie); S = 1 starts from the prior's scale, forgetting the input.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ncsn_fast.sampling import runtime
from ncsn_fast.sampling.registry import get_sampler, recommended
from ncsn_fast.sampling.runtime import Score
from ncsn_fast.sampling.samplers import denoised
from ncsn_fast.seeding import make_generator
from ncsn_fast.validation import check_int, check_positive


def strength_sigma(strength: float, sigma_min: float, sigma_max: float) -> float:
    """σ_start for an edit strength S ∈ [0, 1]: σ_min·(σ_max/σ_min)^S (SDEdit's t₀ on the VE SDE's geometric σ(t));
    S = 0 gives σ_min, S = 1 gives σ_max. ValueError naming ``strength`` outside [0, 1]."""
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise ValueError(f"strength: must be in [0, 1], got {strength!r}")
    if strength == 0:
        return float(sigma_min)
    if strength == 1:
        return float(sigma_max)
    return math.exp(math.log(sigma_min) + strength * (math.log(sigma_max) - math.log(sigma_min)))


@torch.no_grad()
def sdedit(
    score: Score,
    x: torch.Tensor,
    sigma_start: float,
    sigma_min: float,
    sampler: str | None = None,
    nfe: int = 50,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    **options: Any,
) -> torch.Tensor:
    """SDEdit: x_t = x + σ_start·z, then ``sampler`` (a registry name; default: the one recommended for ``nfe``)
    from σ_start down to σ_min with ``nfe`` score evaluations, taking the sampler's ``options`` (e.g. ``churn``,
    ``precision``, ``backend``).

    ``x`` (N, C, H, W) images — or (N, D) for an analytic score — in the model's data space; ``score(x, σ)`` with
    σ of shape (N,), or a model (its ``score``). The perturbation z is drawn from ``generator`` (default: one seeded
    by ``seed``, else the global RNG); the sampler's noise stream is keyed by ``seed`` (drawn from the generator
    when None). With σ_start = σ_min the sampler is skipped: the output is D(x + σ_min·z, σ_min), the input
    denoised (one evaluation). Returns x's shape.

    On Gaussian data N(μ, s²) with the exact score and a sampler of the reverse SDE that ends with the denoising step
    at σ_min, the output given x is N(μ + s²/(s² + σ_t²)·(x − μ), (s²/(s² + σ_t²))²·σ_t² + s⁴(σ_t² − σ_min²)/((s² +
    σ_min²)(s² + σ_t²))) (the posterior of x_{σ_min} given x_t, denoised, averaged over z; the tests).
    ValueError naming ``sigma_start`` (below σ_min), ``sampler``, ``nfe`` or an option.
    """
    score = runtime.score_function(score)
    runtime.check_x0(x, score, "x")
    check_positive("sigma_start", sigma_start)
    check_positive("sigma_min", sigma_min)
    if sigma_start < sigma_min:
        raise ValueError(f"sigma_start: must be ≥ sigma_min ({sigma_min}), got {sigma_start}")
    check_int("nfe", nfe, 1)
    if sampler is None:
        sampler, defaults = recommended(nfe)
        options = defaults | options
    fn = get_sampler(sampler)
    if generator is None and seed is not None:
        generator = make_generator(seed, "sdedit")
    x_t = x + sigma_start * runtime.randn_like(x, generator)  # Eq. (1) at t₀: the VE perturbation
    if sigma_start == sigma_min:
        net = runtime.network(score, x.device, options.get("precision", "fp32"), options.get("backend", "auto"))
        out = denoised(net, x_t, sigma_min)
        runtime.check_finite(out, "sdedit", 0, sigma_min)
        return out
    return fn(score, x_t, nfe, sigma_start, sigma_min, generator=generator, seed=seed, **options)
