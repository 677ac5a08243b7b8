"""Sampling end to end: 36 samples of the bundled digits model (16×16, channels-last network as the CLI runs it),
full schedule (L = 49, T = 5, 246 evaluations). Providers: the official computation (reference ops, torch update
and noise), the fused network with the torch update, everything fused (network ops and Langevin step), and that
with the network in bf16 (`precision="bf16"`: a bf16-weight copy, `precision.half_network`; slower than fp32 on
a CPU without bf16 units, see `ncsn-fast doctor`); fused-aot and fused-bf16-aot: everything fused with the network an
AOT package (`inference_network(model, precision, "aot")`, what `ncsn-fast sample --compile` runs; compiled into a
fresh cache folder on the first call, whose cost is `first_call_s`).
Quick mode: the first 4 noise levels, no compiled providers (a compile takes a minute on a small CPU).
(bench_cli.py times the command a user types, and its peak memory.)
"""

from __future__ import annotations

import time

import pytest
import torch

from benchmarks.conftest import record, sync_if_cuda
from ncsn_fast.precision import hardware_half

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize(
    "provider", ["official", "fused-network+torch-update", "fused", "fused-bf16", "fused-aot", "fused-bf16-aot"]
)
def test_sampling_digits(benchmark, quick, provider, tmp_path):
    import ncsn_fast as nf
    from ncsn_fast.pretrained import load_pretrained
    from ncsn_fast.sampling import annealed_langevin, init_samples

    if quick and provider.endswith("bf16") and not hardware_half(DEVICE, "bf16"):
        pytest.skip("quick mode: bf16 without bf16 units (ncsn-fast doctor) takes ~30 s here")
    if quick and provider.endswith("aot"):
        pytest.skip("quick mode: compiling the network takes a minute on a small CPU")
    model, cfg = load_pretrained()
    model = model.to(DEVICE, memory_format=torch.channels_last)
    sigmas = nf.get_sigmas(cfg)[: 4 if quick else None]
    n = 36
    x0 = init_samples(n, (1, cfg.data.image_size, cfg.data.image_size), torch.Generator().manual_seed(0), DEVICE)
    x0 = x0.contiguous(memory_format=torch.channels_last)
    steps, eps = cfg.sampling.n_steps_each, cfg.sampling.step_lr
    gen = torch.Generator(device=DEVICE)
    precision = "bf16" if "bf16" in provider else "fp32"
    net = model
    if provider.endswith("aot"):
        net = nf.inference_network(model, precision, "aot", cache_dir=tmp_path)

    def call():
        if provider == "official":  # backend "torch": the reference ops, the torch update and torch.randn noise
            annealed_langevin(model, x0, sigmas, steps, eps, seed=0, backend="torch", generator=gen.manual_seed(0))
        elif provider == "fused-network+torch-update":  # a noise_fn keeps the torch update, the network fused
            noise = lambda x: torch.randn(x.shape, generator=gen, device=x.device)  # noqa: E731
            annealed_langevin(model, x0, sigmas, steps, eps, noise_fn=noise)
        else:  # an inference network keeps its own precision (precision= does not rewrap it)
            annealed_langevin(net, x0, sigmas, steps, eps, seed=0, precision=precision)
        sync_if_cuda(DEVICE)

    t = time.perf_counter()
    call()  # first call: compiles the package (aot), warms caches otherwise
    first = time.perf_counter() - t
    benchmark.group = "sampling-digits"
    benchmark.pedantic(call, rounds=1 if quick else 3, iterations=1)
    benchmark.extra_info.update(levels=len(sigmas), steps_each=steps, samples=n, first_call_s=round(first, 1))
    record("sampling-digits", provider, benchmark.stats.stats.mean / n, unit="sample", baseline="official")
