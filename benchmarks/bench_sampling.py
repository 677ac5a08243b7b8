"""Sampling end to end: 36 samples of the bundled digits model (16×16, channels-last network as the CLI runs it),
full schedule (L = 49, T = 5, 246 evaluations). Providers: the official computation (reference ops, torch update
and noise), the fused network with the torch update, everything fused (network ops and Langevin step), and that
with the network in bf16 (`precision="bf16"`: a bf16-weight copy, `precision.half_network`; slower than fp32 on
a CPU without bf16 units, see `ncsn-fast doctor`).
Quick mode: the first 4 noise levels. (bench_cli.py times the command a user types, and its peak memory.)
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import record, sync_if_cuda
from ncsn_fast.precision import hardware_half

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("provider", ["official", "fused-network+torch-update", "fused", "fused-bf16"])
def test_sampling_digits(benchmark, quick, provider):
    import ncsn_fast as nf
    from ncsn_fast.pretrained import load_pretrained
    from ncsn_fast.sampling import annealed_langevin, init_samples

    if quick and provider.endswith("bf16") and not hardware_half(DEVICE, "bf16"):
        pytest.skip("quick mode: bf16 without bf16 units (ncsn-fast doctor) takes ~30 s here")
    model, cfg = load_pretrained()
    model = model.to(DEVICE, memory_format=torch.channels_last)
    sigmas = nf.get_sigmas(cfg)[: 4 if quick else None]
    n = 36
    x0 = init_samples(n, (1, cfg.data.image_size, cfg.data.image_size), torch.Generator().manual_seed(0), DEVICE)
    x0 = x0.contiguous(memory_format=torch.channels_last)
    steps, eps = cfg.sampling.n_steps_each, cfg.sampling.step_lr
    gen = torch.Generator(device=DEVICE)
    precision = "bf16" if provider.endswith("bf16") else "fp32"

    def call():
        if provider == "official":  # backend "torch": the reference ops, the torch update and torch.randn noise
            annealed_langevin(model, x0, sigmas, steps, eps, seed=0, backend="torch", generator=gen.manual_seed(0))
        elif provider == "fused-network+torch-update":  # a noise_fn keeps the torch update, the network fused
            noise = lambda x: torch.randn(x.shape, generator=gen, device=x.device)  # noqa: E731
            annealed_langevin(model, x0, sigmas, steps, eps, noise_fn=noise)
        else:
            annealed_langevin(model, x0, sigmas, steps, eps, seed=0, precision=precision)
        sync_if_cuda(DEVICE)

    benchmark.group = "sampling-digits"
    benchmark.pedantic(call, rounds=1 if quick else 3, iterations=1)
    benchmark.extra_info.update(levels=len(sigmas), steps_each=steps, samples=n)
    record("sampling-digits", provider, benchmark.stats.stats.mean / n, unit="sample", baseline="official")
