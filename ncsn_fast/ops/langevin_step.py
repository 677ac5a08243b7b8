"""The fused Langevin update: ``langevin_step_(x, score, step_size, seed, offset, stats=None, backend="auto")``.

In place on x (float32, contiguous): x ← x + α·s + √(2α)·z, z ~ N(0, I) generated inside the kernel from
Philox4x32-10 keyed by ``seed`` at counter (element group, ``offset``) — the noise never exists as a tensor, and
the same (seed, offset) gives the same z on the CPU, CUDA and Triton backends (the layout is in csrc/philox.h; the
PyTorch definition is :func:`ncsn_fast.ops.reference.philox_normal`). ``score`` may be bf16/fp16 (a network under
autocast); x stays float32. With ``stats`` (N, 3) float32, per-sample Σs², Σz² and Σx² (after the update) are
written in the same pass, for diagnostics and for catching a diverging chain without an extra pass.

This is :func:`ncsn_fast.ops.sde_step_` with (c, a, b) = (1, α, √(2α)): both ops run the same kernel on every
backend (csrc/cpu/sde_step.cpp, csrc/cuda/sde_step.cu, triton/sde_step.py, reference.sde_step_), so a Langevin
step and ``sde_step_(x, s, 1, α, math.sqrt(2 * α), seed, offset)`` give the same x bit for bit. It keeps its own
schema so that existing callers and compiled graphs, and its step_size ≥ 0 check, stay as they were.
"""

from __future__ import annotations

import math

import torch

from ncsn_fast.ops import _backend, reference
from ncsn_fast.ops.sde_step import check_tensors

OP = "langevin_step_"


def check_args(
    x: torch.Tensor, score: torch.Tensor, step_size: float, seed: int, offset: int, stats: torch.Tensor | None
) -> None:
    check_tensors(x, score, "score", seed, offset, stats)
    if not (math.isfinite(step_size) and step_size >= 0):
        raise ValueError(f"step_size: must be finite and ≥ 0, got {step_size}")


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
    name = _backend.choose(OP, x.device, backend)
    if name == "reference":
        reference.langevin_step_(x, score, step_size, seed, offset, stats)
    elif name == "triton":
        if not _triton_defined:
            _define_triton()
        torch.ops.ncsn_fast.langevin_step_triton_(x, score, step_size, seed, offset, stats)
    else:
        torch.ops.ncsn_fast.langevin_step_(x, score, step_size, seed, offset, stats)
    return x


def _register() -> None:
    if _backend.extension_error() is None and hasattr(torch.ops.ncsn_fast, OP):

        @torch.library.register_fake(f"ncsn_fast::{OP}")
        def _fake(x, score, step_size, seed, offset, stats):  # mutates x and stats, returns nothing
            return None

    if _backend.triton_at_import():
        _define_triton()


_triton_defined = False


def _define_triton() -> None:
    """The Triton op (at import where Triton can run, else on first use: see _backend.triton_at_import)."""
    global _triton_defined
    from ncsn_fast.ops.triton import langevin_step as _tri  # noqa: F401  (defines the triton op)

    _triton_defined = True


_register()
