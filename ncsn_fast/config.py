"""Typed configuration that reads the official NCSNv2 YAML files unchanged.

``load_config(name_or_path)`` takes a preset name (``cifar10``, ``celeba``, ``church``, ``bedroom``, ``tower``,
``ffhq``, ``ncsn_cifar10``, ``digits``), a path to a YAML file, or a nested dict. Unknown keys and invalid
values raise :class:`ConfigError` naming the key and the value.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config key is unknown or its value is invalid; the message names both."""


@dataclass
class TrainingConfig:
    batch_size: int = 128
    n_epochs: int = 500000
    n_iters: int = 300001
    snapshot_freq: int = 5000
    snapshot_sampling: bool = True
    anneal_power: float = 2.0
    log_all_sigmas: bool = False


@dataclass
class SamplingConfig:
    batch_size: int = 100
    data_init: bool = False
    step_lr: float = 6.2e-6
    n_steps_each: int = 5
    ckpt_id: int | None = None
    final_only: bool = True
    fid: bool = False
    denoise: bool = True
    num_samples4fid: int = 10000
    inpainting: bool = False
    interpolation: bool = False
    n_interpolations: int = 15


@dataclass
class FastFIDConfig:
    batch_size: int = 1000
    num_samples: int = 1000
    step_lr: float = 6.2e-6
    n_steps_each: int = 5
    begin_ckpt: int = 5000
    end_ckpt: int = 300000
    verbose: bool = False
    ensemble: bool = False


@dataclass
class TestConfig:
    begin_ckpt: int = 5000
    end_ckpt: int = 300000
    batch_size: int = 100


@dataclass
class DataConfig:
    dataset: str = "CIFAR10"
    image_size: int = 32
    channels: int = 3
    logit_transform: bool = False
    uniform_dequantization: bool = False
    gaussian_dequantization: bool = False
    random_flip: bool = True
    rescaled: bool = False
    num_workers: int = 4
    category: str | None = None


@dataclass
class ModelConfig:
    sigma_begin: float = 50.0
    num_classes: int = 232
    ema: bool = True
    ema_rate: float = 0.999
    spec_norm: bool = False
    sigma_dist: str = "geometric"
    sigma_end: float = 0.01
    normalization: str = "InstanceNorm++"
    nonlinearity: str = "elu"
    ngf: int = 128
    name: str | None = None


@dataclass
class OptimConfig:
    weight_decay: float = 0.0
    optimizer: str = "Adam"
    lr: float = 1e-4
    beta1: float = 0.9
    amsgrad: bool = False
    eps: float = 1e-8
    # Library extension (not in the official configs): (step, lr) pairs applied from that step on.
    lr_schedule: list | None = None
    grad_clip: float | None = None


@dataclass
class Config:
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    fast_fid: FastFIDConfig = field(default_factory=FastFIDConfig)
    test: TestConfig = field(default_factory=TestConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_SECTION_TYPES = {
    "training": TrainingConfig,
    "sampling": SamplingConfig,
    "fast_fid": FastFIDConfig,
    "test": TestConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
}

PRESETS = ("cifar10", "celeba", "church", "bedroom", "tower", "ffhq", "ncsn_cifar10", "digits")


def _coerce(section: str, key: str, value: Any, annotation: str) -> Any:
    where = f"{section}.{key}"
    if value is None:
        if "None" in annotation:
            return None
        raise ConfigError(f"{where}: value must not be empty (got null)")
    if annotation.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if annotation.startswith("float"):
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads "1e-8" (no dot) as a string
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if annotation.startswith("str"):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build_section(name: str, raw: Any) -> Any:
    cls = _SECTION_TYPES[name]
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a mapping of keys, got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown key (value {value!r}); known keys: {', '.join(known)}")
        f = known[key]
        kwargs[key] = _coerce(name, key, value, str(f.type))
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any]) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {type(raw).__name__}")
    for key in raw:
        if key not in _SECTION_TYPES:
            raise ConfigError(f"{key}: unknown config section; known sections: {', '.join(_SECTION_TYPES)}")
    cfg = Config(**{name: _build_section(name, raw.get(name)) for name in _SECTION_TYPES})
    validate(cfg)
    return cfg


