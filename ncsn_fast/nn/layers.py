"""The RefineNet building blocks of NCSN / NCSNv2 (paper Appendix B.1, Tables 2 and 3).

Module and parameter names follow the official implementation exactly (``conv1``, ``normalize2``,
``adapt_convs.0.1_1_conv``, ``crp.convs.0``, ``msf.convs.0`` ...) so that official checkpoints load with
``strict=True``. One class serves the conditional NCSN and the unconditional NCSNv2: a block gets a
``norm`` factory (``None`` for the norm-free RefineBlocks of NCSNv2) and every norm takes ``(x, y)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ncsn_fast.ops import _backend

NormFactory = Callable[[int], nn.Module]


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "lrelu": lambda: nn.LeakyReLU(negative_slope=0.2),
    "swish": Swish,
}


def get_act(name: str) -> nn.Module:
    key = name.lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"model.nonlinearity: unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


def norm_act(norm: nn.Module, x: torch.Tensor, y: torch.Tensor | None, act: nn.Module) -> torch.Tensor:
    """``act(norm(x, y))``, as one fused op when the norm is InstanceNorm++ and the activation a plain ELU."""
    if getattr(norm, "fuses_elu", False) and type(act) is nn.ELU and act.alpha == 1.0:
        return norm(x, y, elu=True)
    return act(norm(x, y))


def conv3x3(cin: int, cout: int, bias: bool = True, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=1, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    """Convolution then 2×2 mean pooling, computed as the official code does (sum of four strided views / 4)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=1, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return (h[:, :, ::2, ::2] + h[:, :, 1::2, ::2] + h[:, :, ::2, 1::2] + h[:, :, 1::2, 1::2]) / 4.0


class ResidualBlock(nn.Module):
    """ResBlock / CondResBlock: norm → act → conv → norm → act → conv, plus shortcut.

    ``resample='down'`` without dilation halves the resolution (ConvMeanPool); with dilation the block keeps
    the resolution and uses dilated 3×3 convolutions everywhere, shortcut included (as the official code).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        norm: NormFactory,
        act: nn.Module,
        resample: str | None = None,
        dilation: int | None = None,
    ) -> None:
        super().__init__()
        self.act = act
        self.resample = resample
        d = dilation or 1
        if resample == "down":
            self.conv1 = conv3x3(cin, cin, dilation=d)
            self.normalize2 = norm(cin)
            if dilation is not None:
                self.conv2 = conv3x3(cin, cout, dilation=d)
                self.shortcut = conv3x3(cin, cout, dilation=d)
            else:
                self.conv2 = ConvMeanPool(cin, cout, 3)
                self.shortcut = ConvMeanPool(cin, cout, 1)
        elif resample is None:
            self.conv1 = conv3x3(cin, cout, dilation=d)
            self.normalize2 = norm(cout)
            self.conv2 = conv3x3(cout, cout, dilation=d)
            if cin != cout:
                # Unreachable with the paper's layouts; the official code would crash here (nn.Conv2d without a
                # kernel size). A 1×1 projection is the natural choice.
                self.shortcut = nn.Conv2d(cin, cout, 1) if dilation is None else conv3x3(cin, cout, dilation=d)
        else:
            raise ValueError(f"resample must be None or 'down', got {resample!r}")
        self.normalize1 = norm(cin)
        self.has_shortcut = hasattr(self, "shortcut")

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(norm_act(self.normalize1, x, y, self.act))
        h = self.conv2(norm_act(self.normalize2, h, y, self.act))
        return (self.shortcut(x) if self.has_shortcut else x) + h


class RCUBlock(nn.Module):
    """Residual conv unit: n_blocks × (n_stages × [norm →] act → conv) with a skip per block."""

    def __init__(self, features: int, n_blocks: int, n_stages: int, act: nn.Module, norm: NormFactory | None) -> None:
        super().__init__()
        self.n_blocks, self.n_stages, self.act = n_blocks, n_stages, act
        self.conditional = norm is not None
        for i in range(n_blocks):
            for j in range(n_stages):
                if norm is not None:
                    setattr(self, f"{i + 1}_{j + 1}_norm", norm(features))
                setattr(self, f"{i + 1}_{j + 1}_conv", conv3x3(features, features, bias=False))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        for i in range(self.n_blocks):
            residual = x
            for j in range(self.n_stages):
                if self.conditional:
                    x = norm_act(getattr(self, f"{i + 1}_{j + 1}_norm"), x, y, self.act)
                else:
                    x = self.act(x)
                x = getattr(self, f"{i + 1}_{j + 1}_conv")(x)
            x = x + residual
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: [norm →] conv each input, upsample bilinearly (align_corners=True), sum."""

    def __init__(self, in_planes: Sequence[int], features: int, norm: NormFactory | None) -> None:
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(c, features, bias=True) for c in in_planes)
        self.norms = nn.ModuleList(norm(c) for c in in_planes) if norm is not None else None

    def forward(self, xs: Sequence[torch.Tensor], shape: Sequence[int], y: torch.Tensor | None = None) -> torch.Tensor:
        total = None
        for i, x in enumerate(xs):
            if self.norms is not None:
                x = self.norms[i](x, y)
            h = self.convs[i](x)
            if tuple(h.shape[2:]) != tuple(shape):
                h = F.interpolate(h, size=tuple(shape), mode="bilinear", align_corners=True)
            total = h if total is None else total + h
        return total


