"""Sampling: annealed Langevin dynamics, the evaluation-budget samplers, their schedules, the runtime they share,
and the ALD applications (interpolation, inpainting).

- :mod:`~ncsn_fast.sampling.schedules` — geometric (Technique 2), Karras ρ, thinned schedules;
- :mod:`~ncsn_fast.sampling.runtime` — precision, backend, CUDA graphs, noise, non-finite checks;
- :mod:`~ncsn_fast.sampling.langevin` — :func:`annealed_langevin` (the official sampler, fused update);
- :mod:`~ncsn_fast.sampling.samplers` — ``ald``, ``cas``, ``pc``, ``heun`` and their registry;
- :mod:`~ncsn_fast.sampling.applications` — :func:`interpolate`, :func:`inpaint`;
- :mod:`~ncsn_fast.sampling.generate` — :class:`SamplingPlan` and :func:`sample_batches` (the CLI, FID).
"""

from ncsn_fast.sampling.applications import inpaint, interpolate, interpolation_weights
from ncsn_fast.sampling.generate import SamplingPlan, sample_batches
from ncsn_fast.sampling.initial import init_samples, prior_samples
from ncsn_fast.sampling.langevin import annealed_langevin, tweedie_denoise
from ncsn_fast.sampling.runtime import BACKENDS, Score
from ncsn_fast.sampling.samplers import SAMPLERS, ald, cas, get_sampler, heun, pc
from ncsn_fast.sampling.schedules import geometric_sigmas, karras_sigmas, thin_schedule, warn_if_too_coarse

__all__ = [
    "BACKENDS",
    "SAMPLERS",
    "SamplingPlan",
    "Score",
    "ald",
    "annealed_langevin",
    "cas",
    "geometric_sigmas",
    "get_sampler",
    "heun",
    "init_samples",
    "inpaint",
    "interpolate",
    "interpolation_weights",
    "karras_sigmas",
    "pc",
    "prior_samples",
    "sample_batches",
    "thin_schedule",
    "tweedie_denoise",
    "warn_if_too_coarse",
]
