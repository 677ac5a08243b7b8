"""Images in and out: reading a picture or a tensor file as (C, H, W) in [0, 1], resizing it the way the data
pipeline does, and writing sample grids that are large enough to look at.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_tensor(path: str | os.PathLike, name: str = "path") -> torch.Tensor:
    """A tensor from a ``.pt`` file (``weights_only=True``), an ``.npy`` array or an ``.npz`` file with one array.

    Raises ValueError naming ``name`` for a missing file, another suffix, or a file that holds no single array.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{name}: no such file {str(p)!r}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".pt" or suffix == ".pth":
            t = torch.load(p, map_location="cpu", weights_only=True)
        elif suffix == ".npy":
            t = torch.from_numpy(np.load(p, allow_pickle=False))
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if len(z.files) != 1:
                    raise ValueError(f"{name}: {str(p)!r} holds {len(z.files)} arrays {z.files[:4]}; expected one")
                t = torch.from_numpy(z[z.files[0]])
        else:
            raise ValueError(f"{name}: {str(p)!r}: expected a .pt tensor or a .npy/.npz array")
    except ValueError:
        raise
    except Exception as exc:  # pickle, zip and numpy format errors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{name}: cannot read {str(p)!r} as a tensor ({first[:120]})") from None
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: {str(p)!r} does not hold a single tensor (got {type(t).__name__})")
    return t


def read_image(path: str | os.PathLike, name: str = "image") -> torch.Tensor:
    """An image file (PNG, JPEG, … read with Pillow) or a ``.pt``/``.npy`` tensor as float (C, H, W) in [0, 1].

    Grayscale stays one channel, an alpha channel is dropped, 16-bit images are scaled by 65535. Raises ValueError
    naming ``name``. (torchvision.io's decoders are deprecated since torchvision 0.29, so Pillow it is.)
    """
    p = Path(path)
    if p.suffix.lower() in (".pt", ".pth", ".npy", ".npz"):
        t = load_tensor(p, name)
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    else:
        if not p.is_file():
            raise ValueError(f"{name}: no such file {str(p)!r}")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(p) as im:
                if im.mode in ("I;16", "I;16B", "I"):
                    arr, scale = np.asarray(im, dtype=np.float32), 65535.0
                else:
                    gray = im.mode in ("L", "LA", "1") or (im.mode == "P" and not im.palette.mode.startswith("RGB"))
                    arr, scale = np.asarray(im.convert("L" if gray else "RGB"), dtype=np.float32), 255.0
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"{name}: cannot read {str(p)!r} as an image ({first[:120]})") from None
        t = torch.from_numpy(arr.copy()) / scale
        t = t.permute(2, 0, 1) if t.dim() == 3 else t
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"{name}: expected an image (C, H, W) with C = 1 or 3, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all() or float(t.min()) < 0 or float(t.max()) > 1:
        raise ValueError(f"{name}: pixel values must be finite and in [0, 1]")
    return t


def resize_center_crop(image: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize the short side to ``size``, then crop the centre (the data pipeline's ``Resize`` + ``CenterCrop``)."""
    c, h, w = image.shape
    if (h, w) == (size, size):
        return image
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    kwargs = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
    out = F.interpolate(image[None], size=(nh, nw), mode=mode, **kwargs)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return out[:, top : top + size, left : left + size].clamp(0, 1)


def grid_nrow(n: int) -> int:
    return max(1, math.ceil(math.sqrt(n)))


def save_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    nrow: int | None = None,
    min_side: int = 256,
    padding: int = 1,
    mark_column: int | None = None,
) -> Path:
    """Images (N, C, H, W) in [0, 1] as a PNG grid of ``nrow`` columns; small images are upscaled by an integer
    factor (nearest neighbour: pixels stay sharp) so that the grid is at least ``min_side`` pixels wide.
    ``mark_column`` k paints the gap before column k red (e.g. where the samples end and their neighbours begin).
    Written atomically. The same pixels as torchvision's ``make_grid`` + ``save_image`` (tests/test_images.py
    compares them) without importing torchvision, whose import pulls in torch._dynamo: seconds of every command's
    startup (issue 23)."""
    from PIL import Image

    from ncsn_fast.io import atomic_write

    nrow = nrow or grid_nrow(len(images))
    cols = min(nrow, len(images))
    factor = max(1, math.ceil(min_side / max(1, cols * images.shape[-1])))
    x = images.detach().float().cpu().clamp(0, 1)
    if factor > 1:
        x = F.interpolate(x, scale_factor=factor, mode="nearest")
    pad = padding * factor if mark_column is None else max(2, padding) * factor
    grid = _make_grid(x, nrow, pad)
    if mark_column is not None:
        left = mark_column * (x.shape[-1] + pad)
        grid[:, :, left : left + pad] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    # save_image's rounding: ×255, +0.5, clamp, truncate to uint8
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    p = Path(path)
    atomic_write(p, lambda f: Image.fromarray(pixels).save(f, format="png"))
    return p


def _make_grid(x: torch.Tensor, nrow: int, padding: int) -> torch.Tensor:
    """torchvision's make_grid for (N, C, H, W) with C = 1 or 3: gray to RGB, ``nrow`` columns, zero padding
    around and between the images; returns (3, rows·(H + padding) + padding, cols·(W + padding) + padding), or
    the one image itself when N = 1."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n, c, h, w = x.shape
    if n == 1:  # as make_grid: a single image without a frame
        return x[0].clone()
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    grid = x.new_zeros(c, rows * (h + padding) + padding, cols * (w + padding) + padding)
    for k in range(n):
        top, left = (k // cols) * (h + padding) + padding, (k % cols) * (w + padding) + padding
        grid[:, top : top + h, left : left + w] = x[k]
    return grid
