"""Model registry: every architecture is a name in the config, resolved here (``model.name``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from ncsn_fast.config import Config

_MODELS: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is already registered to {_MODELS[name].__name__}")
        _MODELS[name] = cls
        return cls

    return wrap


def registered_models() -> list[str]:
    return sorted(_MODELS)


def get_model_class(name: str) -> type[nn.Module]:
    if name not in _MODELS:
        raise ValueError(f"model.name: unknown architecture {name!r}; choose one of {registered_models()}")
    return _MODELS[name]


def architecture_name(cfg: Config) -> str:
    """The architecture a config selects, as the official runner does (paper Tables 2 and 3).

    ``model.name`` wins when present. Otherwise CIFAR10/CELEBA → NCSNv2, LSUN → NCSNv2Deeper,
    FFHQ → NCSNv2Deepest, and any other dataset by resolution: ≤ 64 px NCSNv2, ≤ 128 px NCSNv2Deeper,
    larger NCSNv2Deepest.
    """
    if cfg.model.name is not None:
        get_model_class(cfg.model.name)
        return cfg.model.name
    dataset = cfg.data.dataset.upper()
    if dataset in ("CIFAR10", "CELEBA"):
        return "ncsnv2"
    if dataset == "LSUN":
        return "ncsnv2_deeper"
    if dataset == "FFHQ":
        return "ncsnv2_deepest"
    size = cfg.data.image_size
    if size <= 64:
        return "ncsnv2"
    if size <= 128:
        return "ncsnv2_deeper"
    return "ncsnv2_deepest"


def required_divisor(name: str) -> int:
    """The factor by which an architecture's mean-pool downsampling divides the image side."""
    return get_model_class(name).downsample_factor


def check_architecture(cfg: Config) -> str:
    """The architecture name, after checking the model values it cannot take; ConfigError naming the key."""
    from ncsn_fast.config import ConfigError
    from ncsn_fast.nn.layers import ACTIVATIONS

    m, d = cfg.model, cfg.data
    if m.normalization != "InstanceNorm++":
        raise ConfigError(f"model.normalization: only 'InstanceNorm++' is implemented, got {m.normalization!r}")
    if m.spec_norm:
        raise ConfigError("model.spec_norm: spectral normalization is not implemented, got true")
    if m.ngf < 2:
        raise ConfigError(f"model.ngf: must be at least 2 (InstanceNorm++ needs 2 channels), got {m.ngf}")
    if m.nonlinearity.lower() not in ACTIVATIONS:
        raise ConfigError(
            f"model.nonlinearity: unknown activation {m.nonlinearity!r}; choose one of {sorted(ACTIVATIONS)}"
        )
    try:
        arch = architecture_name(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    div = required_divisor(arch)
    if d.image_size % div != 0:
        raise ConfigError(
            f"data.image_size: {arch} downsamples by {div}, so the image size must be a multiple of {div}; "
            f"got {d.image_size}"
        )
    return arch


def build_model(cfg: Config) -> nn.Module:
    """Build the model a config names (see :func:`architecture_name`); ConfigError for values it cannot take
    (normalization, spectral norm, ngf < 2, an unknown activation, an image size it cannot downsample)."""
    return get_model_class(check_architecture(cfg))(cfg)
