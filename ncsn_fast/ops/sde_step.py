"""The fused stochastic update: ``sde_step_(x, drift, c, a, b, seed, offset, stats=None, backend="auto")``.

In place on x: x ← c·x + a·d + b·z, z ~ N(0, I) generated inside the kernel from Philox4x32-10 keyed by ``seed``
at counter (element group, ``offset``), exactly as :func:`ncsn_fast.ops.langevin_step_` draws it — the noise never
exists as a tensor, and one (seed, offset) gives the same z on the CPU, CUDA and Triton backends and in every
sampler built on this op (layout: csrc/philox.h; PyTorch definition: :func:`ncsn_fast.ops.reference.philox_normal`).
Samplers with their (c, a, b) per step:

- annealed Langevin (NCSN): (1, α, √(2α)) — :func:`langevin_step_` is this case, on the same kernels;
- reverse-diffusion predictor (VE SDE, σ_i → σ_{i+1}, d the score at σ_i): (1, σ_i² − σ_{i+1}², √(σ_i² − σ_{i+1}²));
- DPM-Solver++(2M) SDE (h = λ_{i+1} − λ_i, λ = −ln σ, d the denoised estimate D):
  (σ_{i+1}/σ_i·e^{−ηh}, −expm1(−h − ηh), σ_{i+1}·√(−expm1(−2ηh)));
- pure re-noising (churn): a = 0. The drift is still read (0·inf would be NaN): pass any finite tensor of x's
  shape that does not overlap x, e.g. the last score or ``torch.zeros_like(x)``.

Shapes and dtypes: x (N, ...) float32, contiguous (its NCHW element order numbers the noise), N ≥ 1; drift of x's
shape, float32, bfloat16 or float16 (a network under autocast; x stays float32, the arithmetic is float32), not
overlapping x in memory (the schema declares only x and stats written). c (dimensionless), a (x's units per drift
unit) and b (x's units; z is dimensionless): real numbers of any sign, finite in float32 (the kernels' precision,
to which they are rounded). seed, offset: integers in [0, 2^63) (a sampler passes its seed and its global step
index, so no two steps share noise). b = 0 is allowed: z is then still drawn and contributes nothing to x, but
stats' Σz² reports it (the sums describe the draw, not the update).

stats, when given: a contiguous (N, 3) float32 tensor on x's device, overwritten with per-sample Σd², Σz² and Σx²
(x after the update), computed in the same pass — for diagnostics and for catching a diverging chain cheaply.

Errors (each names the argument and the value): TypeError for a wrong dtype or a non-number coefficient,
ValueError for shapes, layout, devices, non-finite coefficients, seeds/offsets out of range and an unknown backend
name, RuntimeError for a backend that cannot run here (the compiled op, called directly as
``torch.ops.ncsn_fast.sde_step_``, checks its inputs too and raises RuntimeError with the same names).
"""

from __future__ import annotations

import math
import numbers

import torch

from ncsn_fast.ops import _backend, reference

OP = "sde_step_"
SEED_LIMIT = 2**63
FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max


def check_tensors(
    x: torch.Tensor, drift: torch.Tensor, drift_name: str, seed: int, offset: int, stats: torch.Tensor | None
) -> None:
    """The checks sde_step_ and langevin_step_ share (``drift_name`` is "drift" or "score" in the messages)."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        raise TypeError(f"x: expected a float32 tensor (the sampler state), got {getattr(x, 'dtype', type(x))}")
    if not x.is_contiguous():
        raise ValueError("x: must be contiguous (its NCHW element order numbers the noise); call .contiguous()")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x: needs a non-empty batch dimension, got shape {tuple(x.shape)}")
    if not isinstance(drift, torch.Tensor) or drift.shape != x.shape:
        raise ValueError(f"{drift_name}: shape {tuple(getattr(drift, 'shape', ()))} differs from x's {tuple(x.shape)}")
    if drift.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"{drift_name}: expected float32, bfloat16 or float16, got {drift.dtype}")
    if drift.device != x.device:
        raise ValueError(f"{drift_name}: on {drift.device} but x is on {x.device}")
    for name, v in (("seed", seed), ("offset", offset)):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < SEED_LIMIT:
            raise ValueError(f"{name}: must be an integer in [0, 2^63), got {v!r}")
    if stats is not None:
        if stats.dtype != torch.float32 or tuple(stats.shape) != (x.shape[0], 3) or stats.device != x.device:
            raise ValueError(
                f"stats: expected a float32 tensor of shape ({x.shape[0]}, 3) on {x.device}, got "
                f"{stats.dtype} {tuple(stats.shape)} on {stats.device}"
            )
        if not stats.is_contiguous():
            raise ValueError("stats: must be contiguous")


def check_coefficient(name: str, v: float) -> float:
    """``v`` as a float that is finite in float32 (the kernels' precision), else an error naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):  # Python and NumPy numbers; not tensors
        raise TypeError(f"{name}: expected a float, got {type(v).__name__} {v!r}")
    v = float(v)
    if not (math.isfinite(v) and abs(v) <= FLOAT32_MAX):
        raise ValueError(f"{name}: must be finite in float32, got {v}")
    return v


def sde_step_(
    x: torch.Tensor,
    drift: torch.Tensor,
    c: float,
    a: float,
    b: float,
    seed: int,
    offset: int,
    stats: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """x ← c·x + a·drift + b·z in place, z ~ N(0, I) from Philox(seed, offset) (see the module docstring for
    shapes, units, the b = 0 convention and the errors raised); returns x.

    ``backend``: "auto" (the compiled kernel for x's device, else the reference), "cpu", "cuda", "triton" or
    "reference" (see :mod:`ncsn_fast.ops._backend`)."""
    c, a, b = check_coefficient("c", c), check_coefficient("a", a), check_coefficient("b", b)
    check_tensors(x, drift, "drift", seed, offset, stats)
    drift = drift.contiguous()
    name = _backend.choose(OP, x.device, backend)
    if name == "reference":
        reference.sde_step_(x, drift, c, a, b, seed, offset, stats)
    elif name == "triton":
        if not _triton_defined:
            _define_triton()
        torch.ops.ncsn_fast.sde_step_triton_(x, drift, c, a, b, seed, offset, stats)
    else:
        torch.ops.ncsn_fast.sde_step_(x, drift, c, a, b, seed, offset, stats)
    return x


def _register() -> None:
    if _backend.extension_error() is None and hasattr(torch.ops.ncsn_fast, OP):

        @torch.library.register_fake(f"ncsn_fast::{OP}")
        def _fake(x, drift, c, a, b, seed, offset, stats):  # mutates x and stats, returns nothing
            return None

    if _backend.triton_at_import():
        _define_triton()


_triton_defined = False


def _define_triton() -> None:
    """The Triton op (at import where Triton can run, else on first use: see _backend.triton_at_import)."""
    global _triton_defined
    from ncsn_fast.ops.triton import sde_step as _tri  # noqa: F401  (defines the triton op)

    _triton_defined = True


_register()
