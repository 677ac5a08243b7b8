"""The fused SDE step x ← c·x + a·d + b·z: every backend against the PyTorch definition (float64, from
reference.philox_normal) on odd shapes and coefficients, the noise identical to langevin_step_'s, low-precision
drifts, the per-sample sums, bad input, the op's schema (opcheck, mutation annotations) and torch.compile."""

from __future__ import annotations

import math

import pytest
import torch

from ncsn_fast.ops import _backend, langevin_step_, reference, sde_step_
from tests.conftest import cpu_backends, rel_err

BACKENDS = cpu_backends("sde_step_")  # cpu (when built), triton (interpreter), reference
FUSED = [b for b in BACKENDS if b != "reference"]

# N = 1; samples of 75, 7, 9 and 1 elements (not multiples of 4: Philox groups straddle samples); 2-D and 4-D;
# 5043 elements per sample: more than one CPU chunk (4096) and several Triton programs.
SHAPES = [(1, 3, 5, 5), (3, 3, 5, 5), (5, 7), (1, 1, 3, 3), (4, 1, 1, 1), (2, 3, 32, 32), (2, 3, 41, 41)]


def coefficients(kind: str) -> tuple[float, float, float]:
    """Fresh random (c, a, b) of a kind; c ≠ 1 except for Langevin."""
    u = lambda lo, hi: float(torch.empty(()).uniform_(lo, hi))  # noqa: E731
    if kind == "general":  # any signs, as a solver's coefficients can have
        return u(0.2, 0.95), u(-2.0, 2.0), u(-1.5, 1.5)
    if kind == "b=0":  # deterministic drift step (z drawn, not added)
        return u(1.05, 1.8), u(0.1, 2.0), 0.0
    if kind == "a=0":  # pure re-noising
        return u(0.2, 0.95), 0.0, u(0.1, 2.0)
    alpha = u(1e-3, 0.5)  # Langevin
    return 1.0, alpha, math.sqrt(2 * alpha)


