"""The multistep samplers of :mod:`ncsn_fast.sampling.multistep` against independent truths: k-diffusion's
``sample_dpmpp_3m_sde`` and diffusers' ``UniPCMultistepScheduler`` on a closed-form mixture (same inputs, same
noise), the exact probability-flow ODE of a Gaussian (measured convergence orders), a Gaussian target's moments
(the stochastic sampler), and the fused noise step against the reference backend."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from ncsn_fast.sampling.multistep import dpmpp_3m_sde, ipndm, unipc
from ncsn_fast.sampling.schedules import karras_sigmas
from tests.evaluation.test_likelihood import _kdiffusion_sampling
from tests.gmm import GaussianMixture
from tests.sampling.moments import TARGETS, Z_BOUND, mean_chi2, variance_ratio

SAMPLERS = {"dpmpp_3m_sde": dpmpp_3m_sde, "ipndm": ipndm, "unipc": unipc}


def _mixture_problem(seed: int, n: int = 40, dim: int = 8, sigma_max: float = 10.0):
    """A 3-mode mixture (random means), its k-diffusion denoiser and a fresh prior batch (float64). The denoiser
    sees σ through float32 as :func:`~ncsn_fast.sampling.samplers.denoised` hands it to the score (its σ tensor is
    float32), so the peers compute the same function."""
    gm = GaussianMixture(dim=dim, seed=seed)
    x0 = sigma_max * torch.randn(n, dim, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64)

    def denoiser(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=torch.float64)
        return x + s.reshape(-1, 1) ** 2 * gm.score_at(x, s.float())

    return gm, x0, denoiser


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(("eta", "s_noise"), [(1.0, 1.0), (0.0, 1.0), (0.6, 0.8)])
def test_dpmpp_3m_sde_equals_k_diffusion_with_the_same_noise(eta, s_noise):
    """Float64 states draw z with torch.randn from ``generator`` (NoiseStream); k-diffusion's ``noise_sampler``
    draws the same normals from a generator in the same state (``seed`` given, so none is consumed for Philox).
    Measured agreement: ~6e-16 relative."""
    peer = _kdiffusion_sampling()
    gm, x0, denoiser = _mixture_problem(seed=int(eta * 10) + 3)
    smax, smin, nfe = 10.0, 0.02, 12
    ours = dpmpp_3m_sde(gm.score_at, x0, nfe, smax, smin, torch.Generator().manual_seed(7), eta=eta, s_noise=s_noise,
                        seed=0)  # fmt: skip
    g = torch.Generator().manual_seed(7)
    noise = lambda sigma, sigma_next: torch.randn(x0.shape, generator=g, dtype=torch.float64)  # noqa: E731
    ref = peer.sample_dpmpp_3m_sde(denoiser, x0.clone(), karras_sigmas(smax, smin, nfe), disable=True, eta=eta,
                                   s_noise=s_noise, noise_sampler=noise)  # fmt: skip
    assert _relative(ours, ref) <= 1e-10
    assert not torch.equal(ours, x0) and float(ref.std()) > 0.5


@pytest.mark.parametrize("nfe", [3, 6, 12])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_equals_diffusers_scheduler_on_the_same_sigmas(order, variant, nfe):
    """diffusers' scheduler keeps the VE σ (its ``sigmas`` are √((1 − ᾱ)/ᾱ)) and steps x_vp = x/√(1 + σ²); given
    our Karras σ (float64) and a ``sample``-predicting model it must make our steps. Its own last step (to σ = 0)
    returns the model output for bh2 and NaN for bh1 (B(h) = −∞ times a zero residual), so the reference's output
    is its denoiser at its x_{N−1}, which is what its bh2 step returns. Measured agreement: ≤ 1e-14 relative."""
    module = pytest.importorskip("diffusers.schedulers.scheduling_unipc_multistep")
    gm, x0, denoiser = _mixture_problem(seed=10 * order + nfe + (variant == "bh2"))
    smax, smin = 10.0, 0.02
    ours = unipc(gm.score_at, x0, nfe, smax, smin, order=order, variant=variant)
    scheduler = module.UniPCMultistepScheduler(solver_order=order, solver_type=variant, prediction_type="sample")
    scheduler.set_timesteps(nfe)
    sigmas = karras_sigmas(smax, smin, nfe)
    scheduler.sigmas = sigmas.clone()
    x = x0 / math.sqrt(1 + smax**2)
    for i, t in enumerate(scheduler.timesteps):
        s = float(sigmas[i])
        d = denoiser(x * math.sqrt(1 + s**2), s)
        if i == nfe - 1:
            break
        x = scheduler.step(d, t, x).prev_sample
    assert _relative(ours, d) <= 1e-12
    if variant == "bh2":
        assert _relative(scheduler.step(d, scheduler.timesteps[-1], x).prev_sample, d) <= 1e-14


class Gaussian:
    """Data N(μ, s²I): the denoiser D(x, σ) = (s²x + σ²μ)/(s² + σ²) is exact and the probability-flow ODE
    dx/dσ = (x − D)/σ has the solution x(σ) = μ + (x_0 − μ)·√((s² + σ²)/(s² + σ_max²)). The samplers' last step
    returns D(x_{N−1}, σ_min), so the truth is D(x(σ_min), σ_min) (D is affine in x: the error is that of x_{N−1}
    scaled by s²/(s² + σ_min²))."""

    def __init__(self, seed: int, dim: int = 16, s: float = 0.5) -> None:
        self.mu = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.s, self.dim = s, dim

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return (self.mu - x) / (self.s**2 + sigma.to(x.dtype).view(-1, 1) ** 2)

    def exact(self, x0: torch.Tensor, sigma_max: float, sigma_min: float) -> torch.Tensor:
        s2 = self.s**2
        x = self.mu + (x0 - self.mu) * math.sqrt((s2 + sigma_min**2) / (s2 + sigma_max**2))
        return (s2 * x + sigma_min**2 * self.mu) / (s2 + sigma_min**2)


# (sampler, options, ρ, σ_max, σ_min, step counts, lowest and highest slope allowed; ∞: a floor only). Slopes
# measured (float64, 200 chains, these fits): ipndm ρ = 1 orders 1-4: 1.00, 2.00, 3.91, 3.97; ipndm ρ = 7 orders
# 1-4: 1.00, 2.03, 2.03, 2.03; unipc ρ = 7 orders 1-3: 2.09/2.02, 3.11/3.06, 4.23/4.16 (bh1/bh2); dpmpp_3m_sde η = 0:
# 1.92.
UNIFORM, KARRAS, LONG = (1.0, 5.0, 0.05, (128, 256, 512)), (7.0, 20.0, 0.01, (32, 64, 128, 256)), (64, 128, 256, 512)
CONVERGENCE = [
    *[("ipndm", {"order": k}, *UNIFORM, k - 0.5, math.inf) for k in (1, 2, 3, 4)],
    ("ipndm", {"order": 1}, *KARRAS, 0.7, 1.3),
    *[("ipndm", {"order": k}, *KARRAS[:3], (64, 128, 256), 1.7, 2.3) for k in (2, 3, 4)],
    *[("unipc", {"order": k, "variant": v}, *KARRAS, k + 0.5, math.inf) for k in (1, 2, 3) for v in ("bh1", "bh2")],
    ("dpmpp_3m_sde", {"eta": 0.0}, *KARRAS[:3], LONG, 1.7, 2.3),
]


@pytest.mark.parametrize(("name", "options", "rho", "smax", "smin", "steps", "lo", "hi"), CONVERGENCE)
def test_deterministic_samplers_converge_at_their_measured_order(name, options, rho, smax, smin, steps, lo, hi):
    """The slope of log RMS error against log N, over step counts where it has settled (errors 1e-2 … 1e-8).

    ipndm's fixed Adams–Bashforth coefficients are those of equal steps. On the grid uniform in σ (ρ = 1) order k
    shows at least order k (order 3 measures 3.9, its h³ term small on this flow); its Euler/AB2/AB3 warm-up leaves
    O(h²) and O(h³) terms with constants ∝ x''(σ_max) ∝ s²/σ_max³ (tiny at σ_max = 10 s), so far beyond these N
    (order 3 at N = 4096) it turns second order. On Karras' graded grid the step
    mismatch alone costs an order: with σ = φ(u) on a uniform u grid the step (σ_{i+1} − σ_i)·Σ b_j d_{i−j} differs
    from ∫ d dσ by ~φ''·d'·Δu³/12 per step, so every order ≥ 2 is second order (measured 2.03).

    UniPC-p with its corrector is of order p + 1 (Zhao et al. 2023, Theorem 3.1; its coefficients use the actual λ
    ratios, so the graded grid does not hurt). The uncorrected order-2 step into σ_min (lower_order_final) is third
    order locally, but D barely moves in λ at small σ, so order 3 measures 4.2 here; asserted: ≥ p + 0.5.

    dpmpp_3m_sde at η = 0 is k-diffusion's DPM-Solver++(3M): its d_2 = h²D''/2 carries φ_3 where the Taylor
    expansion of the exact step needs 2φ_3, so it is second order (with 2φ_3 it measures 3.0); kept for parity with
    k-diffusion (and diffusers' third-order multistep update, which shares the formula)."""
    g = Gaussian(seed=zlib.crc32(repr((name, options, rho)).encode()) % 1000)
    gen = torch.Generator().manual_seed(int(lo * 10) + len(steps))
    x0 = g.mu + smax * torch.randn(200, g.dim, generator=gen, dtype=torch.float64)
    exact = g.exact(x0, smax, smin)
    errors = [float((SAMPLERS[name](g.score, x0, n, smax, smin, rho=rho, **options) - exact).square().mean().sqrt())
              for n in steps]  # fmt: skip
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert lo <= slope <= hi, (name, options, rho, slope, errors)
    assert errors[-1] > 1e-11, errors  # still above float64 rounding


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_dpmpp_3m_sde_at_its_default_options_reaches_the_gaussian_targets_moments(target):
    """As test_solvers' default-options test, at dpmpp_2m_sde's budget and allowance (100 evaluations, 2%): mean
    (χ²) and pooled variance within their sampling distributions' 1e-4 bounds on 4000 chains."""
    g, n, smin = TARGETS[target], 4000, 0.01
    out = dpmpp_3m_sde(g.score, g.prior(n, 2), 100, g.sigma_max, smin, torch.Generator().manual_seed(3))
    var = g.output_variance(smin)
    stat, bound = mean_chi2(out, g.mu, var)
    assert stat <= bound, (target, stat, bound)
    ratio, se = variance_ratio(out, var)
    assert abs(ratio - 1) <= Z_BOUND * se + 0.02, (target, ratio, se)


@pytest.mark.parametrize(
    ("name", "options", "nfe", "message"),
    [
        ("ipndm", {"order": 0}, 10, "order: .*got 0"),
        ("ipndm", {"order": 5}, 10, "order: .*got 5"),
        ("ipndm", {"order": 2.0}, 10, "order: .*got 2.0"),
        ("unipc", {"order": 0}, 10, "order: .*got 0"),
        ("unipc", {"order": 4}, 10, "order: .*got 4"),
        ("unipc", {"variant": "bh3"}, 10, "variant: .*got 'bh3'"),
        ("dpmpp_3m_sde", {"eta": -1}, 10, r"eta: .*got -1"),
        ("dpmpp_3m_sde", {}, 1, "nfe: the dpmpp_3m_sde sampler needs at least 2 .*got 1"),
        ("ipndm", {}, 1, "nfe: the ipndm sampler needs at least 2 .*got 1"),
        ("unipc", {}, 1, "nfe: the unipc sampler needs at least 2 .*got 1"),
    ],
)
def test_bad_options_are_value_errors_naming_the_argument_and_value(name, options, nfe, message):
    g = Gaussian(seed=5)
    x0 = g.mu + 5.0 * torch.randn(4, g.dim, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        SAMPLERS[name](g.score, x0, nfe, 5.0, 0.05, **options)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_one_evaluation_per_step_and_deterministic_samplers_ignore_the_seed(name):
    """nfe score calls exactly (the lead's budget rule; UniPC's corrector reuses the next step's evaluation), at the
    minimum budget (2) too; ipndm and unipc give the same samples for any generator/seed."""
    g = Gaussian(seed=21, dim=6)
    calls = []
    score = lambda x, s: calls.append(1) or g.score(x, s)  # noqa: E731
    x0 = g.mu + 5.0 * torch.randn(8, g.dim, generator=torch.Generator().manual_seed(22), dtype=torch.float64)
    for nfe in (2, 7):
        calls.clear()
        SAMPLERS[name](score, x0, nfe, 5.0, 0.05, torch.Generator().manual_seed(1))
        assert len(calls) == nfe, (name, nfe, len(calls))
    a = SAMPLERS[name](g.score, x0, 7, 5.0, 0.05, torch.Generator().manual_seed(1), seed=1)
    b = SAMPLERS[name](g.score, x0, 7, 5.0, 0.05, torch.Generator().manual_seed(2), seed=2)
    assert torch.equal(a, b) == (name != "dpmpp_3m_sde"), name


def test_dpmpp_3m_sde_fused_float32_step_matches_the_reference_backend():
    """The same seed on the fused CPU op (backend auto) and the reference backend (the op's PyTorch reference, the
    same Philox stream): equal up to float32 rounding over a 20-step run."""
    g = Gaussian(seed=31, dim=12)
    x0 = (g.mu + 5.0 * torch.randn(64, g.dim, generator=torch.Generator().manual_seed(32), dtype=torch.float64)).float()
    score = lambda x, s: g.score(x.double(), s).float()  # noqa: E731
    fused = dpmpp_3m_sde(score, x0, 20, 5.0, 0.05, seed=123)
    reference = dpmpp_3m_sde(score, x0, 20, 5.0, 0.05, seed=123, backend="reference")
    other = dpmpp_3m_sde(score, x0, 20, 5.0, 0.05, seed=124)
    assert fused.dtype == torch.float32
    assert float((fused - reference).abs().max()) <= 1e-5 * float(reference.abs().max())
    assert float((fused - other).abs().max()) > 1e-2  # the noise is really there
