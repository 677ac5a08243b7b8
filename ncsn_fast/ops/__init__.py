"""Ops of ncsn-fast: typed entry points that pick a backend (compiled CPU/CUDA kernels, Triton, or the
plain-PyTorch reference in ``reference``; see ``_backend``)."""

from ncsn_fast.ops import reference
from ncsn_fast.ops._backend import BACKENDS, available
from ncsn_fast.ops.instance_norm_pp_elu import instance_norm_pp_elu
from ncsn_fast.ops.langevin_step import langevin_step_
from ncsn_fast.ops.sde_step import sde_step_

__all__ = [
    "BACKENDS",
    "available",
    "reference",
    "instance_norm_pp_elu",
    "langevin_step_",
    "sde_step_",
]
