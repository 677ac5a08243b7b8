"""The general stochastic update x ← c·x + a·d + b·z (ncsn_fast.ops.sde_step_).

Group ``sde-step``: one update of (100, 3, 32, 32) float32 (a CIFAR-10 sampling batch) with DPM-Solver++(2M) SDE
coefficients (c ≠ 1, a ≠ 0, b ≠ 0: every term is computed), providers
- unfused: c·x + a·d + b·torch.randn_like(x), the plain-PyTorch step a sampler would write (the baseline);
- the fused op on each backend present, with and without the per-sample statistics.
Quick mode: (4, 3, 8, 8).
"""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.conftest import record, sync_if_cuda
from ncsn_fast.ops import available, sde_step_

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FUSED = [b for b in available("sde_step_", DEVICE) if b != "reference"]
PROVIDERS = ["unfused", *FUSED, *[f"{b}+stats" for b in FUSED]]


def dpmpp_2m_sde_coefficients(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float, float]:
    """(c, a, b) of one DPM-Solver++(2M) SDE step σ → σ_next (d: the denoised estimate), h = ln(σ/σ_next)."""
    h = math.log(sigma / sigma_next)
    return (
        sigma_next / sigma * math.exp(-eta * h),
        -math.expm1(-h - eta * h),
        sigma_next * math.sqrt(-math.expm1(-2 * eta * h)),
    )


C, A, B = dpmpp_2m_sde_coefficients(1.0, 0.8)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_sde_step(benchmark, quick, provider):
    shape = (4, 3, 8, 8) if quick else (100, 3, 32, 32)
    x = torch.randn(shape, device=DEVICE)
    d = torch.randn(shape, device=DEVICE)
    stats = torch.empty(shape[0], 3, device=DEVICE)
    counter = iter(range(10**9))
    if provider == "unfused":
        fn = lambda: C * x + A * d + B * torch.randn_like(x)  # noqa: E731
    else:
        backend, _, with_stats = provider.partition("+")
        st = stats if with_stats else None
        # A fresh offset per call, as a sampler's step index: c < 1 keeps x bounded over the rounds.
        fn = lambda: sde_step_(x, d, C, A, B, 1234, next(counter), st, backend=backend)  # noqa: E731

    def call():
        fn()
        sync_if_cuda(DEVICE)

    call()
    benchmark.group = "sde-step"
    benchmark.pedantic(call, rounds=3 if quick else 50, iterations=1, warmup_rounds=0 if quick else 3)
    if DEVICE == "cuda":
        gb = 3 * x.numel() * 4 / 1e9  # read x and d, write x
        benchmark.extra_info["effective_gb_per_s"] = round(gb / benchmark.stats.stats.min, 1)
    record("sde-step", provider, benchmark.stats.stats.mean, baseline="unfused")
