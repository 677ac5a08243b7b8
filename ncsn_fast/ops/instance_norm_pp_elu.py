"""InstanceNorm++ followed by ELU as one op: ``instance_norm_pp_elu(x, alpha, gamma, beta, eps, apply_elu)``.

Semantics are those of :func:`ncsn_fast.ops.reference.instance_norm_pp_elu` (the official formula, NCSNv2 Appendix
B.1): per sample n and channel c, μ the spatial mean, σ² the biased spatial variance, m and v the mean and the
unbiased variance over channels of μ,

    h = (x − μ)/√(σ² + ε) + α (μ − m)/√(v + ε),     y = ELU(γ h + β).

The fused kernels make one statistics pass and one apply pass, y = ELU(a (x − μ) + b) with a = γ r,
b = γ α u + β, r = 1/√(σ² + ε), u = (μ − m)/√(v + ε). The backward saves μ and r per (n, c) and the output y
(ELU'(z) = y + 1 for z ≤ 0), and makes one pass for the plane sums S_g = Σ g, S_gx = Σ g (x − μ) r, g = dL/dz, then
one for dx. With A = γ S_g, B = γ S_gx, q = 1/√(v + ε):

    dβ = S_g,   dγ = S_gx + α u S_g,   dα = u A,
    dL/du_c = q (α_c A_c − u_c Σ_c' α_c' A_c' u_c' / (C − 1)),   dμ_c = dL/du_c − mean_c' dL/du_c',
    dx = r γ (g − S_g/HW) − r² B (x − μ)/HW + dμ/HW   (g − its plane mean per element: no cancellation),

summed over n for (C,) parameters. Backends: the compiled CPU and CUDA kernels (csrc/), Triton
(ops/triton/instance_norm_pp_elu.py) and the reference; ops/_backend.py chooses.
"""

from __future__ import annotations

import torch

from ncsn_fast.ops import _backend, reference

OP = "instance_norm_pp_elu"


def check_args(x: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor | None) -> None:
    """Clear errors, naming the argument and its value, for every input the kernels cannot take."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x: expected a 4-D tensor (N, C, H, W), got shape {tuple(getattr(x, 'shape', ()))}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
    n, c, h, w = x.shape
    if n == 0:
        raise ValueError(f"x: N = 0 samples (shape {tuple(x.shape)})")
    if c < 2:
        raise ValueError(f"x: InstanceNorm++ needs C >= 2 channels (unbiased variance across channels), got C = {c}")
    if h * w == 0:
        raise ValueError(f"x: empty spatial size (shape {tuple(x.shape)})")
    for name, p in (("alpha", alpha), ("gamma", gamma), ("beta", beta)):
        if p is None and name == "beta":
            continue
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(p).__name__}")
        if tuple(p.shape) not in ((c,), (n, c)):
            raise ValueError(
                f"{name}: expected shape ({c},) or ({n}, {c}) for x of shape {tuple(x.shape)}, got {tuple(p.shape)}"
            )
        if p.dim() != alpha.dim():
            raise ValueError(f"{name}: shape {tuple(p.shape)} differs in rank from alpha {tuple(alpha.shape)}")
        if not p.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {p.dtype}")
        if p.device != x.device:
            raise ValueError(f"{name}: on {p.device} but x is on {x.device}")


def instance_norm_pp_elu(
    x: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor | None = None,
    eps: float = 1e-5,
    apply_elu: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """InstanceNorm++ (then ELU when ``apply_elu``) of x (N, C, H, W); alpha, gamma, beta (C,) or (N, C).

    Differentiable in x, alpha, gamma, beta on every backend; usable under torch.compile(fullgraph=True). The
    output has x's dtype, and x's memory format when x is NCHW- or channels-last-contiguous (other strides are
    computed on a contiguous copy).
    """
    check_args(x, alpha, gamma, beta)
    eps = float(eps)
    if not eps > 0:
        raise ValueError(f"eps: expected > 0, got {eps}")
    name = _backend.choose(OP, x.device, backend)
    if name == "reference":
        return reference.instance_norm_pp_elu(x, alpha, gamma, beta, eps, apply_elu=apply_elu)
    if name == "triton":
        if not _triton_defined:
            _define_triton()
        return torch.ops.ncsn_fast.instance_norm_pp_elu_triton(x, alpha, gamma, beta, eps, apply_elu)[0]
    return torch.ops.ncsn_fast.instance_norm_pp_elu(x, alpha, gamma, beta, eps, apply_elu)[0]


def decomposition(
    x: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor | None,
    eps: float,
    apply_elu: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ncsn_fast::instance_norm_pp_elu`` in aten ops, for a compiler to lower and fuse with its neighbours (issue
    23): the kernels' two passes as they compute them — μ, σ² (biased) and r = 1/√(σ² + ε) per (n, c) in float32
    (float64 for float64 x), u = (μ − m)/√(v + ε) over channels (v unbiased), then y = ELU(γ r (x − μ) + γ α u + β)
    rounded once to x's dtype. Returns (y, μ, r) as the op does (the backward saves μ and r). In float32 it equals
    the reference within 1e-6 relative (tests/ops/test_instance_norm_pp_elu.py).

    Used by :func:`inductor_decompositions`; eager code calls the fused op."""
    n, c = x.shape[:2]
    stat = torch.float64 if x.dtype == torch.float64 else torch.float32
    xs = x.to(stat)
    var, mean = torch.var_mean(xs, dim=(2, 3), correction=0)
    rstd = torch.rsqrt(var + eps)
    v, m = torch.var_mean(mean, dim=1, keepdim=True, correction=1)
    u = (mean - m) * torch.rsqrt(v + eps)
    g = gamma.to(stat).expand(n, c)
    b = g * alpha.to(stat).expand(n, c) * u
    if beta is not None:
        b = b + beta.to(stat).expand(n, c)
    z = (g * rstd)[..., None, None] * (xs - mean[..., None, None]) + b[..., None, None]
    y = torch.nn.functional.elu(z) if apply_elu else z
    return y.to(x.dtype), mean, rstd


