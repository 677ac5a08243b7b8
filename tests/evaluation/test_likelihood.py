"""The probability-flow ODE likelihood against closed forms: a Gaussian, 2-D and 64-D Gaussian mixtures.

For data N(μ, s²I) the σ-smoothed density is N(μ, (s² + σ²)I); for a mixture Σ w_k N(μ_k, s²I) it is the mixture
with variance s² + σ². With the exact score and the exact p_σmax as prior the ODE's log p_σmin(x) equals the
closed form up to the solver (acceptance: 1e-3 nats per dimension at rtol 1e-5).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from ncsn_fast.evaluation.likelihood import likelihood
from tests.gmm import GaussianMixture

SIGMA_MIN, SIGMA_MAX = 0.01, 10.0


def gaussian_logpdf(x: torch.Tensor, mu: torch.Tensor, var: float) -> torch.Tensor:
    d = x[0].numel()
    return -0.5 * (x - mu).flatten(1).square().sum(1) / var - 0.5 * d * math.log(2 * math.pi * var)


def mixture_logpdf(gmm: GaussianMixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    var = gmm.std**2 + sigma**2
    comp = torch.stack([gaussian_logpdf(x, m, var) for m in gmm.means], 1)  # (N, K)
    return torch.logsumexp(torch.log(gmm.weights)[None] + comp, dim=1)


def mixture_score(gmm: GaussianMixture):
    return lambda x, sigma: gmm.score_at(x, sigma)


def test_gaussian_exact_prior_matches_closed_form():
    d, s = 8, 0.7
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    x = mu + s * torch.randn(5, d, generator=g, dtype=torch.float64)

    def score(y, sigma):
        return -(y - mu) / (s**2 + sigma[:, None] ** 2)

    prior = lambda z: gaussian_logpdf(z, mu, s**2 + SIGMA_MAX**2)  # noqa: E731
    res = likelihood(score, x, SIGMA_MIN, SIGMA_MAX, rtol=1e-5, atol=1e-5, prior=prior)
    want = gaussian_logpdf(x, mu, s**2 + SIGMA_MIN**2)
    assert res.log_prob.shape == (5,) and res.bpd.shape == (5,) and res.stderr.shape == (5,)
    assert (res.log_prob - want).abs().max() / d < 1e-3
    assert torch.equal(res.stderr, torch.zeros(5, dtype=torch.float64)) and res.nfe > 0
    assert torch.allclose(res.bpd, -res.log_prob / (d * math.log(2)))
    # the default prior N(0, σ_max² I) ignores μ and s: off by about ‖x‖²/(2σ_max²)-sized terms, not wildly
    default = likelihood(score, x, SIGMA_MIN, SIGMA_MAX, rtol=1e-5, atol=1e-5)
    assert (default.log_prob - want).abs().max() / d < 0.1


@pytest.mark.parametrize("dim", [2, 64])
def test_gaussian_mixture_matches_smoothed_density(dim):
    gmm = GaussianMixture(dim=dim, std=0.5, spread=4.0, seed=3)
    x = gmm.sample(6, torch.Generator().manual_seed(4))
    res = likelihood(mixture_score(gmm), x, SIGMA_MIN, SIGMA_MAX, rtol=1e-5, atol=1e-5,
                     prior=lambda z: mixture_logpdf(gmm, z, SIGMA_MAX))  # fmt: skip
    want = mixture_logpdf(gmm, x, SIGMA_MIN)
    assert (res.log_prob - want).abs().max() / dim < 1e-3


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_within_three_standard_errors(probe):
    # 32 probes: the standard error from their spread is itself good to ~13%, so |t| > 3 has odds ~0.5% per input
    gmm = GaussianMixture(dim=16, std=0.5, spread=4.0, seed=5)
    x = gmm.sample(4, torch.Generator().manual_seed(6))
    kw = dict(rtol=1e-5, atol=1e-5, prior=lambda z: mixture_logpdf(gmm, z, SIGMA_MAX))
    exact = likelihood(mixture_score(gmm), x, SIGMA_MIN, SIGMA_MAX, **kw)
    hutch = likelihood(
        mixture_score(gmm), x, SIGMA_MIN, SIGMA_MAX, "hutchinson", n_probes=32, probe=probe, seed=7, **kw
    )
    assert (hutch.stderr > 0).all()
    assert ((hutch.log_prob - exact.log_prob).abs() <= 3 * hutch.stderr).all()
    again = likelihood(
        mixture_score(gmm), x, SIGMA_MIN, SIGMA_MAX, "hutchinson", n_probes=32, probe=probe, seed=7, **kw
    )
    assert torch.equal(again.log_prob, hutch.log_prob)  # probes from the seed


def test_rk45_agrees_with_dopri5():
    gmm = GaussianMixture(dim=2, std=0.5, spread=4.0, seed=3)
    x = gmm.sample(4, torch.Generator().manual_seed(4))
    a = likelihood(mixture_score(gmm), x, SIGMA_MIN, SIGMA_MAX)
    b = likelihood(mixture_score(gmm), x, SIGMA_MIN, SIGMA_MAX, solver="rk45")
    assert (a.log_prob - b.log_prob).abs().max() < 1e-3


def test_bad_arguments_name_the_parameter():
    score = lambda y, sigma: -y  # noqa: E731
    x = torch.randn(2, 3, dtype=torch.float64)
    for kwargs, name in [
        (dict(sigma_min=1.0, sigma_max=0.5), "sigma_max"),
        (dict(sigma_min=-1.0, sigma_max=1.0), "sigma_min"),
        (dict(divergence="trace"), "divergence"),
        (dict(divergence="hutchinson", n_probes=1), "n_probes"),
        (dict(solver="euler"), "solver"),
    ]:
        args = dict(sigma_min=0.1, sigma_max=1.0) | kwargs
        with pytest.raises(ValueError, match=f"^{name}:"):
            likelihood(score, x, **args)
    with pytest.raises(TypeError, match="^x:"):
        likelihood(score, torch.zeros(2, 3, dtype=torch.int64), 0.1, 1.0)


class _GaussianImages(torch.nn.Module):
    """A stand-in for a network: the exact score of N(m, v I) on (N, 1, 16, 16) images, and a call counter."""

    def __init__(self, m: float = 0.3, v: float = 0.05):
        super().__init__()
        self.m, self.v, self.calls = m, v, 0

    def score(self, x, sigma):
        self.calls += 1
        return -(x - self.m) / (self.v + sigma.view(-1, 1, 1, 1) ** 2)


def test_cli_likelihood_writes_the_record(tmp_path, monkeypatch, capsys):
    import json

    from ncsn_fast.cli import common, main
    from ncsn_fast.config import load_config

    pytest.importorskip("sklearn")
    fake = _GaussianImages()
    monkeypatch.setattr(common, "load_model", lambda args, device: (fake, load_config("digits")))
    out = tmp_path / "bpd.json"
    code = main(["likelihood", "--n", "3", "--batch-size", "2", "--rtol", "1e-3", "--atol", "1e-3",
                 "--probes", "2", "--out", str(out), "--quiet"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0 and fake.calls > 0 and "bits/dim" in text and "Gaussian" in text
    rec = json.loads(out.read_text())
    assert rec["n"] == 3 and len(rec["per_image_bpd"]) == 3 and rec["nfe"] > 0 and "gaussian_bpd" in rec
    assert "256" in rec["protocol"]["convention"] and rec["protocol"]["divergence"] == "hutchinson"
    assert math.isfinite(rec["bpd"]) and abs(rec["bpd"] - sum(rec["per_image_bpd"]) / 3) < 1e-9


def test_bits_per_dim_convention():
    """A uniform density on [0, 1]^D is 8 bits/dim on the 256 levels; rescaled to [−1, 1] its density halves per
    dimension, and the transform's log-det puts the bits back."""
    from ncsn_fast.config import load_config
    from ncsn_fast.evaluation.likelihood import bits_per_dim, transform_log_det

    cfg = load_config("digits")
    u = torch.rand(3, 1, 16, 16)
    d = 256
    assert torch.allclose(bits_per_dim(torch.zeros(3), transform_log_det(cfg, u), d), torch.full((3,), 8.0).double())
    cfg.data.rescaled = True
    lp = torch.full((3,), -d * math.log(2.0))  # uniform on [−1, 1]^D
    assert torch.allclose(bits_per_dim(lp, transform_log_det(cfg, u), d), torch.full((3,), 8.0).double())