def kernel_normal(seed: int, offset: int, numel: int) -> torch.Tensor:
    """The z the compiled and Triton kernels draw, in float64: reference.philox_normal's layout (Philox words from
    reference.philox4x32_10, checked against Random123's known answers) with the uniform rounded as the kernels
    round it. They form ((r >> 8) + ½)·2⁻²⁴ in float32, where (r >> 8) + ½ needs 25 bits once r >> 8 ≥ 2²³: for
    u > ½ it rounds to even (u moves by 2⁻²⁵, and can be 1, giving z = 0), which philox_normal, exact in float64,
    does not do (test_kernel_uniforms_round_to_float32)."""
    g = torch.arange((numel + 3) // 4, dtype=torch.int64)
    r = reference.philox4x32_10(
        (g, g >> 32, torch.full_like(g, offset), torch.full_like(g, offset >> 32)), (seed, seed >> 32)
    )
    u = [((v >> 8).float() + 0.5).double() * 2.0**-24 for v in r]
    z = []
    for ua, ub in ((u[0], u[1]), (u[2], u[3])):
        rad = torch.sqrt(-2.0 * torch.log(ua))
        z += [rad * torch.cos(2 * math.pi * ub), rad * torch.sin(2 * math.pi * ub)]
    return torch.stack(z, dim=1).reshape(-1)[:numel]


def truth_normal(backend: str, seed: int, offset: int, numel: int) -> torch.Tensor:
    """The noise a backend promises, float64: the reference backend's is reference.philox_normal by definition;
    the kernels' is kernel_normal (equal to philox_normal within 2e-6 but for about 1 element in 10⁴)."""
    if backend == "reference":
        return reference.philox_normal(seed, offset, numel).double()
    return kernel_normal(seed, offset, numel)


def definition(x, d, c, a, b, seed, offset, backend):
    """The update and the per-sample sums in float64, with the backend's noise (truth_normal)."""
    z = truth_normal(backend, seed, offset, x.numel()).view(x.shape)
    dd = d.double()
    new = c * x.double() + a * dd + b * z
    flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
    sums = torch.stack([flat(dd).square().sum(1), flat(z).square().sum(1), flat(new).square().sum(1)], 1)
    return new, sums, z


def tolerance(x, d, z, c, a, b):
    """Elementwise bound: float32 rounding of the three terms and their sum (a few ulp of each), plus the kernels'
    kernels' ln/sin/cos polynomials against libm (|Δz| ≤ 2e-6, as tests/cpp/test_kernels.cpp checks)."""
    return 4e-7 * (abs(c) * x.abs() + abs(a) * d.double().abs() + abs(b) * z.abs()) + 2e-6 * abs(b) + 1e-30


def assert_within(got, want, bound, what) -> None:
    """|got − want| ≤ bound elementwise; the message gives the worst element."""
    ratio = (got.double() - want).abs() / bound
    k = int(ratio.flatten().argmax())
    assert float(ratio.flatten()[k]) <= 1, (
        f"{what}: element {k}: got {float(got.flatten()[k])!r}, want {float(want.flatten()[k])!r}, "
        f"bound {float(bound.flatten()[k]):.3g}"
    )


def random_seed_offset() -> tuple[int, int]:
    return int(torch.randint(0, 2**62, ())), int(torch.randint(0, 2**40, ()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["general", "b=0", "a=0", "langevin"])
@pytest.mark.parametrize("shape", SHAPES)
def test_update_and_stats_match_the_definition(backend, kind, shape):
    c, a, b = coefficients(kind)
    seed, offset = random_seed_offset()
    x, d = torch.randn(shape) * 3, torch.randn(shape)
    want, want_stats, z = definition(x, d, c, a, b, seed, offset, backend)
    got, stats = x.clone(), torch.full((shape[0], 3), float("nan"))
    assert sde_step_(got, d, c, a, b, seed, offset, stats, backend=backend) is got
    assert_within(got, want, tolerance(x.double(), d, z, c, a, b), (c, a, b))
    assert rel_err(stats, want_stats) <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_noise_is_langevin_noise(backend):
    """One (seed, offset) → the z of langevin_step_, exactly: (c, a, b) = (0, 0, 1) leaves x = z (0·x + 0·d + z is
    exact), against the independent truth (truth_normal); and sde_step_ with (1, α, √(2α)) is langevin_step_ bit
    for bit (the same kernel), stats included."""
    shape = (3, 3, 9, 9)
    seed, offset = random_seed_offset()
    x, d = torch.randn(shape), torch.randn(shape)
    z = x.clone()
    sde_step_(z, d, 0.0, 0.0, 1.0, seed, offset, backend=backend)
    assert (z.double() - truth_normal(backend, seed, offset, x.numel()).view(shape)).abs().max() <= 2e-6
    alpha = 0.0137
    lang, lang_stats = x.clone(), torch.empty(3, 3)
    langevin_step_(lang, d, alpha, seed, offset, lang_stats, backend=backend)
    sde, sde_stats = x.clone(), torch.empty(3, 3)
    sde_step_(sde, d, 1.0, alpha, math.sqrt(2 * alpha), seed, offset, sde_stats, backend=backend)
    assert torch.equal(sde, lang)
    assert torch.equal(sde_stats, lang_stats)
    # Deterministic per (seed, offset), and a new offset is a new draw.
    again = x.clone()
    sde_step_(again, d, 0.0, 0.0, 1.0, seed, offset, backend=backend)
    assert torch.equal(again, z)
    other = x.clone()
    sde_step_(other, d, 0.0, 0.0, 1.0, seed, offset + 1, backend=backend)
    assert (other - z).abs().mean() > 0.5


@pytest.mark.skipif(len(FUSED) < 2, reason="needs two fused backends (cpu and triton)")
def test_same_noise_on_every_backend():
    """The reproducibility promise: one (seed, offset) → the same z on the CPU kernel and on Triton."""
    shape = (2, 3, 17, 17)
    x, d = torch.randn(shape), torch.randn(shape)
    seed, offset = random_seed_offset()
    zs = {}
    for backend in FUSED:
        zs[backend] = x.clone()
        sde_step_(zs[backend], d, 0.0, 0.0, 1.0, seed, offset, backend=backend)
    first = zs[FUSED[0]]
    for backend in FUSED[1:]:
        assert (zs[backend] - first).abs().max() <= 2e-6, backend


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
def test_kernel_uniforms_round_to_float32():
    """The kernels' uniforms are rounded to float32 (kernel_normal models that in float64); reference.philox_normal
    forms them the same way, so the kernels and the PyTorch definition agree within 2e-6 everywhere — also where
    u_a is within a few 2⁻²⁴ of 1 (z near 0), where exact uniforms would differ by up to 3.5e-4."""
    numel = 4 * 10**5
    x = torch.zeros(numel)
    sde_step_(x.view(1, -1), torch.zeros(1, numel), 0.0, 0.0, 1.0, 11, 0)
    assert (x.double() - kernel_normal(11, 0, numel)).abs().max() <= 2e-6
    assert (x - reference.philox_normal(11, 0, numel)).abs().max() <= 2e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_b_zero_adds_no_noise_but_reports_it(backend):
    """b = 0: x ← c·x + a·d (no noise added), while stats' Σz² still reports the z that was drawn."""
    shape = (2, 3, 5, 5)
    x, d = torch.randn(shape), torch.randn(shape)
    got, stats = x.clone(), torch.empty(2, 3)
    sde_step_(got, d, 0.75, -0.4, 0.0, 9, 3, stats, backend=backend)
    assert (got - (0.75 * x - 0.4 * d)).abs().max() <= 1e-6
    z = truth_normal(backend, 9, 3, x.numel()).view(2, -1)
    assert rel_err(stats[:, 1], z.square().sum(1)) <= 1e-5
    assert (stats[:, 1] > 10).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_drift_keeps_a_float32_state(backend, dtype):
    shape = (2, 3, 7, 7)
    c, a, b = coefficients("general")
    x, d = torch.randn(shape), torch.randn(shape).to(dtype)
    want, want_stats, z = definition(x, d.float(), c, a, b, 5, 6, backend)
    got, stats = x.clone(), torch.empty(2, 3)
    sde_step_(got, d, c, a, b, 5, 6, stats, backend=backend)
    assert got.dtype == torch.float32
    assert_within(got, want, tolerance(x.double(), d.float(), z, c, a, b), (c, a, b))
    assert rel_err(stats, want_stats) <= 1e-5


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda x, d: (x.double(), d.double(), 1, 0.1, 1, 1, 0), TypeError, "x: expected a float32"),
        (lambda x, d: (x.transpose(2, 3), d, 1, 0.1, 1, 1, 0), ValueError, "x: must be contiguous"),
        (lambda x, d: (x[:0], d[:0], 1, 0.1, 1, 1, 0), ValueError, "x: needs a non-empty batch dimension"),
        (lambda x, d: (x, d[:, :2], 1, 0.1, 1, 1, 0), ValueError, r"drift: shape \(2, 2, 4, 4\) differs"),
        (lambda x, d: (x, d.long(), 1, 0.1, 1, 1, 0), TypeError, "drift: expected float32, bfloat16 or float16"),
        (lambda x, d: (x, d.to("meta"), 1, 0.1, 1, 1, 0), ValueError, "drift: on meta"),
        (lambda x, d: (x, d, float("nan"), 0.1, 1, 1, 0), ValueError, "c: must be finite in float32, got nan"),
        (lambda x, d: (x, d, 1, float("inf"), 1, 1, 0), ValueError, "a: must be finite in float32, got inf"),
        (lambda x, d: (x, d, 1, 0.1, 1e39, 1, 0), ValueError, "b: must be finite in float32, got 1e"),
        (lambda x, d: (x, d, "1", 0.1, 1, 1, 0), TypeError, "c: expected a float, got str '1'"),
        (lambda x, d: (x, d, 1, 0.1, torch.tensor(1.0), 1, 0), TypeError, "b: expected a float, got Tensor"),
        (lambda x, d: (x, d, 1, 0.1, 1, -1, 0), ValueError, r"seed: must be an integer in \[0, 2\^63\), got -1"),
        (lambda x, d: (x, d, 1, 0.1, 1, 2**63, 0), ValueError, "seed: .* got 9223372036854775808"),
        (lambda x, d: (x, d, 1, 0.1, 1, 1, -5), ValueError, "offset: .* got -5"),
        (lambda x, d: (x, d, 1, 0.1, 1, 1, 2.0), ValueError, "offset: .* got 2.0"),
    ],
)
def test_bad_input_is_a_clear_error(make, error, match):
    x, d = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    with pytest.raises(error, match=match):
        sde_step_(*make(x, d))


