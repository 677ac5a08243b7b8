"""Models from files: the bundled digits model, checkpoints, training workdirs, safetensors directories, and the
conversion of a checkpoint into a :func:`save_pretrained` directory (:func:`convert`, ``ncsn-fast convert``).

``digits/``: NCSNv2 (ngf 32, 16×16 grayscale, L = 49) trained on the scikit-learn digits with
``ncsn-fast train --config digits`` — its EMA weights as ``model.safetensors`` beside ``config.yaml`` (a
:func:`save_pretrained` directory: no pickle in the package).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ncsn_fast.checkpoint import (
    CheckpointError,
    checkpoint_step,
    is_safetensors,
    load_checkpoint,
    load_state,
    read_checkpoint,
)
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


RUN_CONFIG = "config.yml"  # what the official main.py writes into each run folder (exp/logs/<doc>/config.yml)


def _no_config(path: Path) -> CheckpointError:
    beside = path.parent / RUN_CONFIG
    hint = f" ({str(beside)!r} is beside it)" if beside.is_file() else ""
    return CheckpointError(
        f"config: checkpoint {str(path)!r} carries no config; pass one (a preset or YAML file){hint}"
    )


def config_from_checkpoint(path: str | os.PathLike) -> Config:
    ckpt = read_checkpoint(path)
    if not ckpt.get("config"):
        raise _no_config(Path(path))
    return load_config(ckpt["config"])


def _run_folder_config(folder: Path, param: str) -> Config:
    """The run folder's own config.yml (official ncsn/ncsnv2 Namespace tags and the original schema included),
    announced in one line; CheckpointError naming ``param`` when it is invalid."""
    import warnings

    path = folder / RUN_CONFIG
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        text, head = str(exc), f"config: {str(path)!r} "
        detail = text[len(head) :] if text.startswith(head) else f"is invalid: {text}"  # "line 3: …", "is not valid …"
        raise CheckpointError(f"{param}: the run folder's config {str(path)!r} {detail}") from None
    warnings.warn(f"config: not given; using the run folder's own {str(path)!r}", stacklevel=4)
    return cfg


def checkpoint_and_config(
    ckpt: str | os.PathLike, cfg: Config | None, param: str = "ckpt"
) -> tuple[Path, dict, Config, str]:
    """(the checkpoint file, its :func:`read_checkpoint` dict, the config, where that config came from) for a
    checkpoint a user names with or without a config.

    ``cfg`` None: a run folder's own ``config.yml`` (as the official ``main.py`` writes it, beside
    ``checkpoint_<step>.pth``; read first, so its ``sampling.ckpt_id`` picks the checkpoint), else the config
    stored in the checkpoint. CheckpointError naming ``param`` for an invalid one, and naming ``config`` when there
    is none.
    """
    p = Path(ckpt)
    origin = "given"
    if cfg is None and p.is_dir() and not is_safetensors(p) and (p / RUN_CONFIG).is_file():
        cfg, origin = _run_folder_config(p, param), f"the run folder's {RUN_CONFIG}"
    path = resolve_checkpoint(p, cfg.sampling.ckpt_id if cfg is not None else None)
    state = read_checkpoint(path)
    if cfg is None:
        if not state.get("config"):
            raise _no_config(path)
        try:
            cfg = load_config(state["config"])
        except ConfigError as exc:
            raise CheckpointError(f"{param}: the config stored in {str(path)!r} is invalid: {exc}") from None
        origin = "the config stored in the checkpoint"
    return path, state, cfg, origin


def load_pretrained(name: str = "digits") -> tuple[nn.Module, Config]:
    """The bundled model (EMA weights, eval mode) and its config."""
    return from_pretrained(pretrained_path(name))


def resolve_checkpoint(path: str | os.PathLike, ckpt_id: int | None = None) -> Path:
    """A checkpoint file or save_pretrained folder as it is, or the one to use in a training workdir or an official
    run folder:
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

    ``config``: a preset, a YAML file or a Config (default: the checkpoint's own, or for a run folder of the
    official code its ``config.yml``, with a one-line warning saying so); it is read first, so a bad config is
    reported before anything about the checkpoint. ``ckpt``: a checkpoint file, a training workdir or official run
    folder (its ``sampling.ckpt_id`` checkpoint, else the latest ``checkpoint_<step>.pth``), or None for the bundled
    digits model — which a config may only accompany when it describes that same model (the file
    ``ncsn-fast configure digits`` writes does). ``ema``: the EMA weights (default) or the raw ones. Raises
    ConfigError / CheckpointError naming ``config`` or ``ckpt``; weights of another architecture name the
    ``model.name`` that fits them.
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
        model = build_model(cfg)
        load_checkpoint(model, path, ema=ema, adopt_schedule=adopt_schedule)
        return model.to(device).eval(), cfg, path
    path, state, cfg, _ = checkpoint_and_config(ckpt, cfg)
    model = build_model(cfg)
    # A config that trains without EMA (model.ema: false, as the original NCSN code) expects raw weights: no warning.
    use_ema = ema and (cfg.model.ema or bool(state.get("ema")))
    load_state(model, state, f"checkpoint {str(path)!r}", use_ema, adopt_schedule)
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
    from ncsn_fast.checkpoint import SAFETENSORS_RAW, read_safetensors

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


