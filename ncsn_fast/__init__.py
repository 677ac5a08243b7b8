"""ncsn-fast: NCSN / NCSNv2 score-based generative models (Song & Ermon, NeurIPS 2019 / 2020) in PyTorch.

The public names below are imported on first use (PEP 562), so ``import ncsn_fast`` — and the command line's
``--help`` — do not load torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "CheckpointError": "ncsn_fast.checkpoint",
    "load_checkpoint": "ncsn_fast.checkpoint",
    "save_checkpoint": "ncsn_fast.checkpoint",
    "Config": "ncsn_fast.config",
    "ConfigError": "ncsn_fast.config",
    "load_config": "ncsn_fast.config",
    "configure": "ncsn_fast.configure",
    "EMA": "ncsn_fast.ema",
    "inference_network": "ncsn_fast.inference",
    "dsm_loss": "ncsn_fast.losses",
    "build_model": "ncsn_fast.models",
    "from_pretrained": "ncsn_fast.pretrained",
    "load_model": "ncsn_fast.pretrained",
    "load_pretrained": "ncsn_fast.pretrained",
    "save_pretrained": "ncsn_fast.pretrained",
    "annealed_langevin": "ncsn_fast.sampling",
    "init_samples": "ncsn_fast.sampling",
    "colorize": "ncsn_fast.sampling",
    "inpaint": "ncsn_fast.sampling",
    "interpolate": "ncsn_fast.sampling",
    "prior_samples": "ncsn_fast.sampling",
    "get_sampler": "ncsn_fast.sampling",
    "sdedit": "ncsn_fast.sampling",
    "super_resolve": "ncsn_fast.sampling",
    "get_sigmas": "ncsn_fast.techniques",
    "train": "ncsn_fast.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ncsn_fast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
