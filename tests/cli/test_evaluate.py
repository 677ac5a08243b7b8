"""`ncsn-fast fid`, `fid-stats`, `fid-select`, `neighbors` end to end, offline (random Inception weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ncsn_fast.cli import main
from ncsn_fast.data import load_digits
from ncsn_fast.evaluation import GaussianStats, InceptionFeatures, frechet_distance, load_stats
from ncsn_fast.evaluation.inception import random_inception_state

pytest.importorskip("pytorch_fid", reason="pytorch-fid is part of the test extra; install it with `.[test]`")


OFFLINE = ["--weights", "random", "--method", "eigh", "--no-ema", "--quiet"]  # random Inception, fast distance


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def net():
    return InceptionFeatures(random_inception_state(0))


@pytest.fixture(scope="module")
def digit_stats(tmp_path_factory):
    path = tmp_path_factory.mktemp("stats") / "digits.npz"
    assert main(["fid-stats", "digits", "--out", str(path), "--weights", "random", "--n", "40", "--quiet"]) == 0
    return path


def test_fid_stats_are_the_features_of_the_images(digit_stats, net):
    mu, sigma, protocol = load_stats(digit_stats)
    feats = net(load_digits(16)[:40]).double().numpy()  # independent: the network on the same 40 digits
    np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-3, atol=1e-7)
    assert (
        protocol["n"] == 40 and protocol["resize"].startswith("bilinear to 299x299") and "DIGITS" in protocol["source"]
    )


def test_fid_stats_of_a_folder_and_an_array(tmp_path, capsys, net):
    from torchvision.utils import save_image

    imgs = torch.rand(5, 3, 12, 12)
    (tmp_path / "imgs").mkdir()
    for i, im in enumerate(imgs):
        save_image(im, tmp_path / "imgs" / f"{i}.png")
    np.save(tmp_path / "a.npy", (imgs.permute(0, 2, 3, 1) * 255 + 0.5).floor().to(torch.uint8).numpy())  # NHWC uint8
    for src, name in ((tmp_path / "imgs", "f.npz"), (tmp_path / "a.npy", "a.npz")):
        code, out, _ = run(
            ["fid-stats", str(src), "--out", str(tmp_path / name), "--weights", "random", "--quiet"], capsys
        )
        assert code == 0 and "5 images" in out
    (mf, sf, _), (ma, sa, _) = load_stats(tmp_path / "f.npz"), load_stats(tmp_path / "a.npz")
    np.testing.assert_allclose(mf, ma, rtol=1e-5, atol=1e-6)  # a PNG folder and the same pixels as an array agree
    np.testing.assert_allclose(sf, sa, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(mf, net(imgs).double().mean(0).numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_fid_reports_the_distance_of_its_samples_and_its_protocol(tmp_path, capsys, tiny_ckpts, digit_stats, net):
    out = tmp_path / "o1"
    args = [
        "fid",
        "--ckpt",
        str(tiny_ckpts[0]),
        "--n",
        "6",
        "--batch-size",
        "4",
        "--stats",
        str(digit_stats),
        "--weights",
        "random",
        "--save-samples",
        "--no-ema",
        "--quiet",
        "--out",
        str(out),
    ]
    code, stdout, _ = run(args, capsys)
    assert code == 0 and "FID" in stdout and "protocol:" in stdout
    report = json.loads((out / "fid.json").read_text())
    p = report["protocol"]
    assert p["n"] == 6 and p["denoise"] is True and p["world_size"] == 1 and p["standard"] is False
    assert p["quantize"].startswith("8-bit") and p["method"] == "sqrtm"
    samples = torch.load(out / "samples.pt", weights_only=True)
    assert samples.shape == (6, 1, 16, 16) and samples.dtype == torch.uint8
    # independent recomputation: features of the saved samples against the statistics file
    st = GaussianStats(2048).update(net(samples))
    mu, sigma, _ = load_stats(digit_stats)
    assert report["fid"] == pytest.approx(frechet_distance(st.mu, st.cov, mu, sigma), rel=1e-5)
    assert (out / "samples.png").stat().st_size > 0 and (out / "sample_stats.npz").exists()

    # torchrun, two processes: the same samples (sharded by batch) and the same FID
    out2 = tmp_path / "o2"
    args2 = [a if a != "--n" else "--num-samples" for a in args[1:]]
    args2[args2.index(str(out))] = str(out2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "ncsn_fast.cli",
        "fid",
        *args2,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert torch.equal(torch.load(out2 / "samples.pt", weights_only=True), samples)
    report2 = json.loads((out2 / "fid.json").read_text())
    assert report2["protocol"]["world_size"] == 2 and report2["fid"] == pytest.approx(report["fid"], rel=1e-5)


def test_fid_select_reports_both_modes_and_picks_the_best(tmp_path, capsys, tiny_ckpts, digit_stats):
    out = tmp_path / "sel"
    args = [
        "fid-select",
        "--ckpts",
        str(tiny_ckpts[0].parent),
        "--stats",
        str(digit_stats),
        "--n",
        "4",
        *OFFLINE,
        "--out",
        str(out),
    ]
    code, stdout, _ = run(args, capsys)
    assert code == 0 and "best with denoising" in stdout
    report = json.loads((out / "select.json").read_text())
    rows = report["rows"]
    assert [r["step"] for r in rows] == [100, 200]
    for key in ("fid", "fid_denoised"):
        assert report["best"][key]["value"] == min(r[key] for r in rows)
        assert np.isfinite([r[key] for r in rows]).all()
    assert rows[0]["fid"] != rows[0]["fid_denoised"]  # the Tweedie step changes the samples
    assert (out / "select.png").stat().st_size > 0
    # the same seed and schedule through `fid --no-denoise` gives the same number for checkpoint 100
    one = [
        "fid",
        "--ckpt",
        str(tiny_ckpts[0]),
        "--n",
        "4",
        "--stats",
        str(digit_stats),
        "--weights",
        "random",
        "--no-denoise",
        "--method",
        "eigh",
        "--no-ema",
        "--quiet",
        "--out",
        str(tmp_path / "one"),
    ]
    assert run(one, capsys)[0] == 0
    single = json.loads((tmp_path / "one" / "fid.json").read_text())
    assert single["fid"] == pytest.approx(rows[0]["fid"], rel=1e-9)
    # no fast_fid section: its ε is the config's own (sampling, same T), not CIFAR-10's 6.2e-6 (issue 14.7)
    assert report["protocol"]["step_lr"] == single["protocol"]["step_lr"] == pytest.approx(1.61e-5)


def test_fid_select_on_the_bundled_model_uses_technique_4_for_its_own_schedule(tmp_path, capsys, digit_stats):
    """Issue input: fid-select on the digits model sampled with CIFAR-10's ε 6.2e-6; the right value is Technique 4
    for the model's own schedule (σ 8.543 → 0.01, L = 49, T = 5), computed here from Eq. (6)."""
    import ncsn_fast.techniques as T
    from ncsn_fast.pretrained import pretrained_path

    want = T.langevin_step_lr(T.geometric_ratio(8.543, 0.01, 49), 0.01, 5)
    args = ["fid-select", "--ckpts", str(pretrained_path("digits")), "--stats", str(digit_stats), "--n", "2",
            *OFFLINE, "--out", str(tmp_path / "sel")]  # fmt: skip
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    protocol = json.loads((tmp_path / "sel" / "select.json").read_text())["protocol"]
    assert protocol["step_lr"] == pytest.approx(want, rel=0.01) and protocol["steps_each"] == 5


