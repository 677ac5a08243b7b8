"""Plain-PyTorch definitions of every op: the ground truth of tests and benchmarks.

Written the way the official implementation (ermongroup/ncsnv2) computes them, so that a fused kernel can be
checked against them and a benchmark can time "what the official code does".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def instance_norm_pp_elu(
    x: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor | None = None,
    eps: float = 1e-5,
    apply_elu: bool = True,
) -> torch.Tensor:
    """InstanceNorm++ (NCSN paper, Eq. in Appendix; NCSNv2 Appendix B.1), optionally followed by ELU.

    x: (N, C, H, W). alpha, gamma, beta: (C,) or, for the conditional variant, (N, C).
    μ_nc is the spatial mean, σ²_nc the biased spatial variance; m_n and v_n are the mean and the *unbiased*
    variance over channels of μ_nc (as torch.var in the official code):
        h = (x − μ)/√(σ² + eps) + α·(μ − m)/√(v + eps);  y = γ·h + β.
    """
    n, c = x.shape[:2]
    means = x.mean(dim=(2, 3))
    var = x.var(dim=(2, 3), unbiased=False)
    m = means.mean(dim=1, keepdim=True)
    v = means.var(dim=1, keepdim=True)
    centred = (means - m) / torch.sqrt(v + eps)
    h = (x - means[..., None, None]) / torch.sqrt(var[..., None, None] + eps)
    a = alpha.expand(n, c)[..., None, None]
    g = gamma.expand(n, c)[..., None, None]
    h = h + centred[..., None, None] * a
    out = g * h
    if beta is not None:
        out = out + beta.expand(n, c)[..., None, None]
    if apply_elu:
        out = F.elu(out)
    return out


# ------------------------------------------------------------------------------------ Philox4x32-10 in PyTorch
_M32 = 0xFFFFFFFF


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # int64 products of 32-bit values wrap modulo 2^64; the high and low words are still exact after masking.
    p = b * a
    return (p >> 32) & _M32, p & _M32


def philox4x32_10(counter: Sequence[torch.Tensor], key: tuple[int, int]) -> list[torch.Tensor]:
    """Philox4x32-10 (Salmon et al., SC 2011) on int64 tensors holding uint32 values; the ground truth of the
    kernels (csrc/philox.h, Triton's tl.random.philox), checked against the Random123 known answers."""
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) & _M32 for c in counter)
    k0, k1 = key[0] & _M32, key[1] & _M32
    for _ in range(10):
        hi0, lo0 = _mulhilo(0xD2511F53, c0)
        hi1, lo1 = _mulhilo(0xCD9E8D57, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + 0x9E3779B9) & _M32, (k1 + 0xBB67AE85) & _M32
    return [c0, c1, c2, c3]


def philox_normal(seed: int, offset: int, numel: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The standard normals of sde_step_ and langevin_step_ for elements 0 .. numel-1 (layout in csrc/philox.h):
    element i takes output i % 4 of Philox at counter (i // 4, offset), key seed; uniforms ((r >> 8) + ½)·2⁻²⁴
    formed in float32 as the kernels form them (above ½ the sum rounds to even; csrc/philox.h); Box–Muller on
    output pairs (0, 1) and (2, 3) in float64, returned float32. The kernels' polynomial ln/sin/cos agree with this
    within 2e-6."""
    groups = (numel + 3) // 4
    g = torch.arange(groups, dtype=torch.int64, device=device)
    r = philox4x32_10((g, g >> 32, torch.full_like(g, offset), torch.full_like(g, offset >> 32)), (seed, seed >> 32))
    u = [(((v >> 8).float() + 0.5) * 2.0**-24).double() for v in r]  # float32 rounding, as the kernels
    z = []
    for a, b in ((u[0], u[1]), (u[2], u[3])):
        rad = torch.sqrt(-2.0 * torch.log(a))
        z += [rad * torch.cos(2 * math.pi * b), rad * torch.sin(2 * math.pi * b)]
    return torch.stack(z, dim=1).reshape(-1)[:numel].float()


def sde_step_(
    x: torch.Tensor,
    drift: torch.Tensor,
    c: float,
    a: float,
    b: float,
    seed: int,
    offset: int,
    stats: torch.Tensor | None = None,
) -> torch.Tensor:
    """In-place stochastic update x ← c·x + a·d + b·z with the Philox noise z of :func:`philox_normal` (drawn, and
    counted in the stats, also when b = 0); per-sample Σd², Σz², Σx² (after the update) into ``stats`` (N, 3) when
    given. The definition the fused kernels are tested against; float32 arithmetic, c·x + (a·d + b·z)."""
    z = philox_normal(seed, offset, x.numel(), x.device).view(x.shape)
    d = drift.float()
    # In place and in this order so that c = 1 reproduces the former Langevin definition bit for bit.
    x.mul_(c).add_(a * d + b * z)
    if stats is not None:
        flat = lambda t: t.reshape(t.shape[0], -1).double()  # noqa: E731
        stats.copy_(torch.stack([flat(d).square().sum(1), flat(z).square().sum(1), flat(x).square().sum(1)], 1))
    return x


def langevin_step_(
    x: torch.Tensor,
    score: torch.Tensor,
    step_size: float,
    seed: int,
    offset: int,
    stats: torch.Tensor | None = None,
) -> torch.Tensor:
    """In-place Langevin update with the Philox noise of :func:`philox_normal`: :func:`sde_step_` with
    (c, a, b) = (1, α, √(2α)); per-sample Σs², Σz², Σx² (after the update) into ``stats`` (N, 3) when given."""
    return sde_step_(x, score, 1.0, step_size, math.sqrt(2.0 * step_size), seed, offset, stats)
