"""Ops of ncsn-fast. Today only the plain-PyTorch reference definitions exist; the fused kernels (Triton, CUDA,
CPU C++) plug in behind the same names."""

from ncsn_fast.ops import reference
from ncsn_fast.ops.reference import instance_norm_pp, langevin_step

__all__ = ["reference", "instance_norm_pp", "langevin_step"]
