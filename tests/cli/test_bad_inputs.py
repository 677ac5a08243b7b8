"""A new user's bad inputs, as typed: every one is exit code 2, one line on stderr naming the flag (or argument) and
the value, found before the network runs once (a call counter on the model's forward, not a clock), and nothing
left behind.

94 distinct bad inputs: sample 60, train 11, configure 5, fid / fid-stats / fid-select / neighbors / test-loss 12,
likelihood 3, bench 3 (the parametrize list below; argparse's own errors are one line too).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
from torchvision.utils import save_image

from ncsn_fast.cli import main
from ncsn_fast.models.refinenet import RefineNetScore

NO_GPU = not torch.cuda.is_available()


@pytest.fixture
def workspace(tmp_path, monkeypatch, reference_dir):
    monkeypatch.chdir(tmp_path)
    save_image(torch.rand(1, 16, 16), "img.png")
    save_image(torch.ones(1, 12, 12), "mask12.png")
    save_image(torch.ones(1, 16, 16), "mask.png")
    (tmp_path / "notes.txt").write_text("not an image, not a checkpoint")
    torch.save(torch.full((1, 16, 16), 2.0), tmp_path / "bright.pt")  # pixel values outside [0, 1]
    (tmp_path / "random_bytes.pth").write_bytes(os.urandom(2048))
    (tmp_path / "taken").write_text("an existing file")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "checkpoint_5.pth").write_bytes(b"an earlier run's checkpoint")
    (tmp_path / "bad.yml").write_text("sampling:\n  n_step_each: 5\n")
    (tmp_path / "run").mkdir()  # a run folder whose config.yml carries a Python tag other than argparse.Namespace
    (tmp_path / "run" / "config.yml").write_text(
        "!!python/object:argparse.Namespace\nmodel: !!python/object:argparse.Namespace\n  ngf: 16\n"
        "device: !!python/object/apply:torch.device\n- cuda\n"
    )
    (tmp_path / "freq.yml").write_text("training:\n  ngpu: 1\n  algo: dsm_freq\nmodel:\n  batch_norm: false\n")
    import numpy as np

    np.savez(tmp_path / "two.npz", a=np.zeros((2, 1, 16, 16)), b=np.zeros(3))
    os.symlink(reference_dir / "ncsn_32", tmp_path / "ncsn")
    calls = []
    original = RefineNetScore.forward

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RefineNetScore, "forward", counting)
    monkeypatch.setattr(RefineNetScore, "score", lambda self, *a, **k: calls.append(1))
    return tmp_path, calls


CASES = [
    # sample: sizes and numbers
    (["sample", "--n", "0"], ["--n", "0"]),
    (["sample", "--n", "-5"], ["--n", "-5"]),
    (["sample", "--n", "abc"], ["--n", "abc"]),
    (["sample", "--steps", "0"], ["--steps", "0"]),
    (["sample", "--steps", "-1"], ["--steps", "-1"]),
    (["sample", "--every", "0"], ["--every", "0"]),
    (["sample", "--step-lr", "0"], ["--step-lr", "0"]),
    (["sample", "--step-lr=-1e-5"], ["--step-lr", "-1e-05"]),
    (["sample", "--step-lr", "nan"], ["--step-lr", "nan"]),
    (["sample", "--batch-size", "0"], ["--batch-size", "0"]),
    (["sample", "--interpolate", "0"], ["--interpolate", "0"]),
    (["sample", "--seed", "-1"], ["--seed", "-1"]),
    (["sample", "--churn", "-1", "--sampler", "heun"], ["--churn", "-1"]),
    (["sample", "--snr", "0.1", "--sampler", "heun", "--nfe", "10"], ["--snr", "pc"]),
    (["sample", "--sampler", "heun", "--steps", "3"], ["--steps", "heun", "--rho, --churn"]),
    (["sample", "--sampler", "heun", "--step-lr", "1"], ["--step-lr", "heun", "--rho, --churn"]),
    (["sample", "--sampler", "ald", "--nfe", "25", "--every", "2"], ["--every", "without --nfe"]),
    # sample: samplers and choices
    (["sample", "--sampler", "ddim"], ["sampler", "ddim"]),
    (["sample", "--sampler", "heun", "--nfe", "2"], ["--nfe", "2"]),
    (["sample", "--sampler", "pc", "--nfe", "1"], ["--nfe", "1"]),
    (["sample", "--nfe", "0"], ["--nfe", "0"]),
    (["sample", "--backend", "fused"], ["--backend", "fused"]),
    (["sample", "--precision", "fp8"], ["--precision", "fp8"]),
    (["sample", "--sampler", "heun", "--inpaint", "img.png", "--mask", "mask.png"], ["--inpaint", "heun"]),
    # sample: files
    (["sample", "--inpaint", "img.png"], ["--inpaint", "--mask"]),
    (["sample", "--inpaint", "missing.png", "--mask", "mask.png"], ["--inpaint", "missing.png"]),
    (["sample", "--inpaint", "notes.txt", "--mask", "mask.png"], ["--inpaint", "notes.txt"]),
    (["sample", "--inpaint", "img.png", "--mask", "mask12.png"], ["--mask", "(12, 12)"]),
    (["sample", "--inpaint", "img.png", "--mask", "mask.png", "--interpolate", "3"], ["--inpaint", "--interpolate"]),
    # sample: editing (SDEdit, colorization, super-resolution)
    (["sample", "--strength", "0.5"], ["--strength", "--init-image"]),
    (["sample", "--init-image", "img.png", "--strength", "0"], ["--strength", "0"]),
    (["sample", "--init-image", "img.png", "--strength", "1.5"], ["--strength", "1.5"]),
    (["sample", "--init-image", "missing.png"], ["--init-image", "missing.png"]),
    (["sample", "--init-image", "notes.txt"], ["--init-image", "notes.txt"]),
    (["sample", "--init-image", "bright.pt"], ["--init-image", "[0, 1]"]),
    (["sample", "--init-image", "img.png", "--interpolate", "2"], ["--interpolate", "--init-image"]),
    (["sample", "--init-image", "img.png", "--every", "2"], ["--every", "--init-image"]),
    (["sample", "--super-resolve", "img.png", "--factor", "2", "--data-init"], ["--data-init", "--super-resolve"]),
    (["sample", "--colorize", "img.png"], ["--colorize", "RGB"]),
    (["sample", "--colorize", "img.png", "--inpaint", "img.png", "--mask", "mask.png"], ["--inpaint", "--colorize"]),
    (["sample", "--super-resolve", "img.png"], ["--super-resolve", "--factor"]),
    (["sample", "--factor", "2"], ["--super-resolve", "--factor"]),
    (["sample", "--super-resolve", "img.png", "--factor", "0"], ["--factor", "0"]),
    (["sample", "--super-resolve", "img.png", "--factor", "3"], ["--factor", "3", "16"]),
    (["sample", "--super-resolve", "img.png", "--factor", "2"], ["--super-resolve", "(16, 16)", "(8, 8)"]),
    (["sample", "--config", "cifar100"], ["--config", "cifar100"]),
    (["sample", "--config", "bad.yml", "--ckpt", "missing.pth"], ["sampling.n_step_each", "5"]),
    (["sample", "--config", "cifar10"], ["--ckpt", "required"]),
    (["sample", "--ckpt", "missing.pth"], ["--ckpt", "missing.pth"]),
    (["sample", "--ckpt", "random_bytes.pth"], ["random_bytes.pth", "not a PyTorch checkpoint"]),
    (["sample", "--ckpt", "emptydir"], ["--ckpt", "emptydir"]),
    (["sample", "--out", "taken"], ["--out", "taken"]),
    (["sample", "--out", "/proc/x"], ["--out", "/proc/x"]),
    (["sample", "--device", "tpu"], ["--device", "tpu"]),
    (["sample", "--device", "cuda:7"], ["--device", "cuda:7"]),
    (["sample", "--cuda-graphs"], ["--cuda-graphs", "cpu"]),
    (
        ["sample", "--ckpt", "ncsn/checkpoint.pth", "--config", "ncsn/config.yml", "--sampler", "heun"],
        ["NCSNv2", "heun"],
    ),
    # sample: files of the official code
    (["sample", "--ckpt", "run"], ["--ckpt", "run/config.yml", "line 4", "!!python/object/apply:torch.device"]),
    (["sample", "--config", "freq.yml", "--ckpt", "ncsn/checkpoint.pth"], ["training.algo", "dsm_freq"]),
    (["sample", "--ckpt", "ncsn/checkpoint.pth", "--config", "cifar10"], ["ncsn/checkpoint.pth", "model.name: ncsn:"]),
    # train
    (["train", "--config", "digits", "--workdir", "w", "--max-steps", "0"], ["--max-steps", "0"]),
    (["train", "--config", "digits", "--workdir", "w", "--keep", "0"], ["--keep", "0"]),
    (["train", "--config", "digits", "--workdir", "w", "--batch-size", "0"], ["--batch-size", "0"]),
    (["train", "--config", "digits", "--workdir", "w", "--device", "cuda"], ["--device", "cuda"]),
    (["train", "--config", "digits", "--workdir", "typo", "--resume"], ["resume", "typo"]),
    (["train", "--config", "digits", "--workdir", "taken"], ["--workdir", "taken"]),
    (["train", "--config", "digits", "--workdir", "used"], ["--workdir", "used", "checkpoint_5.pth", "--resume"]),
    (["train", "--config", "digits", "--workdir", "w", "--init", "missing.pth"], ["--init", "missing.pth"]),
    (["train", "--config", "digits", "--workdir", "w", "--init", "random_bytes.pth"], ["random_bytes.pth"]),
    (["train", "--config", "nope", "--workdir", "w"], ["--config", "nope"]),
    (["train", "--config", "digits", "--workdir", "w", "--resume", "--init", "img.png"], ["--resume", "--init"]),
    # configure
    (["configure", "nothing_here"], ["DATA", "nothing_here"]),
    (["configure", "digits", "--steps-each", "0"], ["--steps-each", "0"]),
    (["configure", "digits", "--sigma-end", "0"], ["--sigma-end", "0"]),
    (["configure", "digits", "--sigma-end", "100"], ["--sigma-end", "100"]),
    (["configure", "digits", "--out", "/proc/d.yml"], ["--out", "/proc/d.yml"]),
    # evaluation
    (["fid", "--stats", "notes.txt"], ["--stats", "notes.txt"]),
    (["fid", "--stats", "two.npz", "--out", "/proc/f"], ["--out", "/proc/f"]),
    (["fid", "--stats", "two.npz", "--n", "1"], ["--n", "1"]),
    (["fid-stats", "digits", "--out", "stats.txt"], ["--out", "stats.txt"]),
    (["fid-stats", "nothing_here", "--out", "s.npz"], ["DATA", "nothing_here"]),
    (["fid-select", "--ckpts", "nowhere", "--stats", "two.npz"], ["--ckpts", "nowhere"]),
    (["neighbors", "--samples", "notes.txt"], ["--samples", "notes.txt"]),
    (["neighbors", "--samples", "two.npz"], ["--samples", "two.npz"]),
    (["neighbors", "--k", "0"], ["--k", "0"]),
    (["neighbors", "--out", "grid.jpg"], ["--out", "grid.jpg"]),
    (["test-loss", "--ckpts", "nowhere"], ["--ckpts", "nowhere"]),
    (["fid", "--stats", "two.npz", "--weights", "missing.pth"], ["--weights", "missing.pth"]),
    (["likelihood", "--n", "0"], ["--n", "0"]),
    (["likelihood", "--probes", "1"], ["--probes", "1"]),
    (["likelihood", "--out", "bpd.txt"], ["--out", "bpd.txt"]),
    # bench
    (["bench", "table6", "--datasets", "imagenet"], ["--datasets", "imagenet"]),
    (["bench", "table6", "--k", "0"], ["--k", "0"]),
    (["bench", "table6", "--out", "taken"], ["--out", "taken"]),
]


@pytest.mark.parametrize("args,needles", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_before_any_work(args, needles, workspace, capsys):
    root, calls = workspace
    if "cuda" in " ".join(args) and not NO_GPU:
        pytest.skip("a GPU is present: the CUDA inputs are not bad here")
    before = sorted(p.name for p in root.iterdir())
    code = main(args) if "--help" not in args else None
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("ncsn-fast: warning:")]
    assert code == 2, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    assert calls == [], "the network ran before the error"
    assert sorted(p.name for p in root.iterdir()) == before  # nothing left behind


def test_the_count_in_the_docstring_is_true():
    assert len(CASES) >= 40 and str(len(CASES)) in sys.modules[__name__].__doc__
