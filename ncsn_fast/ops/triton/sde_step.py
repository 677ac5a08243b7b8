"""The SDE step in Triton: x ← c·x + a·d + b·z with z from tl.random.philox (Philox4x32-10) at the same counter
layout, uniform mapping, ln/sin/cos polynomials and Box–Muller as csrc/philox.h, so that one (seed, offset) gives
the same noise as the CPU and CUDA kernels (up to float rounding, < 1e-6). ``langevin_step_triton_``
(triton/langevin_step.py) launches this same kernel with (c, a, b) = (1, α, √(2α)).

Grid (N, blocks per sample): a program takes BLOCK Philox groups (4·BLOCK elements) of one sample, masks the
elements outside it, and adds its partial Σd², Σz², Σx² to stats[n] with one atomic add each.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from ncsn_fast.ops.triton import launch_device

BLOCK_GROUPS = 256


@triton.jit
def _log_unit(u):
    # ln u for u in (0, 1]: u = m·2^e, m in [√½, √2), ln m = 2·atanh(s), s = (m − 1)/(m + 1) (philox.h).
    bits = u.to(tl.uint32, bitcast=True)
    e = ((bits >> 23) & 0xFF).to(tl.int32) - 127
    m = ((bits & 0x007FFFFF) | 0x3F800000).to(tl.float32, bitcast=True)
    big = m > 1.41421356
    m = tl.where(big, 0.5 * m, m)
    e = tl.where(big, e + 1, e)
    s = tl.div_rn(m - 1.0, m + 1.0)
    s2 = s * s
    series = 1.0 + s2 * (1.0 / 3 + s2 * (1.0 / 5 + s2 * (1.0 / 7 + s2 * (1.0 / 9 + s2 * (1.0 / 11 + s2 * (1.0 / 13))))))
    return e.to(tl.float32) * 0.693147180559945 + 2.0 * s * series


@triton.jit
def _box_muller(r_a, r_b):
    u1 = ((r_a >> 8).to(tl.float32) + 0.5) * 5.9604644775390625e-8
    u2 = ((r_b >> 8).to(tl.float32) + 0.5) * 5.9604644775390625e-8
    rad = tl.sqrt_rn(-2.0 * _log_unit(u1))
    t = 4.0 * u2
    q = (t + 0.5).to(tl.int32)
    phi = (t - q.to(tl.float32)) * 1.57079632679490
    p2 = phi * phi
    sp = phi * (1.0 + p2 * (-1.0 / 6 + p2 * (1.0 / 120 + p2 * (-1.0 / 5040 + p2 * (1.0 / 362880)))))
    cp = 1.0 + p2 * (-0.5 + p2 * (1.0 / 24 + p2 * (-1.0 / 720 + p2 * (1.0 / 40320))))
    k = q & 3
    c = tl.where(k == 0, cp, tl.where(k == 1, -sp, tl.where(k == 2, -cp, sp)))
    s = tl.where(k == 0, sp, tl.where(k == 1, cp, tl.where(k == 2, -sp, -cp)))
    return rad * c, rad * s


@triton.jit
def _update_lane(x_ptr, d_ptr, idx, mask, z, c, a, b):
    dv = tl.load(d_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    # The FMAs spelled out (as in csrc/cuda/sde_step.cu): the former Langevin update x + a·s + b·z contracts to
    # fma(b, z, fma(a, s, x)) on a GPU, and with c·x in x's place and c = 1 it still rounds that way.
    xv = tl.fma(b, z, tl.fma(a, dv, c * tl.load(x_ptr + idx, mask=mask, other=0.0)))
    tl.store(x_ptr + idx, xv, mask=mask)
    zm = tl.where(mask, z, 0.0)
    return tl.sum(dv * dv, axis=0), tl.sum(zm * zm, axis=0), tl.sum(tl.where(mask, xv * xv, 0.0), axis=0)


@triton.jit
def _sde_step_kernel(
    x_ptr,  # (N * D,) float32, updated in place
    d_ptr,  # (N * D,) drift, float32 / bf16 / fp16
    stats_ptr,  # (N, 3) float32, zeroed by the launcher; unused when HAS_STATS is false
    D,  # elements per sample
    c,  # coefficient of x
    a,  # coefficient of the drift
    b,  # coefficient of the noise
    seed,  # Philox key (int64 in [0, 2^63))
    offset,  # draw index: counter words 2 and 3
    HAS_STATS: tl.constexpr,
    BLOCK: tl.constexpr,  # Philox groups per program
):
    n = tl.program_id(0)
    lo = n.to(tl.int64) * D  # the sample's element range [lo, lo + D)
    g = lo // 4 + tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    off = tl.zeros([BLOCK], dtype=tl.int64) + offset
    r0, r1, r2, r3 = tl.random.philox(
        seed, g.to(tl.uint32), (g >> 32).to(tl.uint32), off.to(tl.uint32), (off >> 32).to(tl.uint32)
    )
    z0, z1 = _box_muller(r0, r1)
    z2, z3 = _box_muller(r2, r3)
    base = 4 * g  # element 4g + lane takes output `lane` of group g
    i0 = base
    m0 = (i0 >= lo) & (i0 < lo + D)
    s0, q0, w0 = _update_lane(x_ptr, d_ptr, i0, m0, z0, c, a, b)
    i1 = base + 1
    m1 = (i1 >= lo) & (i1 < lo + D)
    s1, q1, w1 = _update_lane(x_ptr, d_ptr, i1, m1, z1, c, a, b)
    i2 = base + 2
    m2 = (i2 >= lo) & (i2 < lo + D)
    s2, q2, w2 = _update_lane(x_ptr, d_ptr, i2, m2, z2, c, a, b)
    i3 = base + 3
    m3 = (i3 >= lo) & (i3 < lo + D)
    s3, q3, w3 = _update_lane(x_ptr, d_ptr, i3, m3, z3, c, a, b)
    if HAS_STATS:
        tl.atomic_add(stats_ptr + 3 * n, s0 + s1 + s2 + s3)
        tl.atomic_add(stats_ptr + 3 * n + 1, q0 + q1 + q2 + q3)
        tl.atomic_add(stats_ptr + 3 * n + 2, w0 + w1 + w2 + w3)


def launch(
    x: torch.Tensor,
    drift: torch.Tensor,
    c: float,
    a: float,
    b: float,
    seed: int,
    offset: int,
    stats: torch.Tensor | None,
) -> None:
    """The one launcher of both Triton ops (called inside their triton_op bodies; arguments already checked)."""
    n = x.shape[0]
    d = x.numel() // n
    # Groups a sample touches: from lo // 4 to (lo + D - 1) // 4, at most D // 4 + 2.
    blocks = triton.cdiv(d // 4 + 2, BLOCK_GROUPS)
    has_stats = stats is not None
    if has_stats:
        stats.zero_()
    with launch_device(x):
        wrap_triton(_sde_step_kernel)[(n, blocks)](
            x,
            drift,
            stats if has_stats else x,
            d,
            float(c),
            float(a),
            float(b),
            seed,
            offset,
            HAS_STATS=has_stats,
            BLOCK=BLOCK_GROUPS,
        )


@triton_op("ncsn_fast::sde_step_triton_", mutates_args={"x", "stats"})
def sde_step_triton_(
    x: torch.Tensor,
    drift: torch.Tensor,
    c: float,
    a: float,
    b: float,
    seed: int,
    offset: int,
    stats: torch.Tensor | None,
) -> None:
    launch(x, drift, c, a, b, seed, offset, stats)
