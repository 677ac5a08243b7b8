"""The fused InstanceNorm++ + ELU op on every backend present, against the plain-PyTorch reference.

Truth is ncsn_fast.ops.reference.instance_norm_pp_elu evaluated in float64 (itself checked against the official
model outputs in tests/models/test_reference.py). Triton runs in its interpreter on CPU tensors (small shapes).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest
import torch

from ncsn_fast.ops import _backend, instance_norm_pp_elu, reference
from ncsn_fast.ops._backend import use_backend
from ncsn_fast.ops.instance_norm_pp_elu import decomposition, inductor_decompositions
from tests.conftest import REPO, cpu_backends, rel_err

FUSED = [b for b in cpu_backends() if b != "reference"]

# Odd sizes on purpose: N = 1, C = 3 and 7 (no power of two), H = W = 1 (zero variance everywhere),
# 5 (less than one vector), 33 (one past a power of two), non-square.
SHAPES = [(1, 3, 5, 5), (2, 7, 33, 33), (3, 7, 1, 1), (2, 4, 5, 9), (1, 3, 33, 17), (4, 16, 8, 8)]


def make_inputs(shape, param_rows: int | None = None, dtype=torch.float32, with_beta: bool = True):
    n, c = shape[:2]
    pshape = (c,) if param_rows is None else (param_rows, c)
    x = torch.randn(shape, dtype=dtype) * 2.0 + torch.randn(1, c, 1, 1, dtype=dtype)  # channel means differ
    alpha = torch.randn(pshape, dtype=dtype) * 0.5 + 1.0
    gamma = torch.randn(pshape, dtype=dtype) * 0.5 + 1.0
    beta = torch.randn(pshape, dtype=dtype) if with_beta else None
    return x, alpha, gamma, beta


def truth(x, alpha, gamma, beta, apply_elu):
    d = lambda t: None if t is None else t.double()  # noqa: E731
    return reference.instance_norm_pp_elu(d(x), d(alpha), d(gamma), d(beta), 1e-5, apply_elu=apply_elu)


def layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "contiguous": x,
        "channels_last": x.to(memory_format=torch.channels_last),
        "strided": x.transpose(2, 3).contiguous().transpose(2, 3),  # neither NCHW- nor NHWC-contiguous
    }


def test_extension_is_built():
    """`pip install -e .` builds ncsn_fast._C; a silently missing extension would leave the kernels untested."""
    if os.environ.get("NCSN_FAST_BUILD_EXT") == "0":
        pytest.skip("built with NCSN_FAST_BUILD_EXT=0")
    assert _backend.extension_error() is None
    assert "cpu" in cpu_backends()


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_sample", [False, True], ids=["params_C", "params_NC"])
def test_forward_matches_reference(backend, shape, per_sample):
    x, a, g, b = make_inputs(shape, shape[0] if per_sample else None)
    for apply_elu in (True, False):
        want = truth(x, a, g, b, apply_elu)
        for name, xl in layouts(x).items():
            out = instance_norm_pp_elu(xl, a, g, b, apply_elu=apply_elu, backend=backend)
            assert out.shape == x.shape and out.dtype == x.dtype
            assert rel_err(out, want) <= 1e-5, (name, apply_elu)
            if name == "channels_last" and shape[2] * shape[3] > 1:
                assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", FUSED)
def test_no_beta_and_zero_variance_channels(backend):
    """Per-channel constant inputs: σ² = 0, so h is the channel term alone (no NaN from 0/0)."""
    x, a, g, _ = make_inputs((3, 7, 6, 5), with_beta=False)
    x[:, 2] = 0.75
    x[1] = torch.randn(7, 1, 1)  # a whole sample constant per channel
    out = instance_norm_pp_elu(x, a, g, None, backend=backend)
    want = truth(x, a, g, None, True)
    assert torch.isfinite(out).all()
    # (x - μ)/√ε amplifies the last-bit rounding of μ ~300×, so the float32 reference is off too: compare with it.
    ref32 = reference.instance_norm_pp_elu(x, a, g, None, 1e-5, apply_elu=True)
    assert (out.double() - want).abs().max() <= 1e-4
    assert rel_err(out, want) <= 2 * rel_err(ref32, want) + 1e-6


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("shape", [(2, 7, 9, 9), (1, 3, 5, 7), (3, 4, 1, 1)])
@pytest.mark.parametrize("per_sample", [False, True], ids=["params_C", "params_NC"])
def test_backward_matches_reference(backend, shape, per_sample):
    x, a, g, b = make_inputs(shape, shape[0] if per_sample else None)
    dy = torch.randn(shape)
    for apply_elu in (True, False):
        ref_in = [t.double().requires_grad_() for t in (x, a, g, b)]
        reference.instance_norm_pp_elu(*ref_in, 1e-5, apply_elu=apply_elu).backward(dy.double())
        # The float32 reference's own error sets the bar where it is large: at H = W = 1, dx is a difference of
        # two terms ~1/√ε apart that cancel exactly in exact arithmetic.
        ref32 = [t.clone().requires_grad_() for t in (x, a, g, b)]
        reference.instance_norm_pp_elu(*ref32, 1e-5, apply_elu=apply_elu).backward(dy)
        bars = [max(2e-5, 2 * rel_err(r32.grad, r.grad)) for r32, r in zip(ref32, ref_in, strict=True)]
        for name, xl in layouts(x).items():
            ins = [xl.clone().requires_grad_()] + [t.clone().requires_grad_() for t in (a, g, b)]
            instance_norm_pp_elu(*ins, apply_elu=apply_elu, backend=backend).backward(dy)
            for arg, mine, ref, bar in zip(("x", "alpha", "gamma", "beta"), ins, ref_in, bars, strict=True):
                assert mine.grad.shape == ref.grad.shape
                assert rel_err(mine.grad, ref.grad) <= bar, (name, arg, apply_elu)


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
@pytest.mark.parametrize("per_sample", [False, True], ids=["params_C", "params_NC"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck_float64(per_sample, channels_last):
    x, a, g, b = make_inputs((2, 5, 4, 3), 2 if per_sample else None, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    args = [t.requires_grad_() for t in (x, a, g, b)]
    for apply_elu in (True, False):
        fn = functools.partial(instance_norm_pp_elu, apply_elu=apply_elu, backend="cpu")
        assert torch.autograd.gradcheck(fn, args)


LOW = [(b, dt) for b in FUSED for dt in (torch.bfloat16, torch.float16)]


@pytest.mark.parametrize(("backend", "dtype"), LOW)
def test_low_precision_within_twice_the_reference_error(backend, dtype):
    """The flash-attention rule: error vs float64 at most 2× that of the reference run in the same dtype."""
    x, a, g, b = make_inputs((2, 16, 12, 12))
    want = truth(x, a, g, b, True)
    xl = x.to(dtype)
    out = instance_norm_pp_elu(xl, a, g, b, backend=backend)
    assert out.dtype == dtype
    ref_low = reference.instance_norm_pp_elu(xl, a.to(dtype), g.to(dtype), b.to(dtype), 1e-5, apply_elu=True)
    assert rel_err(out, want) <= 2 * rel_err(ref_low, want) + 1e-4


@pytest.mark.parametrize(("backend", "dtype"), LOW)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", [(3, 7, 5, 9), (2, 16, 12, 12)])
def test_low_precision_backward_within_twice_the_reference_error(backend, dtype, channels_last, shape):
    """bf16/fp16 in and out (statistics in float32): gradients of x and of the float32 parameters (autocast's
    case: the norm's parameters stay float32 master weights) against float64, the flash-attention rule."""
    x, a, g, b = make_inputs(shape)
    dy = torch.randn(shape)
    ref_in = [t.double().requires_grad_() for t in (x, a, g, b)]
    reference.instance_norm_pp_elu(*ref_in, 1e-5, apply_elu=True).backward(dy.double())
    low_ref = [x.to(dtype).requires_grad_()] + [t.to(dtype).requires_grad_() for t in (a, g, b)]
    reference.instance_norm_pp_elu(*low_ref, 1e-5, apply_elu=True).backward(dy.to(dtype))
    xl = x.to(dtype)
    if channels_last:
        xl = xl.to(memory_format=torch.channels_last)
    mine = [xl.requires_grad_()] + [t.clone().requires_grad_() for t in (a, g, b)]
    out = instance_norm_pp_elu(*mine, backend=backend)
    out.backward(dy.to(dtype))
    assert out.dtype == dtype and mine[0].grad.dtype == dtype and mine[1].grad.dtype == torch.float32
    for name, m, lo, r in zip(("x", "alpha", "gamma", "beta"), mine, low_ref, ref_in, strict=True):
        assert rel_err(m.grad, r.grad) <= 2 * rel_err(lo.grad, r.grad) + 1e-3, name


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize(("x_scale", "g_scale"), [(1.0, 1.0), (1e-5, 1.0), (1.0, 1e-4), (1.0, 1e5)])
def test_cpu_low_precision_loads_and_stores_round_as_torch(dtype, channels_last, x_scale, g_scale):
    """The CPU kernels' own bf16/fp16 conversions (vectorizable bit arithmetic, F16C in the AVX2 build) against
    torch's: the kernel in bf16/fp16 equals the float32 kernel on the same values rounded by ``.to(dtype)``, up to
    a last-bit difference in a few elements (float32 sums in another order). Scales push fp16 inputs into
    subnormals (1e-5) and outputs into subnormals (γ 1e-4) and past its range (γ 1e5: inf)."""
    x, a, g, b = make_inputs((2, 7, 33, 17))
    xl = (x * x_scale).to(dtype)
    if channels_last:
        xl = xl.to(memory_format=torch.channels_last)
    g = g * g_scale
    for apply_elu in (True, False):
        low = instance_norm_pp_elu(xl, a, g, b, apply_elu=apply_elu, backend="cpu")
        want = instance_norm_pp_elu(xl.float(), a, g, b, apply_elu=apply_elu, backend="cpu").to(dtype)
        assert low.dtype == dtype
        lo, wa = low.float(), want.float()
        same = (lo == wa) | (lo.isnan() & wa.isnan())
        ulp = torch.finfo(dtype).eps * wa.abs().clamp_min(torch.finfo(dtype).tiny)
        assert ((lo - wa).abs() <= ulp)[~same].all() if (~same).any() else True
        assert float((~same).float().mean()) <= 1e-2, (apply_elu, float((~same).float().mean()))
        if g_scale > 1e4 and dtype == torch.float16:
            assert low.isinf().any()  # overflow stays inf, as torch rounds it


@pytest.mark.skipif("triton" not in FUSED, reason="triton is not installed")
def test_gradcheck_triton():
    """The Triton kernels compute in float32, so the check runs in float32's precision: central differences of the
    op (eps 1e-3) against its analytical backward, through a float64 wrapper gradcheck accepts."""
    x, a, g, b = (t.double().requires_grad_() for t in make_inputs((2, 3, 5, 4)))

    def f(x, a, g, b):
        return instance_norm_pp_elu(x.float(), a.float(), g.float(), b.float(), backend="triton").double()

    assert torch.autograd.gradcheck(f, (x, a, g, b), eps=1e-3, atol=5e-3, rtol=5e-3)


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
@pytest.mark.parametrize("per_sample", [False, True], ids=["params_C", "params_NC"])
def test_opcheck(per_sample):
    x, a, g, b = make_inputs((2, 5, 6, 4), 2 if per_sample else None)
    for args in [
        (x.requires_grad_(), a.requires_grad_(), g.requires_grad_(), b.requires_grad_(), 1e-5, True),
        (x.to(memory_format=torch.channels_last), a, g, None, 1e-5, False),
    ]:
        torch.library.opcheck(torch.ops.ncsn_fast.instance_norm_pp_elu.default, args)


@pytest.mark.skipif("triton" not in FUSED, reason="triton is not installed")
def test_opcheck_triton():
    x, a, g, b = make_inputs((2, 5, 4, 4))
    args = (x.requires_grad_(), a.requires_grad_(), g.requires_grad_(), b.requires_grad_(), 1e-5, True)
    torch.library.opcheck(
        torch.ops.ncsn_fast.instance_norm_pp_elu_triton.default,
        args,
        test_utils=("test_schema", "test_autograd_registration"),
    )


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
def test_compile_fullgraph_matches_eager():
    """torch.compile(fullgraph=True) traces through the op (fake kernel) and its backward (register_autograd)."""
    x, a, g, b = make_inputs((2, 6, 8, 8))

    def f(x, a, g, b):
        return (instance_norm_pp_elu(x * 1.5, a, g, b) ** 2).sum()

    compiled = torch.compile(f, fullgraph=True)
    ins_e = [t.clone().requires_grad_() for t in (x, a, g, b)]
    ins_c = [t.clone().requires_grad_() for t in (x, a, g, b)]
    f(*ins_e).backward()
    compiled(*ins_c).backward()
    for e, c in zip(ins_e, ins_c, strict=True):
        assert rel_err(c.grad, e.grad) <= 1e-5


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_sample", [False, True], ids=["params_C", "params_NC"])
def test_decomposition_matches_reference_and_the_kernels_statistics(shape, per_sample):
    """The aten form Inductor lowers (``lower_norm``): the reference's output, the kernels' saved μ and 1/σ."""
    x, a, g, b = make_inputs(shape, shape[0] if per_sample else None)
    for apply_elu in (True, False):
        for beta in (b, None):
            want = truth(x, a, g, beta, apply_elu)
            for name, xl in layouts(x).items():
                out, mean, rstd = decomposition(xl, a, g, beta, 1e-5, apply_elu)
                assert out.dtype == x.dtype and rel_err(out, want) <= 1e-5, (name, apply_elu)
                xd = x.double()
                assert rel_err(mean, xd.mean(dim=(2, 3))) <= 1e-6
                assert rel_err(rstd, (xd.var(dim=(2, 3), unbiased=False) + 1e-5).rsqrt()) <= 1e-5
    if "cpu" in FUSED:  # the same three outputs as the compiled op, which the backward reads
        ops = torch.ops.ncsn_fast.instance_norm_pp_elu(x, a, g, b, 1e-5, True)
        for got, kernel in zip(decomposition(x, a, g, b, 1e-5, True), ops, strict=True):
            assert rel_err(got, kernel) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_decomposition_low_precision_within_twice_the_reference_error(dtype):
    x, a, g, b = make_inputs((2, 16, 12, 12))
    want = truth(x, a, g, b, True)
    xl, al, gl, bl = (t.to(dtype) for t in (x, a, g, b))
    out = decomposition(xl, al, gl, bl, 1e-5, True)[0]
    ref_low = reference.instance_norm_pp_elu(xl, al, gl, bl, 1e-5, apply_elu=True)
    assert out.dtype == dtype and rel_err(out, want) <= 2 * rel_err(ref_low, want) + 1e-4


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
def test_inductor_lowers_the_op_and_keeps_forward_and_gradients():
    """Compiled with inductor_decompositions(): no call of the kernel's forward left, values and gradients as eager
    (the backward stays the fused backward op, fed the decomposition's μ and 1/σ)."""
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table

    seen = []

    def backend(gm, example_inputs):
        seen.append([n.target for n in gm.graph.nodes if n.op == "call_function"])
        table = {**select_decomp_table(), **inductor_decompositions()}
        return compile_fx(gm, example_inputs, decompositions=table)

    x, a, g, b = make_inputs((2, 6, 8, 8), 2)

    def f(x, a, g, b):
        return (instance_norm_pp_elu(x * 1.5, a, g, b) ** 2).sum()

    compiled = torch.compile(f, fullgraph=True, backend=backend)
    ins_e = [t.clone().requires_grad_() for t in (x, a, g, b)]
    ins_c = [t.clone().requires_grad_() for t in (x, a, g, b)]
    f(*ins_e).backward()
    out = compiled(*ins_c)
    out.backward()
    assert torch.ops.ncsn_fast.instance_norm_pp_elu.default in inductor_decompositions()
    assert rel_err(out, f(*[t.detach() for t in ins_e])) <= 1e-5
    for e, c in zip(ins_e, ins_c, strict=True):
        assert rel_err(c.grad, e.grad) <= 1e-5


def test_backend_choice():
    x = torch.randn(2, 3, 4, 4)
    assert _backend.choose("instance_norm_pp_elu", x.device) == ("cpu" if "cpu" in FUSED else "reference")
    with use_backend("reference"):
        assert _backend.choose("instance_norm_pp_elu", x.device) == "reference"
        assert _backend.choose("instance_norm_pp_elu", x.device, "auto") == "reference"
    with pytest.raises(RuntimeError, match="backend='cuda' cannot run"):
        instance_norm_pp_elu(x, torch.ones(3), torch.ones(3), backend="cuda")
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        instance_norm_pp_elu(x, torch.ones(3), torch.ones(3), backend="fast")


def test_environment_variable_overrides_auto(monkeypatch):
    x = torch.randn(2, 3, 4, 4)
    monkeypatch.setenv("NCSN_FAST_BACKEND", "reference")
    assert _backend.choose("instance_norm_pp_elu", x.device) == "reference"
    monkeypatch.setenv("NCSN_FAST_BACKEND", "speedy")
    with pytest.raises(ValueError, match="NCSN_FAST_BACKEND: unknown backend 'speedy'"):
        _backend.choose("instance_norm_pp_elu", x.device)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (lambda: (torch.randn(3, 4, 4), torch.ones(3), torch.ones(3)), ValueError, "x: expected a 4-D tensor"),
        (lambda: (torch.randn(2, 3, 4, 4), torch.ones(4), torch.ones(3)), ValueError, r"alpha: expected shape \(3,\)"),
        (lambda: (torch.randn(2, 3, 4, 4), torch.ones(3), torch.ones(2, 3, 1)), ValueError, "gamma: expected shape"),
        (lambda: (torch.randint(0, 5, (2, 3, 4, 4)), torch.ones(3), torch.ones(3)), TypeError, "x: expected a float"),
        (
            lambda: (torch.randn(2, 3, 4, 4), torch.ones(3, dtype=torch.long), torch.ones(3)),
            TypeError,
            "alpha: .*dtype",
        ),
        (lambda: (torch.randn(0, 3, 4, 4), torch.ones(3), torch.ones(3)), ValueError, "x: N = 0"),
        (lambda: (torch.randn(2, 1, 4, 4), torch.ones(1), torch.ones(1)), ValueError, "C >= 2"),
        (lambda: (torch.randn(2, 3, 4, 4), torch.ones(3, device="meta"), torch.ones(3)), ValueError, "alpha: on meta"),
    ],
)
def test_bad_input_is_a_clear_error(args, error, match):
    with pytest.raises(error, match=match):
        instance_norm_pp_elu(*args())


