"""One training step (DSM loss forward + backward + Adam) of NCSNv2 with peak memory, by provider:

- reference: the official computation (reference ops), eager, fp32; the baseline;
- eager: the fused ops, NCHW, fp32; eager-channels_last: the same in channels-last (our fp32 path);
- compiled: torch.compile of the fused-op model;
- reference-bf16-autocast: the official computation under bf16 autocast (float32 master weights);
- eager-bf16-autocast: ours, channels-last, under bf16 autocast (the fused norm's bf16 forward and backward).

Shape of the issue: CIFAR-10's NCSNv2 (ngf 128, L = 232), 32×32, batch 8, CPU. The summary gives each provider's
GFLOP/s (forward + backward FLOPs counted by FlopCounterMode) as a fraction of the same run's 3×3 convolution peak
in its precision. Quick mode: ngf 8, 16×16, batch 4, eager only (a CPU compile of the train step takes minutes).
"""

from __future__ import annotations

import contextlib
import resource
import time

import pytest
import torch

import ncsn_fast as nf
from benchmarks.conftest import machine_ceilings, record
from ncsn_fast.ops._backend import use_backend

PROVIDERS = ["reference", "eager", "eager-channels_last", "compiled", "reference-bf16-autocast", "eager-bf16-autocast"]
_FLOPS: dict[bool, float] = {}


def _cfg(quick: bool):
    size, ngf = (16, 8) if quick else (32, 128)
    return nf.load_config({"data": {"image_size": size, "channels": 3}, "model": {"ngf": ngf, "num_classes": 232}})


def _flops_per_image(quick: bool) -> float:
    """FLOPs of one training step per image (forward and backward), counted at batch 1."""
    if quick not in _FLOPS:
        from torch.utils.flop_counter import FlopCounterMode

        cfg = _cfg(quick)
        model = nf.build_model(cfg)
        x = torch.rand(1, 3, cfg.data.image_size, cfg.data.image_size)
        with FlopCounterMode(display=False) as counter, use_backend("reference"):
            nf.dsm_loss(model, x, nf.get_sigmas(cfg)).backward()
        _FLOPS[quick] = float(counter.get_total_flops())
    return _FLOPS[quick]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_train_step(benchmark, quick, provider):
    if quick and provider == "compiled":
        pytest.skip("quick mode: compiling a CPU train step takes minutes")
    machine_ceilings("cpu", quick)
    cfg = _cfg(quick)
    torch.manual_seed(0)
    model = nf.build_model(cfg)
    batch = 4 if quick else 8
    x = torch.rand(batch, 3, cfg.data.image_size, cfg.data.image_size)
    if provider in ("eager-channels_last", "eager-bf16-autocast"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fwd = torch.compile(model) if provider == "compiled" else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    sigmas = nf.get_sigmas(cfg)
    ctx = (lambda: use_backend("reference")) if provider.startswith("reference") else contextlib.nullcontext
    bf16 = provider.endswith("bf16-autocast")

    def step():
        with ctx(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # float32 master weights
            loss = nf.dsm_loss(fwd, x, sigmas)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = time.perf_counter()
    step()  # warm-up (and compilation)
    first = time.perf_counter() - t
    t = time.perf_counter()
    step()
    one = time.perf_counter() - t
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process-wide peak (kB on Linux)
    benchmark.group = "train-step"
    rounds = 2 if quick else max(2, min(5, int(60 / max(one, 1e-3))))
    benchmark.pedantic(step, rounds=rounds, iterations=1)
    benchmark.extra_info.update(first_call_s=round(first, 1), peak_rss_mib=round(peak_rss_mib, 1))
    peak = "conv3x3 bf16" if bf16 else "conv3x3 fp32"
    flops = _flops_per_image(quick)
    record("train-step", provider, benchmark.stats.stats.mean / batch, "sample", flops=flops, peak=peak)