def test_bad_stats_and_backend():
    x, d = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"stats: expected a float32 tensor of shape \(2, 3\) on cpu, got .*\(3, 3\)"):
        sde_step_(x, d, 1, 0.1, 1, 1, 0, torch.empty(3, 3))
    with pytest.raises(ValueError, match="stats: expected a float32 tensor .* got torch.float64"):
        sde_step_(x, d, 1, 0.1, 1, 1, 0, torch.empty(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="stats: must be contiguous"):
        sde_step_(x, d, 1, 0.1, 1, 1, 0, torch.empty(3, 2).t())
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        sde_step_(x, d, 1, 0.1, 1, 1, 0, backend="fast")
    with pytest.raises(RuntimeError, match="backend='cuda' cannot run sde_step_"):
        sde_step_(x, d, 1, 0.1, 1, 1, 0, backend="cuda")


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.randn(2, 3), torch.randn(2, 3), float("nan"), 0.1, 1.0, 0, 0, None), "sde_step_: c must be finite"),
        ((torch.randn(2, 3), torch.randn(2, 3), 1.0, 0.1, 1e39, 0, 0, None), "sde_step_: b must be finite"),
        ((torch.randn(2, 3), torch.randn(2, 4), 1.0, 0.1, 1.0, 0, 0, None), r"sde_step_: drift shape \[2, 4\]"),
        ((torch.randn(2, 3), torch.randn(2, 3), 1.0, 0.1, 1.0, -3, 0, None), "sde_step_: seed must be in"),
        ((torch.randn(2, 3), torch.randn(2, 3), 1.0, 0.1, 1.0, 0, 0, torch.empty(2, 2)), "sde_step_: stats must be"),
    ],
)
def test_kernel_checks_its_own_inputs(args, match):
    """Calling the registered op directly (bypassing the Python checks) still gives a named error."""
    with pytest.raises(RuntimeError, match=match):
        torch.ops.ncsn_fast.sde_step_(*args)


