"""Triton kernels of ncsn-fast, exposed as torch custom ops through torch.library.triton_op (torch.compile sees
through them). Imported only when triton is installed."""

from __future__ import annotations

import contextlib

import torch


def launch_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the *current* CUDA device, not on its arguments' (a tensor on cuda:1 would run on cuda:0):
    every launch sits in this context, which makes ``t``'s device current (nothing on CPU, the interpreter)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()
