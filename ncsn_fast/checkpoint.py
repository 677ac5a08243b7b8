"""Checkpoints: the official list format and the library's own dict format, always ``weights_only=True``.

Official: ``torch.save([model_state, optimizer_state, epoch, step, ema_shadow])`` with ``module.``-prefixed
model keys (saved from nn.DataParallel). Ours: a dict ``{"format": "ncsn_fast", "model", "ema", "optimizer",
"step", "config", "rng", ...}`` written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from ncsn_fast.ema import unwrap_model

FORMAT = "ncsn_fast"
_SAVE_DELAY = float(os.environ.get("NCSN_FAST_TEST_SAVE_DELAY", "0") or 0)


class CheckpointError(ValueError):
    """The file is not a checkpoint, is damaged, or holds another architecture; the message says which."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file into the library's dict form (official lists are converted)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint: no such file {str(p)!r}")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {str(p)!r}: refused to load: it holds Python objects other than tensors and plain "
            f"containers (weights_only=True protects against arbitrary code execution). {first}"
        ) from None
    except Exception as exc:  # torch raises many types for damaged files (KeyError, EOFError, RuntimeError...)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {str(p)!r}: not a readable torch file (truncated or corrupt?): {first}"
        ) from None
    return normalize_checkpoint(raw, str(p))


def normalize_checkpoint(raw: Any, where: str = "checkpoint") -> dict[str, Any]:
    if isinstance(raw, (list, tuple)):
        if len(raw) < 1 or not isinstance(raw[0], dict):
            raise CheckpointError(
                f"{where}: a list that is not the official [model_state, optimizer, epoch, step, ema] form"
            )
        model_state = {k.removeprefix("module."): v for k, v in raw[0].items()}
        ema = raw[4] if len(raw) > 4 and isinstance(raw[4], dict) and raw[4] else None
        return {
            "format": "official",
            "model": model_state,
            "optimizer": raw[1] if len(raw) > 1 else None,
            "epoch": raw[2] if len(raw) > 2 else None,
            "step": raw[3] if len(raw) > 3 else None,
            "ema": ema,
        }
    if isinstance(raw, dict):
        if raw.get("format") == FORMAT or "model" in raw:
            out = dict(raw)
            out["model"] = {k.removeprefix("module."): v for k, v in raw["model"].items()}
            return out
        if raw and all(isinstance(v, torch.Tensor) for v in raw.values()):  # a bare state_dict
            return {"format": "state_dict", "model": {k.removeprefix("module."): v for k, v in raw.items()}}
    raise CheckpointError(f"{where}: not a checkpoint (got {type(raw).__name__} without model weights)")


def _check_keys(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    expected = unwrap_model(model).state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:5])})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (first: {'; '.join(mismatched[:3])})")
        raise CheckpointError(
            f"{where} holds another architecture than {type(unwrap_model(model)).__name__}: " + "; ".join(parts)
        )


def load_checkpoint(model: nn.Module, path: str | os.PathLike, ema: bool = True) -> dict[str, Any]:
    """Load weights into ``model`` (strict); with ``ema=True`` the EMA shadow replaces the parameters.

    Returns the checkpoint dict (step, optimizer, config ... when present). A checkpoint without EMA weights
    loads its raw weights when ``ema=True`` is asked, with a warning.
    """
    ckpt = read_checkpoint(path)
    target = unwrap_model(model)
    _check_keys(target, ckpt["model"], f"checkpoint {str(path)!r}")
    target.load_state_dict(ckpt["model"], strict=True)
    if ema:
        shadow = ckpt.get("ema")
        if shadow:
            params = dict(target.named_parameters())
            bad = [k for k in shadow if k not in params]
            if bad:
                raise CheckpointError(f"checkpoint {str(path)!r}: EMA weights for unknown parameters: {bad[:5]}")
            with torch.no_grad():
                for k, v in shadow.items():
                    params[k].copy_(v)
        else:
            import warnings

            warnings.warn(f"checkpoint {str(path)!r} has no EMA weights; using the raw weights", stacklevel=2)
    return ckpt


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(f)`` on a temp file in the same folder, fsync, rename onto ``path``, fsync the folder.

    A crash at any moment leaves either the previous file or the complete new one, never a torn file; an exception
    in ``write`` removes the temp file and leaves ``path`` as it was.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if _SAVE_DELAY:  # fault-injection hook for the crash tests: widen the window between write and rename
            time.sleep(_SAVE_DELAY)
        os.replace(tmp, p)
        dir_fd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def save_checkpoint(path: str | os.PathLike, **fields: Any) -> Path:
    """Write ``{"format": "ncsn_fast", **fields}`` atomically (:func:`atomic_write`)."""
    payload = {"format": FORMAT, **fields}
    return atomic_write(path, lambda f: torch.save(payload, f))
