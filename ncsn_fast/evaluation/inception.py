"""The FID Inception network (pytorch-fid's) and the image pipeline of the standard FID protocol.

The paper's numbers come from the official code's copy of pytorch-fid: samples saved as PNG (so quantized to 8
bits), read back to [0, 1], resized bilinearly to 299 × 299 (``align_corners=False``), scaled to [-1, 1] and passed
through the TensorFlow FID Inception (``pt_inception-2015-12-05-6726825d.pth``); the 2048 pool3 features give
μ and Σ. This module reproduces exactly that pipeline without writing PNGs (8-bit quantization in memory, the same
rounding as ``torchvision.utils.save_image``).

The network is built from pytorch-fid's own classes (``pip install 'ncsn-fast[fid]'``) and a state dict we load:
pytorch-fid only builds it by downloading the weights, so :func:`fid_inception_network` assembles the same modules
(its ``fid_inception_v3`` and ``InceptionV3`` layout; the tests check it equals pytorch-fid's own network).
``weights="random"`` builds the same architecture with random weights: it exercises the pipeline (tests) and its
numbers mean nothing.
"""

from __future__ import annotations

import hashlib
import math
import socket
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ncsn_fast.evaluation.frechet import FIDError
from ncsn_fast.evaluation.stats import GaussianStats

FEATURE_DIM = 2048
INCEPTION_SIZE = 299
STANDARD_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
STANDARD_SHA256_PREFIX = "6726825d"  # torch.hub's hash prefix in the file name: the first hex digits of its SHA-256
STANDARD_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + STANDARD_WEIGHTS
RESIZE = "bilinear to 299x299, align_corners=False (pytorch-fid)"
QUANTIZE = "8-bit, floor(255 x + 0.5) / 255 (as saving a PNG)"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pytorch_fid():
    try:
        from pytorch_fid import inception
    except ImportError:
        raise ImportError("FID needs pytorch-fid: pip install 'ncsn-fast[fid]' (or pytorch-fid)") from None
    return inception


