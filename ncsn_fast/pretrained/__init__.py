"""Weights shipped inside the package.

``digits.pt``: NCSNv2 (ngf 32, 16×16 grayscale, L = 49) trained on the scikit-learn digits with
``ncsn-fast train --config digits`` — EMA weights only, in the library's checkpoint format with its config.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from torch import nn

from ncsn_fast.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from ncsn_fast.config import Config, load_config
from ncsn_fast.models import build_model

BUNDLED = ("digits",)


def pretrained_path(name: str = "digits") -> Path:
    if name not in BUNDLED:
        raise ValueError(f"name: no bundled model {name!r}; bundled: {BUNDLED}")
    path = Path(str(resources.files("ncsn_fast.pretrained").joinpath(f"{name}.pt")))
    if not path.is_file():
        raise CheckpointError(f"bundled weights {path} are missing from this installation")
    return path


def config_from_checkpoint(path: str | Path) -> Config:
    ckpt = read_checkpoint(path)
    if not ckpt.get("config"):
        raise CheckpointError(f"checkpoint {str(path)!r} carries no config: pass --config (preset or YAML) with it")
    return load_config(ckpt["config"])


def load_pretrained(name: str = "digits") -> tuple[nn.Module, Config]:
    """The bundled model (EMA weights, eval mode) and its config."""
    path = pretrained_path(name)
    cfg = config_from_checkpoint(path)
    model = build_model(cfg)
    load_checkpoint(model, path, ema=False)  # the file holds the EMA weights as its model weights
    return model.eval(), cfg


def export_pretrained(checkpoint: str | Path, out: str | Path, ema: bool = True) -> Path:
    """Write a training checkpoint's weights (EMA by default) and config as a small inference checkpoint."""
    from ncsn_fast.checkpoint import save_checkpoint

    cfg = config_from_checkpoint(checkpoint)
    model = build_model(cfg)
    info = load_checkpoint(model, checkpoint, ema=ema)
    return save_checkpoint(out, model=model.state_dict(), config=cfg.to_dict(), step=info.get("step"), ema=None)
