"""Typed configuration that reads the official NCSNv2 YAML files unchanged.

``load_config(name_or_path)`` takes a preset name (``cifar10``, ``celeba``, ``church``, ``bedroom``, ``tower``,
``ffhq``, ``ncsn_cifar10``, ``digits``), a path to a YAML file, or a nested dict. Unknown keys and values of the
wrong type (lists included) raise :class:`ConfigError` naming the key and the value; values the models cannot
take are checked by ``build_model`` (this module imports no model code).

Files from the official code are read as they are: the ``config.yml`` that ncsnv2's (and ncsn's) ``main.py``
writes into a run folder with ``yaml.dump(dict2namespace(config))`` (its ``!!python/object:argparse.Namespace``
tags are read as mappings by a safe loader; no other Python tag is constructed), and the original NCSN
repository's schema (ermongroup/ncsn ``configs/anneal.yml``: ``training.ngpu``, ``training.algo``,
``model.batch_norm`` …), mapped to ``model.name: ncsn`` with a :class:`MappedConfigWarning` listing what was mapped.

Every key of the official files is either used by ncsn-fast or, when set to ask for something ncsn-fast does not
do (``sampling.fid: true``, ``sampling.final_only: false`` …), reported once as "read, not used by
ncsn-fast: KEY" (a :class:`UnusedConfigWarning`). Step sizes a config leaves out are not borrowed from
another dataset: they are ``None`` here and :func:`ncsn_fast.techniques.resolve_step_lr` derives them by
Technique 4 for the config's own σ schedule.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ncsn_fast.configs.official import NAMESPACE_TAG, YAML_TAG, RefusedTag, RunFolderLoader  # noqa: F401


class ConfigError(ValueError):
    """A config key is unknown or its value is invalid; the message names both."""


class UnusedConfigWarning(UserWarning):
    """Keys of the official configs that ask for something ncsn-fast does not do."""


class MappedConfigWarning(UserWarning):
    """A config in the original NCSN schema (ermongroup/ncsn) was mapped; the message lists every key mapped."""


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
    step_lr: float | None = None  # None: Technique 4 for this config's schedule and n_steps_each
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
    step_lr: float | None = None  # None: sampling.step_lr when T is the same, else Technique 4
    n_steps_each: int | None = None  # None: sampling.n_steps_each
    begin_ckpt: int | None = None
    end_ckpt: int | None = None
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
    # Library extensions (not in the official configs): (step, lr) pairs applied from that step on; gradient clip.
    lr_schedule: list[list[float]] | None = None
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


_SECTION_CLASSES = {
    "training": TrainingConfig,
    "sampling": SamplingConfig,
    "fast_fid": FastFIDConfig,
    "test": TestConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
}
PRESETS = ("cifar10", "celeba", "church", "bedroom", "tower", "ffhq", "ncsn_cifar10", "digits")

# Keys of the official configs that ncsn-fast reads but does not act on. Left at their default (the official
# configs' value) they ask for nothing; any other value is reported, since the official code would act on it.
NOT_USED = (
    "sampling.final_only",  # false: the official sampler saves every intermediate step
    "sampling.fid",  # true: the official sample mode computes FID (ncsn-fast fid does)
    "sampling.inpainting",  # true: official inpainting mode (ncsn-fast sample --inpaint)
    "sampling.interpolation",  # true: official interpolation mode (ncsn-fast sample --interpolate)
    "sampling.num_samples4fid",  # the official fid mode's sample count (ncsn-fast fid takes --n)
    "fast_fid.verbose",
    "fast_fid.ensemble",
)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(where: str, value: Any, tp: Any) -> Any:
    """``value`` as the annotated type ``tp`` (int, float, bool, str, X | None, list[...]) or a ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(where, value, inner[0]) if len(inner) == 1 else value
    if value is None:
        raise ConfigError(f"{where}: value must not be empty (got null)")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list of {_type_name(args[0])}, got {value!r}")
        return [_coerce(f"{where}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads "1e-8" (no dot) as a string
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: no coercion for the annotation {tp!r}")  # a new field type: extend _coerce


def _build_section(name: str, raw: Any) -> Any:
    cls = _SECTION_CLASSES[name]
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in hints:
            raise ConfigError(f"{name}.{key}: unknown key (value {value!r}); known keys: {', '.join(hints)}")
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    return cls(**kwargs)


def unused_keys(cfg: Config) -> list[str]:
    """The keys of ``NOT_USED`` set to something other than their default: requests ncsn-fast does not act on."""
    found = []
    for key in NOT_USED:
        section, name = key.split(".")
        default = getattr(_SECTION_CLASSES[section](), name)
        if getattr(getattr(cfg, section), name) != default:
            found.append(key)
    return found


# The original NCSN code (ermongroup/ncsn, configs/anneal.yml and runners/anneal_runner.py). Its keys that NCSNv2's
# schema lacks: any of them marks a config as that schema.
ORIGINAL_ONLY = ("training.ngpu", "training.algo", "training.n_particles", "model.batch_norm")
# What that code fixes in the code rather than in the config, filled in where the file leaves the key out:
# anneal_runner.test() samples 8×8 images by anneal_Langevin_dynamics(..., n_steps_each=100, step_lr=0.00002) with
# no final denoising step; the model is CondRefineNetDilated (NCSN) with no EMA; training dequantizes uniformly
# (X / 256 · 255 + U(0, 1) / 256).
ORIGINAL_FIXED = {
    "model.name": "ncsn",
    "model.ema": False,
    "sampling.batch_size": 64,
    "sampling.n_steps_each": 100,
    "sampling.step_lr": 2e-5,
    "sampling.denoise": False,
    "data.uniform_dequantization": True,
}
ORIGINAL_ALGOS = ("dsm", "ssm")  # both train the same network, sampled the same way; dsm_freq is another data space


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).splitlines()[0]


def is_original_ncsn(raw: dict[str, Any]) -> bool:
    """True when the nested dict ``raw`` holds a key of the original NCSN schema (:data:`ORIGINAL_ONLY`)."""
    for key in ORIGINAL_ONLY:
        section, name = key.split(".")
        if isinstance(raw.get(section), dict) and name in raw[section]:
            return True
    return False


def map_original_ncsn(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The original NCSN schema (ermongroup/ncsn ``configs/anneal.yml``) → ncsn-fast's, and what was mapped.

    The keys only that code reads (:data:`ORIGINAL_ONLY`) are dropped; its fixed choices (:data:`ORIGINAL_FIXED`:
    ``model.name: ncsn``, no EMA, T = 100 and ε = 2e-5 without denoising, uniform dequantization) fill the keys the
    file leaves out; every other key keeps its value. Returns (the mapped dict, the changes as "key: value" lists).
    Raises :class:`ConfigError` for a ``training.algo`` other than ``dsm`` / ``ssm`` (``dsm_freq`` samples in
    another data space).
    """
    out = {name: dict(sec) if isinstance(sec, dict) else sec for name, sec in raw.items()}
    dropped, filled = [], []
    training = out.get("training")
    algo = training.get("algo") if isinstance(training, dict) else None
    if algo is not None and algo not in ORIGINAL_ALGOS:
        raise ConfigError(
            f"training.algo: only the original NCSN's {' and '.join(map(repr, ORIGINAL_ALGOS))} models can be read, "
            f"got {algo!r}"
        )
    for key in ORIGINAL_ONLY:
        section, name = key.split(".")
        if isinstance(out.get(section), dict) and name in out[section]:
            dropped.append(f"{key}: {_yaml_scalar(out[section].pop(name))}")
    for key, value in ORIGINAL_FIXED.items():
        section, name = key.split(".")
        if out.get(section) is None:
            out[section] = {}  # absent, or an empty "sampling:" line
        sec = out[section]
        if isinstance(sec, dict) and name not in sec:
            sec[name] = value
            filled.append(f"{key}: {_yaml_scalar(value)}")
    named = [f for f in filled if f.startswith("model.name:")]
    fixed = [f for f in filled if not f.startswith("model.name:")]
    changes = [f"set {named[0]}"] if named else []
    if dropped:
        changes.append(f"not used: {', '.join(dropped)}")
    if fixed:
        changes.append(f"the original code's fixed choices: {', '.join(fixed)}")
    return out, changes


def config_from_dict(raw: dict[str, Any]) -> Config:
    """A nested dict (a YAML file's content) → a validated :class:`Config`; ConfigError naming key and value. A
    dict in the original NCSN schema is mapped first (:func:`map_original_ncsn`, with a MappedConfigWarning)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {type(raw).__name__}")
    if is_original_ncsn(raw):
        raw, mapped = map_original_ncsn(raw)
        warnings.warn(
            "config: the original NCSN schema (ermongroup/ncsn configs/anneal.yml), read as NCSN: " + "; ".join(mapped),
            MappedConfigWarning,
            stacklevel=3,
        )
    for key in raw:
        if key not in _SECTION_CLASSES:
            raise ConfigError(f"{key}: unknown config section; known sections: {', '.join(_SECTION_CLASSES)}")
    cfg = Config(**{name: _build_section(name, raw.get(name)) for name in _SECTION_CLASSES})
    validate(cfg)
    unused = unused_keys(cfg)
    if unused:
        warnings.warn(f"config: read, not used by ncsn-fast: {', '.join(unused)}", UnusedConfigWarning, stacklevel=3)
    return cfg


def _positive(where: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigError(f"{where}: must be positive, got {value!r}")


def _at_least(where: str, value: int | None, minimum: int) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"{where}: must be at least {minimum}, got {value}")


def validate(cfg: Config) -> None:
    """Check the values the noise schedule, the sampler and the training loop cannot take (architecture checks:
    ``build_model``)."""
    m, d = cfg.model, cfg.data
    _positive("model.sigma_begin", m.sigma_begin)
    _positive("model.sigma_end", m.sigma_end)
    if m.sigma_end >= m.sigma_begin:
        raise ConfigError(
            f"model.sigma_end: must be smaller than model.sigma_begin ({m.sigma_begin}), got {m.sigma_end}"
        )
    _at_least("model.num_classes", m.num_classes, 1)
    if m.sigma_dist not in ("geometric", "uniform"):
        raise ConfigError(f"model.sigma_dist: must be 'geometric' or 'uniform', got {m.sigma_dist!r}")
    if not 0.0 <= m.ema_rate < 1.0:
        raise ConfigError(f"model.ema_rate: must be in [0, 1), got {m.ema_rate}")
    _at_least("data.channels", d.channels, 1)
    _at_least("data.image_size", d.image_size, 1)
    for section in ("sampling", "fast_fid"):
        sec = getattr(cfg, section)
        _positive(f"{section}.step_lr", sec.step_lr)
        _at_least(f"{section}.n_steps_each", sec.n_steps_each, 1)
        _at_least(f"{section}.batch_size", sec.batch_size, 1)
    _at_least("training.batch_size", cfg.training.batch_size, 1)
    _at_least("training.n_iters", cfg.training.n_iters, 0)
    _at_least("training.n_epochs", cfg.training.n_epochs, 1)
    _positive("optim.lr", cfg.optim.lr)
    for i, pair in enumerate(cfg.optim.lr_schedule or []):
        if len(pair) != 2 or pair[0] < 0 or not pair[1] > 0:
            raise ConfigError(f"optim.lr_schedule[{i}]: expected a [step ≥ 0, lr > 0] pair, got {pair!r}")


def preset_path(name: str) -> Path:
    return Path(str(resources.files("ncsn_fast.configs").joinpath(f"{name}.yml")))


def read_yaml(path: str | Path) -> Any:
    """The content of a YAML file, plain or as the official ``main.py`` writes it (:class:`RunFolderLoader`).

    Raises :class:`ConfigError` naming the file for invalid YAML, and naming the tag and its line for a Python tag
    other than ``!!python/object:argparse.Namespace`` (refused: ncsn-fast constructs no Python objects).
    """
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=RunFolderLoader)  # noqa: S506 (a SafeLoader subclass)
    except RefusedTag as exc:
        tag = exc.tag.replace(YAML_TAG, "!!")
        kind = "Python tag" if exc.tag.startswith(YAML_TAG + "python/") else "tag"
        raise ConfigError(
            f"config: {str(path)!r} line {exc.line}: refused the {kind} {tag}; only plain YAML and the official "
            "run folders' !!python/object:argparse.Namespace (read as a mapping) are read"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config: {str(path)!r} is not valid YAML: {first}") from None


def load_config(name_or_path: str | Path | dict[str, Any] | Config) -> Config:
    """Read a preset name, a YAML path (``.yml``/``.yaml``) or a dict into a validated :class:`Config`.

    YAML files are read by :func:`read_yaml`: plain YAML, or a run folder's ``config.yml`` as the official
    ``main.py`` writes it (``!!python/object:argparse.Namespace`` tags). A config in the original NCSN schema
    (ermongroup/ncsn) is mapped to ``model.name: ncsn`` with a :class:`MappedConfigWarning`
    (:func:`map_original_ncsn`).

    Raises :class:`ConfigError` for an unknown preset or missing file (naming the presets), invalid YAML, a Python
    tag other than argparse.Namespace (naming it), unknown sections or keys, and invalid values.
    """
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
        elif path.is_dir():
            raise ConfigError(f"config: {text!r} is a folder, not a preset ({', '.join(PRESETS)}) or a YAML file")
        else:
            raise ConfigError(f"config: unknown preset {text!r} and no such YAML file (presets: {', '.join(PRESETS)})")
    return config_from_dict(read_yaml(path) or {})