def test_backend_choice():
    assert _backend.choose("sde_step_", torch.device("cpu")) == ("cpu" if "cpu" in FUSED else "reference")


# ------------------------------------------------------------------------------- the op as a torch custom op
def _ops() -> list:
    ops = []
    if "cpu" in FUSED:
        ops.append(torch.ops.ncsn_fast.sde_step_.default)
    if "triton" in FUSED:
        ops.append(torch.ops.ncsn_fast.sde_step_triton_.default)
    return ops


@pytest.mark.skipif(not FUSED, reason="neither the CPU extension nor triton is here")
def test_schema_declares_x_and_stats_written():
    """The mutation annotations that make functionalization and torch.compile correct: x and stats are written
    (Tensor(a!), Tensor(b!)?), the drift only read."""
    for op in _ops():
        args = {arg.name: arg for arg in op._schema.arguments}
        assert list(args) == ["x", "drift", "c", "a", "b", "seed", "offset", "stats"], op
        assert args["x"].alias_info is not None and args["x"].alias_info.is_write, op
        assert args["stats"].alias_info is not None and args["stats"].alias_info.is_write, op
        assert args["drift"].alias_info is None, op
        assert not op._schema.returns, op


def _opcheck_args():
    x, d = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    return [
        (x.clone(), d, 0.9, 0.3, 0.5, 7, 11, torch.empty(2, 3)),
        (x.clone(), d.to(torch.bfloat16), 1.2, -0.3, 0.0, 7, 12, None),  # b = 0
        (x.clone(), d.to(torch.float16), 0.5, 0.0, 1.5, 2**40, 2**33, torch.empty(2, 3)),  # a = 0, 64-bit counters
    ]


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
def test_opcheck():
    """Schema (SchemaCheckMode: only the Tensor(a!)/(b!) arguments are written), fake kernel, autograd
    registration, and AOT dispatch (static and dynamic shapes) of the compiled op."""
    for args in _opcheck_args():
        torch.library.opcheck(torch.ops.ncsn_fast.sde_step_.default, args)


