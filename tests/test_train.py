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


def _ddp_worker(rank: int, world: int, port: int, workdir: str, result: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    out = train(tiny_cfg(), workdir, max_steps=6, snapshot_every=6, quiet=True, data=_ddp_data())
    torch.save(out["model"].state_dict(), f"{result}.{rank}")
    torch.distributed.destroy_process_group()


def _ddp_data() -> torch.Tensor:
    return torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))


def test_ddp_two_processes_match_one_process(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = str(tmp_path / "weights")
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path / "ddp"), result), nprocs=2, join=True)
    w0, w1 = torch.load(f"{result}.0", weights_only=True), torch.load(f"{result}.1", weights_only=True)
    single = train(tiny_cfg(), tmp_path / "single", max_steps=6, snapshot_every=6, quiet=True, data=_ddp_data())
    ws = single["model"].state_dict()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k  # ranks stay identical
        assert torch.allclose(w0[k], ws[k], rtol=1e-4, atol=1e-5), k  # = one process with the global batch
    assert sorted(p.name for p in (tmp_path / "ddp").glob("checkpoint_*.pth")) == ["checkpoint_6.pth"]


def test_bf16_autocast_tracks_fp32(tmp_path):
    data = load_small_digits()
    fp32 = train(tiny_cfg(), tmp_path / "a", max_steps=50, snapshot_every=50, quiet=True, data=data)
    bf16 = train(tiny_cfg(), tmp_path / "b", max_steps=50, snapshot_every=50, quiet=True, data=data, precision="bf16")
    a, b = np.array(fp32["losses"]), np.array(bf16["losses"])
    # Stated tolerance: every step's loss within 5% of fp32's over the first 50 steps (same batches and noise).
    assert np.all(np.abs(b - a) / a < 0.05), np.max(np.abs(b - a) / a)


def load_small_digits() -> torch.Tensor:
    from ncsn_fast.data import load_digits

    return load_digits(16)[:256]


@pytest.fixture
def slow_saves():
    """Start `ncsn-fast train` in a subprocess whose checkpoint writes pause 0.3 s between the fsync of the temporary
    file and its rename (ncsn_fast.io._before_replace), so that a kill can land inside a write."""
    import subprocess
    import sys

    code = (
        "import sys, time, ncsn_fast.io as io; io._before_replace = lambda: time.sleep(0.3); "
        "from ncsn_fast.cli import main; sys.exit(main(sys.argv[1:]))"
    )

    def start(cfg_path, workdir, resume: bool, env):
        args = [sys.executable, "-c", code, "train", "--config", str(cfg_path), "--workdir", str(workdir)]
        args += ["--max-steps", "40", "--snapshot-every", "4", "--log-every", "4", "--quiet"]
        return subprocess.Popen(args + (["--resume"] if resume else []), env=env)

    return start


@pytest.mark.slow
def test_kill_9_at_five_moments_then_resume_equals_uninterrupted(tmp_path, slow_saves):
    import os
    import time

    cfg = tiny_cfg()
    cfg_path = tmp_path / "tiny.yml"
    cfg_path.write_text(cfg.to_yaml())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    _start = slow_saves
    ref = _start(cfg_path, tmp_path / "ref", False, env)
    assert ref.wait(timeout=600) == 0
    work = tmp_path / "killed"
    rng = np.random.default_rng(0)
    hit_write = False
    for attempt in range(5):
        proc = _start(cfg_path, work, attempt > 0, env)
        if attempt == 4:  # the last kill lands while a checkpoint is being written
            deadline = time.time() + 120
            while not list(work.glob(".checkpoint_*.tmp")) and time.time() < deadline and proc.poll() is None:
                time.sleep(0.01)
            hit_write = bool(list(work.glob(".checkpoint_*.tmp")))
        else:
            while attempt == 0 and not work.exists() and proc.poll() is None:
                time.sleep(0.01)  # a run killed before it made its workdir has nothing to resume (an error)
            time.sleep(float(rng.uniform(1.0, 4.0)))
        proc.kill()  # SIGKILL: no cleanup, no atexit
        proc.wait()
        for ckpt in work.glob("checkpoint_*.pth"):  # every checkpoint on disk is complete and loadable
            read_checkpoint(ckpt)
    assert hit_write
    final = _start(cfg_path, work, True, env)
    assert final.wait(timeout=600) == 0
    a = read_checkpoint(tmp_path / "ref" / "checkpoint_40.pth")
    b = read_checkpoint(work / "checkpoint_40.pth")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k