def test_fid_with_another_t_takes_technique_4s_step_size(tmp_path, capsys, tiny_ckpts, digit_stats):
    from ncsn_fast.techniques import geometric_ratio, langevin_step_lr

    args = [
        "fid",
        "--ckpt",
        str(tiny_ckpts[1]),
        "--n",
        "2",
        "--steps",
        "2",
        "--stats",
        str(digit_stats),
        *OFFLINE,
        "--out",
        str(tmp_path / "t2"),
    ]
    assert run(args, capsys)[0] == 0
    p = json.loads((tmp_path / "t2" / "fid.json").read_text())["protocol"]
    # the tiny model: σ from 1 to 0.1 in L = 3 levels; ε re-derived for T = 2 by Eq. (6), as `sample --steps` does
    assert p["steps_each"] == 2 and p["step_lr"] == pytest.approx(
        langevin_step_lr(geometric_ratio(1.0, 0.1, 3), 0.1, 2)
    )
    assert p["step_lr"] != pytest.approx(1.61e-5)


def test_neighbors_cli_finds_planted_digits(tmp_path, capsys):
    digits = load_digits(16)
    planted = torch.stack([digits[5], torch.flip(digits[100], [-1]), torch.rand(1, 16, 16)])
    torch.save(planted, tmp_path / "samples.pt")
    out = tmp_path / "grid.png"
    args = ["neighbors", "--samples", str(tmp_path / "samples.pt"), "--k", "3", "--out", str(out), "--quiet"]
    code, stdout, _ = run(args, capsys)
    assert code == 0 and "pixels" in stdout
    nb = json.loads(out.with_suffix(".json").read_text())["neighbors"]
    assert [nb[0][0]["index"], nb[1][0]["index"]] == [5, 100]
    assert [nb[0][0]["flipped"], nb[1][0]["flipped"]] == [False, True]
    assert nb[0][0]["distance"] < 1e-9 and nb[2][0]["distance"] > 0.5
    from PIL import Image

    with Image.open(out) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    f = 4  # 4 columns of 16 px are upscaled 4× to reach 256 px; padding 2 px × 4
    assert rgb.shape[:2] == (3 * 16 * f + 4 * 2 * f, 4 * 16 * f + 5 * 2 * f)
    left = 2 * f + 16 * f  # the gap between the sample column and its neighbours is red, the others are not
    assert (rgb[:, left : left + 2 * f] == [255, 0, 0]).all()
    assert not (rgb[:, left + 2 * f + 16 * f : left + 4 * f + 16 * f] == [255, 0, 0]).all()


