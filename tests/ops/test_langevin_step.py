"""The fused Langevin step: Philox known answers, noise identical across backends, statistics of the noise,
the update and its per-sample sums against the PyTorch definition, bad input, and the sampler built on it."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats as sps

from ncsn_fast.ops import _backend, langevin_step_, reference
from ncsn_fast.sampling import annealed_langevin
from tests.conftest import cpu_backends, rel_err

FUSED = [b for b in cpu_backends("langevin_step_") if b != "reference"]

# Random123's known-answer vectors for Philox4x32-10 (../shared/reference/README.md).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "want"), KAT)
def test_philox_known_answers(counter, key, want):
    got = reference.philox4x32_10([torch.tensor([c]) for c in counter], key)
    assert [int(g) for g in got] == list(want)


@pytest.mark.skipif("triton" not in FUSED, reason="triton is not installed")
@pytest.mark.parametrize(("counter", "key", "want"), KAT)
def test_triton_philox_known_answers(counter, key, want):
    import triton
    import triton.language as tl

    @triton.jit
    def kat_kernel(out_ptr, ctr_ptr, seed):
        one = tl.arange(0, 1)
        c = [tl.load(ctr_ptr + k + one).to(tl.uint32) for k in tl.static_range(4)]
        r0, r1, r2, r3 = tl.random.philox(seed, c[0], c[1], c[2], c[3])
        tl.store(out_ptr + tl.arange(0, 1), r0.to(tl.int64))
        tl.store(out_ptr + 1 + tl.arange(0, 1), r1.to(tl.int64))
        tl.store(out_ptr + 2 + tl.arange(0, 1), r2.to(tl.int64))
        tl.store(out_ptr + 3 + tl.arange(0, 1), r3.to(tl.int64))

    seed = key[0] | (key[1] << 32)
    if seed >= 2**63:
        pytest.skip("Triton takes the key as one int64 seed: keys with the top bit set are not reachable")
    out = torch.zeros(4, dtype=torch.int64)
    kat_kernel[(1,)](out, torch.tensor(counter, dtype=torch.int64), seed)
    assert [int(v) & 0xFFFFFFFF for v in out] == list(want)


def _noise(backend: str, shape, seed: int, offset: int) -> torch.Tensor:
    """z recovered from one update with α = ½ (so √(2α) = 1): z = x_new − x − ½ s, on fresh random x and s."""
    x = torch.randn(shape)
    s = torch.randn(shape)
    out = x.clone()
    langevin_step_(out, s, 0.5, seed, offset, backend=backend)
    return out - x - 0.5 * s


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("shape", [(3, 3, 5, 5), (2, 3, 32, 32), (5, 7), (1, 1, 3, 3), (4, 1, 1, 1)])
def test_update_and_stats_match_the_definition(backend, shape):
    """Same (seed, offset) → the PyTorch definition's noise and sums, on shapes whose samples split Philox groups."""
    seed, offset = int(torch.randint(0, 2**62, ())), int(torch.randint(0, 2**40, ()))
    x = torch.randn(shape) * 3
    s = torch.randn(shape)
    want, want_stats = x.clone(), torch.empty(shape[0], 3)
    reference.langevin_step_(want, s, 0.37, seed, offset, want_stats)
    got, got_stats = x.clone(), torch.full((shape[0], 3), float("nan"))
    langevin_step_(got, s, 0.37, seed, offset, got_stats, backend=backend)
    assert (got - want).abs().max() <= 2e-6 * (1 + x.abs().max())
    assert rel_err(got_stats, want_stats) <= 1e-5


