"""A new user's bad inputs at the Python API's model boundary (issue 22, item 7): every public entry point —
``model(x, y)``, ``model.score``, each sampler of ``get_sampler``, ``annealed_langevin``, ``dsm_loss``,
``sample_batches`` — refuses them where the user called it: one line (ValueError or TypeError) that starts with the
argument's name and says what it got, raised before the network runs once (a call counter on ``features``).

Bad inputs: 8 for x (numpy, uint8, int64, wrong rank, wrong channels, 15×15, float64, empty batch) × 12 entry points
(model, model.score, 8 samplers, annealed_langevin, dsm_loss) = 96, plus y 4, sigma 3, sample_batches 5: 108 cases.
A model passed where a score function is expected is accepted (its ``score``): the same samples, bitwise.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import ncsn_fast as nf
from ncsn_fast.models.refinenet import RefineNetScore
from ncsn_fast.nn.layers import ConvMeanPool
from ncsn_fast.sampling import SAMPLERS, SamplingPlan, annealed_langevin, get_sampler, minimum_nfe, sample_batches
from tests.models.test_models import cfg_for


@pytest.fixture(scope="module")
def digits():
    return nf.load_pretrained("digits")  # NCSNv2, 1 channel, 16 × 16, float32


@pytest.fixture
def calls(monkeypatch):
    """Calls of the network body: a check at the boundary leaves it at 0."""
    seen = []
    original = RefineNetScore.features

    def counting(self, *args, **kwargs):
        seen.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RefineNetScore, "features", counting)
    return seen


GOOD = torch.rand(2, 1, 16, 16)
BAD_X = {
    "numpy": (GOOD.numpy(), TypeError, r"got a numpy\.ndarray \(float32\) of shape \(2, 1, 16, 16\); .*from_numpy"),
    "uint8": ((GOOD * 255).to(torch.uint8), TypeError, r"got a uint8 tensor of shape \(2, 1, 16, 16\); .*/ 255"),
    "int64": (torch.zeros(2, 1, 16, 16, dtype=torch.long), TypeError, r"floating-point images .*got a int64 tensor"),
    "rank": (torch.rand(1, 16, 16), ValueError, r"takes images \(N, 1, H, W\) .*got a float32 tensor of shape \(1, 16"),
    "channels": (torch.rand(2, 3, 16, 16), ValueError, r"\(N, 1, H, W\) .*shape \(2, 3, 16, 16\)"),
    "15x15": (torch.rand(2, 1, 15, 15), ValueError, r"downsamples by 2, so H and W must be multiples of 2 .*15"),
    "float64": (GOOD.double(), TypeError, r"NCSNv2 is in float32, got a float64 tensor of shape \(2, 1, 16, 16\)"),
    "empty": (torch.rand(0, 1, 16, 16), ValueError, r"with N ≥ 1, got a float32 tensor of shape \(0, 1, 16, 16\)"),
}


def _entry_points(model, cfg):
    """(name, the argument that takes x, call(x)) for every public entry point that takes a batch of images."""
    sig = nf.get_sigmas(cfg)
    y = torch.zeros(2, dtype=torch.long)
    out = [
        ("model", "x", lambda x: model(x, y)),
        ("model.score", "x", lambda x: model.score(x, 1.0)),
        ("annealed_langevin", "x0", lambda x: annealed_langevin(model, x, sig[:2], 1, 1e-5)),
        ("dsm_loss", "x", lambda x: nf.dsm_loss(model, x, sig)),
    ]
    for name in SAMPLERS:  # the model itself as the score function: accepted, so the x check is what fires
        run, nfe = get_sampler(name), minimum_nfe(name)
        out.append((name, "x0", lambda x, f=run, n=nfe: f(model, x, n, 1.0, 0.01, seed=0)))
    return out


ENTRY_NAMES = ["model", "model.score", "annealed_langevin", "dsm_loss", *SAMPLERS]


def _one_line(exc: pytest.ExceptionInfo, arg: str) -> str:
    msg = str(exc.value)
    assert msg.startswith(f"{arg}: ") and "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("entry", ENTRY_NAMES)
@pytest.mark.parametrize("bad", list(BAD_X))
def test_bad_x_is_one_line_naming_the_argument(digits, calls, entry, bad):
    model, cfg = digits
    x, error, needle = BAD_X[bad]
    name, arg, call = next(e for e in _entry_points(model, cfg) if e[0] == entry)
    with pytest.raises(error) as exc:
        call(x)
    assert re.search(needle, _one_line(exc, arg)), (entry, str(exc.value))
    assert calls == [], f"{entry}: the network ran before the check"


@pytest.mark.parametrize(
    "y,error,needle",
    [
        (torch.ones(2), TypeError, r"got a float32 tensor of shape \(2,\); for a noise level σ call model\.score"),
        (torch.zeros(3, dtype=torch.long), TypeError, r"shape \(2,\) in \[0, 49\), got a int64 tensor of shape \(3,\)"),
        (torch.tensor([0, 49]), ValueError, r"in \[0, 49\), got values from 0 to 49"),
        (np.zeros(2, dtype=np.int64), TypeError, r"got a numpy\.ndarray \(int64\) of shape \(2,\)"),
    ],
)
def test_bad_labels(digits, calls, y, error, needle):
    model, _ = digits
    with pytest.raises(error, match=needle) as exc:
        model(GOOD, y)
    _one_line(exc, "y")
    assert calls == []


@pytest.mark.parametrize(
    "sigma,error,needle",
    [
        (torch.ones(3), ValueError, r"a float tensor of shape \(2,\), got a float32 tensor of shape \(3,\)"),
        ([1.0, 1.0], TypeError, r"got a list"),
        (np.ones(2), TypeError, r"got a numpy\.ndarray \(float64\) of shape \(2,\)"),
    ],
)
def test_bad_sigma(digits, calls, sigma, error, needle):
    model, _ = digits
    with pytest.raises(error, match=needle) as exc:
        model.score(GOOD, sigma)
    _one_line(exc, "sigma")
    assert calls == []


def test_bad_sample_batches_inputs(digits, calls):
    model, cfg = digits
    plan = SamplingPlan(data_init=True, nfe=None)
    rgb = nf.load_config({"data": {"dataset": "X", "image_size": 16, "channels": 3}})
    for kwargs, arg, needle in [
        ({"data": GOOD.numpy()}, "data", r"got a numpy\.ndarray \(float32\)"),
        ({"data": (GOOD * 255).to(torch.uint8)}, "data", r"got a uint8 tensor .*data / 255"),
        ({"data": torch.rand(2, 1, 15, 15)}, "data", r"16×16 images, got a float32 tensor of shape \(2, 1, 15, 15\)"),
        ({"model": lambda x, y: x}, "model", r"expected an ncsn-fast model .*got a function"),
        ({"cfg": rgb}, "cfg", r"data\.channels is 3, the model \(NCSNv2\) takes 1"),
    ]:
        args = {"model": model, "cfg": cfg, "plan": plan, "n": 2, "batch_size": 2, "progress": False, **kwargs}
        with pytest.raises((TypeError, ValueError), match=needle) as exc:
            next(sample_batches(**args))
        _one_line(exc, arg)
    assert calls == []


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_model_as_the_score_function_is_its_score(digits, name):
    """get_sampler(name)(model, …) is get_sampler(name)(model.score, …): the same samples, bitwise."""
    model, cfg = digits
    x0 = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 1.0
    nfe = minimum_nfe(name) + 2
    run = get_sampler(name)
    a = run(model, x0, nfe, 1.0, float(cfg.model.sigma_end), seed=3)
    b = run(model.score, x0, nfe, 1.0, float(cfg.model.sigma_end), seed=3)
    assert torch.isfinite(a).all() and torch.equal(a, b)


@pytest.mark.parametrize(
    "name,divisor", [("ncsnv2", 2), ("ncsnv2_deeper", 4), ("ncsnv2_deepest", 8), ("ncsn", 2), ("ncsn_deeper", 4)]
)
def test_the_size_rule_is_the_architectures(monkeypatch, name, divisor):
    """The sizes the check lets through are exactly those the network computes as designed. Each non-dilated
    downsampling ResBlock halves the side by a 2×2 mean pool over four strided views; an odd side gives views of
    unequal sizes (a size-1 view then broadcasts: 3 × 3 "runs" with a pooling the architecture does not define).
    With the pool made strict, the network runs on a side exactly when the check's divisor divides it."""
    original = ConvMeanPool.forward

    def strict(self, x):
        h = self.conv(x)
        assert h.shape[2] % 2 == 0 and h.shape[3] % 2 == 0, "unequal views"
        return original(self, x)

    monkeypatch.setattr(ConvMeanPool, "forward", strict)
    model = nf.build_model(cfg_for(name, 8 * divisor, channels=1, ngf=2, levels=3)).eval()
    assert model.downsample_factor == divisor
    y = torch.zeros(1, dtype=torch.long) if model.conditional else None
    for h, w in [(s, t) for s in range(1, 2 * divisor + 2) for t in (s, divisor)]:
        x = torch.rand(1, 1, h, w)
        try:
            with torch.no_grad():
                model.features(x, y)
            runs = True
        except AssertionError:
            runs = False
        try:
            model.check_input("x", x)
            accepted = True
        except ValueError:
            accepted = False
        assert runs == accepted == (h % divisor == 0 and w % divisor == 0), (h, w, runs, accepted)
