"""The NFE-budget samplers (ald, cas, pc, heun) on the 64-D Gaussian mixture with a closed-form score."""

from __future__ import annotations

import pytest
import torch

import ncsn_fast as nf
from ncsn_fast import techniques as T
from ncsn_fast.sampling import get_sampler, heun, init_samples, karras_sigmas, prior_samples
from tests.gmm import GaussianMixture


@pytest.fixture(scope="module")
def mixture():
    gm = GaussianMixture(dim=64, weights=(0.2, 0.3, 0.5))
    sigma_1 = T.initial_sigma(gm.sample(20000, torch.Generator().manual_seed(1)))
    return gm, sigma_1


def run(gm, sigma_1, name, nfe, n=4000, **options):
    score = lambda x, s: gm.score_at(x, s.double())  # noqa: E731
    g = torch.Generator().manual_seed(2)
    x0 = init_samples(n, (64,), g).double() if name == "ald" else prior_samples(n, (64,), sigma_1, g).double()
    return get_sampler(name)(score, x0, nfe, sigma_1, 0.01, torch.Generator().manual_seed(3), **options)


def within(gm, out, weight=0.04, mean=0.03, std=0.10):
    rep = gm.report(out)
    for i, w in enumerate(gm.weights.tolist()):
        assert abs(rep["weight"][i] - w) <= weight, rep
        assert rep["mean_err"][i] <= mean, rep
        assert abs(rep["std"][i] - 1.0) <= std, rep


def test_heun_matches_ald_accuracy_with_a_tenth_of_the_evaluations(mixture):
    gm, sigma_1 = mixture
    L = T.num_noise_levels(sigma_1, 0.01, 64)
    ald_nfe = L * 100 + 1  # ALD at T = 100 on the Technique-2 schedule (checked in test_sampling.py)
    out = run(gm, sigma_1, "heun", 51)
    assert 51 <= ald_nfe / 10
    within(gm, out)


@pytest.mark.parametrize("name,nfe", [("pc", 251), ("cas", 101), ("ald", 501)])
def test_other_samplers_find_the_modes(mixture, name, nfe):
    gm, sigma_1 = mixture
    within(gm, run(gm, sigma_1, name, nfe), weight=0.04, mean=0.03, std=0.12)


# the evaluation budget of every sampler: tests/sampling/test_solvers.py::test_nfe_is_a_bound_and_is_used


def test_heun_churn_and_schedule():
    s = karras_sigmas(80.0, 0.002, 18)
    assert s[0] == pytest.approx(80.0) and s[-2] == pytest.approx(0.002) and s[-1] == 0
    assert torch.all(s[1:] < s[:-1])
    score = lambda x, sig: -x / (1 + sig.view(-1, 1) ** 2)  # noqa: E731  N(0, I) data
    x0 = prior_samples(4000, (8,), 20.0, torch.Generator().manual_seed(0))
    # the flow carries N(0, 20²) to N(0, 1); churn re-injects noise and converges more slowly in NFE
    for churn, nfe, tol in ((0.0, 41, 0.03), (0.0, 81, 0.01), (10.0, 81, 0.04)):
        out = heun(score, x0, nfe, 20.0, 0.01, torch.Generator().manual_seed(1), churn=churn)
        assert abs(float(out.std()) - 1.0) < tol, (churn, nfe, float(out.std()))


def test_model_score_any_sigma_and_ncsn_only_its_levels(reference_dir):
    cfg = nf.load_config(reference_dir / "ncsnv2_32" / "config.yml")
    model = nf.build_model(cfg).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        by_label = model(x, torch.tensor([3, 3]))
        by_sigma = model.score(x, model.sigmas[[3, 3]])
        assert torch.allclose(by_label, by_sigma, rtol=1e-5, atol=1e-6)
        between = model.score(x, torch.tensor([7.0, 0.123]))
        assert torch.allclose(between[0] * 7.0, by_label[0] * float(model.sigmas[3]), rtol=1e-4, atol=1e-5)
    ncsn = nf.build_model(nf.load_config(reference_dir / "ncsn_32" / "config.yml")).eval()
    sig = nf.get_sigmas(ncsn.config)
    with torch.no_grad():
        assert torch.allclose(ncsn.score(x, sig[[2, 5]]), ncsn(x, torch.tensor([2, 5])))
        with pytest.raises(ValueError, match="not one of this NCSN"):
            ncsn.score(x, torch.tensor([0.5, 0.5]))


def test_bad_input():
    score = lambda x, s: -x  # noqa: E731
    with pytest.raises(ValueError, match="at least 3"):
        heun(score, torch.randn(2, 3), 2, 5.0, 0.01)
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("ddim")
    with pytest.raises(ValueError, match="eta"):
        get_sampler("cas")(score, torch.randn(2, 3), 10, 5.0, 0.01, eta=0.01)
