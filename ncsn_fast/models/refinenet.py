"""NCSN and NCSNv2 score networks: a RefineNet with dilated ResBlocks (paper Appendix B.1, Tables 2–3).

All four official layouts (and NCSN's deeper one) are the same network with a different list of stages, so
they share one forward. Stage and block names are the official ones (``res1``, ``res31``, ``refine31`` ...).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ncsn_fast.models.registry import register_model
from ncsn_fast.nn.layers import RefineBlock, ResidualBlock, get_act, norm_act
from ncsn_fast.nn.normalization import ConditionalInstanceNorm2dPlus, InstanceNorm2dPlus
from ncsn_fast.techniques import get_sigmas
from ncsn_fast.validation import check_labels, check_model_input, describe

if TYPE_CHECKING:
    from ncsn_fast.config import Config

# A stage: (name, in multiple of ngf, out multiple of ngf, dilation of the stage or None, downsampling?).
# Each stage is two ResBlocks: the first with resample='down' when downsampling, the second plain.
_V2 = [
    ("res1", 1, 1, None, False),
    ("res2", 1, 2, None, True),
    ("res3", 2, 2, 2, True),
    ("res4", 2, 2, 4, True),
]
# Refine stages in the order they run, deepest first: (name, features multiple).
_V2_REFINE = [("refine1", 2), ("refine2", 2), ("refine3", 1), ("refine4", 1)]

_DEEPER = [
    ("res1", 1, 1, None, False),
    ("res2", 1, 2, None, True),
    ("res3", 2, 2, None, True),
    ("res4", 2, 4, 2, True),
    ("res5", 4, 4, 4, True),
]
_DEEPER_REFINE = [("refine1", 4), ("refine2", 2), ("refine3", 2), ("refine4", 1), ("refine5", 1)]

_DEEPEST = [
    ("res1", 1, 1, None, False),
    ("res2", 1, 2, None, True),
    ("res3", 2, 2, None, True),
    ("res31", 2, 2, None, True),
    ("res4", 2, 4, 2, True),
    ("res5", 4, 4, 4, True),
]
_DEEPEST_REFINE = [
    ("refine1", 4),
    ("refine2", 2),
    ("refine31", 2),
    ("refine3", 2),
    ("refine4", 1),
    ("refine5", 1),
]


def _capturing(x: torch.Tensor) -> bool:
    """Whether a CUDA graph is being captured on x's stream (reading a tensor on the host would end the capture)."""
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