def inductor_decompositions() -> dict:
    """``{op overload: decomposition}`` for the compiled extension's and the Triton op (those registered here):
    pass to ``torch._inductor.compile_fx.compile_fx(decompositions=…)`` or ``ExportedProgram.run_decompositions``
    so that Inductor lowers InstanceNorm++ + ELU instead of calling the kernel (:mod:`ncsn_fast.inference`'s
    ``lower_norm``)."""
    ops = {}
    if _backend.extension_error() is None and hasattr(torch.ops.ncsn_fast, OP):
        ops[torch.ops.ncsn_fast.instance_norm_pp_elu.default] = decomposition
    if _triton_defined:
        ops[torch.ops.ncsn_fast.instance_norm_pp_elu_triton.default] = decomposition
    return ops


# ------------------------------------------------------------------------------------- fake kernels and autograd
def _fake_forward(x, alpha, gamma, beta, eps, apply_elu):
    n, c = x.shape[:2]
    stat = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_backend.kernel_memory_format(x))
    return out, x.new_empty((n, c), dtype=stat), x.new_empty((n, c), dtype=stat)


def _fake_backward(grad_out, out, x, mean, rstd, alpha, gamma, eps, apply_elu):
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_backend.kernel_memory_format(x))
    return dx, torch.empty_like(alpha), torch.empty_like(gamma), torch.empty_like(gamma)


def _setup_context(ctx, inputs, output) -> None:
    x, alpha, gamma, beta, eps, apply_elu = inputs
    out, mean, rstd = output
    ctx.save_for_backward(x, out, mean, rstd, alpha, gamma)
    ctx.eps, ctx.apply_elu, ctx.has_beta = eps, apply_elu, beta is not None
    ctx.mark_non_differentiable(mean, rstd)


def _make_backward(backward_op):
    def backward(ctx, grad_out, grad_mean, grad_rstd):
        x, out, mean, rstd, alpha, gamma = ctx.saved_tensors
        dx, da, dg, db = backward_op(grad_out, out, x, mean, rstd, alpha, gamma, ctx.eps, ctx.apply_elu)
        return dx, da, dg, (db if ctx.has_beta else None), None, None

    return backward


def _register() -> None:
    """Fake kernels and autograd for the compiled op (when the extension loaded) and the Triton op."""
    if _backend.extension_error() is None and hasattr(torch.ops.ncsn_fast, OP):
        torch.library.register_fake(f"ncsn_fast::{OP}")(_fake_forward)
        torch.library.register_fake(f"ncsn_fast::{OP}_backward")(_fake_backward)
        torch.library.register_autograd(
            f"ncsn_fast::{OP}",
            _make_backward(torch.ops.ncsn_fast.instance_norm_pp_elu_backward),
            setup_context=_setup_context,
        )
    if _backend.triton_at_import():
        _define_triton()


_triton_defined = False


def _define_triton() -> None:
    """The Triton op and its autograd (at import where Triton can run, else on first use: see triton_at_import)."""
    global _triton_defined
    from ncsn_fast.ops.triton import instance_norm_pp_elu as tri

    tri.instance_norm_pp_elu_triton.register_autograd(
        _make_backward(tri.instance_norm_pp_elu_triton_backward), setup_context=_setup_context
    )
    _triton_defined = True


_register()
