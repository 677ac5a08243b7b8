"""The Langevin corrector of the σ-schedule solvers and the schedules they take (issue 25): the corrector's chain
against the closed-form stationary law of unadjusted Langevin on a Gaussian, its evaluations counted in the budget,
and the schedule choice (karras, geometric, an explicit list)."""

from __future__ import annotations

import math

import pytest
import torch

from ncsn_fast.sampler_specs import SPECS
from ncsn_fast.sampling import get_sampler, minimum_nfe
from ncsn_fast.sampling.correctors import LangevinCorrector
from ncsn_fast.sampling.runtime import NoiseStream
from ncsn_fast.sampling.schedules import geometric_sigmas, karras_sigmas, solver_sigmas
from ncsn_fast.techniques import langevin_step_lr
from tests.sampling.moments import Z_BOUND

CORRECTED = [name for name, s in SPECS.items() if s.option("corrector_steps") is not None]


class Gaussian:
    """Data N(μ, s²I); at noise level σ its score is (μ − x)/(s² + σ²)."""

    def __init__(self, dim: int, s: float, seed: int = 5) -> None:
        self.mu = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.s, self.dim, self.calls = s, dim, 0

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        v = self.s**2 + sigma.to(x.dtype).view(-1, *([1] * (x.dim() - 1))) ** 2
        return (self.mu.to(x.dtype) - x) / v