@pytest.mark.skipif(len(FUSED) < 2, reason="needs two fused backends (cpu and triton)")
def test_same_noise_on_every_backend():
    """The reproducibility promise: one (seed, offset) → the same z on the CPU kernel and on Triton."""
    zs = {b: _noise(b, (4, 3, 9, 9), 2024, 77) for b in [*FUSED, "reference"]}
    for b in FUSED:
        assert (zs[b] - zs["reference"]).abs().max() <= 2e-6, b


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
def test_noise_statistics():
    """10⁶ draws: N(0, 1) by mean, variance and Kolmogorov–Smirnov; no correlation between neighbouring elements,
    successive offsets or different seeds."""
    n = 10**6
    z = _noise("cpu", (10, n // 10), 11, 0).flatten().double()
    tol = 5 / math.sqrt(n)
    assert abs(z.mean()) < tol
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert sps.kstest(z.numpy(), "norm").pvalue > 1e-3
    corr = lambda a, b: float(torch.corrcoef(torch.stack([a, b]))[0, 1])  # noqa: E731
    assert abs(corr(z[:-1], z[1:])) < tol  # neighbours (within and across Philox groups)
    assert abs(corr(z[0::4], z[2::4])) < 2 * tol  # the two Box–Muller pairs of a group
    z_next = _noise("cpu", (10, n // 10), 11, 1).flatten().double()
    z_seed = _noise("cpu", (10, n // 10), 12, 0).flatten().double()
    assert abs(corr(z, z_next)) < tol and abs(corr(z, z_seed)) < tol


@pytest.mark.parametrize("backend", FUSED)
def test_low_precision_score_keeps_a_float32_state(backend):
    x = torch.randn(2, 3, 8, 8)
    s = torch.randn(2, 3, 8, 8).to(torch.bfloat16)
    want = x.clone()
    reference.langevin_step_(want, s.float(), 0.01, 5, 6)
    langevin_step_(x, s, 0.01, 5, 6, backend=backend)
    assert x.dtype == torch.float32
    assert (x - want).abs().max() <= 1e-6 * (1 + want.abs().max())


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda x, s: (x.double(), s.double(), 0.1, 1, 0), TypeError, "x: expected a float32"),
        (lambda x, s: (x.transpose(2, 3), s, 0.1, 1, 0), ValueError, "x: must be contiguous"),
        (lambda x, s: (x, s[:, :2], 0.1, 1, 0), ValueError, "score: shape"),
        (lambda x, s: (x, s.long(), 0.1, 1, 0), TypeError, "score: expected float32"),
        (lambda x, s: (x, s, -0.1, 1, 0), ValueError, "step_size: must be finite and ≥ 0, got -0.1"),
        (lambda x, s: (x, s, float("nan"), 1, 0), ValueError, "step_size"),
        (lambda x, s: (x, s, 0.1, -1, 0), ValueError, r"seed: must be an integer in \[0, 2\^63\), got -1"),
        (lambda x, s: (x, s, 0.1, 2**63, 0), ValueError, "seed"),
        (lambda x, s: (x, s, 0.1, 1, -5), ValueError, "offset"),
    ],
)
def test_bad_input_is_a_clear_error(make, error, match):
    x, s = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    with pytest.raises(error, match=match):
        langevin_step_(*make(x, s))


def test_bad_stats_buffer():
    x, s = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"stats: expected a float32 tensor of shape \(2, 3\)"):
        langevin_step_(x, s, 0.1, 1, 0, torch.empty(3, 3))


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
def test_kernel_checks_its_own_inputs():
    with pytest.raises(RuntimeError, match="step_size must be >= 0"):
        torch.ops.ncsn_fast.langevin_step_(torch.randn(2, 3), torch.randn(2, 3), -1.0, 0, 0, None)


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
def test_opcheck():
    """Schema (SchemaCheckMode: only x and stats, the Tensor(a!)/(b!) arguments, are written), fake kernel,
    autograd registration and AOT dispatch of the compiled op."""
    x, s = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    for args in [
        (x.clone(), s, 0.37, 7, 11, torch.empty(2, 3)),
        (x.clone(), s.to(torch.bfloat16), 0.0, 2**40, 3, None),
    ]:
        torch.library.opcheck(torch.ops.ncsn_fast.langevin_step_.default, args)


@pytest.mark.skipif("triton" not in FUSED, reason="triton is not installed")
def test_opcheck_triton():
    # Fake-tensor and AOT checks need a GPU: under TRITON_INTERPRET=1 the interpreter runs even on fake tensors.
    x, s = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    torch.library.opcheck(
        torch.ops.ncsn_fast.langevin_step_triton_.default,
        (x, s, 0.37, 7, 11, torch.empty(2, 3)),
        test_utils=("test_schema", "test_autograd_registration"),
    )


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
def test_compile_fullgraph_matches_eager():
    """torch.compile(fullgraph=True) of two Langevin steps between tensor ops: the fake kernel traces, the graph
    keeps the in-place order, and the result is eager's (the same kernel on the same input)."""

    def two_steps(x, s, stats):
        y = x * 2
        langevin_step_(y, s, 0.37, 7, 11, stats)
        langevin_step_(y, -y, 0.01, 7, 12)
        return y + 1

    x, s = torch.randn(2, 3, 6, 6), torch.randn(2, 3, 6, 6)
    eager_stats, compiled_stats = torch.empty(2, 3), torch.empty(2, 3)
    eager = two_steps(x, s, eager_stats)
    compiled = torch.compile(two_steps, fullgraph=True)(x, s, compiled_stats)
    assert torch.equal(compiled, eager)
    assert torch.equal(compiled_stats, eager_stats)


# ------------------------------------------------------------------------------------------- the sampler
def _tiny_model():
    import ncsn_fast as nf

    cfg = nf.load_config({"data": {"image_size": 16, "channels": 1}, "model": {"ngf": 8, "num_classes": 6}})
    torch.manual_seed(3)
    return nf.build_model(cfg).eval(), nf.get_sigmas(cfg)


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
def test_sampler_is_deterministic_and_resumable():
    model, sigmas = _tiny_model()
    x0 = torch.rand(3, 1, 16, 16)
    run = lambda **kw: annealed_langevin(model, x0, sigmas, 2, 1e-4, seed=99, **kw)  # noqa: E731
    full = run()
    assert torch.equal(full, run())
    assert not torch.equal(full, annealed_langevin(model, x0, sigmas, 2, 1e-4, seed=100))
    # Resume at level 3 from the state after level 2 (the 6th step): the same samples.
    steps = run(final_only=False, denoise=False)
    resumed = annealed_langevin(model, steps[3 * 2 - 1], sigmas, 2, 1e-4, seed=99, start_level=3)
    assert torch.equal(resumed, full)


@pytest.mark.slow
@pytest.mark.skipif(len(FUSED) < 2, reason="needs two fused backends (cpu and triton)")
def test_sampler_cpu_and_triton_give_the_same_samples():
    """End to end on a small model: the same seed through the CPU kernel and through Triton."""
    model, sigmas = _tiny_model()
    x0 = torch.rand(2, 1, 16, 16)
    a = annealed_langevin(model, x0, sigmas[:4], 3, 1e-4, seed=7, backend="cpu")
    b = annealed_langevin(model, x0, sigmas[:4], 3, 1e-4, seed=7, backend="triton")
    assert rel_err(b, a) <= 1e-5


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
def test_non_finite_score_stops_with_level_and_step():
    calls = {"n": 0}

    def score(x, y):
        calls["n"] += 1
        return torch.full_like(x, float("nan")) if calls["n"] == 5 else -x

    with pytest.raises(FloatingPointError, match=r"level 1 \(σ = 2\), step 1"):
        annealed_langevin(score, torch.rand(2, 1, 4, 4), [3.0, 2.0, 1.0], 3, 0.01, seed=1)
    assert calls["n"] == 5  # stopped at once, no further network evaluations


def test_sampler_backend_reference_equals_the_kernel_definition():
    """backend="reference" runs the PyTorch definition of the op: same samples as the kernel up to rounding."""
    model, sigmas = _tiny_model()
    x0 = torch.rand(2, 1, 16, 16)
    a = annealed_langevin(model, x0, sigmas[:3], 2, 1e-4, seed=5, backend="reference")
    b = annealed_langevin(model, x0, sigmas[:3], 2, 1e-4, seed=5)
    assert rel_err(b, a) <= 1e-5
    assert _backend.choose("langevin_step_", x0.device) in FUSED + ["reference"]


def test_cuda_graphs_are_refused_on_the_cpu():
    with pytest.raises(ValueError, match="cuda_graphs: needs CUDA tensors"):
        annealed_langevin(lambda x, y: -x, torch.rand(2, 1, 4, 4), [1.0, 0.5], 2, 0.01, seed=1, cuda_graphs=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graph_sampling_equals_eager(precision, monkeypatch):
    """On a GPU: the graphed network replays exactly what eager runs (same seed, same fused update), and it was
    captured and replayed (an eager fallback gives the same samples: tests/sampling/test_cuda_graphs.py)."""
    from tests.sampling.test_cuda_graphs import assert_captured_and_replayed, record_graphed_networks

    model, sigmas = _tiny_model()
    model = model.cuda()
    x0 = torch.rand(4, 1, 16, 16, device="cuda")
    kw = {"seed": 3, "precision": precision}
    eager = annealed_langevin(model, x0, sigmas[:5], 3, 1e-4, **kw)
    made = record_graphed_networks(monkeypatch)
    graphed = annealed_langevin(model, x0, sigmas[:5], 3, 1e-4, cuda_graphs=True, **kw)
    assert_captured_and_replayed(made)
    assert rel_err(graphed, eager) <= 1e-6


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_same_noise_as_the_cpu():
    """The reproducibility promise across devices: the CUDA kernel's z equals the CPU definition's."""
    x = torch.randn(3, 3, 17, 17)
    s = torch.randn_like(x)
    want = x.clone()
    reference.langevin_step_(want, s, 0.5, 31337, 9)
    for backend in [b for b in _backend.available("langevin_step_", "cuda") if b != "reference"]:
        got = x.cuda()
        langevin_step_(got, s.cuda(), 0.5, 31337, 9, backend=backend)
        assert (got.cpu() - want).abs().max() <= 2e-6 * (1 + x.abs().max()), backend
