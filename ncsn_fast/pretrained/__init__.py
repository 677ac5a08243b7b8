"""Models from files: the bundled digits model, checkpoints, training workdirs, safetensors directories.

``digits/``: NCSNv2 (ngf 32, 16×16 grayscale, L = 49) trained on the scikit-learn digits with
``ncsn-fast train --config digits`` — its EMA weights as ``model.safetensors`` beside ``config.yaml`` (a
:func:`save_pretrained` directory: no pickle in the package).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ncsn_fast.checkpoint import CheckpointError, checkpoint_step, is_safetensors, load_checkpoint, read_checkpoint
from ncsn_fast.config import Config, ConfigError, load_config
from ncsn_fast.models import build_model

BUNDLED = ("digits",)


def pretrained_path(name: str = "digits") -> Path:
    if name not in BUNDLED:
        raise ValueError(f"name: no bundled model {name!r}; bundled: {', '.join(BUNDLED)}")
    path = Path(str(resources.files("ncsn_fast.pretrained").joinpath(name)))
    if not (path / "model.safetensors").is_file():
        raise CheckpointError(f"bundled weights {path} are missing from this installation")
    return path


def config_from_checkpoint(path: str | os.PathLike) -> Config:
    ckpt = read_checkpoint(path)
    if not ckpt.get("config"):
        raise CheckpointError(f"config: checkpoint {str(path)!r} carries no config; pass one (a preset or YAML file)")
    return load_config(ckpt["config"])


def load_pretrained(name: str = "digits") -> tuple[nn.Module, Config]:
    """The bundled model (EMA weights, eval mode) and its config."""
    return from_pretrained(pretrained_path(name))


def resolve_checkpoint(path: str | os.PathLike, ckpt_id: int | None = None) -> Path:
    """A checkpoint file or save_pretrained folder as it is, or the one to use in a training workdir:
    ``checkpoint_<ckpt_id>.pth`` when given (the config's ``sampling.ckpt_id``), else the latest. CheckpointError
    naming ``ckpt`` when there is none."""
    p = Path(path)
    if not p.is_dir() or is_safetensors(p):
        return p
    found = sorted((q for q in p.glob("checkpoint_*.pth") if checkpoint_step(q) is not None), key=checkpoint_step)
    if ckpt_id is not None:
        pick = p / f"checkpoint_{ckpt_id}.pth"
        if pick.is_file():
            return pick
        if found:
            steps = ", ".join(str(checkpoint_step(q)) for q in found[-5:])
            raise CheckpointError(f"ckpt: {str(p)!r} has no checkpoint_{ckpt_id}.pth (sampling.ckpt_id); has {steps}")
    if not found:
        raise CheckpointError(f"ckpt: the folder {str(p)!r} holds no checkpoint_<step>.pth")
    return found[-1]


def _architecture(cfg: Config) -> dict:
    d = cfg.to_dict()
    return {"model": d["model"], "data": {k: v for k, v in d["data"].items() if k != "num_workers"}}


def load_model(
    ckpt: str | os.PathLike | None = None,
    config: str | os.PathLike | Config | None = None,
    ema: bool = True,
    device: torch.device | str = "cpu",
    adopt_schedule: bool = False,
) -> tuple[nn.Module, Config, Path]:
    """(model in eval mode on ``device``, its config, the weights file) from what a user names.

    ``config``: a preset, a YAML file or a Config (default: the checkpoint's own); it is read first, so a bad
    config is reported before anything about the checkpoint. ``ckpt``: a checkpoint file, a training workdir (its
    ``sampling.ckpt_id`` checkpoint, else the latest), or None for the bundled digits model — which a config may
    only accompany when it describes that same model (the file ``ncsn-fast configure digits`` writes does).
    ``ema``: the EMA weights (default) or the raw ones. Raises ConfigError / CheckpointError naming ``config`` or
    ``ckpt``.
    """
    cfg = load_config(config) if config is not None else None
    if ckpt is None:
        path = pretrained_path("digits")
        bundled = config_from_checkpoint(path)
        if cfg is not None and _architecture(cfg) != _architecture(bundled):
            diff = [
                f"{s}.{k}" for s in ("model", "data") for k, v in _architecture(cfg)[s].items()
                if _architecture(bundled)[s].get(k) != v
            ]  # fmt: skip
            raise CheckpointError(
                f"ckpt: required: this config describes another model than the bundled digits model "
                f"(differs in {', '.join(diff[:4])}); pass its checkpoint"
            )
        cfg = cfg or bundled
    else:
        path = resolve_checkpoint(ckpt, cfg.sampling.ckpt_id if cfg is not None else None)
        if cfg is None:
            try:
                cfg = config_from_checkpoint(path)
            except ConfigError as exc:
                raise CheckpointError(f"ckpt: the config stored in {str(path)!r} is invalid: {exc}") from None
    model = build_model(cfg)
    load_checkpoint(model, path, ema=ema, adopt_schedule=adopt_schedule)
    return model.to(device).eval(), cfg, path


def official_config_dict(cfg: Config) -> dict:
    """The config as the official code reads it: every key filled (step sizes resolved by
    :func:`~ncsn_fast.techniques.resolve_step_lr`, fast_fid's T and checkpoint range from the other sections)."""
    from ncsn_fast.techniques import resolve_step_lr

    d = cfg.to_dict()
    d["sampling"]["step_lr"] = resolve_step_lr(cfg)[0]
    ff = d["fast_fid"]
    ff["n_steps_each"] = ff["n_steps_each"] or cfg.sampling.n_steps_each
    ff["step_lr"] = resolve_step_lr(cfg, section="fast_fid")[0]
    ff["begin_ckpt"] = ff["begin_ckpt"] if ff["begin_ckpt"] is not None else cfg.training.snapshot_freq
    ff["end_ckpt"] = ff["end_ckpt"] if ff["end_ckpt"] is not None else cfg.training.n_iters
    return d


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    config: Config,
    ema: dict[str, torch.Tensor] | None = None,
    raw: bool = False,
    step: int | None = None,
) -> dict[str, str]:
    """Write ``directory/config.yaml`` (the official schema, :func:`official_config_dict`) and
    ``directory/model.safetensors``: the EMA weights when ``ema`` (a shadow dict name → tensor) is given, else the
    model's own; with ``raw`` (and ``ema``) the model's raw weights also go to ``model_raw.safetensors``. No pickle.
    Returns {file name: which weights}. Each file is written atomically."""
    import yaml
    from safetensors.torch import save

    from ncsn_fast.checkpoint import PRETRAINED_CONFIG, SAFETENSORS_RAW, SAFETENSORS_WEIGHTS
    from ncsn_fast.ema import unwrap_model
    from ncsn_fast.io import atomic_write

    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise ValueError(f"directory: {str(out)!r} exists and is not a folder")
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap_model(model).state_dict().items()}
    meta = {"format": "ncsn_fast", "step": str(step) if step is not None else ""}
    written: dict[str, str] = {}
    if ema:
        unknown = sorted(set(ema) - set(state))
        if unknown:
            raise ValueError(f"ema: weights for parameters the model does not have: {unknown[:5]}")
        averaged = {**state, **{k: v.detach().cpu().contiguous() for k, v in ema.items()}}
        atomic_write(out / SAFETENSORS_WEIGHTS, lambda f: f.write(save(averaged, {**meta, "weights": "ema"})))
        written[SAFETENSORS_WEIGHTS] = "EMA weights"
        if raw:
            atomic_write(out / SAFETENSORS_RAW, lambda f: f.write(save(state, {**meta, "weights": "raw"})))
            written[SAFETENSORS_RAW] = "raw weights"
    else:
        atomic_write(out / SAFETENSORS_WEIGHTS, lambda f: f.write(save(state, {**meta, "weights": "raw"})))
        written[SAFETENSORS_WEIGHTS] = "raw weights (no EMA given)"
    text = yaml.safe_dump(official_config_dict(config), sort_keys=False).encode()
    atomic_write(out / PRETRAINED_CONFIG, lambda f: f.write(text))
    written[PRETRAINED_CONFIG] = "config (official schema)"
    return written


def from_pretrained(
    directory: str | os.PathLike, ema: bool = True, device: torch.device | str = "cpu"
) -> tuple[nn.Module, Config]:
    """The model (eval mode) and config of a :func:`save_pretrained` directory, read without ``torch.load``.

    ``ema=False`` loads ``model_raw.safetensors`` (CheckpointError when the directory has none). Errors name the
    file: a missing config.yaml, a truncated file, or weights of another architecture (first mismatched keys)."""
    from ncsn_fast.checkpoint import SAFETENSORS_RAW, load_state, read_safetensors

    d = Path(directory)
    ckpt = read_safetensors(d)
    if not ema:
        if not (d / SAFETENSORS_RAW).is_file():
            raise CheckpointError(f"ema: {str(d)!r} holds no raw weights ({SAFETENSORS_RAW}); only EMA weights")
        ckpt = {**read_safetensors(d / SAFETENSORS_RAW), "config": ckpt["config"]}
    try:
        cfg = load_config(ckpt["config"] or {})
    except ConfigError as exc:
        raise CheckpointError(f"{str(d / 'config.yaml')!r}: {exc}") from None
    model = build_model(cfg)
    load_state(model, ckpt, f"weights {str(d)!r}", ema=ema)
    return model.to(device).eval(), cfg
