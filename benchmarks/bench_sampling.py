"""Sampling end to end: 36 samples of the bundled digits model (16×16, channels-last network as the CLI runs it),
full schedule (L = 49, T = 5, 246 evaluations). Providers: the official computation (reference ops, torch update
and noise), the fused network with the torch update, and everything fused (network ops and Langevin step).
Quick mode: the first 4 noise levels. (bench_cli.py times the command a user types, and its peak memory.)
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import record, sync_if_cuda

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("provider", ["official", "fused-network+torch-update", "fused"])
def test_sampling_digits(benchmark, quick, provider):
    import ncsn_fast as nf
    from ncsn_fast.pretrained import load_pretrained
    from ncsn_fast.sampling import annealed_langevin, init_samples

    model, cfg = load_pretrained()
    model = model.to(DEVICE, memory_format=torch.channels_last)
    sigmas = nf.get_sigmas(cfg)[: 4 if quick else None]
    n = 36
    x0 = init_samples(n, (1, cfg.data.image_size, cfg.data.image_size), torch.Generator().manual_seed(0), DEVICE)
    x0 = x0.contiguous(memory_format=torch.channels_last)
    steps, eps = cfg.sampling.n_steps_each, cfg.sampling.step_lr
    gen = torch.Generator(device=DEVICE)

    def call():
        if provider == "official":  # backend "torch": the reference ops, the torch update and torch.randn noise
            annealed_langevin(model, x0, sigmas, steps, eps, seed=0, backend="torch", generator=gen.manual_seed(0))
        elif provider == "fused-network+torch-update":  # a noise_fn keeps the torch update, the network fused
            noise = lambda x: torch.randn(x.shape, generator=gen, device=x.device)  # noqa: E731
            annealed_langevin(model, x0, sigmas, steps, eps, noise_fn=noise)
        else:
            annealed_langevin(model, x0, sigmas, steps, eps, seed=0)
        sync_if_cuda(DEVICE)

    benchmark.group = "sampling-digits"
    benchmark.pedantic(call, rounds=1 if quick else 3, iterations=1)
    benchmark.extra_info.update(levels=len(sigmas), steps_each=steps, samples=n)
    record("sampling-digits", provider, benchmark.stats.stats.mean / n, unit="sample", baseline="official")