class MaxPool5x5(nn.Module):
    """5×5 stride-1 max pooling (padding 2) of the CRP blocks, computed separably: a 1×5 then a 5×1 max is the
    same maximum (exact) with 10 comparisons per output instead of 25 (2× faster on NCHW CPU tensors). Under
    ``use_backend("reference")`` it pools 5×5 at once, as the official code."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _backend.reference_only():
            return F.max_pool2d(x, 5, stride=1, padding=2)
        return F.max_pool2d(F.max_pool2d(x, (1, 5), stride=1, padding=(0, 2)), (5, 1), stride=1, padding=(2, 0))


class CRPBlock(nn.Module):
    """Chained residual pooling: act, then n_stages × ([norm →] 5×5 stride-1 pool → conv) accumulated.

    Max pooling in NCSNv2, average pooling in the original NCSN (paper Appendix B.1).
    """

    def __init__(self, features: int, n_stages: int, act: nn.Module, norm: NormFactory | None, maxpool: bool) -> None:
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(features, features, bias=False) for _ in range(n_stages))
        self.norms = nn.ModuleList(norm(features) for _ in range(n_stages)) if norm is not None else None
        self.pool = MaxPool5x5() if maxpool else nn.AvgPool2d(kernel_size=5, stride=1, padding=2)
        self.act = act

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = self.act(x)
        path = x
        for i, conv in enumerate(self.convs):
            if self.norms is not None:
                path = self.norms[i](path, y)
            path = conv(self.pool(path))
            x = path + x
        return x


class RefineBlock(nn.Module):
    """RefineBlock (NCSNv2, no normalization) or CondRefineBlock (NCSN, CondInstanceNorm++ everywhere)."""

    def __init__(
        self,
        in_planes: Sequence[int],
        features: int,
        act: nn.Module,
        norm: NormFactory | None = None,
        start: bool = False,
        end: bool = False,
        maxpool: bool = True,
    ) -> None:
        super().__init__()
        self.adapt_convs = nn.ModuleList(RCUBlock(c, 2, 2, act, norm) for c in in_planes)
        self.output_convs = RCUBlock(features, 3 if end else 1, 2, act, norm)
        if not start:
            self.msf = MSFBlock(in_planes, features, norm)
        self.crp = CRPBlock(features, 2, act, norm, maxpool)
        self.n_inputs = len(in_planes)

    def forward(self, xs: Sequence[torch.Tensor], shape: Sequence[int], y: torch.Tensor | None = None) -> torch.Tensor:
        hs = [adapt(x, y) for adapt, x in zip(self.adapt_convs, xs, strict=False)]
        h = self.msf(hs, shape, y) if self.n_inputs > 1 else hs[0]
        h = self.crp(h, y)
        return self.output_convs(h, y)
