"""The official code's own files, as a user coming from it brings them (issue 22, items 3 and 4).

- A run folder as ncsnv2's (and ncsn's) ``main.py`` writes it: ``exp/logs/<doc>/config.yml`` from
  ``yaml.dump(dict2namespace(config), default_flow_style=False)`` (``!!python/object:argparse.Namespace`` tags)
  beside ``checkpoint_<step>.pth`` and ``checkpoint.pth``.
- The original NCSN repository's schema (ermongroup/ncsn ``configs/anneal.yml``) and its checkpoints
  ``[model_state, optimizer_state]``.

Truths: the reference outputs of ../shared/reference (official code, float32 CPU) and the same checkpoint loaded
with the plain config file.
"""

from __future__ import annotations

import argparse
import shutil
import warnings

import pytest
import torch
import yaml

import ncsn_fast as nf
from ncsn_fast.checkpoint import CheckpointError, read_checkpoint
from ncsn_fast.cli import main
from ncsn_fast.config import ConfigError, MappedConfigWarning
from ncsn_fast.models import NCSN, NCSNv2
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


# ------------------------------------------------------------------------------------- the original NCSN code
def original_schema(reference_dir):
    """The ncsn_32 reference model described in the original repository's schema (configs/anneal.yml's keys and
    nothing else), its values taken from the reference config."""
    ref = yaml.safe_load((reference_dir / "ncsn_32" / "config.yml").read_text())
    t, d, m, o = ref["training"], ref["data"], ref["model"], ref["optim"]
    return {
        "training": {"batch_size": t["batch_size"], "n_epochs": t["n_epochs"], "n_iters": 200001, "ngpu": 1,
                     "snapshot_freq": t["snapshot_freq"], "algo": "dsm", "anneal_power": 2.0},
        "data": {k: d[k] for k in ("dataset", "image_size", "channels", "logit_transform", "random_flip")},
        "model": {"sigma_begin": m["sigma_begin"], "sigma_end": m["sigma_end"], "num_classes": m["num_classes"],
                  "batch_norm": False, "ngf": m["ngf"]},
        "optim": {k: o[k] for k in ("weight_decay", "optimizer", "lr", "beta1", "amsgrad")},
    }  # fmt: skip


def original_checkpoint(reference_dir, path):
    """What the original anneal_runner saves: [score.state_dict(), optimizer.state_dict()]."""
    states = torch.load(reference_dir / "ncsn_32" / "checkpoint.pth", weights_only=True)
    torch.save([states[0], states[1]], path)
    return path


def test_the_original_config_and_checkpoint_load_as_ncsn_with_the_reference_output(tmp_path, reference_dir):
    path = tmp_path / "anneal.yml"
    path.write_text(yaml.safe_dump(original_schema(reference_dir), sort_keys=False))
    ckpt = original_checkpoint(reference_dir, tmp_path / "checkpoint.pth")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model, cfg, _ = load_model(ckpt, path, ema=False)
    mapped = [str(w.message) for w in seen if w.category is MappedConfigWarning]
    assert len(mapped) == 1
    for entry in ("model.name: ncsn", "training.ngpu: 1", "training.algo: dsm", "model.batch_norm: false"):
        assert entry in mapped[0], (entry, mapped[0])
    assert type(model) is NCSN and read_checkpoint(ckpt)["format"] == "ncsn_original"
    v = torch.load(reference_dir / "ncsn_32" / "vectors.pt", weights_only=True)
    with torch.no_grad():
        assert rel_err(model(v["forward_x"], v["forward_labels"]), v["forward_out"]) <= 1e-5
    assert torch.equal(nf.get_sigmas(cfg), v["sigmas"])


def test_an_original_run_folder_loads_from_ckpt_alone(tmp_path, reference_dir):
    """ermongroup/ncsn's main.py also dumps a Namespace into run/logs/<doc>/config.yml; its runner saves
    checkpoint_<step>.pth and checkpoint.pth."""
    run = tmp_path / "run" / "logs" / "cifar10"
    write_run_config(run, original_schema(reference_dir))
    original_checkpoint(reference_dir, run / "checkpoint_5000.pth")
    shutil.copy(run / "checkpoint_5000.pth", run / "checkpoint.pth")
    with pytest.warns(UserWarning) as seen:
        model, _, path = load_model(run)  # no EMA in the original code: the raw weights, said once
    messages = [str(w.message) for w in seen]
    assert any("run folder's own" in m for m in messages) and any("original NCSN schema" in m for m in messages)
    assert not any("no EMA" in m for m in messages)  # model.ema: false asks for the raw weights
    assert path == run / "checkpoint_5000.pth" and type(model) is NCSN
    v = torch.load(reference_dir / "ncsn_32" / "vectors.pt", weights_only=True)
    with torch.no_grad():
        assert rel_err(model(v["forward_x"], v["forward_labels"]), v["forward_out"]) <= 1e-5


