"""Architectures, sizes and channel counts beyond the reference folder, checked against invariants and an
independent re-statement of the official InstanceNorm++ (nn.InstanceNorm2d plus the channel-mean term)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ncsn_fast as nf
from ncsn_fast.models import registered_models
from tests.conftest import rel_err


def cfg_for(name: str | None, size: int, channels: int = 3, ngf: int = 4, levels: int = 7, dataset: str = "X"):
    raw = {
        "data": {"dataset": dataset, "image_size": size, "channels": channels},
        "model": {"ngf": ngf, "num_classes": levels, "sigma_begin": 20.0},
    }
    if name:
        raw["model"]["name"] = name
    return nf.load_config(raw)


@pytest.mark.parametrize(
    "name,size,channels,ngf,levels",
    [
        ("ncsnv2", 28, 1, 6, 5),  # MNIST-size variant
        ("ncsnv2", 16, 1, 8, 49),
        ("ncsnv2", 64, 3, 4, 3),
        ("ncsnv2_deeper", 96, 3, 4, 4),
        ("ncsnv2_deeper", 128, 3, 2, 2),
        ("ncsnv2_deepest", 256, 3, 2, 2),
        ("ncsn", 28, 1, 6, 10),
        ("ncsn", 32, 3, 5, 3),
        ("ncsn_deeper", 96, 3, 3, 4),
    ],
)
def test_shapes_and_technique_3(name, size, channels, ngf, levels):
    cfg = cfg_for(name, size, channels, ngf, levels)
    model = nf.build_model(cfg).eval()
    x = torch.rand(2, channels, size, size)
    y = torch.randint(0, levels, (2,))
    with torch.no_grad():
        out = model(x, y)
    assert out.shape == x.shape and torch.isfinite(out).all()
    if not name.startswith("ncsn_") and name != "ncsn":
        # Technique 3: the output is f(x)/σ_y — the same input at two levels differs exactly by the σ ratio.
        y2 = (y + 1) % levels
        with torch.no_grad():
            out2 = model(x, y2)
        ratio = (model.sigmas[y2] / model.sigmas[y]).view(2, 1, 1, 1)
        assert rel_err(out2 * ratio, out) < 1e-5


def test_registry_selection_by_dataset_and_resolution():
    assert registered_models() == ["ncsn", "ncsn_deeper", "ncsnv2", "ncsnv2_deeper", "ncsnv2_deepest"]
    pick = nf.models.architecture_name
    assert pick(cfg_for(None, 32, dataset="CIFAR10")) == "ncsnv2"
    assert pick(cfg_for(None, 64, dataset="CELEBA")) == "ncsnv2"
    assert pick(cfg_for(None, 64, dataset="LSUN")) == "ncsnv2_deeper"
    assert pick(cfg_for(None, 64, dataset="FFHQ")) == "ncsnv2_deepest"
    assert pick(cfg_for(None, 48)) == "ncsnv2"
    assert pick(cfg_for(None, 96)) == "ncsnv2_deeper"
    assert pick(cfg_for(None, 128)) == "ncsnv2_deeper"
    assert pick(cfg_for(None, 256)) == "ncsnv2_deepest"
    assert pick(cfg_for("ncsn", 32, dataset="CIFAR10")) == "ncsn"


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        nf.models.register_model("ncsnv2")(nn.Module)


def test_activations_selectable():
    """model.nonlinearity picks the activation everywhere (checked against its closed form), and the choice changes
    the network's output."""
    x = torch.randn(1000)
    closed = {
        "relu": x.clamp_min(0),
        "lrelu": torch.where(x > 0, x, 0.2 * x),
        "swish": x / (1 + torch.exp(-x)),
        "elu": torch.where(x > 0, x, torch.expm1(x)),
    }
    outs = {}
    inp = torch.rand(2, 1, 16, 16)
    for act, want in closed.items():
        cfg = cfg_for("ncsnv2", 16, 1, 4, 3)
        cfg.model.nonlinearity = act
        torch.manual_seed(0)
        model = nf.build_model(cfg).eval()
        assert torch.allclose(model.act(x), want, atol=1e-6), act
        with torch.no_grad():
            outs[act] = model(inp, torch.tensor([0, 2]))
        assert torch.isfinite(outs[act]).all()
    assert all(rel_err(outs[a], outs["elu"]) > 1e-3 for a in ("relu", "lrelu", "swish"))