class RefineNetScore(nn.Module):
    """Shared body of NCSN / NCSNv2. Subclasses set the layout and whether conditioning is by norm or by σ."""

    stages: list = _V2
    refine_stages: list = _V2_REFINE
    conditional: bool = False  # True: CondInstanceNorm++ (NCSN); False: InstanceNorm++ and s(x)/σ (NCSNv2)
    downsample_factor: int = 2

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        ngf = config.model.ngf
        channels = config.data.channels
        self.rescale_input = not config.data.logit_transform and not config.data.rescaled
        self.num_classes = config.model.num_classes
        self.act = act = get_act(config.model.nonlinearity)
        if self.conditional:
            norm = partial(ConditionalInstanceNorm2dPlus, num_classes=self.num_classes)
        else:
            norm = InstanceNorm2dPlus
            self.register_buffer("sigmas", get_sigmas(config))

        self.begin_conv = nn.Conv2d(channels, ngf, 3, stride=1, padding=1)
        self.normalizer = norm(ngf)
        self.end_conv = nn.Conv2d(ngf, channels, 3, stride=1, padding=1)

        for name, cin, cout, dilation, down in self.stages:
            blocks = [
                ResidualBlock(cin * ngf, cout * ngf, norm, act, resample="down" if down else None, dilation=dilation),
                ResidualBlock(cout * ngf, cout * ngf, norm, act, resample=None, dilation=dilation),
            ]
            setattr(self, name, nn.ModuleList(blocks))

        refine_norm = norm if self.conditional else None
        feats = [cout * ngf for _, _, cout, _, _ in self.stages][::-1]  # deepest first
        prev = None
        n = len(self.refine_stages)
        for i, (name, mult) in enumerate(self.refine_stages):
            in_planes = [feats[i]] if prev is None else [feats[i], prev]
            block = RefineBlock(
                in_planes,
                mult * ngf,
                act,
                norm=refine_norm,
                start=i == 0,
                end=i == n - 1,
                maxpool=not self.conditional,
            )
            setattr(self, name, block)
            prev = mult * ngf
        self._stage_names = [s[0] for s in self.stages]
        self._refine_names = [r[0] for r in self.refine_stages]

    def _apply(self, fn, recurse: bool = True):
        """What ``Module.to``/``.half()``/``.bfloat16()`` run: as for any module, except that the σ buffer never
        loses precision. ``model.to(dtype=torch.bfloat16)`` gives bf16 weights and a float32 σ, so that Technique 3
        divides by the exact noise levels (σ rounded to bf16 is off by up to 0.4%, the whole score with it)."""
        sigmas = self._buffers.get("sigmas")
        out = super()._apply(fn, recurse)
        new = self._buffers.get("sigmas")
        if sigmas is not None and new is not None and new.dtype != sigmas.dtype and new.is_floating_point():
            if torch.finfo(new.dtype).bits < torch.finfo(sigmas.dtype).bits:
                self._buffers["sigmas"] = sigmas.to(device=new.device)
        return out

    def check_input(self, name: str, x: Any) -> torch.Tensor:
        """``x`` as this network takes it: images (N, C, H, W) of the config's channel count, H and W multiples of
        the total downsampling (``downsample_factor``: each non-dilated downsampling ResBlock halves the side with a
        2×2 mean pool whose four strided views must have equal sizes), floating point in the weights' dtype (any
        under autocast), on the weights' device. One-line errors naming ``name`` (:mod:`ncsn_fast.validation`)."""
        d = self.config.data
        if d.rescaled:
            to_data_space = f"{name}.float() / 127.5 - 1"
        elif d.logit_transform:
            to_data_space = f"ncsn_fast.data.data_transform(cfg, {name}.float() / 255, dequantize=False)"
        else:
            to_data_space = f"{name}.float() / 255"
        w = self.begin_conv.weight
        return check_model_input(
            name, x, d.channels, self.downsample_factor, type(self).__name__, w.dtype, w.device, to_data_space
        )

    def features(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The network output before Technique 3's division by σ."""
        h = 2 * x - 1.0 if self.rescale_input else x
        h = self.begin_conv(h)
        layers = []
        for name in self._stage_names:
            for block in getattr(self, name):
                h = block(h, y)
            layers.append(h)
        ref = None
        for name, skip in zip(self._refine_names, reversed(layers), strict=False):
            xs = [skip] if ref is None else [skip, ref]
            ref = getattr(self, name)(xs, skip.shape[2:], y)
        h = self.end_conv(norm_act(self.normalizer, ref, y, self.act))
        return h

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """s_θ(x, σ) for any positive per-sample σ (shape (N,) or a scalar).

        NCSNv2 models are σ-agnostic by Technique 3 (s_θ(x, σ) = f_θ(x)/σ), so any σ > 0 works. The original
        NCSN conditions on discrete labels: it accepts only its own noise levels (relative tolerance 1e-4).
        """
        self.check_input("x", x)
        labels, div = self.condition(x, sigma)
        if labels is not None:
            return self.features(x, labels)
        # Technique 3 in float32 at least: a bf16/fp16 network's output is divided by the float32 σ (and is float32)
        return self.features(x, None) / div.to(torch.promote_types(x.dtype, torch.float32))

    def condition(self, x: torch.Tensor, sigma: torch.Tensor | float) -> tuple[torch.Tensor | None, torch.Tensor]:
        """What :meth:`score` feeds :meth:`features` for σ, checked: ``(labels, σ)`` for the original NCSN (its
        noise-level indices, (N,) long), ``(None, σ)`` for NCSNv2; σ as float32 (N, 1, …, 1), ready to divide by.
        The checks read σ on the host (not while a CUDA graph is captured), so this stays outside compiled graphs
        (:mod:`ncsn_fast.inference` compiles :meth:`features` and divides after)."""
        n = x.shape[0]
        if not isinstance(sigma, (int, float, torch.Tensor)) or isinstance(sigma, bool):
            raise TypeError(f"sigma: expected a number or a float tensor of shape ({n},), got {describe(sigma)}")
        if isinstance(sigma, torch.Tensor) and (sigma.numel() not in (1, n) or sigma.is_complex()):
            raise ValueError(f"sigma: expected a number or a float tensor of shape ({n},), got {describe(sigma)}")
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(n)
        # The checks read σ on the host: not while a CUDA graph is being captured (a device-to-host sync there fails
        # the capture); the warm-up calls before a capture check the same inputs.
        check = not _capturing(x)
        if check and not bool((sigma > 0).all()):
            raise ValueError(f"sigma: must be positive, got min {float(sigma.min())}")
        div = sigma.view(n, *([1] * (x.dim() - 1)))
        if not self.conditional:
            return None, div
        levels = self._levels(x.device)
        close = (sigma[:, None] - levels[None]).abs() <= 1e-4 * levels[None]
        if check and not bool(close.any(dim=1).all()):
            bad = float(sigma[~close.any(dim=1)][0])
            raise ValueError(
                f"sigma: {bad:.6g} is not one of this NCSN's {len(levels)} noise levels; the original NCSN is "
                "conditioned on discrete labels (samplers that need σ in between want an NCSNv2 model)"
            )
        return close.float().argmax(dim=1), div

    def _levels(self, device: torch.device) -> torch.Tensor:
        """The config's noise levels (float32) on ``device``, made once per device (no host copy per call)."""
        cache = self.__dict__.setdefault("_levels_on", {})
        if device not in cache:
            cache[device] = get_sigmas(self.config).to(device)
        return cache[device]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Score s_θ(x, σ_y): x in the config's data space ([0, 1] by default), y = noise-level indices (long)."""
        self.check_input("x", x)
        levels = self.num_classes if self.conditional else len(self.sigmas)
        check_labels("y", y, x.shape[0], levels, "; for a noise level σ call model.score(x, sigma)")
        h = self.features(x, y)
        if self.conditional:
            return h
        used = self.sigmas[y].view(x.shape[0], *([1] * (x.dim() - 1)))
        return h / used  # Technique 3: s_θ(x, σ) = s_θ(x)/σ, in σ's float32 also for a bf16/fp16 network


@register_model("ncsnv2")
class NCSNv2(RefineNetScore):
    """NCSNv2 for 28–64 px images (paper Table 3a)."""


@register_model("ncsnv2_deeper")
class NCSNv2Deeper(RefineNetScore):
    """NCSNv2 for 96–128 px images (paper Table 3b)."""

    stages = _DEEPER
    refine_stages = _DEEPER_REFINE
    downsample_factor = 4


@register_model("ncsnv2_deepest")
class NCSNv2Deepest(RefineNetScore):
    """NCSNv2 for 256 px images (paper Table 3c)."""

    stages = _DEEPEST
    refine_stages = _DEEPEST_REFINE
    downsample_factor = 8


@register_model("ncsn")
class NCSN(RefineNetScore):
    """The original NCSN (paper Table 2a): CondInstanceNorm++ everywhere, average pooling in CRP, no σ division."""

    conditional = True


@register_model("ncsn_deeper")
class NCSNDeeper(RefineNetScore):
    """The original NCSN for 96–128 px images (paper Table 2b)."""

    conditional = True
    stages = _DEEPER
    refine_stages = _DEEPER_REFINE
    downsample_factor = 4