def test_the_shipped_anneal_yml_gets_the_original_codes_fixed_choices(tmp_path):
    """configs/anneal.yml as shipped (MNIST, 28 px, ngf 64); anneal_runner.test() samples with T = 100, ε = 2e-5,
    no denoising step, 8 × 8 images; no EMA; training dequantizes uniformly."""
    path = tmp_path / "anneal.yml"
    path.write_text(
        "training:\n  batch_size: 128\n  n_epochs: 500000\n  n_iters: 200001\n  ngpu: 1\n  snapshot_freq: 5000\n"
        "  algo: 'dsm'\n  anneal_power: 2.0\n\ndata:\n  ## mnist\n  dataset: \"MNIST\"\n  image_size: 28\n"
        "  channels: 1\n  logit_transform: false\n  random_flip: false\n\nmodel:\n  sigma_begin: 1\n"
        "  sigma_end: 0.01\n  num_classes: 10\n  batch_norm: false\n  ngf: 64\n\noptim:\n  weight_decay: 0.000\n"
        '  optimizer: "Adam"\n  lr: 0.001\n  beta1: 0.9\n  amsgrad: false\n'
    )
    with pytest.warns(MappedConfigWarning):
        cfg = nf.load_config(path)
    s = cfg.sampling
    assert (s.n_steps_each, s.step_lr, s.denoise, s.batch_size) == (100, 2e-5, False, 64)
    assert (cfg.model.name, cfg.model.ema, cfg.data.uniform_dequantization) == ("ncsn", False, True)
    assert (cfg.data.image_size, cfg.data.channels, cfg.model.ngf, cfg.optim.lr) == (28, 1, 64, 1e-3)
    model = nf.build_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 28, 28), torch.tensor([0, 9]))
    assert type(model) is NCSN and out.shape == (2, 1, 28, 28) and bool(out.isfinite().all())


def test_what_the_original_file_sets_is_kept(reference_dir):
    raw = original_schema(reference_dir)
    raw["sampling"] = {"n_steps_each": 7}
    raw["model"]["name"] = "ncsn_deeper"
    with pytest.warns(MappedConfigWarning) as seen:
        cfg = nf.load_config(raw)
    assert (cfg.sampling.n_steps_each, cfg.sampling.step_lr, cfg.model.name) == (7, 2e-5, "ncsn_deeper")
    assert "sampling.n_steps_each" not in str(seen[0].message) and "model.name" not in str(seen[0].message)


@pytest.mark.parametrize("algo", ["dsm_freq", "sm"])
def test_an_algo_the_original_sampler_cannot_follow_is_refused(reference_dir, algo):
    raw = original_schema(reference_dir)
    raw["training"]["algo"] = algo
    with pytest.raises(ConfigError, match=rf"training.algo: .*got '{algo}'"):
        nf.load_config(raw)


@pytest.mark.parametrize(
    "config_case,ckpt_case,fits",
    [
        ("ncsnv2_32", "ncsn_32", "ncsn"),
        ("ncsn_32", "ncsnv2_32", "ncsnv2"),
        ("ncsnv2_32", "ncsnv2deeper_64", "ncsnv2_deeper"),
    ],
)
def test_weights_of_another_architecture_name_the_one_that_fits(reference_dir, config_case, ckpt_case, fits):
    model = nf.build_model(nf.load_config(reference_dir / config_case / "config.yml"))
    with pytest.raises(CheckpointError) as info:
        nf.load_checkpoint(model, reference_dir / ckpt_case / "checkpoint.pth")
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and "another architecture" in msg and "missing keys" in msg
    assert f"set model.name: {fits}:" in msg


def test_the_original_config_without_its_own_keys_points_at_model_name(tmp_path, reference_dir):
    """The issue's path: the v1-only keys removed by hand, so the config builds NCSNv2 and refuses the weights."""
    raw = original_schema(reference_dir)
    del raw["training"]["ngpu"], raw["training"]["algo"], raw["model"]["batch_norm"]
    ckpt = original_checkpoint(reference_dir, tmp_path / "checkpoint.pth")
    with pytest.raises(CheckpointError, match=r"looks like NCSN: set model.name: ncsn:"):
        load_model(ckpt, raw)
