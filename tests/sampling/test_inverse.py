"""Linear inverse problems by one mechanism (ncsn_fast.sampling.inverse): inpainting re-expressed through it gives
today's outputs bit for bit; colorization and super-resolution keep their observation exactly and, on Gaussian
data, sample the unknown component's closed-form conditional."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ncsn_fast.sampling import colorize, inpaint, prior_samples, super_resolve
from ncsn_fast.sampling.inverse import Grayscale
from tests.sampling.moments import Z_BOUND, mean_chi2, variance_ratio

DATA = Path(__file__).parent / "data"


def test_inpainting_through_the_mechanism_is_bit_identical_to_before():
    """inpaint_before_inverse.pt holds the outputs of the inpaint of commit 5b1b84c (before the mechanism), made by
    data/make_inpaint_before_inverse.py: the official update (float64, 0/1 mask, restore or not, a non-binary mask
    without denoising) and the fused op (float32, cpu and reference backends)."""
    rec = torch.load(DATA / "inpaint_before_inverse.pt")
    data, mask, soft, x0 = (rec["inputs"][k] for k in ("data", "mask", "soft", "x0"))
    mu, s2 = 0.3, 0.25
    sig = torch.tensor([3.0 * 0.6**i for i in range(8)])

    def score64(x, y):
        return (mu - x) / (s2 + sig.double()[y].view(-1, 1, 1, 1) ** 2)

    def score32(x, y):
        return (mu - x) / (s2 + sig[y].view(-1, 1, 1, 1) ** 2)

    def gen(seed):
        return torch.Generator().manual_seed(seed)

    f32 = (x0.float(), data.float(), mask.float(), sig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the schedule is coarse on purpose (a short run)
        now = {
            "torch64": inpaint(score64, x0, data, mask, sig.double(), 3, 1e-3, generator=gen(1), restore_known=False),
            "torch64_restore": inpaint(score64, x0, data, mask, sig.double(), 3, 1e-3, generator=gen(1)),
            "torch64_soft": inpaint(score64, x0, data, soft, sig.double(), 2, 1e-3, denoise=False, generator=gen(2)),
            "fused32": inpaint(score32, *f32, 3, 1e-3, generator=gen(3), backend="cpu", seed=11, restore_known=False),
            "fused32_ref": inpaint(score32, *f32, 3, 1e-3, generator=gen(3), backend="reference"),
        }
    for key, expected in rec["outputs"].items():
        assert now[key].dtype == expected.dtype and torch.equal(now[key], expected), key


# --- colorization and super-resolution on Gaussian data --------------------------------------------------------------
# Data N(μ, diag(s²)) of shape (3, 4, 4) whose s is constant on each 2×2 block (so over the three channels of a
# pixel and over the four pixels of a block): the exact score (μ − x)/(s² + σ²) then acts on the known component
# A·x and its orthogonal complement B·x separately, so the complement follows the sampler's unconditional Gaussian
# run whatever is replaced: B·out ~ N(B·μ, s⁴/(s² + σ_min²)) for a sampler that ends with the denoising step — the
# unknown component's conditional given the observation, in closed form (it does not depend on y here).
SHAPE, K, SMIN = (3, 4, 4), 2, 0.01


def target():
    g = torch.Generator().manual_seed(11)
    mu = torch.rand(SHAPE, generator=g, dtype=torch.float64) * 2 - 1
    s_block = 0.2 + torch.rand(1, SHAPE[1] // K, SHAPE[2] // K, generator=g, dtype=torch.float64)
    s = s_block.repeat_interleave(K, 1).repeat_interleave(K, 2).expand(SHAPE).clone()
    return mu, s


def gaussian_score(mu, s):
    def score(x, sigma):
        return (mu.to(x.dtype) - x) / (s.to(x.dtype) ** 2 + sigma.to(x.dtype).view(-1, 1, 1, 1) ** 2)

    return score


def completed(first: torch.Tensor) -> torch.Tensor:
    """An orthogonal matrix whose first column is ``first`` (unit norm): the other columns span its complement."""
    d = first.numel()
    rest = torch.randn(d, d - 1, generator=torch.Generator().manual_seed(0), dtype=first.dtype)
    q, _ = torch.linalg.qr(torch.cat([first[:, None], rest], 1))
    return q * torch.sign(q[:, 0] @ first)


def chroma(x: torch.Tensor) -> torch.Tensor:
    """The colour coordinates: per pixel the last two columns of an orthogonal decoupling matrix, (N, 2·H·W)."""
    q = completed(torch.full((3,), 3**-0.5, dtype=x.dtype))
    return torch.einsum("nchw,cj->njhw", x, q[:, 1:]).flatten(1)


def blocks(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // K, K, w // K, K).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h // K, w // K, K * K)


def block_detail(x: torch.Tensor) -> torch.Tensor:
    """Per K×K block the coordinates orthogonal to its mean, (N, C·(H/K)·(W/K)·(K²−1))."""
    q = completed(torch.full((K * K,), 1.0 / K, dtype=x.dtype))
    return (blocks(x) @ q[:, 1:]).flatten(1)


def check_moments(unknown, mean, var, allowance):
    stat, bound = mean_chi2(unknown, mean, var)
    assert stat <= bound, (stat, bound)
    ratio, se = variance_ratio(unknown, var)
    assert abs(ratio - 1) <= Z_BOUND * se + allowance, (ratio, se)


def output_variance(s):
    return s**4 / (s**2 + SMIN**2)


# (sampler, nfe, variance bias allowance): test_solvers' DEFAULT_RUNS for the same samplers
RUNS = [("dpmpp_2m_sde", 100, 0.02), ("heun", 101, 0.02), ("pc", 400, 0.05)]


@pytest.mark.parametrize(("sampler", "nfe", "allowance"), RUNS)
def test_colorization_keeps_the_gray_channel_and_samples_the_colour(sampler, nfe, allowance):
    mu, s = target()
    n = 4000
    gray = (mu + 0.3).mean(0, keepdim=True)[None]  # an observation away from the data's own mean
    x0 = mu + prior_samples(n, SHAPE, 5.0, torch.Generator().manual_seed(1)).double()  # the exact prior
    out = colorize(gaussian_score(mu, s), gray, x0, nfe, 5.0, SMIN, sampler=sampler, seed=2)
    assert float((out.mean(1, keepdim=True) - gray).abs().max()) <= 1e-12  # the known component: exact
    var = output_variance(s[0]).expand(2, -1, -1).flatten()  # s is equal over the channels of a pixel
    check_moments(chroma(out), chroma(mu[None])[0], var, allowance)


@pytest.mark.parametrize(("sampler", "nfe", "allowance"), RUNS)
def test_super_resolution_keeps_the_block_means_and_samples_the_detail(sampler, nfe, allowance):
    mu, s = target()
    n = 4000
    low = F.avg_pool2d(mu[None] - 0.4, K)
    x0 = mu + prior_samples(n, SHAPE, 5.0, torch.Generator().manual_seed(3)).double()
    out = super_resolve(gaussian_score(mu, s), low, K, x0, nfe, 5.0, SMIN, sampler=sampler, seed=4)
    assert float((F.avg_pool2d(out, K) - low).abs().max()) <= 1e-12  # the known component: exact
    var = blocks(output_variance(s)[None])[0, ..., 1:].flatten()  # s is constant on each block
    check_moments(block_detail(out), block_detail(mu[None])[0], var, allowance)


def test_float32_and_ald_keep_the_observation_up_to_rounding():
    mu, s = target()
    gray = mu.mean(0, keepdim=True)[None].float()
    x0 = prior_samples(8, SHAPE, 5.0, torch.Generator().manual_seed(5))
    score = gaussian_score(mu, s)
    for sampler, nfe in (("ald", 41), ("dpmpp_2m_sde", 20), ("adaptive", 200), ("cas", 20), ("euler", 10)):
        out = colorize(score, gray, x0, nfe, 5.0, SMIN, sampler=sampler, seed=6)
        assert out.dtype == torch.float32 and torch.isfinite(out).all(), sampler
        assert float((out.mean(1, keepdim=True) - gray).abs().max()) <= 1e-6, sampler
        low = F.avg_pool2d(mu[None].float(), K)
        out = super_resolve(score, low, K, x0, nfe, 5.0, SMIN, sampler=sampler, seed=6)
        assert float((F.avg_pool2d(out, K) - low).abs().max()) <= 1e-6, sampler


def test_grayscale_replacement_is_score_sdes_decoupled_replacement():
    """x − Aᵀ(A·x) + Aᵀ(√3·gray) equals couple(decouple(x)·(1 − m) + decouple(gray, gray, gray)·m), m keeping the
    first decoupled channel, for an orthogonal decoupling matrix M whose first column is (1, 1, 1)/√3."""
    g = torch.Generator().manual_seed(7)
    x, gray = torch.randn(4, 3, 5, 6, generator=g, dtype=torch.float64), torch.rand(4, 1, 5, 6, generator=g).double()
    m = completed(torch.full((3,), 3**-0.5, dtype=torch.float64))
    decoupled_x = torch.einsum("bihw,ij->bjhw", x, m)
    decoupled_x[:, :1] = torch.einsum("bihw,ij->bjhw", gray.expand(-1, 3, -1, -1), m)[:, :1]
    expected = torch.einsum("bihw,ij->bjhw", decoupled_x, m.T)
    assert torch.allclose(Grayscale(gray).to(x).restore(x), expected, rtol=0, atol=1e-12)


def test_bad_observations_name_the_argument():
    score = gaussian_score(*target())
    x0 = torch.randn(2, *SHAPE)
    with pytest.raises(ValueError, match="gray"):
        colorize(score, torch.rand(1, 1, 5, 5), x0, 10, 5.0, SMIN)
    with pytest.raises(ValueError, match="x0"):
        colorize(score, torch.rand(1, 1, 4, 4), torch.randn(2, 1, 4, 4), 10, 5.0, SMIN)
    with pytest.raises(ValueError, match="factor"):
        super_resolve(score, torch.rand(1, 3, 1, 1), 3, x0, 10, 5.0, SMIN)
    with pytest.raises(ValueError, match="low"):
        super_resolve(score, torch.rand(1, 3, 4, 4), 2, x0, 10, 5.0, SMIN)
    with pytest.raises(ValueError, match="cuda_graphs"):
        colorize(score, torch.rand(1, 1, 4, 4), x0, 10, 5.0, SMIN, cuda_graphs=True)


@pytest.mark.filterwarnings("ignore:noise schedule")  # a short schedule on purpose: the recursion is exact anyway
def test_ald_on_a_schedule_samples_the_colour_by_its_exact_gaussian_recursion():
    """ALD with the official update (langevin_solve, as --colorize without --nfe): the colour coordinates follow the
    chain's own linear recursion m ← m + α(μ − m)/v, V ← (1 − α/v)²·V + 2α (v = s² + σ_i², the truth for ALD at a
    finite step, as test_solvers'), then the denoising step; the gray channel is exact."""
    from ncsn_fast import techniques as T
    from ncsn_fast.sampling import geometric_sigmas
    from ncsn_fast.sampling.inverse import langevin_solve

    mu, s = target()
    n, L, steps = 4000, 12, 5
    sigmas = geometric_sigmas(5.0, SMIN, L).double()
    eps = T.langevin_step_lr(T.geometric_ratio(5.0, SMIN, L), SMIN, steps)
    score = gaussian_score(mu, s)
    gray = (mu - 0.2).mean(0, keepdim=True)[None]
    x0 = torch.zeros(n, *SHAPE, dtype=torch.float64)
    out = langevin_solve(lambda x, y: score(x, sigmas[y]), Grayscale(gray), x0, sigmas, steps, eps,
                         generator=torch.Generator().manual_seed(8))  # fmt: skip
    assert float((out.mean(1, keepdim=True) - gray).abs().max()) <= 1e-12
    s2 = s[0] ** 2  # per pixel, equal over channels
    m, V = torch.zeros_like(s2), torch.zeros_like(s2)  # the colour of x0 = 0, relative to μ's below
    m_mu = chroma(mu[None])[0].view(2, *s2.shape)
    m = m.expand(2, -1, -1).clone()
    V = V.expand(2, -1, -1).clone()
    for sig in sigmas.tolist():
        a = eps * sig**2 / SMIN**2
        v = s2 + sig**2
        for _ in range(steps):
            m, V = m + a * (m_mu - m) / v, (1 - a / v) ** 2 * V + 2 * a
    b = s2 / (s2 + SMIN**2)  # the denoising step
    m, V = m_mu + b * (m - m_mu), b**2 * V
    check_moments(chroma(out), m.flatten(), V.flatten(), 0.0)  # (the data's own variance is 68% off: measured)