def _positive(where: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{where}: must be positive, got {value!r}")


def validate(cfg: Config) -> None:
    """Check values that the model, the noise schedule or the sampler cannot take."""
    from ncsn_fast.models import architecture_name, required_divisor  # late import: models import config

    m, d = cfg.model, cfg.data
    _positive("model.sigma_begin", m.sigma_begin)
    _positive("model.sigma_end", m.sigma_end)
    if m.sigma_end >= m.sigma_begin:
        raise ConfigError(
            f"model.sigma_end: must be smaller than model.sigma_begin ({m.sigma_begin}), got {m.sigma_end}"
        )
    if m.num_classes < 1:
        raise ConfigError(f"model.num_classes: must be at least 1, got {m.num_classes}")
    if m.sigma_dist not in ("geometric", "uniform"):
        raise ConfigError(f"model.sigma_dist: must be 'geometric' or 'uniform', got {m.sigma_dist!r}")
    if m.normalization != "InstanceNorm++":
        raise ConfigError(f"model.normalization: only 'InstanceNorm++' is implemented, got {m.normalization!r}")
    if m.spec_norm:
        raise ConfigError("model.spec_norm: spectral normalization is not implemented, got true")
    if m.ngf < 2:
        raise ConfigError(f"model.ngf: must be at least 2 (InstanceNorm++ needs 2 channels), got {m.ngf}")
    if not 0.0 <= m.ema_rate < 1.0:
        raise ConfigError(f"model.ema_rate: must be in [0, 1), got {m.ema_rate}")
    from ncsn_fast.nn.layers import ACTIVATIONS

    if m.nonlinearity.lower() not in ACTIVATIONS:
        raise ConfigError(
            f"model.nonlinearity: unknown activation {m.nonlinearity!r}; choose one of {sorted(ACTIVATIONS)}"
        )
    if d.channels < 1:
        raise ConfigError(f"data.channels: must be at least 1, got {d.channels}")
    if d.image_size < 1:
        raise ConfigError(f"data.image_size: must be positive, got {d.image_size}")
    arch = architecture_name(cfg)
    div = required_divisor(arch)
    if d.image_size % div != 0:
        raise ConfigError(
            f"data.image_size: {arch} downsamples by {div}, so the image size must be a multiple of {div}; "
            f"got {d.image_size}"
        )
    _positive("sampling.step_lr", cfg.sampling.step_lr)
    if cfg.sampling.n_steps_each < 1:
        raise ConfigError(f"sampling.n_steps_each: must be at least 1, got {cfg.sampling.n_steps_each}")
    if cfg.training.batch_size < 1:
        raise ConfigError(f"training.batch_size: must be at least 1, got {cfg.training.batch_size}")
    _positive("optim.lr", cfg.optim.lr)


def preset_path(name: str) -> Path:
    return Path(str(resources.files("ncsn_fast.configs").joinpath(f"{name}.yml")))


def load_config(name_or_path: str | Path | dict[str, Any] | Config) -> Config:
    """Read a preset name, a YAML path or a dict into a validated :class:`Config`."""
    if isinstance(name_or_path, Config):
        validate(name_or_path)
        return name_or_path
    if isinstance(name_or_path, dict):
        return config_from_dict(name_or_path)
    text = str(name_or_path)
    path = Path(text)
    if not path.is_file():
        if text in PRESETS:
            path = preset_path(text)
        else:
            raise ConfigError(f"config: {text!r} is neither a preset ({', '.join(PRESETS)}) nor an existing YAML file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {path} is not valid YAML: {exc}") from None
    return config_from_dict(raw or {})
