"""InstanceNorm++ and its conditional variant (CondInstanceNorm++), with the official parameter names.

Both take ``(x, y)`` so that blocks can be written once for NCSN (conditional on the noise label y) and NCSNv2
(unconditional, y ignored; Technique 3 conditions by dividing the output by σ instead), and ``elu=True`` to apply
the ELU that follows them in the same fused op (``ncsn_fast.ops.instance_norm_pp_elu``).
"""

from __future__ import annotations

import torch
from torch import nn

from ncsn_fast.ops.instance_norm_pp_elu import instance_norm_pp_elu

EPS = 1e-5


class InstanceNorm2dPlus(nn.Module):
    """InstanceNorm++ (NCSNv2 Appendix B.1: CondInstanceNorm++ with a single class)."""

    def __init__(self, num_features: int, bias: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1, 0.02))
        self.gamma = nn.Parameter(torch.empty(num_features).normal_(1, 0.02))
        self.beta = nn.Parameter(torch.zeros(num_features)) if bias else None

    fuses_elu = True

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, elu: bool = False) -> torch.Tensor:
        return instance_norm_pp_elu(x, self.alpha, self.gamma, self.beta, EPS, apply_elu=elu)


class ConditionalInstanceNorm2dPlus(nn.Module):
    """CondInstanceNorm++ of the original NCSN: γ, α, β gathered per sample from an embedding of the label.

    The embedding row is laid out [γ | α | β] as in the official code, so official checkpoints load as they are.
    """

    def __init__(self, num_features: int, num_classes: int, bias: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.bias = bias
        n_chunks = 3 if bias else 2
        self.embed = nn.Embedding(num_classes, n_chunks * num_features)
        self.embed.weight.data[:, : 2 * num_features].normal_(1, 0.02)
        self.embed.weight.data[:, 2 * num_features :].zero_()

    fuses_elu = True

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, elu: bool = False) -> torch.Tensor:
        if y is None:
            raise ValueError("ConditionalInstanceNorm2dPlus needs the noise labels y; got y=None")
        chunks = self.embed(y).chunk(3 if self.bias else 2, dim=-1)
        gamma, alpha = chunks[0], chunks[1]
        beta = chunks[2] if self.bias else None
        return instance_norm_pp_elu(x, alpha, gamma, beta, EPS, apply_elu=elu)
