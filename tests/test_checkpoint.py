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
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
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


def test_random_bytes_are_not_a_checkpoint_and_the_safety_check_is_never_waived(tmp_path):
    import os

    p = tmp_path / "random_bytes.pth"
    p.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(p)
    msg = str(info.value)
    assert "not a PyTorch checkpoint" in msg and "weights_only" not in msg and "\n" not in msg
    torch.save({"model": {"w": torch.zeros(1)}, "net": torch.nn.Linear(2, 2)}, tmp_path / "module.pth")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "module.pth")
    assert "holds Python objects" in str(info.value) and "Linear" in str(info.value)
    assert "weights_only` set to `False`" not in str(info.value)


def _wrapped_states(model):
    """State dicts as saved from every wrapper people put around a model (and their EMA keyed the same way)."""
    import os
    import socket

    import torch.distributed as dist

    wrappers = {
        "plain": lambda m: m,
        "DataParallel": torch.nn.DataParallel,
        "compile": torch.compile,
        "DataParallel(compile)": lambda m: torch.nn.DataParallel(torch.compile(m)),
        "compile(DataParallel)": lambda m: torch.compile(torch.nn.DataParallel(m)),
    }
    states = {name: wrap(model).state_dict() for name, wrap in wrappers.items()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        states["DDP"] = ddp.state_dict()
        states["compile(DDP)"] = torch.compile(ddp).state_dict()
    finally:
        dist.destroy_process_group()
    return states


def test_every_wrapper_prefix_combination_loads_model_and_ema(tmp_path):
    model = nf.build_model(small_cfg())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    truth = {k: v.clone() for k, v in model.state_dict().items()}
    params = {k for k, _ in model.named_parameters()}
    states = _wrapped_states(model)
    prefixes = {name: next(iter(state)).removesuffix(next(iter(truth))) for name, state in states.items()}
    assert set(prefixes.values()) >= {"", "module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."}
    for name, state in states.items():
        ema = {k: v * 2 for k, v in state.items() if k[len(prefixes[name]) :] in params}
        assert len(ema) == len(params)
        for layout, payload in (
            ("official", [state, {}, 1, 5, ema]),
            ("ours", {"format": "ncsn_fast", "model": state, "ema": ema}),
        ):
            path = tmp_path / f"{name}-{layout}.pth"
            torch.save(payload, path)
            fresh = nf.build_model(small_cfg())
            nf.load_checkpoint(fresh, path, ema=False)
            for k, v in fresh.state_dict().items():
                assert torch.equal(v, truth[k]), (name, layout, k)
            nf.load_checkpoint(fresh, path, ema=True)
            for k, p in fresh.named_parameters():
                assert torch.equal(p, 2 * truth[k]), (name, layout, k)


def _sigma_case(reference_dir, sigma_begin):
    cfg = nf.load_config(reference_dir / "ncsnv2_32" / "config.yml")
    cfg.model.sigma_begin = sigma_begin
    return cfg, reference_dir / "ncsnv2_32" / "checkpoint.pth"


def test_a_checkpoint_with_another_sigma_schedule_is_refused_naming_both(reference_dir):
    cfg, path = _sigma_case(reference_dir, 25.0)
    with pytest.raises(CheckpointError) as info:
        nf.load_checkpoint(nf.build_model(cfg), path)
    msg = str(info.value)
    assert "σ1 = 50, σL = 0.01, L = 10" in msg and "σ1 = 25, σL = 0.01, L = 10" in msg and "adopt" in msg


def test_adopting_the_checkpoint_schedule_makes_every_path_agree(reference_dir):
    official = torch.load(reference_dir / "ncsnv2_32" / "checkpoint.pth", weights_only=True)[0]["module.sigmas"]
    cfg, path = _sigma_case(reference_dir, 25.0)
    model = nf.build_model(cfg)
    with pytest.warns(UserWarning, match="adopted the checkpoint's σ schedule"):
        nf.load_checkpoint(model, path, adopt_schedule=True)
    assert torch.equal(model.sigmas, official)
    assert torch.allclose(nf.get_sigmas(cfg), official, rtol=1e-6)  # the config the samplers read
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        by_label = model.eval()(x, torch.tensor([0, 9]))
        by_sigma = model.score(x, nf.get_sigmas(cfg)[[0, 9]])
    assert rel_err(by_sigma, by_label) < 1e-5


def test_init_with_another_schedule_is_refused_too(tmp_path, reference_dir):
    from ncsn_fast.train import train

    cfg, path = _sigma_case(reference_dir, 25.0)
    cfg.training.batch_size = 2
    with pytest.raises(CheckpointError, match="σ1 = 50.*σ1 = 25"):
        train(cfg, tmp_path / "w", max_steps=1, quiet=True, data=torch.rand(4, 3, 32, 32), init=path)
    assert not (tmp_path / "w").exists()


def test_the_bundled_weights_load_without_a_false_warning():
    import warnings

    from ncsn_fast.pretrained import pretrained_path

    model = nf.build_model(nf.load_config("digits"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = nf.load_checkpoint(model, pretrained_path("digits"))
    assert info["weights"] == "ema" and info["step"] == 5000
