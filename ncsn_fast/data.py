"""Datasets. Today: the scikit-learn handwritten digits (offline, used for the bundled model and the tests).

The digits are 8×8 grey images with values 0..16; they are scaled to [0, 1] and upsampled bilinearly to the
config's image size (16 px for the ``digits`` preset).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