FORMAT_NAMES = {
    "official": "official checkpoint [model_state, optimizer, epoch, step, ema_shadow]",
    "ncsn_original": "original NCSN checkpoint [model_state, optimizer]",
    "ncsn_fast": "ncsn-fast checkpoint",
    "state_dict": "bare state dict",
    "safetensors": "safetensors weights",
}


@dataclass
class Conversion:
    """What :func:`convert` read and wrote: the checkpoint file used, its format and step, and for each file written
    (``config.yaml``, ``model.safetensors``, ``model_raw.safetensors``) which weights or settings went into it."""

    source: Path
    kind: str
    step: int | None
    directory: Path
    written: dict[str, str]
    left_out: list[str] = field(default_factory=list)

    def report(self) -> list[str]:
        step = f", step {self.step}" if self.step is not None else ""
        width = max(len(name) for name in self.written)
        lines = [f"read {self.source} ({self.kind}{step})", f"wrote {self.directory}/"]
        lines += [f"  {name:<{width}}  ← {what}" for name, what in self.written.items()]
        lines += [f"  not converted: {what}" for what in self.left_out]
        return lines


def _check_ema(model: nn.Module, shadow: dict[str, torch.Tensor], where: str) -> None:
    """The EMA shadow against the model's parameters: unknown names and shape mismatches, first ones named."""
    params = dict(model.named_parameters())
    unknown = [k for k in shadow if k not in params]
    shapes = [f"{k}: {tuple(v.shape)} vs model {tuple(params[k].shape)}" for k, v in shadow.items()
              if k in params and v.shape != params[k].shape]  # fmt: skip
    if unknown or shapes:
        parts = [f"{len(unknown)} unknown parameters (first: {', '.join(unknown[:5])})"] if unknown else []
        parts += [f"{len(shapes)} shape mismatches (first: {'; '.join(shapes[:3])})"] if shapes else []
        raise CheckpointError(f"{where}: its EMA weights do not fit {type(model).__name__}: " + "; ".join(parts))


