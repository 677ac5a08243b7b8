"""InstanceNorm++ + ELU: reference (eager PyTorch, as the official code), compiled (torch.compile of the
reference), and the fused backends present (cpu, cpu on channels-last input, triton and cuda on a GPU); the forward
groups also time a plain copy of x, the bandwidth yardstick.

Forward and forward+backward, fp32, the issue's shapes; quick mode: one small shape. Reports time per call, the
MiB allocated per call on the CPU (temporaries included), and on a GPU the achieved bandwidth of the forward.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import allocated_mib, record, sync_if_cuda
from ncsn_fast.ops import available, instance_norm_pp_elu, reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = [(32, 128, 32, 32), (8, 256, 16, 16), (4, 128, 64, 64)]
QUICK_SHAPE = (2, 8, 8, 8)
FUSED = [b for b in available("instance_norm_pp_elu", DEVICE) if b != "reference"]
PROVIDERS = ["reference", "compiled", *FUSED] + (["cpu-channels_last"] if "cpu" in FUSED else [])


def _reference(x, a, g, b):
    return reference.instance_norm_pp_elu(x, a, g, b, 1e-5, apply_elu=True)


_COMPILED = torch.compile(_reference)


def _function(provider: str):
    if provider == "copy":  # not an implementation: the memory-bandwidth yardstick (read x, write a copy)
        return lambda x, a, g, b: x.clone()
    if provider == "reference":
        return _reference
    if provider == "compiled":
        return _COMPILED
    backend = provider.split("-")[0]
    return lambda x, a, g, b: instance_norm_pp_elu(x, a, g, b, backend=backend)


def _inputs(shape, provider: str, requires_grad: bool):
    c = shape[1]
    x = torch.randn(shape, device=DEVICE)
    if provider.endswith("channels_last"):
        x = x.to(memory_format=torch.channels_last)
    params = [torch.randn(c, device=DEVICE) for _ in range(3)]
    return [t.requires_grad_(requires_grad) for t in (x, *params)]


@pytest.fixture(params=SHAPES, ids=lambda s: "x".join(map(str, s)))
def shape(request, quick):
    if quick and request.param != SHAPES[0]:
        pytest.skip("quick mode: one shape")
    return QUICK_SHAPE if quick else request.param


@pytest.mark.parametrize("provider", [*PROVIDERS, "copy"])
def test_forward(benchmark, quick, shape, provider):
    fn = _function(provider)
    args = _inputs(shape, provider, requires_grad=False)

    def call():
        with torch.no_grad():
            fn(*args)
        sync_if_cuda(DEVICE)

    call()  # warm-up (compilation)
    benchmark.group = f"instance_norm_pp_elu-forward-{'x'.join(map(str, shape))}"
    benchmark.pedantic(call, rounds=2 if quick else 20, iterations=1, warmup_rounds=0 if quick else 2)
    mean = benchmark.stats.stats.mean
    if DEVICE == "cpu":
        benchmark.extra_info["allocated_mib"] = round(allocated_mib(call), 2)
    else:
        gb = 2 * args[0].numel() * args[0].element_size() / 1e9  # read x (stats) + write y: the compulsory bytes
        benchmark.extra_info["effective_gb_per_s"] = round(gb / benchmark.stats.stats.min, 1)
    record(benchmark.group, provider, mean)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_forward_backward(benchmark, quick, shape, provider):
    fn = _function(provider)
    args = _inputs(shape, provider, requires_grad=True)
    dy = torch.randn(shape, device=DEVICE)

    def call():
        for t in args:
            t.grad = None
        fn(*args).backward(dy)
        sync_if_cuda(DEVICE)

    call()
    benchmark.group = f"instance_norm_pp_elu-fwd+bwd-{'x'.join(map(str, shape))}"
    benchmark.pedantic(call, rounds=2 if quick else 10, iterations=1, warmup_rounds=0 if quick else 1)
    if DEVICE == "cpu":
        benchmark.extra_info["allocated_mib"] = round(allocated_mib(call), 2)
    record(benchmark.group, provider, benchmark.stats.stats.mean)
