"""The Langevin update (sampling end to end is benchmarks/bench_sampling.py).

Group ``langevin-step``: one update of (100, 3, 32, 32) float32 (a CIFAR-10 sampling batch), providers
- official: the official sampler's step with the diagnostics it computes every step (norms of s, z, x, SNR,
  ‖mean s‖²; each a reduction pass, and .item() synchronizations);
- bare: x + α·s + √(2α)·torch.randn_like(x), the minimal unfused step;
- the fused op on each backend present, with and without the per-sample statistics.
Quick mode: (4, 3, 8, 8).
"""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.conftest import record, sync_if_cuda
from ncsn_fast.ops import available, langevin_step_

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FUSED = [b for b in available("langevin_step_", DEVICE) if b != "reference"]
STEP_PROVIDERS = ["official", "bare", *FUSED, *[f"{b}+stats" for b in FUSED]]
ALPHA = 6.2e-6 * (50 / 0.01) ** 2 / 1000  # a mid-schedule CIFAR-10 step size


def official_step(x: torch.Tensor, s: torch.Tensor, alpha: float, sigma: float = 1.0) -> torch.Tensor:
    """As the official anneal_Langevin_dynamics: the update plus its per-step diagnostics."""
    noise = torch.randn_like(x)
    grad_norm = torch.norm(s.view(s.shape[0], -1), dim=-1).mean()
    noise_norm = torch.norm(noise.view(noise.shape[0], -1), dim=-1).mean()
    x = x + alpha * s + noise * math.sqrt(alpha * 2)
    image_norm = torch.norm(x.view(x.shape[0], -1), dim=-1).mean()
    snr = math.sqrt(alpha / 2.0) * grad_norm / noise_norm
    grad_mean_norm = torch.norm(s.mean(dim=0).view(-1)) ** 2 * sigma**2
    for v in (grad_norm, noise_norm, image_norm, snr, grad_mean_norm):
        v.item()  # the official code prints them
    return x


@pytest.mark.parametrize("provider", STEP_PROVIDERS)
def test_langevin_step(benchmark, quick, provider):
    shape = (4, 3, 8, 8) if quick else (100, 3, 32, 32)
    x = torch.randn(shape, device=DEVICE)
    s = torch.randn(shape, device=DEVICE)
    stats = torch.empty(shape[0], 3, device=DEVICE)
    counter = iter(range(10**9))
    if provider == "official":
        fn = lambda: official_step(x, s, ALPHA)  # noqa: E731
    elif provider == "bare":
        fn = lambda: x + ALPHA * s + math.sqrt(2 * ALPHA) * torch.randn_like(x)  # noqa: E731
    else:
        backend, _, with_stats = provider.partition("+")
        st = stats if with_stats else None
        fn = lambda: langevin_step_(x, s, ALPHA, 1234, next(counter), st, backend=backend)  # noqa: E731

    def call():
        fn()
        sync_if_cuda(DEVICE)

    call()
    benchmark.group = "langevin-step"
    benchmark.pedantic(call, rounds=3 if quick else 50, iterations=1, warmup_rounds=0 if quick else 3)
    if DEVICE == "cuda":
        gb = 3 * x.numel() * 4 / 1e9  # read x and s, write x
        benchmark.extra_info["effective_gb_per_s"] = round(gb / benchmark.stats.stats.min, 1)
    record("langevin-step", provider, benchmark.stats.stats.mean, baseline="official")