@pytest.mark.skipif("triton" not in FUSED, reason="triton is not installed")
def test_opcheck_triton():
    # Under TRITON_INTERPRET=1 (CPU tensors) the interpreter runs even on fake tensors, so the fake-tensor and AOT
    # checks run on a GPU only (test_cuda_opcheck_and_compile), as for instance_norm_pp_elu_triton.
    for args in _opcheck_args():
        torch.library.opcheck(
            torch.ops.ncsn_fast.sde_step_triton_.default,
            args,
            test_utils=("test_schema", "test_autograd_registration"),
        )


def _two_steps(x, d, stats):
    """A predictor step then a re-noising step, between tensor ops: the graph must keep the in-place order."""
    y = x * 2
    sde_step_(y, d, 0.9, 0.3, 0.5, 7, 11, stats)
    sde_step_(y, d, 1.1, 0.0, 0.25, 7, 12)
    return y + 1


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
def test_compile_fullgraph_matches_eager():
    x, d = torch.randn(2, 3, 6, 6), torch.randn(2, 3, 6, 6)
    eager_stats, compiled_stats = torch.empty(2, 3), torch.empty(2, 3)
    eager = _two_steps(x, d, eager_stats)
    compiled = torch.compile(_two_steps, fullgraph=True)(x, d, compiled_stats)
    assert torch.equal(compiled, eager)
    assert torch.equal(compiled_stats, eager_stats)


# ------------------------------------------------------------------------------------------------ on a GPU
CUDA_FUSED = (
    [b for b in _backend.available("sde_step_", "cuda") if b != "reference"] if torch.cuda.is_available() else []
)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
@pytest.mark.parametrize("backend", CUDA_FUSED or ["none"])
@pytest.mark.parametrize("kind", ["general", "b=0", "a=0", "langevin"])
@pytest.mark.parametrize("shape", [(1, 3, 5, 5), (3, 3, 17, 17), (5, 7), (2, 3, 41, 41)])
def test_cuda_matches_the_definition(backend, kind, shape):
    """The reproducibility promise across devices: the CUDA kernel's (and Triton's) update equals the CPU
    definition's for the same (seed, offset)."""
    if backend == "none":
        pytest.skip("no fused CUDA backend")
    c, a, b = coefficients(kind)
    seed, offset = random_seed_offset()
    x, d = torch.randn(shape) * 3, torch.randn(shape)
    want, want_stats, z = definition(x, d, c, a, b, seed, offset, backend)
    got, stats = x.cuda(), torch.full((shape[0], 3), float("nan"), device="cuda")
    sde_step_(got, d.cuda(), c, a, b, seed, offset, stats, backend=backend)
    assert_within(got.cpu(), want, tolerance(x.double(), d, z, c, a, b), (c, a, b))
    assert rel_err(stats.cpu(), want_stats) <= 1e-5
    lang, sde = x.cuda(), x.cuda()
    langevin_step_(lang, d.cuda(), 0.02, seed, offset, backend=backend)
    sde_step_(sde, d.cuda(), 1.0, 0.02, math.sqrt(0.04), seed, offset, backend=backend)
    assert torch.equal(sde, lang)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_FUSED, reason="no CUDA GPU or no fused CUDA backend")
def test_cuda_opcheck_and_compile():
    ops = []
    if "cuda" in CUDA_FUSED:
        ops.append(torch.ops.ncsn_fast.sde_step_.default)
    if "triton" in CUDA_FUSED:
        ops.append(torch.ops.ncsn_fast.sde_step_triton_.default)
    for op in ops:
        for args in _opcheck_args():
            torch.library.opcheck(op, tuple(t.cuda() if isinstance(t, torch.Tensor) else t for t in args))
    x, d = torch.randn(2, 3, 6, 6, device="cuda"), torch.randn(2, 3, 6, 6, device="cuda")
    eager_stats, compiled_stats = torch.empty(2, 3, device="cuda"), torch.empty(2, 3, device="cuda")
    eager = _two_steps(x, d, eager_stats)
    compiled = torch.compile(_two_steps, fullgraph=True)(x, d, compiled_stats)
    assert rel_err(compiled, eager) <= 1e-6
    assert rel_err(compiled_stats, eager_stats) <= 1e-5