def fid_inception_network(state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """pytorch-fid's ``InceptionV3`` (pool3, 2048 features, resize and normalize on) with ``state_dict`` loaded.

    The same modules as pytorch-fid's ``fid_inception_v3()`` (torchvision's Inception v3 with its FIDInception
    blocks) arranged in the blocks of its ``InceptionV3``; pytorch-fid's own ``forward`` runs it. A state dict of
    another network raises :class:`FIDError`.
    """
    pfi = _pytorch_fid()
    inception = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    inception.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    inception.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    inception.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    inception.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    inception.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    inception.Mixed_7b = pfi.FIDInceptionE_1(1280)
    inception.Mixed_7c = pfi.FIDInceptionE_2(2048)
    try:
        inception.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise FIDError(f"weights: not FID Inception weights: {str(exc).splitlines()[0][:200]}") from None
    i = inception
    net = pfi.InceptionV3.__new__(pfi.InceptionV3)
    nn.Module.__init__(net)
    net.resize_input, net.normalize_input = True, True
    net.output_blocks, net.last_needed_block = [3], 3
    net.blocks = nn.ModuleList(
        [
            nn.Sequential(i.Conv2d_1a_3x3, i.Conv2d_2a_3x3, i.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2)),
            nn.Sequential(i.Conv2d_3b_1x1, i.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2)),
            nn.Sequential(
                i.Mixed_5b, i.Mixed_5c, i.Mixed_5d, i.Mixed_6a, i.Mixed_6b, i.Mixed_6c, i.Mixed_6d, i.Mixed_6e
            ),  # fmt: skip
            nn.Sequential(i.Mixed_7a, i.Mixed_7b, i.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1))),
        ]
    )
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def random_inception_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for the FID Inception architecture, scaled by 1/√fan-in so activations stay O(1)."""
    import torchvision

    g = torch.Generator().manual_seed(seed)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    state = net.state_dict()  # same names and shapes as the FID Inception (its blocks subclass these)
    for k, v in state.items():
        if k.endswith("conv.weight") or k == "fc.weight":
            fan_in = v[0].numel()
            state[k] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / fan_in)
    return state


def inception_weights(weights: str | Path | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, description) of the FID Inception weights.

    ``None``: the standard file from torch.hub's cache, downloaded there by pytorch-fid's URL when missing (30 s
    connection timeout); a path: that file (its SHA-256 says whether it is the standard one); ``"random"``: see
    :func:`random_inception_state`.
    """
    if weights == "random":
        return random_inception_state(), {
            "weights": "random (pipeline test only: not comparable)",
            "sha256": None,
            "standard": False,
        }
    if weights is None:
        path = _standard_path()
        if not path.is_file():
            old = socket.getdefaulttimeout()
            socket.setdefaulttimeout(30)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(STANDARD_URL, str(path), hash_prefix=STANDARD_SHA256_PREFIX)
            except Exception as exc:  # no network, proxy, hash mismatch: one actionable message
                raise FIDError(
                    f"weights: the FID Inception weights {STANDARD_WEIGHTS} are not in {path.parent} and could not "
                    f"be downloaded ({type(exc).__name__}); fetch {STANDARD_URL} elsewhere and pass its path "
                    "(--weights PATH)"
                ) from None
            finally:
                socket.setdefaulttimeout(old)
    else:
        path = Path(weights)
        if not path.is_file():
            raise FIDError(f"weights: no such file {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FIDError(f"weights: cannot load {str(path)!r}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise FIDError(f"weights: {str(path)!r} is not a state dict of tensors")
    sha = _sha256(path)
    return state, {"weights": path.name, "sha256": sha, "standard": sha.startswith(STANDARD_SHA256_PREFIX)}


def _standard_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / STANDARD_WEIGHTS  # where pytorch-fid's download puts it


def find_standard_weights() -> Path | None:
    """The standard weights file if it is already in torch.hub's cache (no download)."""
    path = _standard_path()
    return path if path.is_file() else None


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats → the nearest of the 256 levels a PNG stores (torchvision's save_image rounding)."""
    return torch.floor(x * 255.0 + 0.5).clamp_(0, 255) / 255.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)


def check_images(x: torch.Tensor, name: str = "images") -> torch.Tensor:
    """(N, 1 or 3, H, W) floats in [0, 1]; grayscale is repeated to RGB (as PIL's convert('RGB'))."""
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] not in (1, 3):
        raise FIDError(f"{name}: expected (N, 1 or 3, H, W) images, got {tuple(getattr(x, 'shape', ()))}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    x = x.float()
    if not torch.isfinite(x).all():
        raise FIDError(f"{name}: non-finite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise FIDError(f"{name}: expected values in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    return x.clamp(0, 1).expand(-1, 3, -1, -1) if x.shape[1] == 1 else x.clamp(0, 1)


class InceptionFeatures(nn.Module):
    """Images in [0, 1] → (N, 2048) pool3 features of the FID Inception (pytorch-fid's ``InceptionV3``).

    The pipeline: 8-bit quantization (``quantize=True``: what saving samples as PNG does in the official code),
    grayscale → RGB, then pytorch-fid's own resize to 299 × 299 and [0, 1] → [-1, 1].
    """

    def __init__(
        self,
        state_dict: dict[str, torch.Tensor],
        info: dict[str, Any] | None = None,
        quantize: bool = True,
        chunk: int = 200,
    ) -> None:
        super().__init__()
        self.net = fid_inception_network(state_dict)
        self.net.eval()
        self.info = dict(info or {})
        self.quantize = quantize
        self.chunk = chunk

    def protocol(self) -> dict[str, Any]:
        return {
            "features": f"Inception pool3 ({FEATURE_DIM})",
            "package": _package_version(),
            "resize": RESIZE,
            "quantize": QUANTIZE if self.quantize else "none",
            **self.info,
        }

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images)
        if self.quantize:
            x = quantize_8bit(x)
        dev = next(self.net.parameters()).device
        # chunks: at 299 × 299 one image's activations take ~25 MB, and sampling batches can be 1000 images
        return torch.cat([self.net(c.to(dev))[0].flatten(1).float() for c in x.split(self.chunk)])


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"pytorch-fid {version('pytorch-fid')}"
    except PackageNotFoundError:
        return "pytorch-fid"


def load_inception(weights: str | Path | None = None, device: torch.device | str = "cpu") -> InceptionFeatures:
    state, info = inception_weights(weights)
    if not info["standard"]:
        warnings.warn(
            f"FID weights {info['weights']} are not {STANDARD_WEIGHTS}: the FID is not comparable with published "
            "numbers",
            stacklevel=2,
        )
    return InceptionFeatures(state, info).to(device)


def feature_stats(
    batches: Sequence[torch.Tensor] | Any, features: Callable[[torch.Tensor], torch.Tensor]
) -> GaussianStats:
    """Statistics of ``features(batch)`` over an iterable of image batches."""
    stats: GaussianStats | None = None
    for b in batches:
        f = features(b)
        stats = stats or GaussianStats(f.shape[1])
        stats.update(f)
    if stats is None:
        raise FIDError("images: nothing to compute statistics of (0 images)")
    return stats
