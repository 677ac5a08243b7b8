"""InstanceNorm++ + ELU in Triton: one statistics pass and one apply pass per (n, c) plane, and the same two for
the backward. The small (N, C) across-channel algebra between the passes is plain PyTorch (shared with nothing
else on purpose: ncsn_fast/ops/instance_norm_pp_elu.py documents the formulas).

Any strides: a plane element (n, c, p), p = h·W + w, sits at n·sN + c·sC + p·sP, which covers NCHW (sP = 1) and
channels-last (sC = 1, sP = C) without a layout copy; other layouts are made contiguous first.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from ncsn_fast.ops._backend import kernel_memory_format
from ncsn_fast.ops.triton import launch_device

BLOCK_HW = 1024


@triton.jit
def _plane_offset(pid, C, s_n, s_c):
    """n·s_n + c·s_c of plane pid = n·C + c, in int64: program ids and strides below 2^31 are int32, whose
    products wrap for tensors of 2^31 elements or more (element offsets p·s_p are widened the same way)."""
    return (pid // C).to(tl.int64) * s_n + (pid % C).to(tl.int64) * s_c


@triton.jit
def _instance_norm_pp_stats_kernel(
    x_ptr,  # (N, C, HW) with strides (s_n, s_c, s_p)
    mean_ptr,  # (N * C,) float32 out: spatial mean
    rstd_ptr,  # (N * C,) float32 out: 1 / sqrt(biased spatial variance + eps)
    C,
    HW,
    s_n,
    s_c,
    s_p,
    eps,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)  # one program per (n, c) plane
    base = x_ptr + _plane_offset(pid, C, s_n, s_c)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(base + offs.to(tl.int64) * s_p, mask=offs < HW, other=0.0).to(tl.float32)
    mu = tl.sum(acc, axis=0) / HW
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, HW, BLOCK):  # second pass: exact where sum-of-squares would cancel
        offs = start + tl.arange(0, BLOCK)
        xv = tl.load(base + offs.to(tl.int64) * s_p, mask=offs < HW, other=0.0).to(tl.float32)
        d = tl.where(offs < HW, xv - mu, 0.0)
        acc += d * d
    var = tl.sum(acc, axis=0) / HW
    tl.store(mean_ptr + pid, mu)
    tl.store(rstd_ptr + pid, 1.0 / tl.sqrt(var + eps))


@triton.jit
def _instance_norm_pp_apply_kernel(
    x_ptr,  # (N, C, HW) with strides (s_n, s_c, s_p)
    y_ptr,  # (N, C, HW) out, same strides as x
    mean_ptr,  # (N * C,) float32
    a_ptr,  # (N * C,) float32: gamma * rstd
    b_ptr,  # (N * C,) float32: gamma * alpha * (mu - m) / sqrt(v + eps) + beta
    C,
    HW,
    s_n,
    s_c,
    s_p,
    APPLY_ELU: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    mu = tl.load(mean_ptr + pid)
    a = tl.load(a_ptr + pid)
    b = tl.load(b_ptr + pid)
    off = _plane_offset(pid, C, s_n, s_c)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < HW
        xv = tl.load(x_ptr + off + offs.to(tl.int64) * s_p, mask=mask, other=0.0).to(tl.float32)
        z = a * (xv - mu) + b
        if APPLY_ELU:
            z = tl.where(z > 0, z, tl.exp(tl.minimum(z, 0.0)) - 1.0)
        tl.store(y_ptr + off + offs.to(tl.int64) * s_p, z.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _instance_norm_pp_grad_sums_kernel(
    dy_ptr,  # (N, C, HW) with strides (s_n, s_c, s_p), like x
    y_ptr,  # (N, C, HW) forward output, same strides
    x_ptr,  # (N, C, HW) forward input, same strides
    mean_ptr,  # (N * C,) float32
    rstd_ptr,  # (N * C,) float32
    sg_ptr,  # (N * C,) float32 out: sum over the plane of g = dL/dz
    sgx_ptr,  # (N * C,) float32 out: sum of g * (x - mu) * rstd
    C,
    HW,
    s_n,
    s_c,
    s_p,
    APPLY_ELU: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    mu = tl.load(mean_ptr + pid)
    off = _plane_offset(pid, C, s_n, s_c)
    acc_g = tl.zeros([BLOCK], dtype=tl.float32)
    acc_gx = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < HW
        g = tl.load(dy_ptr + off + offs.to(tl.int64) * s_p, mask=mask, other=0.0).to(tl.float32)
        if APPLY_ELU:  # dELU/dz from the output: 1 for z > 0, else exp(z) = y + 1
            yv = tl.load(y_ptr + off + offs.to(tl.int64) * s_p, mask=mask, other=0.0).to(tl.float32)
            g = g * tl.where(yv > 0, 1.0, yv + 1.0)
        xv = tl.load(x_ptr + off + offs.to(tl.int64) * s_p, mask=mask, other=0.0).to(tl.float32)
        acc_g += g
        acc_gx += g * tl.where(mask, xv - mu, 0.0)
    tl.store(sg_ptr + pid, tl.sum(acc_g, axis=0))
    tl.store(sgx_ptr + pid, tl.sum(acc_gx, axis=0) * tl.load(rstd_ptr + pid))


@triton.jit
def _instance_norm_pp_grad_apply_kernel(
    dy_ptr,  # (N, C, HW) with strides (s_n, s_c, s_p)
    y_ptr,  # (N, C, HW) forward output
    x_ptr,  # (N, C, HW) forward input
    dx_ptr,  # (N, C, HW) out, same strides as x
    mean_ptr,  # (N * C,) float32
    gbar_ptr,  # (N * C,) float32: plane mean of g
    k1_ptr,  # (N * C,) float32: dx = k1 (g - gbar) + k2 (x - mu) + k3
    k2_ptr,  # (N * C,) float32
    k3_ptr,  # (N * C,) float32
    C,
    HW,
    s_n,
    s_c,
    s_p,
    APPLY_ELU: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    mu = tl.load(mean_ptr + pid)
    gbar = tl.load(gbar_ptr + pid)
    k1 = tl.load(k1_ptr + pid)
    k2 = tl.load(k2_ptr + pid)
    k3 = tl.load(k3_ptr + pid)
    off = _plane_offset(pid, C, s_n, s_c)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < HW
        g = tl.load(dy_ptr + off + offs.to(tl.int64) * s_p, mask=mask, other=0.0).to(tl.float32)
        if APPLY_ELU:
            yv = tl.load(y_ptr + off + offs.to(tl.int64) * s_p, mask=mask, other=0.0).to(tl.float32)
            g = g * tl.where(yv > 0, 1.0, yv + 1.0)
        xv = tl.load(x_ptr + off + offs.to(tl.int64) * s_p, mask=mask, other=0.0).to(tl.float32)
        dx = k1 * (g - gbar) + k2 * (xv - mu) + k3
        tl.store(dx_ptr + off + offs.to(tl.int64) * s_p, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _layout(x: torch.Tensor) -> tuple[torch.Tensor, torch.memory_format]:
    """x in the layout the kernels compute in (ops/_backend.py), and that memory format."""
    fmt = kernel_memory_format(x)
    return x.contiguous(memory_format=fmt), fmt


def _plane_strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(3)


def _block(hw: int) -> int:
    return min(BLOCK_HW, triton.next_power_of_2(hw))


def _channel_term(mean: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """u = (mu - m) / sqrt(v + eps) per (n, c) and q = 1 / sqrt(v + eps) per (n, 1), v the unbiased variance."""
    m = mean.mean(dim=1, keepdim=True)
    q = torch.rsqrt(mean.var(dim=1, keepdim=True) + eps)
    return (mean - m) * q, q


def _params(p: torch.Tensor, n: int) -> torch.Tensor:
    return p.float().expand(n, -1) if p.dim() == 1 else p.float()


@triton_op("ncsn_fast::instance_norm_pp_elu_triton", mutates_args=())
def instance_norm_pp_elu_triton(
    x: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor | None,
    eps: float,
    apply_elu: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, fmt = _layout(x)
    n, c, h, w = x.shape
    hw = h * w
    mean = torch.empty((n, c), device=x.device, dtype=torch.float32)
    rstd = torch.empty((n, c), device=x.device, dtype=torch.float32)
    out = torch.empty(x.shape, device=x.device, dtype=x.dtype, memory_format=fmt)
    strides = _plane_strides(x)
    with launch_device(x):
        wrap_triton(_instance_norm_pp_stats_kernel)[(n * c,)](x, mean, rstd, c, hw, *strides, eps, BLOCK=_block(hw))
    u, _ = _channel_term(mean, eps)
    g = _params(gamma, n)
    a = (g * rstd).contiguous()
    b = g * _params(alpha, n) * u
    if beta is not None:
        b = b + _params(beta, n)
    b = b.contiguous()
    with launch_device(x):
        wrap_triton(_instance_norm_pp_apply_kernel)[(n * c,)](
            x, out, mean, a, b, c, hw, *strides, APPLY_ELU=apply_elu, BLOCK=_block(hw)
        )
    return out, mean, rstd


@triton_op("ncsn_fast::instance_norm_pp_elu_triton_backward", mutates_args=())
def instance_norm_pp_elu_triton_backward(
    grad_out: torch.Tensor,
    out: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    eps: float,
    apply_elu: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, fmt = _layout(x)
    out = out.contiguous(memory_format=fmt)
    dy = grad_out.to(x.dtype).contiguous(memory_format=fmt)
    n, c, h, w = x.shape
    hw = h * w
    strides = _plane_strides(x)
    sg = torch.empty((n, c), device=x.device, dtype=torch.float32)
    sgx = torch.empty((n, c), device=x.device, dtype=torch.float32)
    with launch_device(x):
        wrap_triton(_instance_norm_pp_grad_sums_kernel)[(n * c,)](
            dy, out, x, mean, rstd, sg, sgx, c, hw, *strides, APPLY_ELU=apply_elu, BLOCK=_block(hw)
        )
    # Across-channel algebra on (N, C) (see ops/instance_norm_pp_elu.py for the derivation).
    u, q = _channel_term(mean, eps)
    al, ga = _params(alpha, n), _params(gamma, n)
    big_a, big_b = ga * sg, ga * sgx  # A, B of the derivation
    d_gamma = sgx + al * u * sg
    d_alpha = u * big_a
    g_u = al * big_a
    du = q * (g_u - u * (g_u * u).sum(dim=1, keepdim=True) / (c - 1))
    dmu = du - du.mean(dim=1, keepdim=True)
    k1 = (rstd * ga).contiguous()
    k2 = (-rstd * rstd * big_b / hw).contiguous()
    k3 = (dmu / hw).contiguous()
    gbar = (sg / hw).contiguous()
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype, memory_format=fmt)
    with launch_device(x):
        wrap_triton(_instance_norm_pp_grad_apply_kernel)[(n * c,)](
            dy, out, x, dx, mean, gbar, k1, k2, k3, c, hw, *strides, APPLY_ELU=apply_elu, BLOCK=_block(hw)
        )

    def reduce(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return (t.sum(dim=0) if like.dim() == 1 else t).to(like.dtype)

    return dx, reduce(d_alpha, alpha), reduce(d_gamma, gamma), reduce(sg, gamma)
