"""The training loop that made the bundled model: loss falls, resume continues exactly, bad loss stops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncsn_fast as nf
from ncsn_fast.checkpoint import read_checkpoint
from ncsn_fast.train import latest_checkpoint, train


def tiny_cfg(**model):
    cfg = nf.load_config("digits")
    cfg.model.ngf = 4
    cfg.training.batch_size = 16
    for k, v in model.items():
        setattr(cfg.model, k, v)
    return cfg


def test_loss_falls_on_digits(tmp_path):
    out = train(tiny_cfg(), tmp_path, max_steps=150, log_every=50, snapshot_every=150, quiet=True)
    losses = out["losses"]
    assert np.mean(losses[-30:]) < 0.6 * np.mean(losses[:10])
    ckpt = read_checkpoint(latest_checkpoint(tmp_path))  # weights_only=True works on our own files
    assert ckpt["step"] == 150 and set(ckpt["ema"]) == {k for k, _ in out["model"].named_parameters()}


def test_resume_continues_as_if_never_stopped(tmp_path):
    cfg = tiny_cfg()
    straight = train(cfg, tmp_path / "a", max_steps=12, snapshot_every=6, quiet=True)
    train(cfg, tmp_path / "b", max_steps=6, snapshot_every=6, quiet=True)
    resumed = train(cfg, tmp_path / "b", max_steps=12, snapshot_every=6, resume=True, quiet=True)
    assert resumed["losses"] == straight["losses"][6:]
    for (_, a), (_, b) in zip(
        straight["model"].state_dict().items(), resumed["model"].state_dict().items(), strict=True
    ):
        assert torch.equal(a, b)


def test_non_finite_loss_stops_and_names_the_step(tmp_path):
    data = torch.rand(64, 1, 16, 16)
    data[:, :, 3, 3] = float("inf")  # a corrupt dataset: the very first loss is not finite
    with pytest.raises(FloatingPointError, match="at step 1"):
        train(tiny_cfg(), tmp_path, max_steps=20, snapshot_every=1, quiet=True, data=data)
    assert latest_checkpoint(tmp_path) is None  # nothing bad saved
