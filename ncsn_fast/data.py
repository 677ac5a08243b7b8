"""Datasets with the paper's preprocessing (Appendix B.2) and the official data-space transforms.

Every dataset yields float tensors (C, H, W) in [0, 1]; random horizontal flips are applied in the training loop
(so that they are part of the reproducible random stream), and :func:`data_transform` maps to the model's data
space (dequantization, ``rescaled`` → [−1, 1], logit transform) as the official code does.

- ``DIGITS``: the 1797 scikit-learn digits (offline), 8×8 scaled to [0, 1] and upsampled bilinearly.
- ``CIFAR10``: torchvision's CIFAR10 (training split) from ``ROOT``.
- ``CELEBA``: torchvision's CelebA (training split): center crop 140, resize to 64.
- ``LSUN``: an image folder (``ROOT`` or ``ROOT/<category>``): resize the short side to the image size
  (96 church, 128 bedroom/tower), center crop.
- ``FFHQ``: an image folder resized to 256; a fixed 63000/7000 train/test split (seed 2020).
- anything else: an image folder (recursive), resized and center-cropped to ``data.image_size``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from ncsn_fast.config import Config

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


class DataError(ValueError):
    """Training data is missing, empty or unreadable; the message says what to put where."""


def load_digits(image_size: int = 16, with_labels: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The 1797 scikit-learn digits as a float32 tensor (N, 1, image_size, image_size) in [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ImportError(
            "the digits dataset comes with scikit-learn: pip install 'ncsn-fast[digits]' (or scikit-learn)"
        ) from None
    if image_size < 1:
        raise ValueError(f"image_size: must be positive, got {image_size}")
    bunch = sk_load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    if with_labels:
        return x, torch.tensor(bunch.target, dtype=torch.long)
    return x


class ImageFolderDataset(torch.utils.data.Dataset):
    """All images under a folder (recursive), as (C, H, W) float tensors in [0, 1] after ``transform``.

    Unreadable files are skipped with a warning and counted (``self.skipped``), found when first read.
    """

    def __init__(self, root: str | Path, transform, channels: int = 3) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"data_root: no such folder {str(self.root)!r}")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise DataError(f"data_root: no images ({', '.join(IMAGE_EXTENSIONS)}) under {str(self.root)!r}")
        self.transform, self.channels = transform, channels
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, path: Path):
        from PIL import Image

        with Image.open(path) as im:
            return im.convert("L" if self.channels == 1 else "RGB")

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import UnidentifiedImageError

        for k in range(len(self.files)):
            path = self.files[(i + k) % len(self.files)]
            try:
                return self.transform(self._read(path))
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                if str(path) not in self.skipped:
                    self.skipped.append(str(path))
                    warnings.warn(
                        f"skipping unreadable image {path} ({exc}); {len(self.skipped)} skipped so far", stacklevel=2
                    )
        raise DataError(f"data_root: none of the {len(self.files)} images under {str(self.root)!r} can be read")


def _resize_crop(size: int):
    from torchvision import transforms as T

    return T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor()])


def first_item(item):
    """The image of a dataset item: torchvision datasets give (image, label), TensorDataset gives (image,)."""
    return item[0] if isinstance(item, (list, tuple)) else item


def build_dataset(
    cfg: Config, data_root: str | Path | None = None, download: bool = False, split: str = "train"
) -> torch.utils.data.Dataset:
    """The training set a config names (see the module docstring), without flips.

    ``split="test"``: the held-out images, where the dataset has them (CIFAR-10's test batch, CelebA's test
    partition — the FID reference of the paper's CelebA numbers, Appendix B.2 — and FFHQ's 7000).
    """
    from torchvision import transforms as T

    root = data_root
    name, size = cfg.data.dataset.upper(), cfg.data.image_size
    if split not in ("train", "test"):
        raise DataError(f"split: 'train' or 'test', got {split!r}")
    if split == "test" and name not in ("CIFAR10", "CELEBA", "FFHQ"):
        raise DataError(f"split: {cfg.data.dataset} has no held-out split here (CIFAR10, CELEBA, FFHQ do)")
    if name == "DIGITS":
        return torch.utils.data.TensorDataset(load_digits(size))
    if root is None:
        raise DataError(f"data_root: dataset {cfg.data.dataset} needs a data folder (data_root / --data DIR)")
    root = Path(root)
    if name == "CIFAR10":
        from torchvision.datasets import CIFAR10

        if not download and not (root / "cifar-10-batches-py").is_dir():
            raise DataError(
                f"data_root: CIFAR-10 not found: put the python version (cifar-10-batches-py/ with data_batch_1..5) "
                f"under {str(root)!r}, or pass download=True (--download)"
            )
        tf = T.Compose([T.Resize(size), T.ToTensor()])
        return CIFAR10(str(root), train=split == "train", download=download, transform=tf)
    if name == "CELEBA":
        from torchvision.datasets import CelebA

        if not download and not (root / "celeba" / "img_align_celeba").is_dir():
            raise DataError(
                f"data_root: CelebA not found: put celeba/img_align_celeba/ and celeba/list_eval_partition.txt (and "
                f"the other annotation files) under {str(root)!r}, or pass download=True (--download)"
            )
        tf = T.Compose([T.CenterCrop(140), T.Resize(size), T.ToTensor()])  # Appendix B.2
        return CelebA(str(root), split=split, download=download, transform=tf)
    if name == "LSUN":
        folder = root / cfg.data.category if cfg.data.category and (root / cfg.data.category).is_dir() else root
        return ImageFolderDataset(folder, _resize_crop(size), cfg.data.channels)
    if name == "FFHQ":
        full = ImageFolderDataset(root, _resize_crop(size), cfg.data.channels)
        perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(2020))
        n_train = len(full) * 63000 // 70000  # 63000/7000 as in Appendix B.2
        return torch.utils.data.Subset(full, (perm[:n_train] if split == "train" else perm[n_train:]).tolist())
    return ImageFolderDataset(root, _resize_crop(size), cfg.data.channels)


def data_transform(
    cfg: Config, x: torch.Tensor, generator: torch.Generator | None = None, dequantize: bool = True
) -> torch.Tensor:
    """[0, 1] images (N, C, H, W) → the model's data space, as the official ``data_transform``: the configured
    dequantization noise (``dequantize=False`` skips it: a reference image of inpainting is data, not a training
    sample), then ``rescaled`` → [−1, 1] or ``logit_transform`` → logit(λ + (1 − 2λ)x), λ = 1e-6. The noise is drawn
    on the CPU from ``generator`` and moved to x's device."""
    d = cfg.data
    if dequantize and d.uniform_dequantization:
        x = x / 256.0 * 255.0 + torch.rand(x.shape, generator=generator).to(x.device) / 256.0
    if dequantize and d.gaussian_dequantization:
        x = x + torch.randn(x.shape, generator=generator).to(x.device) * 0.01
    if d.rescaled:
        x = 2 * x - 1.0
    elif d.logit_transform:
        lam = 1e-6
        x = lam + (1 - 2 * lam) * x
        x = torch.log(x) - torch.log1p(-x)
    return x


def inverse_data_transform(cfg: Config, x: torch.Tensor) -> torch.Tensor:
    """The model's data space → [0, 1] images (clamped), as the official ``inverse_data_transform``: sigmoid after
    ``logit_transform``, (x + 1)/2 after ``rescaled``; dequantization needs no inverse (it stays within a level)."""
    if cfg.data.logit_transform:
        x = torch.sigmoid(x)
    elif cfg.data.rescaled:
        x = (x + 1.0) / 2.0
    return x.clamp(0.0, 1.0)