def _kdiffusion_sampling():
    """k-diffusion's ``sampling`` module alone: its package ``__init__`` imports training-time dependencies (wandb,
    clean-fid, …), so the one file is loaded under a stand-in package whose ``utils`` holds the one helper it uses
    here (``append_dims``); torchsde, needed only by its SDE samplers, is stubbed when missing. Install the peer
    with ``pip install --no-deps k-diffusion``."""
    import importlib.util
    import sys
    import types
    from pathlib import Path
    from unittest import mock

    spec = importlib.util.find_spec("k_diffusion")  # a top-level name: found without running its __init__
    if spec is None or spec.origin is None:
        pytest.skip("k-diffusion not installed (pip install --no-deps k-diffusion)")
    pytest.importorskip("torchdiffeq")
    pkg = types.ModuleType("_kdiffusion_peer")
    pkg.__path__ = []
    utils = types.ModuleType("_kdiffusion_peer.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    stubs = {"_kdiffusion_peer": pkg, "_kdiffusion_peer.utils": utils}
    if importlib.util.find_spec("torchsde") is None:
        stubs["torchsde"] = types.ModuleType("torchsde")
    path = Path(spec.origin).parent / "sampling.py"
    with mock.patch.dict(sys.modules, stubs):
        peer_spec = importlib.util.spec_from_file_location("_kdiffusion_peer.sampling", path)
        module = importlib.util.module_from_spec(peer_spec)
        try:
            peer_spec.loader.exec_module(module)
        except ImportError as exc:
            pytest.skip(f"k-diffusion's sampling module needs {exc.name}")
    if not hasattr(module, "log_likelihood"):
        pytest.skip("this k-diffusion has no log_likelihood")
    return module


def test_agrees_with_k_diffusion_log_likelihood():
    """The same model, input, σ range, tolerances and prior N(0, σ_max² I) as k-diffusion's ``log_likelihood``
    (dopri5, one Rademacher probe). The model is a product of 1-D two-component mixtures, nonlinear but with a
    diagonal Jacobian, so one Rademacher probe gives the exact trace and the two are comparable to the solver."""
    peer = _kdiffusion_sampling()
    d, s = 12, 0.4
    g = torch.Generator().manual_seed(8)
    centres = torch.randn(2, d, generator=g, dtype=torch.float64) * 2  # per coordinate: two centres, weights .3/.7
    logw = torch.log(torch.tensor([0.3, 0.7], dtype=torch.float64))[:, None]

    def score(x, sigma):
        v = (s**2 + sigma**2)[:, None, None]
        diff = centres[None] - x[:, None]  # (N, 2, D)
        r = torch.softmax(logw[None] - 0.5 * diff.square() / v, dim=1)
        return (r * diff).sum(1) / v[:, 0]

    def denoiser(x, sigma):
        return x + sigma[:, None] ** 2 * score(x, sigma)

    x = centres[1] + s * torch.randn(5, d, generator=g, dtype=torch.float64)
    ours = likelihood(score, x, SIGMA_MIN, SIGMA_MAX, rtol=1e-5, atol=1e-5)
    theirs, info = peer.log_likelihood(denoiser, x, SIGMA_MIN, SIGMA_MAX, rtol=1e-5, atol=1e-5)
    assert ((ours.log_prob - theirs).abs() / theirs.abs()).max() < 1e-3
    assert abs(ours.nfe - info["fevals"]) <= 2  # the same solver on the same system


@pytest.mark.parametrize("transform", ["rescaled", "logit_transform"])
def test_transform_log_det_is_the_jacobian_of_the_data_transform(transform):
    from ncsn_fast.config import load_config
    from ncsn_fast.data import data_transform
    from ncsn_fast.evaluation.likelihood import transform_log_det

    cfg = load_config("digits")
    setattr(cfg.data, transform, True)
    u = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 0.98 + 0.01
    # the transform is elementwise: its Jacobian is diagonal, the derivative of the sum per element
    grad = torch.autograd.functional.jacobian(lambda v: data_transform(cfg, v, dequantize=False).sum(), u)
    assert torch.allclose(transform_log_det(cfg, u), grad.log().flatten(1).sum(1), rtol=1e-10)


@pytest.mark.slow
def test_torchrun_shards_the_batches_and_gives_the_same_figures(tmp_path):
    """Two processes (gloo) against one: batch b on rank b mod 2, its noise keyed by (seed, b), so every image's
    bits/dim and the total NFE are the same as in one process (~70 s on 2 cores)."""
    pytest.importorskip("sklearn")
    args = ["likelihood", "--num-samples", "3", "--batch-size", "1", "--rtol", "1e-3", "--atol", "1e-3", "--probes",
            "2", "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "ncsn_fast.cli", *args, "--out", str(tmp_path / "one.json")],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                          "ncsn_fast.cli", *args, "--out", str(tmp_path / "two.json")],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert b["protocol"]["world_size"] == 2 and a["protocol"]["world_size"] == 1
    assert b["per_image_bpd"] == a["per_image_bpd"] and b["nfe"] == a["nfe"] and len(a["per_image_bpd"]) == 3
