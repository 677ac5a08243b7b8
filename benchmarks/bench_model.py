"""A full NCSNv2 forward (CIFAR-10: ngf 128, 32×32, batch 8; what one sampling step evaluates) by provider:

- reference: the model computing as the official code does (InstanceNorm++ and ELU as separate PyTorch ops,
  5×5 max pooling), eager, fp32 — `use_backend("reference")`; the baseline;
- compiled: torch.compile of that reference model (what a user would try first);
- fused: the fused InstanceNorm++ + ELU op and the separable max pooling, NCHW;
- fused-channels_last: the same with model and input in channels-last memory format (our fp32 path);
- fused-compiled: torch.compile(fullgraph=True) of the channels-last fused model;
- reference-bf16-autocast: the official computation under bf16 autocast;
- fused-bf16-autocast: ours (channels-last) under bf16 autocast (every weight re-cast on every call);
- fused-bf16-weights: ours with bf16 weights converted once (`precision.half_network`: the samplers' bf16 path);
- fused-bf16-frozen: that under torch.compile with Inductor's `freezing` (weights folded and prepacked);
- inference-{fp32,bf16}-{jit,aot}: `ncsn_fast.inference_network(model, precision, compile=…)`, what every sampler and
  `--compile` run (aot: the package from the user's cache, compiled on the first call when missing; the first-call
  cost in `first_call_s` is then the compile, else the load).

Each line of the summary also gives the achieved GFLOP/s (the model's FLOPs counted by torch's FlopCounterMode)
as a fraction of this machine's 3×3 convolution peak in the provider's precision, measured in the same run
(conftest.machine_ceilings), and the output's relative error against the reference's fp32 output.

Quick mode: ngf 8, 16×16, batch 2, eager providers only (compiling the model takes minutes on a CPU).
"""

from __future__ import annotations

import contextlib
import time

import pytest
import torch

import ncsn_fast as nf
from benchmarks.conftest import machine_ceilings, record, sync_if_cuda
from ncsn_fast.ops._backend import use_backend
from ncsn_fast.precision import half_network

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PROVIDERS = [
    "reference",
    "compiled",
    "fused",
    "fused-channels_last",
    "fused-compiled",
    "reference-bf16-autocast",
    "fused-bf16-autocast",
    "fused-bf16-weights",
    "fused-bf16-frozen",
    "inference-fp32-jit",
    "inference-fp32-aot",
    "inference-bf16-jit",
    "inference-bf16-aot",
]
_TRUTH: dict[bool, tuple[torch.Tensor, float]] = {}  # quick -> (reference fp32 output, FLOPs per image)


def _inputs(quick: bool):
    size, ngf, batch = (16, 8, 2) if quick else (32, 128, 8)
    cfg = nf.load_config({"data": {"image_size": size, "channels": 3}, "model": {"ngf": ngf, "num_classes": 232}})
    torch.manual_seed(0)
    model = nf.build_model(cfg).eval().to(DEVICE)
    x = torch.rand(batch, 3, size, size, device=DEVICE)
    y = torch.randint(0, cfg.model.num_classes, (batch,), device=DEVICE)
    return model, x, y, batch


def _truth(quick: bool) -> tuple[torch.Tensor, float]:
    """The reference's fp32 output on the benchmark's input, and the model's FLOPs per image."""
    if quick not in _TRUTH:
        from torch.utils.flop_counter import FlopCounterMode

        model, x, y, batch = _inputs(quick)
        with torch.no_grad(), use_backend("reference"):
            out = model(x, y)
            with FlopCounterMode(display=False) as counter:
                model(x[:1], y[:1])
        _TRUTH[quick] = (out, float(counter.get_total_flops()))
    return _TRUTH[quick]


def _setup(quick: bool, provider: str):
    model, x, y, batch = _inputs(quick)
    ctx = contextlib.nullcontext
    if provider.startswith("reference") or provider == "compiled":
        ctx = lambda: use_backend("reference")  # noqa: E731
    if provider not in ("reference", "compiled", "fused", "reference-bf16-autocast") and not provider.startswith("inf"):
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    if provider.endswith("bf16-autocast"):
        inner = ctx
        ctx = lambda: _both(inner(), torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16))  # noqa: E731
    if provider in ("fused-bf16-weights", "fused-bf16-frozen"):
        model = half_network(model, "bf16")
    if provider.startswith("inference-"):
        _, precision, mode = provider.split("-")
        model = nf.inference_network(model.to(memory_format=torch.channels_last), precision, mode, torch.device(DEVICE))
        x = x.contiguous()  # the inference network takes float32 NCHW and lays it out itself
    elif provider == "compiled":
        model = torch.compile(model)
    elif provider == "fused-compiled":
        model = torch.compile(model, fullgraph=True)
    elif provider == "fused-bf16-frozen":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # folds the frozen weights and prepacks them for oneDNN (inference only)
        model = torch.compile(model)
    return model, x, y, batch, ctx


@contextlib.contextmanager
def _both(a, b):
    with a, b:
        yield


@pytest.mark.parametrize("provider", PROVIDERS)
def test_model_forward(benchmark, quick, provider):
    if quick and provider.endswith(("compiled", "frozen", "jit", "aot")):
        pytest.skip("quick mode: compiling the model takes minutes on a CPU")
    ceilings = machine_ceilings(DEVICE, quick)
    truth, flops = _truth(quick)
    model, x, y, batch, ctx = _setup(quick, provider)
    out = {}

    def call():
        with torch.no_grad(), ctx():
            out["y"] = model(x, y)
        sync_if_cuda(DEVICE)

    t = time.perf_counter()
    call()
    first = time.perf_counter() - t
    call()
    t = time.perf_counter()
    call()
    one = time.perf_counter() - t
    benchmark.group = "ncsnv2-forward"
    # bf16 without bf16 units (most CPUs before AVX512-BF16/AMX) runs seconds per call: fewer rounds then
    rounds = 2 if quick else max(2, min(8, int(30 / max(one, 1e-3))))
    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0)
    err = float((out["y"].double() - truth.double()).norm() / truth.double().norm())
    peak = "conv3x3 bf16" if "bf16" in provider else "conv3x3 fp32"
    benchmark.extra_info.update(first_call_s=round(first, 1), batch=batch, rel_err_vs_reference_fp32=err,
                                gflop_per_image=flops / 1e9, ceilings=dict(ceilings))  # fmt: skip
    if provider.startswith("inference-"):  # whether the first call compiled or loaded a cached package
        benchmark.extra_info.update(compiles=getattr(model, "compiles", None), loads=getattr(model, "loads", None))
    note = f"rel.err {err:.1e} vs reference fp32"
    record(benchmark.group, provider, benchmark.stats.stats.mean / batch, "sample", flops=flops, peak=peak, note=note)