def test_bad_training_input(tmp_path):
    from ncsn_fast.cli import main
    from ncsn_fast.data import DataError

    (tmp_path / "empty").mkdir()
    cfg = {"data": {"dataset": "MYFOLDER", "image_size": 16}, "model": {"ngf": 4, "num_classes": 5}}
    with pytest.raises(DataError, match="no images"):
        train(nf.load_config(cfg), tmp_path / "w", max_steps=1, data_root=tmp_path / "empty", quiet=True)
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        train(nf.load_config("cifar10"), tmp_path / "w", max_steps=1, data_root=tmp_path / "empty", quiet=True)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="workdir"):
        train(tiny_cfg(), blocker / "sub", max_steps=1, quiet=True)
    train(tiny_cfg(), tmp_path / "r", max_steps=2, snapshot_every=2, quiet=True)
    with pytest.raises(ValueError, match="another config.*model.ngf"):
        train(tiny_cfg(ngf=6), tmp_path / "r", max_steps=4, resume=True, quiet=True)
    assert main(["train", "--config", "digits", "--workdir", str(tmp_path / "x"), "--max-steps", "0"]) == 2
    assert not (tmp_path / "x").exists()


def test_start_from_an_official_checkpoint(tmp_path, reference_dir):
    folder = reference_dir / "ncsnv2_32"
    cfg = nf.load_config(folder / "config.yml")
    cfg.training.batch_size = 4
    data = torch.rand(8, 3, 32, 32)
    out = train(cfg, tmp_path, max_steps=1, snapshot_every=1, quiet=True, data=data, init=folder / "checkpoint.pth")
    official = torch.load(folder / "checkpoint.pth", weights_only=True)
    # one Adam step away from the official weights (the official Adam state was loaded too)
    w = out["model"].state_dict()["begin_conv.weight"]
    ref = official[0]["module.begin_conv.weight"]
    assert 0 < float((w - ref).abs().max()) < 10 * cfg.optim.lr


def test_ema_starts_from_the_init_weights_when_the_checkpoint_has_none(tmp_path, capsys):
    """Issue input: a bare state_dict as --init, one step; the EMA must be μ·init + (1 − μ)·θ_1, not the average of
    a random model (which was ≈ 0.69 away)."""
    from ncsn_fast.cli import main

    cfg = tiny_cfg()
    cfg.model.ngf = 8
    cfg_path = tmp_path / "cfg.yml"
    cfg_path.write_text(cfg.to_yaml())
    torch.manual_seed(123)
    init = nf.build_model(cfg).state_dict()
    torch.save(init, tmp_path / "init.pth")
    args = [
        "train",
        "--config",
        str(cfg_path),
        "--workdir",
        str(tmp_path / "run"),
        "--init",
        str(tmp_path / "init.pth"),
    ]
    assert main([*args, "--max-steps", "1", "--no-compile", "--quiet"]) == 0
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoint_1.pth")
    mu = cfg.model.ema_rate
    for name, shadow in ckpt["ema"].items():
        expected = mu * init[name] + (1 - mu) * ckpt["model"][name]
        assert torch.allclose(shadow, expected, rtol=1e-5, atol=1e-6), name
    worst = max(float((ckpt["ema"][k] - init[k]).abs().max()) for k in ckpt["ema"])
    assert worst < 1e-3  # one step of Adam (lr 1e-3) moves the EMA by at most (1 − μ)·lr


def test_an_init_checkpoint_with_ema_state_gives_the_ema_its_own_state(tmp_path):
    cfg = tiny_cfg()
    torch.manual_seed(5)
    model = nf.build_model(cfg)
    ema = {k: torch.randn_like(p) for k, p in model.named_parameters()}
    nf.save_checkpoint(tmp_path / "init.pth", model=model.state_dict(), ema=ema)
    out = train(cfg, tmp_path / "w", max_steps=1, quiet=True, data=load_small_digits(), init=tmp_path / "init.pth")
    mu = cfg.model.ema_rate
    for k, p in out["model"].named_parameters():
        assert torch.allclose(out["ema"].shadow[k], mu * ema[k] + (1 - mu) * p.detach(), rtol=1e-5, atol=1e-6)


def test_resume_on_a_mistyped_workdir_fails_and_creates_nothing(tmp_path):
    with pytest.raises(ValueError, match="resume: nothing to resume in"):
        train(tiny_cfg(), tmp_path / "typo", max_steps=2, resume=True, quiet=True, data=load_small_digits())
    assert not (tmp_path / "typo").exists()


def test_training_says_where_it_starts_and_what_it_saves_and_draws_the_loss(tmp_path, capsys):
    data = load_small_digits()
    train(tiny_cfg(), tmp_path, max_steps=6, snapshot_every=3, log_every=50, data=data)
    err = "".join(capsys.readouterr())
    assert "starting at step 0" in err and "saved checkpoint_3.pth" in err and "saved checkpoint_6.pth" in err
    assert (tmp_path / "loss.png").stat().st_size > 0  # a run shorter than log_every still draws its curve
    train(tiny_cfg(), tmp_path, max_steps=9, snapshot_every=3, log_every=50, data=data, resume=True)
    assert "resumed from checkpoint_6.pth (step 6)" in "".join(capsys.readouterr())
    import json

    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no duplicated or stale lines after a resume