@pytest.mark.skipif("cpu" not in FUSED, reason="the CPU extension is not built")
def test_kernel_checks_its_own_inputs():
    """Calling the registered op directly (bypassing the Python checks) still gives a named error."""
    with pytest.raises(RuntimeError, match=r"alpha must have shape \(C,\)"):
        torch.ops.ncsn_fast.instance_norm_pp_elu(
            torch.randn(2, 3, 4, 4), torch.ones(5), torch.ones(3), None, 1e-5, True
        )


def test_missing_extension_is_one_warning_then_the_reference():
    """A missing (or ABI-mismatched) ncsn_fast._C: import works, one warning line, results from the reference."""
    code = (
        "import sys, warnings; sys.modules['ncsn_fast._C'] = None\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    import torch, ncsn_fast\n"
        "    from ncsn_fast.ops import _backend, instance_norm_pp_elu, reference\n"
        "    x = torch.randn(2, 3, 4, 4); a = torch.rand(3); g = torch.rand(3)\n"
        "    assert _backend.choose('instance_norm_pp_elu', x.device) == 'reference'\n"
        "    assert torch.equal(instance_norm_pp_elu(x, a, g), reference.instance_norm_pp_elu(x, a, g))\n"
        "mine = [str(m.message) for m in w if 'ncsn_fast._C' in str(m.message)]\n"
        "assert len(mine) == 1 and '\\n' not in mine[0], mine\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# ------------------------------------------------------------------------------------------------ on a GPU
CUDA_FUSED = (
    [b for b in _backend.available("instance_norm_pp_elu", "cuda") if b != "reference"]
    if torch.cuda.is_available()
    else []
)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
@pytest.mark.parametrize("backend", CUDA_FUSED or ["none"])
@pytest.mark.parametrize("shape", [(1, 3, 5, 5), (2, 7, 33, 33), (3, 7, 1, 1), (8, 64, 32, 32)])
def test_cuda_forward_backward_matches_reference(backend, shape):
    x, a, g, b = (t.cuda() for t in make_inputs(shape, shape[0] if shape[0] == 2 else None))
    dy = torch.randn(shape, device="cuda")
    ref_in = [t.double().requires_grad_() for t in (x, a, g, b)]
    want = reference.instance_norm_pp_elu(*ref_in, 1e-5, apply_elu=True)
    want.backward(dy.double())
    for name, xl in layouts(x).items():
        ins = [xl.clone().requires_grad_()] + [t.clone().requires_grad_() for t in (a, g, b)]
        out = instance_norm_pp_elu(*ins, backend=backend)
        out.backward(dy)
        assert rel_err(out, want) <= 1e-5, name
        for mine, ref in zip(ins, ref_in, strict=True):
            assert rel_err(mine.grad, ref.grad) <= 1e-4, name


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
@pytest.mark.parametrize("backend", CUDA_FUSED or ["none"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_low_precision_within_twice_the_reference_error(backend, dtype):
    x, a, g, b = (t.cuda() for t in make_inputs((4, 32, 16, 16)))
    want = truth(x, a, g, b, True)
    out = instance_norm_pp_elu(x.to(dtype), a, g, b, backend=backend)
    ref_low = reference.instance_norm_pp_elu(x.to(dtype), a.to(dtype), g.to(dtype), b.to(dtype), 1e-5, apply_elu=True)
    assert out.dtype == dtype
    assert rel_err(out, want) <= 2 * rel_err(ref_low, want) + 1e-4


@pytest.mark.cuda
@pytest.mark.skipif("cuda" not in CUDA_FUSED, reason="no CUDA GPU or no CUDA build of the extension")
def test_cuda_opcheck_and_compile():
    x, a, g, b = (t.cuda() for t in make_inputs((2, 5, 6, 4)))
    torch.library.opcheck(torch.ops.ncsn_fast.instance_norm_pp_elu.default, (x, a, g, b, 1e-5, True))
    f = lambda x: instance_norm_pp_elu(x * 2, a, g, b).sum()  # noqa: E731
    assert rel_err(torch.compile(f, fullgraph=True)(x), f(x)) <= 1e-6


@pytest.mark.cuda
@pytest.mark.skipif("cuda" not in CUDA_FUSED, reason="no CUDA GPU or no CUDA build of the extension")
@pytest.mark.parametrize("per_sample", [False, True], ids=["params_C", "params_NC"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_gradcheck_float64(per_sample, channels_last):
    """float64 end to end on the GPU: α, γ, β in the accumulation type (a float32 copy would fail gradcheck)."""
    x, a, g, b = (t.cuda() for t in make_inputs((2, 5, 4, 3), 2 if per_sample else None, dtype=torch.float64))
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    args = [t.requires_grad_() for t in (x, a, g, b)]
    for apply_elu in (True, False):
        fn = functools.partial(instance_norm_pp_elu, apply_elu=apply_elu, backend="cuda")
        assert torch.autograd.gradcheck(fn, args)


@pytest.mark.cuda
@pytest.mark.skipif("cuda" not in CUDA_FUSED, reason="no CUDA GPU or no CUDA build of the extension")
@pytest.mark.parametrize("shape", [(1, 40, 48, 45), (2, 33, 64, 3), (70000, 2, 1, 2)], ids=["N1", "N2", "N70000"])
def test_cuda_channels_last_split_and_large_n(shape):
    """The channels-last reductions with H·W split across blocks (small N: several chunks, the last one short) and
    with N past gridDim.y's 65535 (every block on gridDim.x): forward and backward against float64."""
    x, a, g, b = (t.cuda() for t in make_inputs(shape))
    x = x.to(memory_format=torch.channels_last).requires_grad_()
    out = instance_norm_pp_elu(x, a, g, b, backend="cuda")
    dy = torch.randn_like(out)
    (dx,) = torch.autograd.grad(out, x, dy)
    xd = x.detach().double().requires_grad_()
    want = truth(xd, a, g, b, True)
    (dx_want,) = torch.autograd.grad(want, xd, dy.double())
    assert rel_err(out, want) <= 1e-5 and rel_err(dx, dx_want) <= 1e-4


# The four Triton kernels on a (3, 2, 4, 4) float16 view whose sample stride s_n = 2^30 + 64 is an int32 argument
# but whose offsets 2·s_n + c·s_c pass 2^31: int32 offset arithmetic wraps and reads/writes elsewhere. The view sits
# in 4 GiB of address space of which only the touched pages are ever backed (peak RSS is asserted). In a child
# process: a wrapped pointer may crash the interpreter.
LARGE_OFFSETS = """
import torch
from ncsn_fast.ops.triton import instance_norm_pp_elu as k
N, C, H, W = 3, 2, 4, 4
s_n, s_c, hw = 2**30 + 64, H * W, H * W
buf = torch.empty((N - 1) * s_n + C * s_c, dtype=torch.float16)
x = buf.as_strided((N, C, H, W), (s_n, s_c, W, 1))
x.copy_(torch.randn(N, C, H, W))
xf = x.float().reshape(N * C, hw)
mean, rstd, sg, sgx = (torch.empty(N * C) for _ in range(4))
zeros, ones = torch.zeros(N * C), torch.ones(N * C)
k._instance_norm_pp_stats_kernel[(N * C,)](x, mean, rstd, C, hw, s_n, s_c, 1, 1e-5, BLOCK=16)
assert torch.allclose(mean, xf.mean(1), atol=1e-3), ("stats", mean, xf.mean(1))
assert torch.allclose(rstd, (xf.var(1, unbiased=False) + 1e-5).rsqrt(), rtol=1e-3), "stats rstd"
k._instance_norm_pp_grad_sums_kernel[(N * C,)](
    x, x, x, zeros, ones, sg, sgx, C, hw, s_n, s_c, 1, APPLY_ELU=False, BLOCK=16
)  # g = x, mu = 0: S_g = sum x, S_gx = sum x^2
assert torch.allclose(sg, xf.sum(1), atol=1e-2), ("grad_sums", sg, xf.sum(1))
assert torch.allclose(sgx, (xf * xf).sum(1), rtol=1e-3), "grad_sums sgx"
k._instance_norm_pp_grad_apply_kernel[(N * C,)](
    x, x, x, x, zeros, zeros, ones, zeros, ones, C, hw, s_n, s_c, 1, APPLY_ELU=False, BLOCK=16
)  # in place: dx = 1 (g - 0) + 0 (x - 0) + 1 = x + 1
assert torch.allclose(x.float().reshape(N * C, hw), xf + 1, atol=1e-2), "grad_apply"
k._instance_norm_pp_apply_kernel[(N * C,)](x, x, zeros, ones, zeros, C, hw, s_n, s_c, 1, APPLY_ELU=True, BLOCK=16)
assert torch.allclose(x.float().reshape(N * C, hw), torch.nn.functional.elu(xf + 1), atol=1e-2), "apply"
# VmHWM is this process image's own peak; ru_maxrss would also carry the forking parent's (pytest's) high-water mark
hwm_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
peak_gib = hwm_kib / 2**20
assert peak_gib < 2, f"peak RSS {peak_gib:.1f} GiB: the view's 4 GiB were touched"
print("large offsets ok")
"""


@pytest.mark.skipif(not _backend.triton_usable("cpu"), reason="Triton (interpreter) not usable here")
def test_triton_offsets_past_2_31_on_a_large_stride_view():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", LARGE_OFFSETS], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert done.returncode == 0 and "large offsets ok" in done.stdout, (done.returncode, done.stderr[-3000:])
