"""One training step (forward + backward + Adam) of NCSNv2 with peak memory: reference (the official computation,
eager), eager (fused ops), compiled (torch.compile of the fused-op model).

Shape of the issue: ngf 64, 32×32, batch 16, fp32, CPU. Quick mode: ngf 8, 16×16, batch 4, eager only (a CPU
compile of the train step takes minutes, which is not a smoke test).
"""

from __future__ import annotations

import contextlib
import resource
import time

import pytest
import torch

import ncsn_fast as nf
from benchmarks.conftest import record
from ncsn_fast.ops._backend import use_backend


def _cfg(quick: bool):
    size, ngf = (16, 8) if quick else (32, 64)
    return nf.load_config({"data": {"image_size": size, "channels": 3}, "model": {"ngf": ngf, "num_classes": 232}})


@pytest.mark.parametrize("provider", ["reference", "eager", "compiled"])
def test_train_step(benchmark, quick, provider):
    if quick and provider == "compiled":
        pytest.skip("quick mode: compiling a CPU train step takes minutes")
    cfg = _cfg(quick)
    torch.manual_seed(0)
    model = nf.build_model(cfg)
    fwd = torch.compile(model) if provider == "compiled" else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    sigmas = nf.get_sigmas(cfg)
    batch = 4 if quick else 16
    x = torch.rand(batch, 3, cfg.data.image_size, cfg.data.image_size)

    ctx = (lambda: use_backend("reference")) if provider == "reference" else contextlib.nullcontext

    def step():
        with ctx():
            loss = nf.dsm_loss(fwd, x, sigmas)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = time.perf_counter()
    step()  # warm-up (and compilation)
    first = time.perf_counter() - t
    step()
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process-wide peak (kB on Linux)
    benchmark.group = "train-step"
    benchmark.pedantic(step, rounds=2 if quick else 5, iterations=1)
    benchmark.extra_info.update(first_call_s=round(first, 1), peak_rss_mib=round(peak_rss_mib, 1))
    record("train-step", provider, benchmark.stats.stats.mean / batch, unit="sample")