def test_a_failed_run_leaves_no_empty_workdir_and_bad_devices_fail_first(tmp_path, capsys):
    from ncsn_fast.cli import main

    data = torch.rand(64, 1, 16, 16)
    data[:, :, 3, 3] = float("inf")
    with pytest.raises(FloatingPointError):
        train(tiny_cfg(), tmp_path / "nan", max_steps=5, quiet=True, data=data)
    assert not (tmp_path / "nan").exists()
    for device in ("cuda", "cuda:3", "tpu"):
        if device.startswith("cuda") and torch.cuda.is_available():
            continue
        code = main(["train", "--config", "digits", "--workdir", str(tmp_path / "dev"), "--device", device])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "--device" in err[0] and device in err[0]
        assert not (tmp_path / "dev").exists()


def _tree(folder):
    """Every file under ``folder`` (hidden ones too) → its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_used_workdir_is_refused_and_left_byte_identical_after_ctrl_c(tmp_path):
    """Issue 22 item 5: a run stopped by SIGINT after its checkpoints, then a second `train` into the same workdir
    (the command line and the library): refused in one line naming the newest checkpoint and both ways on, and not
    one byte of the first run changes (before, its old checkpoint outranked the new ones and pruning removed them)."""
    import signal
    import subprocess
    import sys
    import time

    from ncsn_fast.cli import main

    cfg_path = tmp_path / "tiny.yml"
    cfg_path.write_text(tiny_cfg().to_yaml())
    work = tmp_path / "w"
    cmd = [sys.executable, "-m", "ncsn_fast.cli", "train", "--config", str(cfg_path), "--workdir", str(work)]
    first = subprocess.Popen(cmd + ["--max-steps", "100000", "--snapshot-every", "2", "--log-every", "1", "--quiet"],
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    while len(list(work.glob("checkpoint_*.pth"))) < 2 and time.time() < deadline and first.poll() is None:
        time.sleep(0.02)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    newest = latest_checkpoint(work)
    assert first.returncode == 130 and f"kept, newest {newest.name}" in err.splitlines()[-1], err[-500:]
    before = _tree(work)
    assert newest is not None and "metrics.jsonl" in before

    second = ["train", "--config", str(cfg_path), "--workdir", str(work), "--max-steps", "2", "--snapshot-every", "1"]
    for extra in ([], ["--keep", "1"], ["--init", str(newest)]):
        proc = subprocess.run(cmd[:3] + second + extra, capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        for needle in ("--workdir", str(work), newest.name, "--resume", "another --workdir"):
            assert needle in lines[0], (needle, lines[0])
        assert _tree(work) == before
    with pytest.raises(ValueError, match=rf"^workdir: .*already holds a run \(newest checkpoint {newest.name}.*resume"):
        train(tiny_cfg(), work, max_steps=2, snapshot_every=1, keep=1, quiet=True, data=load_small_digits())
    assert _tree(work) == before
    assert main(["train", "--config", str(cfg_path), "--workdir", str(work), "--resume", "--max-steps", "0"]) == 2
    assert _tree(work) == before  # (a bad flag with --resume: still nothing touched)


def test_a_run_stopped_before_its_first_checkpoint_removes_what_it_made_and_nothing_else(tmp_path, monkeypatch,
                                                                                       capsys):  # fmt: skip
    import ncsn_fast.train as training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", interrupted)
    work = tmp_path / "mine"
    work.mkdir()
    (work / "notes.txt").write_text("the user's own file")
    for folder in (work, tmp_path / "made"):
        with pytest.raises(KeyboardInterrupt):  # after metrics.jsonl was written, at the first checkpoint
            train(tiny_cfg(), folder, max_steps=3, log_every=1, snapshot_every=2, quiet=True, data=load_small_digits())
    assert _tree(work) == {"notes.txt": b"the user's own file"}
    assert not (tmp_path / "made").exists()  # the workdir it made goes too
    cfg_path = tmp_path / "tiny.yml"
    cfg_path.write_text(tiny_cfg().to_yaml())
    from ncsn_fast.cli import main

    args = ["train", "--config", str(cfg_path), "--workdir", str(tmp_path / "cli"), "--max-steps", "3", "--quiet"]
    assert main(args + ["--log-every", "1", "--snapshot-every", "2"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "ncsn-fast: interrupted; nothing written"
    assert not (tmp_path / "cli").exists()


def test_a_workdir_with_only_a_log_is_refused_and_resume_starts_it_again(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n')
    with pytest.raises(ValueError, match="workdir: .*metrics.jsonl of a run stopped before its first checkpoint"):
        train(tiny_cfg(), work, max_steps=1, quiet=True, data=load_small_digits())
    assert (work / "metrics.jsonl").read_text().count("\n") == 2
    train(tiny_cfg(), work, max_steps=1, log_every=1, resume=True, quiet=True, data=load_small_digits())
    import json

    assert [json.loads(line)["step"] for line in (work / "metrics.jsonl").read_text().splitlines()] == [1]
