"""The Langevin update in Triton: x ← x + α·s + √(2α)·z, the (c, a, b) = (1, α, √(2α)) case of the SDE step's
kernel (triton/sde_step.py, which documents the noise and the grid): one kernel serves both ops."""

from __future__ import annotations

import torch
from torch.library import triton_op

from ncsn_fast.ops.triton.sde_step import launch


@triton_op("ncsn_fast::langevin_step_triton_", mutates_args={"x", "stats"})
def langevin_step_triton_(
    x: torch.Tensor, score: torch.Tensor, step_size: float, seed: int, offset: int, stats: torch.Tensor | None
) -> None:
    # √(2α) in double then rounded once to float32 at the launch, as before (and as csrc/sde_step.h does).
    launch(x, score, 1.0, float(step_size), float((2.0 * step_size) ** 0.5), seed, offset, stats)
