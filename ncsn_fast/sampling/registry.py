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
# tables of docs/sampling.md. At small budgets dpmpp_2m_sde over-disperses (on the 64-D mixture, closed form: std
# +15% at 10 evaluations, +11% at 15, +4% at 25); its noise scale s_noise < 1 (Karras et al.'s S_noise) offsets that,
# chosen per budget on the mixture (s_noise 0.9 at 15: std 0.6% off; 0.95 at 25: 1.4%) and then judged on the digits
# (500 samples, seed 1, the tests' judge, in one run with ALD's full schedule at 0.866 confident): 0.900 at 10 and
# 0.892 at 15 (s_noise 0.9), 0.846 at 25 and 0.856 at 50 (s_noise 0.95), against 0.852/0.826/0.814/0.808 at
# s_noise 1. Above 50, heun with churn 40 (0.93 at 100 on 100 samples).
RECOMMENDED: list[tuple[int, str, dict[str, Any]]] = [
    (15, "dpmpp_2m_sde", {"s_noise": 0.9}),
    (50, "dpmpp_2m_sde", {"s_noise": 0.95}),
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