@pytest.mark.parametrize(("snr", "steps"), [(None, 5), (None, 50), (0.2, 200)])
def test_the_corrector_chain_follows_unadjusted_langevins_closed_form(snr, steps):
    """At one level σ with v = s² + σ², x ← x + α(μ − x)/v + √(2α)·z is an AR(1) chain: from N(μ + δ, v) after T
    steps of a fixed α the law is N(μ + δ(1 − α/v)^T, V + (v − V)(1 − α/v)^{2T}), V = v/(1 − α/(2v)) its
    stationary variance (closed form). Technique 4's α (fixed) is checked on that transient; the SNR rule's α
    (which follows ‖s‖) at its stationary fixed point after 200 steps. Mean within the χ² bound, variance within
    Z_BOUND standard errors."""
    g = Gaussian(dim=8, s=0.6)
    sigma, n, delta = 0.3, 4000, 0.5
    v = g.s**2 + sigma**2
    corrector = LangevinCorrector(steps=steps, levels=1, snr=snr)
    corrector.bind([1.0, 0.6, sigma, 0.0])
    noise = NoiseStream(None, "auto", torch.Generator().manual_seed(7))
    start = torch.randn(n, g.dim, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    x = (g.mu + delta + math.sqrt(v) * start).contiguous()
    x = corrector.after_step(g.score, noise, x, sigma)
    if snr is None:
        alpha = corrector.eps  # Technique 4's ε at σ = σ_min: α = ε
        assert alpha == pytest.approx(langevin_step_lr(0.6 / sigma, sigma, steps))
        decay = (1 - alpha / v) ** steps
    else:  # α = 2(r√D/E‖s‖)² at the stationary law: ‖s‖ = ‖x − μ‖/v, ‖x − μ‖ ~ √V·χ_D
        chi_mean = math.sqrt(2) * math.exp(math.lgamma((g.dim + 1) / 2) - math.lgamma(g.dim / 2))
        alpha = 0.0
        for _ in range(100):  # the fixed point α ↦ V ↦ α
            alpha = 2 * (snr * math.sqrt(g.dim) * v / (math.sqrt(v / (1 - alpha / (2 * v))) * chi_mean)) ** 2
        decay = 0.0
    stationary = v / (1 - alpha / (2 * v))
    mean, var = g.mu + delta * decay, stationary + (v - stationary) * decay**2
    mean_err = (x.mean(0) - mean) / math.sqrt(var / n)
    assert float(mean_err.square().sum()) < 26.1, mean_err  # χ²_8 at 1e-4
    se = var * math.sqrt(2 / (n - 1) / g.dim)
    assert abs(x.var(0).mean().item() - var) < Z_BOUND * se, (x.var(0).mean().item(), var, alpha)
    assert g.calls == steps


@pytest.mark.parametrize("name", CORRECTED)
def test_corrector_steps_are_counted_in_the_budget(name):
    """With k steps at m levels every solver makes exactly ≤ nfe evaluations (k·m of them the corrector's), and
    the minimum budget grows by k·m."""
    g = Gaussian(dim=4, s=0.5)
    x0 = 10.0 * torch.randn(16, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    plain = minimum_nfe(name)
    assert minimum_nfe(name, corrector_steps=2, corrector_levels=3) == plain + 6
    nfe = 15
    out = get_sampler(name)(
        g.score, x0, nfe, 10.0, 0.01, torch.Generator().manual_seed(3), corrector_steps=2, corrector_levels=3
    )
    assert torch.isfinite(out).all()
    assert nfe - 1 <= g.calls <= nfe, g.calls  # heun's 2N − 1 may leave one unused
    with pytest.raises(ValueError, match=rf"^nfe: the {name} sampler needs at least {plain + 6} score evaluations"):
        get_sampler(name)(g.score, x0, plain + 5, 10.0, 0.01, corrector_steps=2, corrector_levels=3)


def test_bad_corrector_options_name_the_argument():
    g = Gaussian(dim=4, s=0.5)
    x0 = torch.randn(4, 4, dtype=torch.float64)
    for kwargs, match in [
        ({"corrector_steps": -1}, r"^corrector_steps: must be at least 0, got -1"),
        ({"corrector_levels": 0}, r"^corrector_levels: must be at least 1, got 0"),
        ({"corrector_snr": -0.1}, r"^corrector_snr: must be positive and finite, got -0.1"),
    ]:
        with pytest.raises(ValueError, match=match):
            get_sampler("dpmpp_2m")(g.score, x0, 10, 10.0, 0.01, **kwargs)


def test_schedules_by_name_and_as_a_list():
    assert solver_sigmas("karras", 10.0, 0.01, 6, 7.0) == karras_sigmas(10.0, 0.01, 6, 7.0).tolist()
    assert solver_sigmas("geometric", 10.0, 0.01, 6) == geometric_sigmas(10.0, 0.01, 6).tolist() + [0.0]
    given = [10.0, 3.0, 1.0, 0.3, 0.05, 0.01]
    assert solver_sigmas(given, 10.0, 0.01, 6) == pytest.approx(given + [0.0])
    for bad, match in [
        ("cosine", r"^schedule: unknown schedule 'cosine'; choose one of karras, geometric or a list"),
        ("tuned", r"^schedule: unknown schedule 'tuned' \(resolve it first"),
        ([10.0, 3.0, 1.0], r"^schedule: 6 steps need 6 noise levels, got 3"),
        ([10.0, 3.0, 3.0, 0.3, 0.05, 0.01], r"^schedule: must decrease strictly"),
    ]:
        with pytest.raises(ValueError, match=match):
            solver_sigmas(bad, 10.0, 0.01, 6)


@pytest.mark.parametrize("name", [n for n in CORRECTED if SPECS[n].family == "ode"])
def test_a_solver_follows_the_schedule_it_is_given(name):
    """The σ values a deterministic solver evaluates at are its schedule's levels (minus the final 0; heun also
    at the next level)."""
    seen: list[float] = []
    g = Gaussian(dim=4, s=0.5)

    def score(x, sigma):
        seen.append(float(sigma[0]))
        return g.score(x, sigma)

    given = [10.0, 4.0, 1.5, 0.5, 0.1, 0.01]
    x0 = 10.0 * torch.randn(8, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    nfe = 11 if name == "heun" else 6
    get_sampler(name)(score, x0, nfe, 10.0, 0.01, schedule=given)
    assert sorted(set(seen), reverse=True) == pytest.approx([s for s in given]), seen


def test_a_tuned_schedule_is_the_one_stored_with_the_model():
    """``schedule="tuned"`` in a plan resolves to the schedule stored with the model for the sampler's family and
    level count (the bundled model ships sde and ode schedules for 10, 15, 25 levels); a corrector's steps come out
    of the levels; none stored is one line saying how to make it."""
    import json
    from pathlib import Path

    from ncsn_fast.pretrained import load_pretrained
    from ncsn_fast.sampling import SamplingPlan

    _, cfg = load_pretrained("digits")
    stored = json.loads((Path(ncsn_pretrained_folder()) / "schedules.json").read_text())["schedules"]
    by_key = {(e["solver"], e["nfe"]): e["sigmas"] for e in stored}
    for sampler, options, nfe, key in [
        ("dpmpp_2m_sde", {}, 10, ("sde", 10)),
        ("unipc", {}, 15, ("ode", 15)),
        ("dpmpp_3m_sde", {"corrector_steps": 2, "corrector_levels": 5}, 35, ("sde", 25)),
        ("heun", {}, 29, ("ode", 15)),
    ]:
        plan = SamplingPlan(sampler=sampler, nfe=nfe, options={**options, "schedule": "tuned"})
        assert plan.resolve(cfg).plan.options["schedule"] == pytest.approx(by_key[key]), sampler
    with pytest.raises(ValueError, match=r"^schedule: no tuned sde schedule of 12 levels .*tune-schedule --nfe 12`$"):
        SamplingPlan(sampler="dpmpp_2m_sde", nfe=12, options={"schedule": "tuned"}).resolve(cfg)


def ncsn_pretrained_folder():
    from ncsn_fast.pretrained import pretrained_path

    return pretrained_path("digits")


def test_bad_schedules_and_types_name_the_argument():
    g = Gaussian(dim=4, s=0.5)
    x0 = torch.randn(4, 4, dtype=torch.float64)
    run = get_sampler("unipc")
    for kwargs, error, match in [
        ({"schedule": None}, TypeError, r"^schedule: expected karras, geometric or a list of σ \(floats\), got None"),
        ({"schedule": 3}, TypeError, r"^schedule: expected karras, geometric or a list"),
        ({"schedule": ["8", 4.0, 1.0]}, TypeError, r"^schedule: expected karras, geometric or a list"),
        ({"rho": "7"}, TypeError, r"^rho: expected a number, got '7'"),
        ({"nfe": "10"}, TypeError, r"^nfe: expected an integer number of score evaluations, got '10'"),
        ({"schedule": [50.0, 10.0, 1.0]}, ValueError, r"^schedule: the levels must lie in \[sigma_min, sigma_max\]"),
    ]:
        args = {"nfe": 3, **kwargs}
        with pytest.raises(error, match=match):
            run(g.score, x0, args.pop("nfe"), 10.0, 0.01, **args)
    with pytest.raises(TypeError, match=r"^eta: expected a number, got '1'"):
        get_sampler("dpmpp_3m_sde")(g.score, x0, 3, 10.0, 0.01, eta="1")