def test_neighbors_cli_draws_samples_when_none_are_given(tmp_path, capsys, tiny_ckpts):
    out = tmp_path / "g.png"
    args = ["neighbors", "--ckpt", str(tiny_ckpts[0]), "--no-ema", "--n", "3", "--k", "2", "--out", str(out), "--quiet"]
    code, stdout, _ = run(args, capsys)
    assert code == 0 and "3 samples" in stdout
    nb = json.loads(out.with_suffix(".json").read_text())["neighbors"]
    assert len(nb) == 3 and all(len(row) == 2 and row[0]["distance"] <= row[1]["distance"] for row in nb)


@pytest.fixture(scope="module")
def dummy_stats(tmp_path_factory):
    path = tmp_path_factory.mktemp("dummy") / "s.npz"
    np.savez(path, mu=np.zeros(2048), sigma=np.eye(2048))
    return path


@pytest.mark.parametrize(
    "args,needle",
    [
        (["fid", "--stats", "none.npz"], "--stats"),
        (["fid", "--stats", "{stats}", "--weights", "missing.pth"], "--weights"),
        (["fid", "--stats", "{stats}", "--weights", "random", "--n", "1"], "--n"),
        (["fid-stats", "nothing_here", "--out", "x.npz"], "DATA"),
        (["fid-stats", "digits", "--out", "x.txt"], "--out"),
        (["fid-stats", "digits", "--out", "x.npz", "--split", "test"], "--split"),
        (["fid-select", "--ckpts", "nowhere", "--stats", "{stats}"], "--ckpts"),
        (["neighbors", "--k", "0"], "--k"),
        (["neighbors", "--samples", "none.pt"], "--samples"),
    ],
)
def test_bad_inputs_name_the_argument_and_write_nothing(args, needle, tmp_path, capsys, dummy_stats, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run([a.replace("{stats}", str(dummy_stats)) for a in args], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and needle in lines[-1] and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
