"""A full NCSNv2 forward (ngf 64, 32×32, batch 16, fp32; what one sampling step evaluates) by provider:

- reference: the model computing as the official code does (InstanceNorm++ and ELU as separate PyTorch ops,
  5×5 max pooling), eager — `use_backend("reference")`;
- compiled: torch.compile of that reference model (what a user would try first);
- fused: the fused InstanceNorm++ + ELU op and the separable max pooling, NCHW;
- fused-channels_last: the same with model and input in channels-last memory format (oneDNN convolutions and max
  pooling are faster in NHWC; the fused op has NHWC kernels, so nothing is copied);
- fused-compiled: torch.compile(fullgraph=True) of the channels-last fused model.

Quick mode: ngf 8, 16×16, batch 2, eager providers only (compiling the model takes minutes on a CPU).
"""

from __future__ import annotations

import contextlib
import time

import pytest
import torch

import ncsn_fast as nf
from benchmarks.conftest import record, sync_if_cuda
from ncsn_fast.ops._backend import use_backend

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PROVIDERS = ["reference", "compiled", "fused", "fused-channels_last", "fused-compiled"]


def _setup(quick: bool, provider: str):
    size, ngf, batch = (16, 8, 2) if quick else (32, 64, 16)
    cfg = nf.load_config({"data": {"image_size": size, "channels": 3}, "model": {"ngf": ngf}})
    torch.manual_seed(0)
    model = nf.build_model(cfg).eval().to(DEVICE)
    x = torch.rand(batch, 3, size, size, device=DEVICE)
    y = torch.randint(0, cfg.model.num_classes, (batch,), device=DEVICE)
    if provider in ("fused-channels_last", "fused-compiled"):
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    if provider == "compiled":
        model = torch.compile(model)
    elif provider == "fused-compiled":
        model = torch.compile(model, fullgraph=True)
    return model, x, y, batch


@pytest.mark.parametrize("provider", PROVIDERS)
def test_model_forward(benchmark, quick, provider):
    if quick and provider.endswith("compiled"):
        pytest.skip("quick mode: compiling the model takes minutes on a CPU")
    model, x, y, batch = _setup(quick, provider)
    ctx = (lambda: use_backend("reference")) if provider in ("reference", "compiled") else contextlib.nullcontext

    def call():
        with torch.no_grad(), ctx():
            model(x, y)
        sync_if_cuda(DEVICE)

    t = time.perf_counter()
    call()
    first = time.perf_counter() - t
    benchmark.group = "ncsnv2-forward"
    benchmark.pedantic(call, rounds=2 if quick else 8, iterations=1, warmup_rounds=0 if quick else 1)
    benchmark.extra_info.update(first_call_s=round(first, 1), batch=batch)
    record(benchmark.group, provider, benchmark.stats.stats.mean / batch, unit="sample")
