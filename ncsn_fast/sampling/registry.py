"""The samplers by name, their minimum budgets, and the sampler recommended for a budget."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch

from ncsn_fast.sampler_specs import SPECS, spec


def _load(path: str) -> Callable[..., torch.Tensor]:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {name: _load(s.function) for name, s in SPECS.items()}
"""Every sampler by name, from its declaration (:data:`ncsn_fast.sampler_specs.SPECS`)."""

# The sampler used for `--nfe N` without `--sampler`: (largest budget it is chosen for, name, options), from the
# measurements (docs) on the bundled digits model (100 samples a row, the tests' judge): dpmpp_2m_sde 0.84, 0.79,
# 0.86, 0.84 confident at 10, 15, 25, 50 evaluations (the best of the eight up to 50); above, heun with churn 40
# (0.93 at 100; dpmpp_2m_sde 0.83); ALD on the model's own schedule (246) 0.89. On the 64-D mixture dpmpp_2m_sde at
# 25 is within 0.011 weight, 1.0% mean and 4.0% std, heun with churn 40 at 50 within 0.017, 1.0% and 4.8%.
RECOMMENDED: list[tuple[int, str, dict[str, Any]]] = [
    (50, "dpmpp_2m_sde", {}),
    (10**9, "heun", {"churn": 40.0}),
]


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    """The sampler registered as ``name``; ValueError naming the choices."""
    spec(name)
    return SAMPLERS[name]


SHARED_PARAMETERS = (
    "score", "x0", "nfe", "sigma_max", "sigma_min", "generator",
    "progress", "precision", "backend", "cuda_graphs", "seed",
)  # fmt: skip
"""The arguments every sampler takes: the problem, the budget, and the runtime options."""


def sampler_parameters(name: str) -> tuple[str, ...]:
    """The options of sampler ``name`` beyond :data:`SHARED_PARAMETERS`, from its signature (e.g. heun: rho,
    churn, s_tmin, s_tmax, s_noise, …); :data:`ncsn_fast.sampler_specs.SPECS` declares them (a test holds the two
    equal)."""
    return tuple(p for p in inspect.signature(get_sampler(name)).parameters if p not in SHARED_PARAMETERS)


def minimum_nfe(name: str, **options: Any) -> int:
    """The smallest evaluation budget sampler ``name`` accepts with these options (its declared budget rule,
    corrector steps included; checked before any work)."""
    return spec(name).min_nfe(options)


def recommended(nfe: int) -> tuple[str, dict[str, Any]]:
    """(sampler name, options) recommended for an evaluation budget (the table of docs/sampling.md)."""
    for limit, name, options in RECOMMENDED:
        if nfe <= limit:
            return name, dict(options)
    return RECOMMENDED[-1][1], dict(RECOMMENDED[-1][2])
