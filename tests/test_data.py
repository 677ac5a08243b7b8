"""Datasets with the paper's preprocessing and the data-space transforms."""

from __future__ import annotations

import pytest
import torch

import ncsn_fast as nf
from ncsn_fast.train import train


def test_image_folder_skips_corrupt_images_and_trains(tmp_path):
    from torchvision.utils import save_image

    from ncsn_fast.data import build_dataset

    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    for i in range(20):
        save_image(torch.rand(3, 20, 24), folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    cfg = nf.load_config(
        {
            "data": {"dataset": "MYFOLDER", "image_size": 16, "channels": 3, "num_workers": 0},
            "model": {"ngf": 4, "num_classes": 5, "sigma_begin": 10.0},
            "training": {"batch_size": 7},
        }
    )
    ds = build_dataset(cfg, tmp_path / "imgs")
    assert len(ds) == 21
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        items = [ds[i] for i in range(len(ds))]
    assert len(ds.skipped) == 1 and all(t.shape == (3, 16, 16) for t in items)
    out = train(cfg, tmp_path / "w", max_steps=3, snapshot_every=3, quiet=True, data_root=tmp_path / "imgs")
    assert out["step"] == 3


def test_ffhq_test_split_is_the_held_out_tenth(tmp_path):
    from torchvision.utils import save_image

    from ncsn_fast.data import DataError, build_dataset

    for i in range(20):
        save_image(torch.full((3, 8, 8), i / 20), tmp_path / f"{i:02d}.png")
    cfg = nf.load_config({"data": {"dataset": "FFHQ", "image_size": 8, "channels": 3}, "model": {"ngf": 4}})
    train_set, test_set = build_dataset(cfg, tmp_path), build_dataset(cfg, tmp_path, split="test")
    assert (len(train_set), len(test_set)) == (18, 2)  # 63000/7000 of 20 images
    assert not set(train_set.indices) & set(test_set.indices)
    assert sorted(train_set.indices + test_set.indices) == list(range(20))
    with pytest.raises(DataError, match="split: DIGITS has no held-out split"):
        build_dataset(nf.load_config("digits"), split="test")
