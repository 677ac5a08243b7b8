"""The one place where an op's backend is chosen.

``auto``: a CUDA tensor goes to the CUDA extension, else to Triton; a CPU tensor to the CPU extension; the
plain-PyTorch reference when nothing compiled is there. ``with use_backend(name):`` and, outside it,
``NCSN_FAST_BACKEND`` (environment) replace ``auto``; a ``backend=`` argument other than ``auto`` wins over both.
``use_backend("reference")`` also makes the layers compute as the official code does (e.g. the 5×5 max pooling
unfactored), which is what the benchmarks time as "reference". Triton runs on CPU tensors only under
``TRITON_INTERPRET=1`` (the interpreter, for tests), never by ``auto``.

A missing extension, or one built against another torch, is one warning line at import, never an import error.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import os
import warnings

import torch

from ncsn_fast.vocab import OP_BACKENDS as BACKENDS

ENV_VAR = "NCSN_FAST_BACKEND"
# The innermost use_backend() of the current thread / task (a ContextVar: threads and asyncio tasks each see their own)
_OVERRIDE: contextvars.ContextVar[str | None] = contextvars.ContextVar("ncsn_fast_backend", default=None)


def _validate(name: str, what: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{what}: unknown backend {name!r}; choose one of {BACKENDS}")
    return name


@contextlib.contextmanager
def use_backend(name: str):
    """Within the block, ops called with ``backend="auto"`` use ``name``."""
    token = _OVERRIDE.set(_validate(name, "backend"))
    try:
        yield
    finally:
        _OVERRIDE.reset(token)


def requested() -> str:
    """What ``auto`` means now: the innermost use_backend, else NCSN_FAST_BACKEND, else auto."""
    override = _OVERRIDE.get()
    if override is not None:
        return override
    return _validate(os.environ.get(ENV_VAR, "auto") or "auto", ENV_VAR)


def reference_only() -> bool:
    """Whether the reference backend was asked for globally (layers then compute as the official code)."""
    return requested() == "reference"


@functools.cache
def extension_error() -> str | None:
    """Loads ncsn_fast._C (its op registrations) once; returns why it is unusable, or None when it loaded."""
    if os.environ.get("NCSN_FAST_DISABLE_EXT") == "1":  # tests of the fallback path
        return "disabled by NCSN_FAST_DISABLE_EXT=1"
    try:
        import ncsn_fast._C  # noqa: F401
    except ImportError as e:  # absent, or built against another torch (undefined symbols)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        warnings.warn(
            f"ncsn_fast._C is not usable ({first[:160]}); ops fall back to Triton / the PyTorch reference. "
            "Rebuild with `pip install --no-build-isolation -e .`",
            RuntimeWarning,
            stacklevel=2,
        )
        return first
    return None


def _assume_constant_result(fn):
    """``torch.compiler.assume_constant_result`` without its import of torch._dynamo (0.5–2.8 s of every command's
    startup, by machine; issue 23): that decorator only sets this attribute, which Dynamo reads when it meets the
    call (tests/test_structure.py checks the two agree). torch.compile then takes the answer as a constant."""
    fn._dynamo_marked_constant = True
    return fn


@_assume_constant_result
def has_kernel(op: str, device_type: str) -> bool:
    """Whether the compiled extension registered ``ncsn_fast::op`` for a device type ('cpu' or 'cuda')."""
    if extension_error() is not None:
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"ncsn_fast::{op}", key)


CUDA_OPS = ("instance_norm_pp_elu", "instance_norm_pp_elu_backward", "sde_step_", "langevin_step_")


def missing_cuda_kernels() -> list[str]:
    """The ops of csrc/cuda/ that ncsn_fast._C has no CUDA kernel for (all of them for a CPU-only build)."""
    return [op for op in CUDA_OPS if not has_kernel(op, "cuda")]


@functools.cache
def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_at_import() -> bool:
    """Whether the op modules define their Triton ops when imported: only where Triton can run now (a CUDA
    device, or ``TRITON_INTERPRET=1``). Defining a ``triton_op`` imports torch._inductor (2.6 s of every
    command's startup on a CPU, issue 23); elsewhere an op defines it on first use of ``backend="triton"``."""
    return triton_usable("cuda" if torch.cuda.is_available() else "cpu")


@_assume_constant_result
def triton_usable(device_type: str) -> bool:
    if not triton_importable():
        return False
    if device_type == "cuda":
        return True
    return device_type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def available(op: str, device_type: str) -> list[str]:
    """Backends that can run ``op`` on tensors of ``device_type``, best first."""
    names = []
    if has_kernel(op, device_type):
        names.append(device_type)
    if triton_usable(device_type):
        names.append("triton")
    names.append("reference")
    return names


def choose(op: str, device: torch.device, backend: str = "auto") -> str:
    """The backend to run ``op`` with on ``device``; an explicit choice that cannot run is an error."""
    if _validate(backend, "backend") == "auto":
        backend = requested()
    can = available(op, device.type)
    if backend == "auto":
        # Triton on CPU tensors is the interpreter: correct but slow, so auto never picks it there.
        return next(b for b in can if not (b == "triton" and device.type == "cpu"))
    if backend not in can:
        raise RuntimeError(
            f"backend={backend!r} cannot run {op} on a {device.type} tensor here; available: {can}"
            + (f" (ncsn_fast._C: {extension_error()})" if backend in ("cpu", "cuda") and extension_error() else "")
        )
    return backend


def kernel_memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout the kernels compute in: channels-last when x is, else NCHW (other strides are copied to it)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
