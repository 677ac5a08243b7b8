"""`ncsn-fast convert` and :func:`ncsn_fast.pretrained.convert`: every case of ../shared/reference converted through
the command line and loaded with ``from_pretrained`` (no pickle in the folder, ``torch.load`` never called), training
workdirs, bad inputs (one line naming the file and the first mismatched keys, exit 2, nothing written).

Tolerance against vectors.pt: the conversion itself is lossless — the tensors in model.safetensors are bitwise the
checkpoint's and the forward output is bitwise that of the model loaded from the original .pth (asserted as
equality). Against the official forward outputs the bound is 1e-5 (../shared/reference/README.md): the issue's 1e-6
is below what the float32 reference itself carries — our network run in float64 is 1.0–2.5e-6 away from
``forward_out(_ema)`` on all four cases (float32: 1.1–2.6e-6), so no implementation can be held to 1e-6 against it.
"""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
import yaml

import ncsn_fast as nf
from ncsn_fast.checkpoint import CheckpointError, read_checkpoint
from ncsn_fast.cli import main
from ncsn_fast.pretrained import convert, from_pretrained, load_model, pretrained_path
from tests.conftest import CASES, rel_err


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def safetensors_header(path):
    """The JSON header of a .safetensors file, parsed by hand (8-byte little-endian length, then JSON): every
    tensor's byte range must lie in the file and together they must cover the data section exactly."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    ranges = sorted(tuple(v["data_offsets"]) for v in header.values())
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data) - 8 - n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    return header, meta


@pytest.fixture
def no_torch_load(monkeypatch):
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))


@pytest.mark.parametrize("case", CASES)
def test_every_reference_case_converts_and_loads_without_pickle(case, reference_dir, tmp_path, capsys, monkeypatch):
    src = reference_dir / case
    out = tmp_path / "converted"
    code, stdout, err = run_cli(["convert", src / "checkpoint.pth", "--config", src / "config.yml", "--out", out,
                                 "--raw"], capsys)  # fmt: skip
    assert code == 0, err
    assert "model.safetensors" in stdout and "EMA weights" in stdout and "model_raw.safetensors" in stdout
    assert "optimizer state" in stdout  # what was left out is said too
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.safetensors", "model_raw.safetensors"]

    official = torch.load(src / "checkpoint.pth", weights_only=True)  # the truth, read before torch.load is banned
    vectors = torch.load(src / "vectors.pt", weights_only=True)
    model_state = {k.removeprefix("module."): v for k, v in official[0].items()}
    ema_shadow = official[4]
    direct, _, _ = load_model(src / "checkpoint.pth", src / "config.yml")  # the model from the original .pth

    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    for name, expected in (("model.safetensors", "ema"), ("model_raw.safetensors", "raw")):
        header, meta = safetensors_header(out / name)
        assert meta["weights"] == expected and meta["step"] == str(official[3])
        assert set(header) == set(model_state)
    from safetensors.torch import load_file

    ema_file, raw_file = load_file(out / "model.safetensors"), load_file(out / "model_raw.safetensors")
    for k, v in model_state.items():
        assert torch.equal(raw_file[k], v)
        assert torch.equal(ema_file[k], ema_shadow.get(k, v))  # parameters from the shadow, buffers from the model
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert set(written) == {"training", "sampling", "fast_fid", "test", "data", "model", "optim"}
    assert nf.load_config(written).to_dict()["model"] == nf.load_config(src / "config.yml").to_dict()["model"]

    for ema, key in ((True, "forward_out_ema"), (False, "forward_out")):
        model, cfg = from_pretrained(out, ema=ema)
        with torch.no_grad():
            got = model(vectors["forward_x"], vectors["forward_labels"])
            if ema:
                assert torch.equal(got, direct(vectors["forward_x"], vectors["forward_labels"]))
        assert rel_err(got, vectors[key]) <= 1e-5, (case, key, rel_err(got, vectors[key]))


def test_a_training_workdir_converts_its_latest_checkpoint(tmp_path, capsys, monkeypatch):
    cfg = nf.load_config("digits")
    cfg.model.ngf, cfg.model.num_classes = 4, 3
    work = tmp_path / "run"
    expected = {}
    for step in (100, 200):
        model = nf.build_model(cfg)
        ema = {k: p.detach() + torch.randn_like(p) for k, p in model.named_parameters()}
        nf.save_checkpoint(work / f"checkpoint_{step}.pth", model=model.state_dict(), ema=ema, step=step,
                           config=cfg.to_dict(), optimizer={"state": {}, "param_groups": []})  # fmt: skip
        expected[step] = (model.state_dict(), ema)
    code, stdout, err = run_cli(["convert", work, "--out", tmp_path / "out", "--raw"], capsys)
    assert code == 0, err
    assert "checkpoint_200.pth" in stdout and "step 200" in stdout and "optimizer state" in stdout
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    state, ema = expected[200]
    ema_model, _ = from_pretrained(tmp_path / "out")
    raw_model, _ = from_pretrained(tmp_path / "out", ema=False)
    for k, p in ema_model.named_parameters():
        assert torch.equal(p, ema[k])
    for k, v in raw_model.state_dict().items():
        assert torch.equal(v, state[k])


def test_a_save_pretrained_folder_converts_to_the_same_tensors(tmp_path, capsys, no_torch_load):
    src = pretrained_path("digits")
    code, stdout, err = run_cli(["convert", src, "--out", tmp_path / "again"], capsys)
    assert code == 0, err
    assert "save_pretrained folder" in stdout
    a, b = read_checkpoint(src), read_checkpoint(tmp_path / "again")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert nf.load_config(a["config"]).to_dict() == nf.load_config(b["config"]).to_dict()
    assert b["weights"] == "ema"


def test_the_bundled_model_is_a_pickle_free_folder(no_torch_load):
    folder = pretrained_path("digits")
    # the tuned noise schedules (ncsn-fast tune-schedule) ride along as JSON
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "model.safetensors", "schedules.json"]
    header, meta = safetensors_header(folder / "model.safetensors")
    assert meta["weights"] == "ema" and header
    model, cfg = nf.load_pretrained()
    assert cfg.data.image_size == 16 and cfg.model.num_classes == 49


def test_a_stale_raw_file_is_removed_and_said(tmp_path, reference_dir, capsys):
    src = reference_dir / "ncsnv2_32"
    args = ["convert", src / "checkpoint.pth", "--config", src / "config.yml", "--out", tmp_path]
    assert run_cli([*args, "--raw"], capsys)[0] == 0
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and "removed" in stdout
    assert not (tmp_path / "model_raw.safetensors").exists()
    with pytest.raises(CheckpointError, match="no raw weights"):
        from_pretrained(tmp_path, ema=False)


@pytest.fixture(scope="module")
def v2_folder(tmp_path_factory, reference_dir):
    out = tmp_path_factory.mktemp("v2") / "ncsnv2_32"
    src = reference_dir / "ncsnv2_32"
    convert(src / "checkpoint.pth", out, config=src / "config.yml")
    return out


def _one_line_error(capsys, args, needles, out):
    code, stdout, err = run_cli(args, capsys)
    assert code == 2, (args, stdout, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ncsn-fast: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not out.exists(), "nothing may be written on a bad input"
    return lines[0]


def test_safetensors_of_another_architecture(v2_folder, reference_dir, tmp_path, capsys):
    out = tmp_path / "out"
    weights = v2_folder / "model.safetensors"
    line = _one_line_error(
        capsys,
        ["convert", weights, "--config", reference_dir / "ncsn_32" / "config.yml", "--out", out],
        [
            str(weights),
            "another architecture",
            "missing keys (first: normalizer.embed",
            "unexpected keys (first: normali",
        ],
        out,
    )
    assert line.startswith("ncsn-fast: error: CKPT")
    with pytest.raises(CheckpointError, match="another architecture"):  # the library says the same
        convert(weights, out, config=reference_dir / "ncsn_32" / "config.yml")


def test_a_folder_without_config(v2_folder, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(v2_folder / "model.safetensors", bare / "model.safetensors")
    out = tmp_path / "out"
    _one_line_error(capsys, ["convert", bare, "--out", out], [str(bare), "no config.yaml"], out)
    with pytest.raises(CheckpointError, match="no config.yaml"):
        from_pretrained(bare)
    # the weights file alone, without a config anywhere: the flag to give is named
    _one_line_error(
        capsys, ["convert", bare / "model.safetensors", "--out", out], ["--config", "carries no config"], out
    )


@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_a_truncated_file(v2_folder, tmp_path, capsys, fraction):
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(v2_folder / "config.yaml", cut / "config.yaml")
    data = (v2_folder / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: int(len(data) * fraction)])
    out = tmp_path / "out"
    _one_line_error(capsys, ["convert", cut, "--out", out], [str(cut / "model.safetensors"), "truncated"], out)
    with pytest.raises(CheckpointError, match="truncated"):
        from_pretrained(cut)


def test_other_bad_inputs(reference_dir, tmp_path, capsys):
    src = reference_dir / "ncsn_32"
    out = tmp_path / "out"
    _one_line_error(capsys, ["convert", src / "checkpoint.pth", "--out", out], ["--config", "carries no config"], out)
    _one_line_error(capsys, ["convert", tmp_path / "missing.pth", "--out", out], ["CKPT", "missing.pth"], out)
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(capsys, ["convert", empty, "--out", out], ["CKPT", str(empty)], out)
    _one_line_error(capsys, ["convert", src / "checkpoint.pth", "--config", "no_such_preset", "--out", out],
                    ["--config", "no_such_preset"], out)  # fmt: skip
    taken = tmp_path / "taken"
    taken.write_text("a file")
    line = _one_line_error(capsys, ["convert", src / "checkpoint.pth", "--config", src / "config.yml", "--out", taken],
                           ["--out", str(taken)], out)  # fmt: skip
    assert taken.read_text() == "a file", line
    # --raw with a checkpoint without EMA weights: said, nothing written
    cfg = nf.load_config("digits")
    cfg.model.ngf, cfg.model.num_classes = 4, 3
    plain = nf.save_checkpoint(tmp_path / "plain.pth", model=nf.build_model(cfg).state_dict(), config=cfg.to_dict())
    _one_line_error(capsys, ["convert", plain, "--out", out, "--raw"], ["--raw", "no EMA weights"], out)
    code, stdout, _ = run_cli(["convert", plain, "--out", out], capsys)
    assert code == 0 and "raw weights (the checkpoint has no EMA weights)" in stdout
