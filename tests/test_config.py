from __future__ import annotations

import pytest

import ncsn_fast as nf
from ncsn_fast.config import PRESETS, ConfigError
from ncsn_fast.models import architecture_name

# Paper Table 4 (NCSNv2 rows) and Table 2/3 architecture per preset.
TABLE4 = {
    "cifar10": (32, 50, 232, 5, 6.2e-6, 128, "ncsnv2"),
    "celeba": (64, 90, 500, 5, 3.3e-6, 128, "ncsnv2"),
    "church": (96, 140, 788, 4, 4.9e-6, 128, "ncsnv2_deeper"),
    "bedroom": (128, 190, 1086, 3, 1.8e-6, 128, "ncsnv2_deeper"),
    "tower": (128, 190, 1086, 3, 1.8e-6, 128, "ncsnv2_deeper"),
    "ffhq": (256, 348, 2311, 3, 9e-7, 32, "ncsnv2_deepest"),
}


@pytest.mark.parametrize("name", list(TABLE4))
def test_presets_follow_table4(name):
    cfg = nf.load_config(name)
    size, s1, L, T, eps, batch, arch = TABLE4[name]
    assert (cfg.data.image_size, cfg.model.sigma_begin, cfg.model.num_classes) == (size, s1, L)
    assert (cfg.sampling.n_steps_each, cfg.sampling.step_lr, cfg.training.batch_size) == (T, eps, batch)
    assert architecture_name(cfg) == arch
    assert cfg.model.ema and cfg.model.ema_rate == 0.999


def test_ncsn_preset_is_the_original_model():
    cfg = nf.load_config("ncsn_cifar10")
    assert architecture_name(cfg) == "ncsn"
    assert (cfg.model.sigma_begin, cfg.model.num_classes, cfg.sampling.n_steps_each) == (1.0, 10, 100)
    assert cfg.optim.lr == 1e-3


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_builds_and_round_trips(name, tmp_path):
    cfg = nf.load_config(name)
    assert len(nf.get_sigmas(cfg)) == cfg.model.num_classes
    assert cfg.model.sigma_begin > cfg.model.sigma_end > 0
    assert architecture_name(cfg) in ("ncsn", "ncsnv2", "ncsnv2_deeper", "ncsnv2_deepest")
    path = tmp_path / f"{name}.yml"
    path.write_text(cfg.to_yaml())
    assert nf.load_config(path) == cfg


def test_official_yaml_reads_unchanged(reference_dir):
    cfg = nf.load_config(reference_dir / "ncsnv2_32" / "config.yml")
    assert cfg.data.dataset == "CIFAR10" and cfg.model.sigma_begin == 50 and cfg.optim.eps == 1e-8


def raw(**changes):
    base = {"data": {"dataset": "CIFAR10", "image_size": 32}, "model": {"sigma_begin": 50, "num_classes": 10}}
    for key, value in changes.items():
        section, name = key.split("__")
        base.setdefault(section, {})[name] = value
    return base


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"model__sigma_begin": -1.0}, "model.sigma_begin"),
        ({"model__sigma_end": 60.0}, "model.sigma_end"),
        ({"model__sigma_end": 0.0}, "model.sigma_end"),
        ({"data__image_size": 0}, "data.image_size"),
        ({"model__num_classes": 0}, "model.num_classes"),
        ({"model__ngf": "many"}, "model.ngf"),
        ({"model__sigma_dist": "cosine"}, "model.sigma_dist"),
        ({"training__batchsize": 3}, "training.batchsize"),
        ({"sampling__step_lr": -1e-5}, "sampling.step_lr"),
    ],
)
def test_invalid_values_name_key_and_value(changes, needle):
    with pytest.raises(ConfigError) as info:
        nf.load_config(raw(**changes))
    msg = str(info.value)
    assert needle in msg
    assert str(list(changes.values())[0]) in msg


def test_image_size_checked_against_architecture():
    # architecture checks live in build_model (config.py imports no model code)
    with pytest.raises(ConfigError, match="multiple of 4"):
        nf.build_model(nf.load_config(raw(data__dataset="LSUN", data__image_size=98)))
    with pytest.raises(ConfigError, match="multiple of 8"):
        nf.build_model(nf.load_config(raw(data__dataset="FFHQ", data__image_size=100)))
    with pytest.raises(ConfigError, match="model.nonlinearity"):
        nf.build_model(nf.load_config(raw(model__nonlinearity="tanh")))


def test_config_module_imports_no_model_code():
    import subprocess
    import sys

    code = "import sys, ncsn_fast.config; print(sorted(m for m in sys.modules if m.startswith('ncsn_fast.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ncsn_fast.models" not in out and "ncsn_fast.nn" not in out and "torch" not in out.split("[")[0]


def test_unknown_section_and_preset():
    with pytest.raises(ConfigError, match="bogus"):
        nf.load_config({"bogus": {}})
    with pytest.raises(ConfigError, match="unknown preset 'no_such_preset'.*cifar10"):
        nf.load_config("no_such_preset")


def test_yaml_round_trip(tmp_path):
    cfg = nf.load_config("celeba")
    path = tmp_path / "c.yml"
    path.write_text(cfg.to_yaml())
    assert nf.load_config(path) == cfg


def test_a_list_field_of_the_wrong_type_fails_at_load_naming_the_key():
    with pytest.raises(ConfigError, match=r"optim.lr_schedule: expected a list"):
        nf.load_config(raw(optim__lr_schedule="0.001"))
    with pytest.raises(ConfigError, match=r"optim.lr_schedule\[1\]\[1\]: expected a number"):
        nf.load_config(raw(optim__lr_schedule=[[0, 1e-3], [100, "fast"]]))
    with pytest.raises(ConfigError, match=r"optim.lr_schedule\[0\]: expected a \[step"):
        nf.load_config(raw(optim__lr_schedule=[[0, 1e-3, 5]]))
    assert nf.load_config(raw(optim__lr_schedule=[[0, 1e-3], [10, 5e-4]])).optim.lr_schedule == [[0, 1e-3], [10, 5e-4]]


def test_an_unused_official_key_is_reported_once_by_name(recwarn):
    from ncsn_fast.config import UnusedConfigWarning

    nf.load_config(raw(sampling__fid=True, fast_fid__ensemble=True))
    notes = [w for w in recwarn if issubclass(w.category, UnusedConfigWarning)]
    assert len(notes) == 1
    assert "read, not used by ncsn-fast: sampling.fid, fast_fid.ensemble" in str(notes[0].message)
    recwarn.clear()
    for name in PRESETS:  # the official files: every key used or at its inert default
        nf.load_config(name)
    assert not [w for w in recwarn if issubclass(w.category, UnusedConfigWarning)]


def test_honoured_keys_that_were_ignored_before():
    cfg = nf.load_config(raw(sampling__data_init=True, sampling__ckpt_id=7, fast_fid__begin_ckpt=10))
    assert cfg.sampling.data_init and cfg.sampling.ckpt_id == 7 and cfg.fast_fid.begin_ckpt == 10