def convert(
    checkpoint: str | os.PathLike,
    directory: str | os.PathLike,
    config: str | os.PathLike | Config | None = None,
    raw: bool = False,
    adopt_schedule: bool = False,
) -> Conversion:
    """An official or ncsn-fast checkpoint (``.pth``), a ``.safetensors`` file, a save_pretrained folder or a
    training workdir (its ``sampling.ckpt_id`` checkpoint, else the latest) → a :func:`save_pretrained` directory:
    ``config.yaml`` (official schema) and ``model.safetensors`` with the EMA weights (the raw ones when the
    checkpoint has no EMA); ``raw`` also writes the raw weights to ``model_raw.safetensors``.

    ``config``: a preset, YAML file or Config (default: the one stored in the checkpoint; official checkpoints
    store none). Everything is read and checked before anything is written: the architecture (first mismatched
    keys named), the σ schedule (see :func:`~ncsn_fast.checkpoint.check_schedule`; ``adopt_schedule``), the EMA
    shadow. A ``model_raw.safetensors`` left in ``directory`` by an earlier conversion is removed unless ``raw``
    writes a new one (it would describe another checkpoint). Raises ConfigError / CheckpointError / ValueError
    naming ``config``, ``checkpoint``/``ckpt``, ``raw`` or ``directory``.
    """
    from ncsn_fast.checkpoint import SAFETENSORS_RAW, read_safetensors

    cfg = load_config(config) if config is not None else None
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise ValueError(f"directory: {str(out)!r} exists and is not a folder")
    path, ckpt, cfg, config_origin = checkpoint_and_config(checkpoint, cfg, "checkpoint")
    where = f"checkpoint {str(path)!r}"
    if config is not None:
        config_origin = f"the config {config if not isinstance(config, Config) else 'given'}"
    model = build_model(cfg)
    load_state(model, ckpt, where, ema=False, adopt_schedule=adopt_schedule)  # the raw weights: keys, shapes, σ
    kind = "save_pretrained folder" if path.is_dir() else FORMAT_NAMES.get(ckpt["format"], str(ckpt["format"]))
    written: dict[str, str]
    if ckpt.get("weights") == "ema":  # a safetensors file or folder of EMA weights: no shadow, maybe a raw file
        ema = {k: p.detach().clone() for k, p in model.named_parameters()}
        raw_file = path / SAFETENSORS_RAW if path.is_dir() else None
        if raw and (raw_file is None or not raw_file.is_file()):
            raise CheckpointError(f"raw: {where} holds only EMA weights; there are no raw weights to write")
        if raw:
            load_state(model, read_safetensors(raw_file), f"checkpoint {str(raw_file)!r}", ema=False)
        ema_what, raw_what = f"EMA weights (the weights of {path.name})", f"raw weights ({SAFETENSORS_RAW})"
    else:
        ema = ckpt.get("ema") or None
        if ema is not None:
            _check_ema(model, ema, where)
        if raw and ema is None:
            raise CheckpointError(f"raw: {where} has no EMA weights; its raw weights go to model.safetensors")
        ema_what = "EMA weights (the checkpoint's EMA shadow; buffers from its model weights)"
        raw_what = "raw weights (the checkpoint's model weights)"
    step = ckpt.get("step")
    from ncsn_fast.io import Staged

    with Staged() as stage:  # the files replace an earlier conversion's together, only once all are written
        written = save_pretrained(
            model, stage.folder(out), cfg, ema=ema, raw=raw, step=step if isinstance(step, int) else None
        )
        if ema is not None:
            written["model.safetensors"] = ema_what
            if raw:
                written[SAFETENSORS_RAW] = raw_what
        else:
            written["model.safetensors"] = "raw weights (the checkpoint has no EMA weights)"
        written["config.yaml"] = f"config, official schema ({config_origin})"
        stale = out / SAFETENSORS_RAW
        if SAFETENSORS_RAW not in written and stale.is_file():
            stage.remove(stale)  # at the commit, with the new files
            written[SAFETENSORS_RAW] = "removed: raw weights of an earlier conversion into this folder"
    left_out = [
        what for key, what in (("optimizer", "optimizer state"), ("rng", "random-number states"), ("epoch", "epoch"))
        if ckpt.get(key) is not None
    ]  # fmt: skip
    if left_out:
        left_out = [", ".join(left_out) + " (training state: resume from the original checkpoint)"]
    if path.is_dir() and (path / SAFETENSORS_RAW).is_file() and not raw:
        left_out.append(f"the folder's {SAFETENSORS_RAW} (raw=True / --raw converts it too)")
    return Conversion(path, kind, step if isinstance(step, int) else None, out, written, left_out)
