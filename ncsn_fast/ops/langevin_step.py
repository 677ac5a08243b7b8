"""The fused Langevin update: ``langevin_step_(x, score, step_size, seed, offset, stats=None, backend="auto")``.

In place on x (float32, contiguous): x ← x + α·s + √(2α)·z, z ~ N(0, I) generated inside the kernel from
Philox4x32-10 keyed by ``seed`` at counter (element group, ``offset``) — the noise never exists as a tensor, and
the same (seed, offset) gives the same z on the CPU, CUDA and Triton backends (the layout is in csrc/philox.h; the
PyTorch definition is :func:`ncsn_fast.ops.reference.philox_normal`). ``score`` may be bf16/fp16 (a network under
autocast); x stays float32. With ``stats`` (N, 3) float32, per-sample Σs², Σz² and Σx² (after the update) are
written in the same pass, for diagnostics and for catching a diverging chain without an extra pass.
"""

from __future__ import annotations

import math

import torch

from ncsn_fast.ops import _backend, reference

OP = "langevin_step_"
SEED_LIMIT = 2**63


def check_args(
    x: torch.Tensor, score: torch.Tensor, step_size: float, seed: int, offset: int, stats: torch.Tensor | None
) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        raise TypeError(f"x: expected a float32 tensor (the sampler state), got {getattr(x, 'dtype', type(x))}")
    if not x.is_contiguous():
        raise ValueError("x: must be contiguous (its NCHW element order numbers the noise); call .contiguous()")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x: needs a non-empty batch dimension, got shape {tuple(x.shape)}")
    if not isinstance(score, torch.Tensor) or score.shape != x.shape:
        raise ValueError(f"score: shape {tuple(getattr(score, 'shape', ()))} differs from x's {tuple(x.shape)}")
    if score.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"score: expected float32, bfloat16 or float16, got {score.dtype}")
    if score.device != x.device:
        raise ValueError(f"score: on {score.device} but x is on {x.device}")
    if not (math.isfinite(step_size) and step_size >= 0):
        raise ValueError(f"step_size: must be finite and ≥ 0, got {step_size}")
    for name, v in (("seed", seed), ("offset", offset)):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < SEED_LIMIT:
            raise ValueError(f"{name}: must be an integer in [0, 2^63), got {v!r}")
    if stats is not None and (
        stats.dtype != torch.float32 or tuple(stats.shape) != (x.shape[0], 3) or stats.device != x.device
    ):
        raise ValueError(
            f"stats: expected a float32 tensor of shape ({x.shape[0]}, 3) on {x.device}, got "
            f"{stats.dtype} {tuple(stats.shape)} on {stats.device}"
        )


def langevin_step_(
    x: torch.Tensor,
    score: torch.Tensor,
    step_size: float,
    seed: int,
    offset: int,
    stats: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """One Langevin update of x in place (see the module docstring); returns x."""
    step_size = float(step_size)
    check_args(x, score, step_size, seed, offset, stats)
    score = score.contiguous()
    if stats is not None and not stats.is_contiguous():
        raise ValueError("stats: must be contiguous")
    name = _backend.choose(OP, x.device, backend)
    if name == "reference":
        reference.langevin_step_(x, score, step_size, seed, offset, stats)
    elif name == "triton":
        torch.ops.ncsn_fast.langevin_step_triton_(x, score, step_size, seed, offset, stats)
    else:
        torch.ops.ncsn_fast.langevin_step_(x, score, step_size, seed, offset, stats)
    return x


def _register() -> None:
    if _backend.extension_error() is None and hasattr(torch.ops.ncsn_fast, OP):

        @torch.library.register_fake(f"ncsn_fast::{OP}")
        def _fake(x, score, step_size, seed, offset, stats):  # mutates x and stats, returns nothing
            return None

    if _backend.triton_importable():
        from ncsn_fast.ops.triton import langevin_step as _tri  # noqa: F401  (defines the triton op)


_register()
