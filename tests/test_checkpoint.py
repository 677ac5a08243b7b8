from __future__ import annotations

import pickle

import pytest
import torch

import ncsn_fast as nf
from ncsn_fast.checkpoint import CheckpointError, read_checkpoint
from tests.conftest import rel_err


def small_cfg(ngf=4):
    return nf.load_config(
        {"data": {"dataset": "X", "image_size": 16, "channels": 1}, "model": {"ngf": ngf, "num_classes": 5}}
    )


def test_own_format_round_trip_with_ema(tmp_path):
    model = nf.build_model(small_cfg())
    ema = nf.EMA(model, 0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    path = nf.save_checkpoint(tmp_path / "c.pth", model=model.state_dict(), ema=ema.state_dict(), step=7)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]  # no temporary file left behind
    other = nf.build_model(small_cfg())
    info = nf.load_checkpoint(other, path, ema=False)
    assert info["step"] == 7
    for (_, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b)
    nf.load_checkpoint(other, path, ema=True)
    for name, p in other.named_parameters():
        assert torch.equal(p, ema.shadow[name])


def test_truncated_file(tmp_path, reference_dir):
    data = (reference_dir / "ncsnv2_32" / "checkpoint.pth").read_bytes()
    bad = tmp_path / "trunc.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        nf.load_checkpoint(nf.build_model(nf.load_config(reference_dir / "ncsnv2_32" / "config.yml")), bad)


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable torch file"):
        read_checkpoint(p)
    q = tmp_path / "list.pth"
    torch.save([1, 2, 3], q)
    with pytest.raises(CheckpointError, match="not the official"):
        read_checkpoint(q)
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "missing.pth")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_arbitrary_pickle_refused(tmp_path, capsys):
    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(CheckpointError, match="refused to load"):
        read_checkpoint(p)
    assert "pwned" not in capsys.readouterr().out


def test_other_architecture_lists_keys(reference_dir):
    cfg = nf.load_config(reference_dir / "ncsnv2deeper_64" / "config.yml")
    model = nf.build_model(cfg)
    with pytest.raises(CheckpointError) as info:
        nf.load_checkpoint(model, reference_dir / "ncsnv2_32" / "checkpoint.pth")
    msg = str(info.value)
    assert "another architecture" in msg and "missing keys" in msg and "res5" in msg


def test_official_checkpoint_without_prefix_round_trips(tmp_path, reference_dir):
    folder = reference_dir / "ncsn_32"
    cfg = nf.load_config(folder / "config.yml")
    model = nf.build_model(cfg)
    nf.load_checkpoint(model, folder / "checkpoint.pth", ema=True)
    path = nf.save_checkpoint(tmp_path / "mine.pth", model=model.state_dict(), config=cfg.to_dict())
    again = nf.build_model(nf.load_config(read_checkpoint(path)["config"]))
    with pytest.warns(UserWarning, match="no EMA"):
        nf.load_checkpoint(again, path, ema=True)
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 9])
    with torch.no_grad():
        assert rel_err(again(x, y), model(x, y)) == 0.0
