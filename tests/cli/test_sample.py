"""`ncsn-fast` end to end: bad inputs give one line on stderr, exit code 2 and write nothing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torchvision.utils import save_image

from ncsn_fast.cli import main


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--n", "0"], "--n"),
        (["--steps", "-1"], "--steps"),
        (["--every", "0"], "--every"),
        (["--ckpt", "/no/such/file.pth", "--config", "cifar10"], "no such file"),
        (["--config", "no_such_preset", "--ckpt", "x.pth"], "no_such_preset"),
        (["--config", "cifar10"], "--ckpt"),
        (["--inpaint", "a.png"], "--mask"),
        (["--sampler", "ddim"], "unknown sampler"),
        (["--sampler", "heun", "--nfe", "2"], "at least 3"),
        (["--sampler", "pc", "--nfe", "1"], "at least"),
    ],
)
def test_sample_bad_input(args, needle, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["sample", "--quiet", "--out", str(out), *args], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err
    assert not out.exists()


def test_wrong_checkpoint_architecture(tmp_path, capsys, reference_dir):
    out = tmp_path / "out"
    ckpt = str(reference_dir / "ncsnv2_32" / "checkpoint.pth")
    code, _, err = run_cli(["sample", "--quiet", "--config", "celeba", "--ckpt", ckpt, "--out", str(out)], capsys)
    assert code == 2 and "another architecture" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_mask_of_another_size(tmp_path, capsys):
    save_image(torch.rand(1, 16, 16), tmp_path / "img.png")
    save_image(torch.ones(1, 12, 12), tmp_path / "mask.png")
    out = tmp_path / "out"
    args = ["--inpaint", str(tmp_path / "img.png"), "--mask", str(tmp_path / "mask.png")]
    code, _, err = run_cli(["sample", "--quiet", "--out", str(out), *args], capsys)
    assert code == 2 and "--mask" in err and "(12, 12)" in err
    assert not out.exists()


def test_sample_official_checkpoint_and_outputs(tmp_path, capsys, reference_dir):
    folder = reference_dir / "ncsnv2_32"
    out = tmp_path / "out"
    args = ["--config", str(folder / "config.yml"), "--ckpt", str(folder / "checkpoint.pth"), "--n", "2"]
    code, stdout, _ = run_cli(["sample", "--quiet", "--steps", "1", "--out", str(out), *args], capsys)
    assert code == 0 and "samples.png" in stdout
    samples = torch.load(out / "samples.pt", weights_only=True)
    assert samples.shape == (2, 3, 32, 32) and samples.min() >= 0 and samples.max() <= 1
    # the grid shows these samples: 2 columns of 32 px upscaled ×4 to ≥ 256 px, padding 4; tile k at 4 + k·(128 + 4)
    from PIL import Image

    grid = torch.from_numpy(np.asarray(Image.open(out / "samples.png").convert("RGB"))).permute(2, 0, 1).float() / 255
    for k in range(2):
        tile = grid[:, 4 : 4 + 128 : 4, 4 + k * 132 : 4 + k * 132 + 128 : 4]
        assert (tile - samples[k]).abs().max() <= 1 / 255 + 1e-6


def test_bundled_inpaint_and_interpolate(tmp_path, capsys):
    img = torch.rand(1, 16, 16)
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1
    save_image(img, tmp_path / "img.png")
    save_image(mask, tmp_path / "mask.png")
    common = ["sample", "--quiet", "--every", "8", "--steps", "1", "--n", "2"]
    code, _, _ = run_cli(
        [
            *common,
            "--out",
            str(tmp_path / "a"),
            "--inpaint",
            str(tmp_path / "img.png"),
            "--mask",
            str(tmp_path / "mask.png"),
        ],
        capsys,
    )
    assert code == 0
    got = torch.load(tmp_path / "a" / "samples.pt", weights_only=True)
    saved = (img * 255).round() / 255  # what the PNG holds
    assert torch.allclose(got[:, :, :, :8], saved[:, :, :8].expand(2, 1, 16, 8), atol=1e-6)
    code, _, _ = run_cli([*common, "--out", str(tmp_path / "b"), "--interpolate", "3"], capsys)
    assert code == 0
    assert torch.load(tmp_path / "b" / "samples.pt", weights_only=True).shape == (10, 1, 16, 16)
    code, _, _ = run_cli([*common, "--out", str(tmp_path / "c"), "--data-init"], capsys)
    assert code == 0 and (tmp_path / "c" / "samples.png").is_file()


def test_heun_on_the_original_ncsn_is_refused(tmp_path, capsys, reference_dir):
    folder = reference_dir / "ncsn_32"
    args = ["--config", str(folder / "config.yml"), "--ckpt", str(folder / "checkpoint.pth"), "--sampler", "heun"]
    code, _, err = run_cli(["sample", "--quiet", "--nfe", "10", "--out", str(tmp_path / "o"), *args], capsys)
    assert code == 2 and "NCSNv2" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("sampler", ["heun", "pc", "cas", "ald"])
def test_budget_samplers_run_on_the_bundled_model(sampler, tmp_path, capsys):
    out = tmp_path / sampler
    code, stdout, _ = run_cli(
        ["sample", "--quiet", "--sampler", sampler, "--nfe", "12", "--n", "2", "--out", str(out)], capsys
    )
    assert code == 0 and f"sampler={sampler}" in stdout
    assert torch.load(out / "samples.pt", weights_only=True).shape == (2, 1, 16, 16)


def test_configure_digits_reproduces_the_preset(tmp_path, capsys):
    code, out, _ = run_cli(["configure", "digits", "--out", str(tmp_path / "d.yml")], capsys)
    assert code == 0
    assert "L       = 49" in out and "sigma_1 = 8.54" in out and "epsilon = 1.61e-05" in out
    import ncsn_fast as nf

    cfg = nf.load_config(tmp_path / "d.yml")
    assert cfg.model.num_classes == 49 and cfg.sampling.step_lr == pytest.approx(1.61e-5)


def test_console_script_installed():
    """The installed `ncsn-fast` script (beside this Python) and `python -m ncsn_fast.cli` both answer."""
    import shutil
    from pathlib import Path

    script = Path(sys.executable).parent / "ncsn-fast"
    script = str(script) if script.exists() else shutil.which("ncsn-fast")
    assert script, "the ncsn-fast console script is not installed (pip install -e .)"
    out = subprocess.run([script, "--version"], capture_output=True, text=True)
    import ncsn_fast

    assert out.returncode == 0 and out.stdout.startswith(f"ncsn-fast {ncsn_fast.__version__} (torch ")
    out = subprocess.run([script, "sample", "--n", "0"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip() == "ncsn-fast: error: --n: must be at least 1, got 0"
    out = subprocess.run([sys.executable, "-m", "ncsn_fast.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "sample" in out.stdout and "configure" in out.stdout


def test_sample_bf16_and_the_torch_update_on_the_bundled_model(tmp_path, capsys):
    """--precision bf16 (fused update, float32 state) and --backend torch both write valid samples; the same
    seed gives the same fused samples twice."""
    base = ["sample", "--quiet", "--every", "8", "--steps", "1", "--n", "4", "--seed", "5"]
    outs = []
    for extra in (["--precision", "bf16"], ["--precision", "bf16"], ["--backend", "torch"]):
        out = tmp_path / f"run{len(outs)}"
        code, stdout, _ = run_cli([*base, "--out", str(out), *extra], capsys)
        assert code == 0 and "samples.png" in stdout
        outs.append(torch.load(out / "samples.pt", weights_only=True))
    assert all(o.shape == (4, 1, 16, 16) and torch.isfinite(o).all() for o in outs)
    assert torch.equal(outs[0], outs[1])


def test_ctrl_c_is_one_line_exit_130_and_leaves_nothing(tmp_path):
    import signal
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ncsn_fast.cli", "sample", "--n", "400", "--batch-size", "50", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not list(tmp_path.glob("out/.samples.pt.*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)  # wait until sampling has started writing its temporary file
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = [ln for ln in err.splitlines() if ln.startswith("ncsn-fast")]
    assert proc.returncode == 130 and lines == ["ncsn-fast: interrupted; nothing written"], err[-500:]
    assert not out.exists()


def test_a_chain_that_explodes_to_finite_values_is_reported(tmp_path, capsys):
    code, _, err = run_cli(["sample", "--quiet", "--every", "8", "--steps", "1", "--step-lr", "0.5", "--n", "4",
                            "--out", str(tmp_path / "o")], capsys)  # fmt: skip
    assert code in (0, 1)  # finite but far outside the data range: a warning; non-finite: an error naming the level
    assert ("far outside the data range" in err) if code == 0 else ("diverged" in err), err


def test_files_are_written_with_the_umask_not_0600(tmp_path):
    import os

    from ncsn_fast.io import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_samples_stream_in_batches_with_one_grid_of_the_first_100(tmp_path, capsys):
    out = tmp_path / "o"
    code, stdout, _ = run_cli(["sample", "--quiet", "--nfe", "3", "--sampler", "euler", "--n", "130",
                               "--batch-size", "40", "--out", str(out)], capsys)  # fmt: skip
    assert code == 0
    samples = torch.load(out / "samples.pt", weights_only=True)
    assert samples.shape == (130, 1, 16, 16) and torch.isfinite(samples).all()
    from PIL import Image

    width, height = Image.open(out / "samples.png").size  # 100 tiles, 10 per row, 16 px ×2 (≥ 256), padding 2
    assert (width, height) == (10 * 32 + 11 * 2, 10 * 32 + 11 * 2)
    assert sorted(p.name for p in out.iterdir()) == ["samples.png", "samples.pt"]  # no temporary file left


def test_the_config_configure_writes_samples_with_the_bundled_weights(tmp_path, capsys):
    pytest.importorskip("sklearn")
    assert run_cli(["configure", "digits", "--out", str(tmp_path / "digits.yml")], capsys)[0] == 0
    code, stdout, err = run_cli(["sample", "--quiet", "--config", str(tmp_path / "digits.yml"), "--every", "8",
                                 "--steps", "1", "--n", "2", "--out", str(tmp_path / "o")], capsys)  # fmt: skip
    assert code == 0, err


def test_a_training_workdir_as_ckpt_takes_its_latest_checkpoint(tmp_path, capsys):
    import ncsn_fast as nf

    cfg = nf.load_config("digits")
    cfg.model.ngf = 4
    for step in (2, 10):
        torch.manual_seed(step)
        nf.save_checkpoint(tmp_path / "run" / f"checkpoint_{step}.pth", model=nf.build_model(cfg).state_dict(),
                           config=cfg.to_dict(), step=step)  # fmt: skip
    code, stdout, err = run_cli(["sample", "--quiet", "--ckpt", str(tmp_path / "run"), "--no-ema", "--every", "8",
                                 "--steps", "1", "--n", "2", "--out", str(tmp_path / "o")], capsys)  # fmt: skip
    assert code == 0, err
    assert f"--ckpt: using {tmp_path / 'run' / 'checkpoint_10.pth'}" in stdout


def test_interpolation_and_inpainting_honour_verbose_and_crop_non_square_images(tmp_path, capsys):
    common = ["sample", "--quiet", "--every", "8", "--steps", "1", "--n", "1", "--verbose"]
    code, stdout, err = run_cli([*common, "--interpolate", "2", "--out", str(tmp_path / "i")], capsys)
    assert code == 0 and "level    0" in stdout + err
    image = torch.rand(1, 16, 24)  # wider than tall: the short side is resized (16 already) and the centre kept
    mask = torch.zeros(1, 16, 24)
    mask[:, :, :12] = 1  # known: the left half of the wide image → the left 8 columns of the centre crop
    save_image(image, tmp_path / "wide.png")
    save_image(mask, tmp_path / "mask.png")
    args = ["--inpaint", str(tmp_path / "wide.png"), "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "p")]
    code, stdout, err = run_cli([*common, "--backend", "cpu", *args], capsys)
    assert code == 0 and "level    0" in stdout + err, err
    got = torch.load(tmp_path / "p" / "samples.pt", weights_only=True)
    given = (torch.floor(image * 255 + 0.5) / 255)[:, :, 4:20]  # the centre 16 columns
    assert torch.allclose(got[0, :, :, :8], given[:, :, :8], atol=1e-6)
    from PIL import Image

    grid = torch.from_numpy(np.asarray(Image.open(tmp_path / "p" / "samples.png").convert("L"))).float() / 255
    # the first row shows the input, the mask and the known pixels (3 columns of 16 px ×6, padding 6)
    f = 6
    first = grid[f : f + 16 * f : f, f : f + 16 * f : f]
    second = grid[f : f + 16 * f : f, 2 * f + 16 * f : 2 * f + 32 * f : f]
    assert (first - given[0]).abs().max() <= 1 / 255 + 1e-6
    assert torch.equal(second, (torch.arange(16) < 8).float().expand(16, 16))


def test_ctrl_c_into_a_used_out_leaves_the_previous_files_byte_identical(tmp_path):
    """Issue 22 item 6: a run interrupted by SIGINT while it samples into the --out of an earlier run leaves that
    run's samples.png and samples.pt as they were, byte for byte, and nothing of its own (before, it removed the
    earlier samples.png)."""
    import signal
    import time

    out = tmp_path / "rep"
    cli = [sys.executable, "-m", "ncsn_fast.cli", "sample", "--quiet", "--out", str(out)]
    first = subprocess.run(cli + ["--nfe", "10", "--n", "4"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-500:]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"samples.png", "samples.pt"}
    proc = subprocess.Popen(cli + ["--steps", "5", "--n", "400", "--batch-size", "50"], stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.time() + 120
    while not list(out.glob(".samples.pt.*.raw")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)  # sampling has begun: its staged samples.pt is being filled
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = [ln for ln in err.splitlines() if ln.startswith("ncsn-fast")]
    assert proc.returncode == 130 and lines == ["ncsn-fast: interrupted; nothing written"], err[-500:]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
