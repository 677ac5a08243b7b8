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


def describe(value: Any) -> str:
    """What an error says a value was: ``a float32 tensor of shape (2, 1, 16, 16)``, ``a numpy.ndarray (uint8) of
    shape (2, 16, 16)``, ``a list``: its type, and its dtype and shape where it has them."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    cls = type(value)
    kind = cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__.split('.')[0]}.{cls.__name__}"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"a {kind} ({dtype}) of shape {tuple(shape)}"
    return f"a {kind}"


def _not_a_tensor(name: str, x: Any, layout: str) -> TypeError:
    fix = f"; convert it with torch.from_numpy({name})" if type(x).__module__.split(".")[0] == "numpy" else ""
    return TypeError(f"{name}: expected a torch.Tensor {layout}, got {describe(x)}{fix}")


def check_batch(name: str, x: Any) -> torch.Tensor:
    """A floating-point tensor (N, ...) with N ≥ 1: a batch for an analytic score or any callable."""
    if not isinstance(x, torch.Tensor):
        raise _not_a_tensor(name, x, "(N, ...)")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor (N, ...), got {describe(x)}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"{name}: expected a non-empty batch (N, ...), got {describe(x)}")
    return x


def check_input_for(fn: Any, name: str, x: Any) -> torch.Tensor:
    """``x`` checked by the model behind ``fn`` (the model itself or one of its bound methods: its ``check_input``,
    e.g. :meth:`~ncsn_fast.models.refinenet.RefineNetScore.check_input`), or as a float batch (:func:`check_batch`)
    for any other callable (an analytic score)."""
    check = getattr(getattr(fn, "__self__", fn), "check_input", None)
    return check(name, x) if callable(check) else check_batch(name, x)


def check_model_input(
    name: str,
    x: Any,
    channels: int,
    divisor: int = 1,
    owner: str = "the model",
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    to_data_space: str = "x.float() / 255",
) -> torch.Tensor:
    """Images (N, ``channels``, H, W), N ≥ 1, floating point, H and W multiples of ``divisor`` (the network's total
    downsampling), in ``dtype`` (unless autocast is on: it casts) on ``device``. One-line errors that name ``name``,
    say what ``x`` was (:func:`describe`) and what ``owner`` takes; ``to_data_space`` is the fix offered for 8-bit
    images. Only shapes, dtypes and devices are looked at: no value is read (no device synchronisation, nothing
    that stops a CUDA graph capture or torch.compile)."""
    layout = f"(N, {channels}, H, W)"
    if not isinstance(x, torch.Tensor):
        raise _not_a_tensor(name, x, layout)
    if not x.is_floating_point():
        fix = f"; for 8-bit images pass {to_data_space}" if x.dtype == torch.uint8 else "; pass floats"
        raise TypeError(
            f"{name}: {owner} takes floating-point images {layout} in its data space, got {describe(x)}{fix}"
        )
    if x.dim() != 4 or x.shape[1] != channels or x.shape[0] < 1:
        raise ValueError(f"{name}: {owner} takes images {layout} with N ≥ 1, got {describe(x)}")
    if x.shape[2] % divisor or x.shape[3] % divisor:
        bad = x.shape[2] if x.shape[2] % divisor else x.shape[3]
        lo = bad - bad % divisor
        fix = f"crop {bad} to {lo} or pad it to {lo + divisor}" if lo else f"pad {bad} to {divisor}"
        raise ValueError(
            f"{name}: {owner} downsamples by {divisor}, so H and W must be multiples of {divisor} ({fix}); got "
            f"{describe(x)}"
        )
    if dtype is not None and x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        fix = str(dtype).removeprefix("torch.")
        raise TypeError(f"{name}: {owner} is in {fix}, got {describe(x)}; pass {name}.to(torch.{fix})")
    if device is not None and x.device != device:
        raise ValueError(f"{name}: {owner} is on {device}, got {describe(x)} on {x.device}; pass {name}.to('{device}')")
    return x


def check_labels(name: str, y: Any, n: int, levels: int, hint: str = "") -> torch.Tensor:
    """Noise-level indices: an integer tensor of shape (``n``,) with values in [0, ``levels``). The values are
    read only for a CPU tensor outside torch.compile (elsewhere reading them would synchronise the device)."""
    want = f"noise-level indices, an integer tensor of shape ({n},) in [0, {levels})"
    if not isinstance(y, torch.Tensor):
        raise _not_a_tensor(name, y, f"of noise-level indices ({n},) in [0, {levels})")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or tuple(y.shape) != (n,):
        raise TypeError(f"{name}: expected {want}, got {describe(y)}{hint}")
    if y.device.type == "cpu" and not torch.compiler.is_compiling():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= levels:
            raise ValueError(f"{name}: expected {want}, got values from {lo} to {hi}")
    return y
