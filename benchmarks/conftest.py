"""Benchmarks (pytest-benchmark). Quick mode (`--quick` or NCSN_FAST_BENCH_QUICK=1) runs every group in seconds.

pytest benchmarks                       # full
pytest benchmarks --quick               # CI smoke run
"""

from __future__ import annotations

import os
import time

import pytest

RESULTS: dict[str, dict[str, float]] = {}
UNITS: dict[str, str] = {}  # group -> what "per_sample" is per ("sample" unless said otherwise)


def record(
    group: str,
    provider: str,
    seconds: float,
    unit: str = "call",
    baseline: str = "reference",
    flops: float | None = None,
    peak: str | None = None,
    note: str = "",
) -> None:
    """One provider's time in a group; ratios to the baseline (and to "compiled") are printed at the end. With
    ``flops`` (per unit) the achieved GFLOP/s is printed too, and with ``peak`` (a :func:`machine_ceilings` key) its
    fraction of that ceiling measured in the same run; ``note`` is printed at the end of the line."""
    rows = RESULTS.setdefault(group, {})
    UNITS[group] = unit
    rows[provider] = {"per_sample": seconds, "flops": flops, "peak": peak, "note": note}
    if provider == baseline:
        rows["baseline"] = {"name": provider, "per_sample": seconds}


CEILINGS: dict[str, float] = {}


def _best_of(fn, seconds: float = 0.3, calls: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        if best * calls > seconds * 4:
            break
    return best


def _sized(make, largest: int, budget_s: float) -> float:
    """GFLOP/s of make(n) (a (call, flops) pair) at the largest n ≤ ``largest`` (halving from it) whose first call
    fits ``budget_s``: the bf16 matmul of a CPU without bf16 units runs at ~1 GFLOP/s, where 2048² takes a minute."""
    n = 128
    while True:
        call, flops = make(n)
        t = time.perf_counter()
        call()
        took = time.perf_counter() - t
        if n * 2 > largest or took * 8 > budget_s:
            return flops / _best_of(call) / 1e9
        n *= 2


def machine_ceilings(device: str = "cpu", quick: bool = False) -> dict[str, float]:
    """This machine's own ceilings, measured once per run (the benchmarks report fractions of them): a large
    matmul in fp32 and bf16 (GFLOP/s; 2048² on a CPU, 8192² on a GPU, smaller when one call would take over a
    few seconds), the best of NCSNv2's 3×3 convolutions (channels-last; 128 channels at 32×32, 256 at 16×16 and
    8×8; GFLOP/s) in fp32 and bf16, and a copy (GB/s, read + write)."""
    import torch

    if CEILINGS:
        return CEILINGS
    gpu = torch.device(device).type == "cuda"
    largest, budget = (256, 0.5) if quick else (8192 if gpu else 2048, 3.0)

    def matmul(dtype):
        def make(n):
            a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
            return (lambda: (a @ b, sync_if_cuda(device))), 2 * n**3

        return make

    def conv(dtype, channels: int, size: int):
        def make(n):
            batch = max(1, n // 128)  # 1, 2, 4 ... (8 on a CPU, 64 on a GPU)
            x = torch.randn(batch, channels, size, size, device=device).to(dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            layer = torch.nn.Conv2d(channels, channels, 3, padding=1)
            layer = layer.to(device, dtype, memory_format=torch.channels_last)

            def call():
                with torch.no_grad():
                    layer(x)
                sync_if_cuda(device)

            return call, 2 * batch * channels**2 * 9 * size * size

        return make

    conv_batch = 128 if quick else 64 * 128 if gpu else 8 * 128
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        CEILINGS[f"matmul {name}"] = _sized(matmul(dtype), largest, budget)
        # the best of NCSNv2's own 3×3 layers (CIFAR-10: 128 channels at 32², 256 at 16² and 8²)
        shapes = [(128, 32)] if quick else [(128, 32), (256, 16), (256, 8)]
        CEILINGS[f"conv3x3 {name}"] = max(_sized(conv(dtype, c, s), conv_batch, budget) for c, s in shapes)
    src = torch.empty(2**24 if not quick else 2**20, device=device).normal_()  # 64 MiB float32
    dst = torch.empty_like(src)  # preallocated: a fresh 64 MiB buffer per call would time its page faults
    CEILINGS["copy GB/s"] = 2 * src.numel() * 4 / _best_of(lambda: (dst.copy_(src), sync_if_cuda(device))) / 1e9
    return CEILINGS


def allocated_mib(fn) -> float:
    """MiB allocated by one call of fn on the CPU (sum of allocations, torch profiler), temporaries included."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return sum(max(e.self_cpu_memory_usage, 0) for e in prof.events()) / 2**20


def sync_if_cuda(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--quick", action="store_true", help="tiny sizes and one round per benchmark")


@pytest.fixture(scope="session")
def quick(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--quick")) or os.environ.get("NCSN_FAST_BENCH_QUICK") == "1"


def pytest_terminal_summary(terminalreporter) -> None:
    """Ratios to the baseline of each group, measured in the same run (the machines are noisy), and the fraction of
    this machine's ceilings measured in the same run where a group reports its FLOPs."""
    if CEILINGS:
        terminalreporter.write_line("\nmachine ceilings, this run: " + ", ".join(
            f"{k} {v:.1f}" + ("" if "GB/s" in k else " GFLOP/s") for k, v in CEILINGS.items()))  # fmt: skip
    for group, rows in RESULTS.items():
        base = rows.get("baseline")
        if not base:
            continue
        unit = UNITS.get(group, "sample")
        comp = rows.get("compiled")
        head = f"\n{group}: time per {unit}, speedup over {base['name']}" + (" and over compiled" if comp else "")
        terminalreporter.write_line(head)
        for name, r in rows.items():
            if name == "baseline":
                continue
            line = f"  {name:28s} {1000 * r['per_sample']:9.2f} ms/{unit}   ×{base['per_sample'] / r['per_sample']:.2f}"
            if comp:
                line += f"   ×{comp['per_sample'] / r['per_sample']:.2f}"
            if r.get("flops"):
                rate = r["flops"] / r["per_sample"] / 1e9
                line += f"   {rate:7.1f} GFLOP/s"
                if r.get("peak") in CEILINGS:
                    line += f" = {100 * rate / CEILINGS[r['peak']]:5.1f}% of {r['peak']}"
            if r.get("note"):
                line += f"   {r['note']}"
            terminalreporter.write_line(line)
