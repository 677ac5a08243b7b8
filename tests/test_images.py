"""Image grids against their peer: torchvision's make_grid + save_image, pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.utils import make_grid, save_image

from ncsn_fast.images import save_grid


@pytest.mark.parametrize("n,c,side,nrow", [(1, 1, 16, 8), (5, 3, 7, 2), (16, 1, 28, 4), (7, 3, 32, 3)])
def test_save_grid_writes_torchvisions_pixels(tmp_path, n, c, side, nrow):
    g = torch.Generator().manual_seed(n * 100 + side)
    images = torch.rand(n, c, side, side, generator=g) * 1.2 - 0.1  # a few values outside [0, 1]: clamped
    ours = save_grid(images, tmp_path / "ours.png", nrow=nrow, min_side=1, padding=2)
    save_image(make_grid(images.clamp(0, 1), nrow=nrow, padding=2), tmp_path / "theirs.png")
    a, b = np.asarray(Image.open(ours)), np.asarray(Image.open(tmp_path / "theirs.png"))
    assert a.shape == b.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)


def test_save_grid_upscales_and_marks_a_column(tmp_path):
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    out = np.asarray(Image.open(save_grid(images, tmp_path / "g.png", nrow=3, min_side=96, mark_column=2)))
    factor, pad = 4, 2 * 4  # ⌈96 / (3·8)⌉ = 4; a marked grid pads max(2, padding) per factor
    assert out.shape == (2 * (8 * factor + pad) + pad, 3 * (8 * factor + pad) + pad, 3)
    left = 2 * (8 * factor + pad)
    assert (out[:, left : left + pad] == [255, 0, 0]).all()  # the gap before column 2 is red
    first = out[pad : pad + 8 * factor, pad : pad + 8 * factor, 0]
    expect = (images[0, 0].repeat_interleave(factor, 0).repeat_interleave(factor, 1) * 255 + 0.5).to(torch.uint8)
    assert np.array_equal(first, expect.numpy())  # nearest-neighbour upscaling keeps pixels sharp
