"""Argument checks shared by the library's public functions: one error style, naming the parameter and the value.

Every error is a ``ValueError`` (or ``TypeError``) whose message starts with ``name:``, the parameter's name, so
that the command line can map it to its flag (``n_steps_each`` → ``--steps``) without re-checking anything.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import torch


def check_int(name: str, value: Any, minimum: int | None = 1, maximum: int | None = None) -> int:
    """An integer (bools refused) within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}: must be at most {maximum}, got {value}")
    return value


def check_positive(name: str, value: Any, allow_zero: bool = False) -> float:
    """A finite number > 0 (≥ 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: must be {'≥ 0' if allow_zero else 'positive'} and finite, got {value}")
    return v


def check_choice(name: str, value: Any, choices: Collection[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: unknown {value!r}; choose one of {', '.join(map(str, choices))}")
    return value


def check_device(name: str, value: str | torch.device | None) -> torch.device:
    """A torch device that exists here: 'cpu', 'cuda', 'cuda:1' (index checked), 'mps' …"""
    try:
        dev = torch.device(value if value is not None else "cpu")
    except (RuntimeError, TypeError):
        raise ValueError(f"{name}: unknown device {value!r} (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}: {str(value)!r} asked for but no CUDA device is available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}: {str(value)!r} but only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{name}: {str(value)!r} asked for but MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{name}: unsupported device {str(value)!r} (cpu, cuda, cuda:N)")
    return dev


def check_images(name: str, x: Any, channels: int | None = None) -> torch.Tensor:
    """A floating-point batch (N, C, H, W) with N ≥ 1 (and C = ``channels`` when given)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor (N, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if x.dim() != 4 or x.shape[0] < 1:
        raise ValueError(f"{name}: expected a non-empty batch (N, C, H, W), got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels, got shape {tuple(x.shape)}")
    return x
