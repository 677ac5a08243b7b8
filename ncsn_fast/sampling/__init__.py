"""Sampling: annealed Langevin dynamics, the evaluation-budget samplers, their schedules, the runtime they share,
the ALD applications (interpolation, inpainting), linear inverse problems and SDEdit.

- :mod:`~ncsn_fast.sampling.schedules` — geometric (Technique 2), Karras ρ, thinned schedules;
- :mod:`~ncsn_fast.sampling.runtime` — precision, backend, CUDA graphs, noise, non-finite checks;
- :mod:`~ncsn_fast.sampling.langevin` — :func:`annealed_langevin` (the official sampler, fused update);
- :mod:`~ncsn_fast.sampling.samplers` — ``ald``, ``cas``, ``pc``, ``heun``, ``euler``; :mod:`~.dpm` —
  ``dpmpp_2m``, ``dpmpp_2m_sde``; :mod:`~.multistep` — ``dpmpp_3m_sde``, ``ipndm``, ``unipc``; :mod:`~.adaptive` —
  Gotta Go Fast; :mod:`~.registry` — by name, from their declarations (:mod:`ncsn_fast.sampler_specs`);
- :mod:`~ncsn_fast.sampling.correctors` — the Langevin corrector any σ-schedule solver takes;
- :mod:`~ncsn_fast.sampling.denoiser` — :class:`Denoiser`, D(x, σ) = x + σ²·s(x, σ) for k-diffusion;
- :mod:`~ncsn_fast.sampling.applications` — :func:`interpolate`, :func:`inpaint`;
- :mod:`~ncsn_fast.sampling.inverse` — linear inverse problems by one mechanism: :func:`colorize`,
  :func:`super_resolve` (and inpainting's engine);
- :mod:`~ncsn_fast.sampling.sdedit` — :func:`sdedit` (SDEdit: perturb to σ_start, sample down), :func:`strength_sigma`;
- :mod:`~ncsn_fast.sampling.generate` — :class:`SamplingPlan` and :func:`sample_batches` (the CLI, FID).
"""

from ncsn_fast.sampling.adaptive import adaptive
from ncsn_fast.sampling.applications import inpaint, interpolate, interpolation_weights
from ncsn_fast.sampling.correctors import LangevinCorrector
from ncsn_fast.sampling.denoiser import Denoiser
from ncsn_fast.sampling.dpm import dpmpp_2m, dpmpp_2m_sde
from ncsn_fast.sampling.generate import SamplingPlan, sample_batches
from ncsn_fast.sampling.initial import init_samples, prior_samples
from ncsn_fast.sampling.inverse import colorize, super_resolve
from ncsn_fast.sampling.langevin import annealed_langevin, tweedie_denoise
from ncsn_fast.sampling.multistep import dpmpp_3m_sde, ipndm, unipc
from ncsn_fast.sampling.registry import SAMPLERS, get_sampler, minimum_nfe, recommended
from ncsn_fast.sampling.runtime import BACKENDS, Score
from ncsn_fast.sampling.samplers import ald, cas, euler, heun, pc
from ncsn_fast.sampling.schedules import (
    geometric_sigmas,
    karras_sigmas,
    solver_sigmas,
    thin_schedule,
    warn_if_too_coarse,
)
from ncsn_fast.sampling.sdedit import sdedit, strength_sigma

__all__ = [
    "BACKENDS",
    "Denoiser",
    "LangevinCorrector",
    "SAMPLERS",
    "SamplingPlan",
    "Score",
    "adaptive",
    "ald",
    "annealed_langevin",
    "cas",
    "colorize",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
    "euler",
    "geometric_sigmas",
    "get_sampler",
    "heun",
    "init_samples",
    "inpaint",
    "interpolate",
    "interpolation_weights",
    "ipndm",
    "karras_sigmas",
    "minimum_nfe",
    "pc",
    "prior_samples",
    "recommended",
    "sample_batches",
    "sdedit",
    "solver_sigmas",
    "strength_sigma",
    "super_resolve",
    "thin_schedule",
    "tweedie_denoise",
    "unipc",
    "warn_if_too_coarse",
]
