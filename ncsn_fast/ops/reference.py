"""Plain-PyTorch definitions of every op: the ground truth of tests and benchmarks.

Written the way the official implementation (ermongroup/ncsnv2) computes them, so that a fused kernel can be
checked against them and a benchmark can time "what the official code does".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def instance_norm_pp(
    x: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor | None,
    eps: float = 1e-5,
    apply_elu: bool = False,
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


def langevin_step(x: torch.Tensor, score: torch.Tensor, step_size: float, noise: torch.Tensor) -> torch.Tensor:
    """One Langevin update x + α·s + √(2α)·z (Algorithm 1 of NCSN), out of place."""
    return x + step_size * score + noise * (2.0 * step_size) ** 0.5
