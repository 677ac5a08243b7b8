"""The official --test mode: DSM loss of checkpoints on held-out images."""

from __future__ import annotations

import pytest
import torch

import ncsn_fast as nf
from ncsn_fast.cli import main
from ncsn_fast.data import load_digits
from ncsn_fast.evaluation.heldout import test_loss as heldout_loss
from ncsn_fast.pretrained import pretrained_path, save_pretrained


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """The trained bundled model and an untrained model of the same config, as save_pretrained folders."""
    d = tmp_path_factory.mktemp("models")
    cfg = nf.load_config("digits")
    torch.manual_seed(0)
    save_pretrained(nf.build_model(cfg), d / "checkpoint_0", cfg)
    return [(5000, pretrained_path("digits")), (0, d / "checkpoint_0")]


def test_the_trained_model_has_a_far_lower_test_loss_than_an_untrained_one(two_models):
    digits = load_digits(16)[torch.randperm(1797, generator=torch.Generator().manual_seed(1))[:96]]
    rows = heldout_loss(two_models, data=digits, batch_size=32, progress=False)
    trained, untrained = rows[0]["loss"], rows[1]["loss"]
    assert rows[0]["n"] == rows[1]["n"] == 96
    assert trained < 0.25 * untrained  # the bundled model's training loss ended at 8.0 (from 71 at the start)
    again = heldout_loss(two_models[:1], data=digits, batch_size=32, progress=False)
    assert again[0]["loss"] == trained  # one seed, the same labels and noise for every checkpoint and every run


def test_cli_test_loss_honours_the_test_section_and_refuses_the_digits_split(tmp_path, capsys):
    cfg = nf.load_config("digits")
    cfg.test.begin_ckpt, cfg.test.end_ckpt = 100, 200
    path = tmp_path / "cfg.yml"
    path.write_text(cfg.to_yaml())
    ckpts = tmp_path / "run"
    ckpts.mkdir()
    model = nf.build_model(cfg)
    for step in (50, 150, 250):
        nf.save_checkpoint(ckpts / f"checkpoint_{step}.pth", model=model.state_dict(), config=cfg.to_dict())
    code = main(["test-loss", "--ckpts", str(ckpts), "--config", str(path), "--out", str(tmp_path / "t.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "DIGITS has no held-out split" in err[-1]  # only checkpoint_150 was within begin..end
    assert not (tmp_path / "t.json").exists()
    code = main(["test-loss", "--ckpts", str(ckpts), "--config", str(path), "--begin", "400"])
    assert code == 2 and "within --begin/--end" in capsys.readouterr().err
