"""`ncsn-fast sample --init-image/--strength`, `--colorize`, `--super-resolve/--factor` end to end (bad inputs:
tests/cli/test_bad_inputs.py). The known component holds in image space wherever the [0, 1] clamp left it alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from ncsn_fast.cli import main
from ncsn_fast.images import read_image
from ncsn_fast.models.refinenet import RefineNetScore


def test_sdedit_keeps_the_image_at_low_strength_and_departs_at_high(tmp_path, capsys):
    image = torch.zeros(1, 16, 16)
    image[:, 3:13, 6:10] = 1.0  # a bar: something the model can keep or lose
    save_image(image, tmp_path / "img.png")
    diffs = {}
    for strength in ("0.05", "1"):
        out = tmp_path / f"s{strength}"
        args = ["sample", "--quiet", "--init-image", str(tmp_path / "img.png"), "--strength", strength, "--n", "4",
                "--nfe", "10", "--out", str(out)]  # fmt: skip
        assert main(args) == 0
        x = torch.load(out / "samples.pt")
        assert x.shape == (4, 1, 16, 16) and (out / "samples.png").is_file()
        diffs[strength] = float((x - read_image(tmp_path / "img.png")).abs().mean())
    assert "SDEdit from σ" in capsys.readouterr().out
    assert diffs["0.05"] < 0.05 < diffs["1"], diffs


def test_super_resolution_keeps_the_block_means(tmp_path, capsys):
    save_image(torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2, tmp_path / "low.png")
    out = tmp_path / "sr"
    args = ["sample", "--quiet", "--super-resolve", str(tmp_path / "low.png"), "--factor", "2", "--n", "4",
            "--nfe", "20", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    x, low = torch.load(out / "samples.pt"), read_image(tmp_path / "low.png")[:1]
    unclamped = F.max_pool2d(((x <= 0) | (x >= 1)).float(), 2) == 0
    err = (F.avg_pool2d(x, 2) - low).abs()[unclamped.expand_as(low.expand(4, -1, -1, -1))]
    assert unclamped.float().mean() > 0.5 and float(err.max()) <= 1e-5


def test_colorization_keeps_the_gray_channel(tmp_path, capsys, reference_dir, monkeypatch):
    """On the reference RGB run's architecture (32×32, untrained weights: its score is replaced by that of
    N(0, 0.2²I) data, so the wiring is what is tested, not the weights)."""
    monkeypatch.setattr(
        RefineNetScore, "score", lambda self, x, sigma: -x / (0.04 + sigma.view(-1, 1, 1, 1).to(x.dtype) ** 2)
    )
    save_image(torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.2, tmp_path / "g.png")
    out = tmp_path / "c"
    run = reference_dir / "ncsnv2_32"
    args = ["sample", "--quiet", "--colorize", str(tmp_path / "g.png"), "--n", "2", "--nfe", "20", "--out", str(out),
            "--ckpt", str(run / "checkpoint.pth"), "--config", str(run / "config.yml")]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    x, gray = torch.load(out / "samples.pt"), read_image(tmp_path / "g.png").mean(0, keepdim=True)
    assert x.shape == (2, 3, 32, 32)
    unclamped = ((x > 0) & (x < 1)).all(1, keepdim=True)
    err = (x.mean(1, keepdim=True) - gray).abs()[unclamped]
    assert unclamped.float().mean() > 0.3 and float(err.max()) <= 1e-5
