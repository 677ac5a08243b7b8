"""The official code's own files, as a user coming from it brings them (issue 22, item 3).

- A run folder as ncsnv2's (and ncsn's) ``main.py`` writes it: ``exp/logs/<doc>/config.yml`` from
  ``yaml.dump(dict2namespace(config), default_flow_style=False)`` (``!!python/object:argparse.Namespace`` tags)
  beside ``checkpoint_<step>.pth`` and ``checkpoint.pth``.

Truths: the reference outputs of ../shared/reference (official code, float32 CPU) and the same checkpoint loaded
with the plain config file.
"""

from __future__ import annotations

import argparse
import shutil

import pytest
import torch
import yaml

import ncsn_fast as nf
from ncsn_fast.checkpoint import CheckpointError
from ncsn_fast.cli import main
from ncsn_fast.config import ConfigError
from ncsn_fast.models import NCSNv2
from ncsn_fast.pretrained import convert, load_model
from tests.conftest import rel_err


def as_namespace(tree):
    """What the official main.py's dict2namespace does: every nested mapping becomes an argparse.Namespace."""
    return argparse.Namespace(**{k: as_namespace(v) if isinstance(v, dict) else v for k, v in tree.items()})


def write_run_config(folder, tree):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "config.yml", "w") as f:
        yaml.dump(as_namespace(tree), f, default_flow_style=False)  # the official main.py's own call
    return folder / "config.yml"


def perturbed(states, seed):
    """The same official list with other weights (another snapshot of the same run)."""
    g = torch.Generator().manual_seed(seed)
    model = {
        k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in states[0].items()
    }
    return [model, *states[1:]]


@pytest.fixture
def v2_run(tmp_path, reference_dir):
    """exp/logs/c10 of an ncsnv2 run: config.yml (Namespace tags), checkpoint_5000 (other weights),
    checkpoint_300000 (the reference weights: the config's sampling.ckpt_id) and checkpoint.pth (the latest)."""
    ref = reference_dir / "ncsnv2_32"
    tree = yaml.safe_load((ref / "config.yml").read_text())
    assert tree["sampling"]["ckpt_id"] == 300000
    run = tmp_path / "exp" / "logs" / "c10"
    write_run_config(run, tree)
    states = torch.load(ref / "checkpoint.pth", weights_only=True)
    assert len(states) == 5  # [model_state, optimizer_state, epoch, step, ema_shadow]
    torch.save(perturbed(states, 1), run / "checkpoint_5000.pth")
    shutil.copy(ref / "checkpoint.pth", run / "checkpoint_300000.pth")
    shutil.copy(ref / "checkpoint.pth", run / "checkpoint.pth")
    return run, ref


def test_the_run_folder_config_is_tagged_and_reads_as_the_plain_file(v2_run):
    run, ref = v2_run
    text = (run / "config.yml").read_text()
    assert text.startswith("!!python/object:argparse.Namespace") and text.count("argparse.Namespace") == 8
    assert nf.load_config(run / "config.yml") == nf.load_config(ref / "config.yml")


@pytest.mark.parametrize(
    "value,tag",
    [
        (torch.device("cpu"), "!!python/object/apply:torch.device"),  # main.py sets config.device after its dump
        ((1, 2), "!!python/tuple"),
        (argparse.ArgumentParser, "!!python/name:argparse.ArgumentParser"),
    ],
)
def test_any_other_python_tag_is_refused_naming_it(tmp_path, reference_dir, value, tag):
    tree = yaml.safe_load((reference_dir / "ncsnv2_32" / "config.yml").read_text())
    namespace = as_namespace(tree)
    namespace.sampling.extra = value
    path = tmp_path / "config.yml"
    path.write_text(yaml.dump(namespace, default_flow_style=False))
    with pytest.raises(ConfigError) as info:
        nf.load_config(path)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and tag in msg and str(path) in msg and "line" in msg


def test_a_python_tag_constructs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "config.yml"
    path.write_text(f"training: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="!!python/object/apply:os.system"):
        nf.load_config(path)
    assert not marker.exists()
    assert yaml.SafeLoader.yaml_constructors.get(nf.config.NAMESPACE_TAG) is None  # PyYAML's own loader untouched


def test_a_run_folder_loads_from_ckpt_alone_as_with_its_plain_config(v2_run):
    run, ref = v2_run
    with pytest.warns(UserWarning, match="run folder's own .*config.yml"):
        alone, cfg, path = load_model(run)
    assert path == run / "checkpoint_300000.pth"  # the config's sampling.ckpt_id, as the official sampler picks
    given, _, _ = load_model(path, ref / "config.yml")
    assert cfg == nf.load_config(ref / "config.yml") and type(alone) is NCSNv2
    x, y = torch.rand(3, 3, 32, 32), torch.randint(0, cfg.model.num_classes, (3,))
    with torch.no_grad():
        assert torch.equal(alone(x, y), given(x, y))
        v = torch.load(ref / "vectors.pt", weights_only=True)
        assert rel_err(alone(v["forward_x"], v["forward_labels"]), v["forward_out_ema"]) <= 1e-5


def test_a_run_folder_converts_without_a_config(v2_run, tmp_path):
    run, ref = v2_run
    with pytest.warns(UserWarning, match="run folder's own"):
        done = convert(run, tmp_path / "hf")
    assert done.source == run / "checkpoint_300000.pth"
    assert "run folder's config.yml" in done.written["config.yaml"]
    model, cfg = nf.from_pretrained(tmp_path / "hf")
    v = torch.load(ref / "vectors.pt", weights_only=True)
    with torch.no_grad():
        assert rel_err(model(v["forward_x"], v["forward_labels"]), v["forward_out_ema"]) <= 1e-5


def test_ncsn_fast_sample_from_a_run_folder_alone(v2_run, tmp_path, capsys):
    run, ref = v2_run
    common = ["sample", "--quiet", "--n", "2", "--steps", "1", "--seed", "7"]
    assert main([*common, "--ckpt", str(run), "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    notices = [line for line in err.splitlines() if "config" in line]  # others: the 1-step chain's own warnings
    assert len(notices) == 1 and "run folder's own" in notices[0] and str(run / "config.yml") in notices[0]
    assert f"--ckpt: using {run / 'checkpoint_300000.pth'}" in out
    given = ["--ckpt", str(run / "checkpoint_300000.pth"), "--config", str(ref / "config.yml")]
    assert main([*common, *given, "--out", str(tmp_path / "b")]) == 0
    a, b = (torch.load(tmp_path / d / "samples.pt", weights_only=True) for d in "ab")
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)


def test_a_checkpoint_file_alone_names_the_config_beside_it(v2_run):
    run, _ = v2_run
    with pytest.raises(CheckpointError) as info:
        load_model(run / "checkpoint_300000.pth")
    assert "carries no config" in str(info.value) and str(run / "config.yml") in str(info.value)


def test_an_invalid_run_config_names_ckpt_and_the_file(v2_run):
    run, _ = v2_run
    (run / "config.yml").write_text((run / "config.yml").read_text().replace("ngf: 16", "ngf: many"))
    with pytest.raises(CheckpointError) as info:
        load_model(run)
    msg = str(info.value)
    assert msg.startswith("ckpt: ") and str(run / "config.yml") in msg and "model.ngf" in msg and "many" in msg
