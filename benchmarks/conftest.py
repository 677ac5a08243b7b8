"""Benchmarks (pytest-benchmark). Quick mode (`--quick` or NCSN_FAST_BENCH_QUICK=1) runs every group in seconds.

pytest benchmarks                       # full
pytest benchmarks --quick               # CI smoke run
"""

from __future__ import annotations

import os

import pytest

RESULTS: dict[str, dict[str, float]] = {}
UNITS: dict[str, str] = {}  # group -> what "per_sample" is per ("sample" unless said otherwise)


def record(group: str, provider: str, seconds: float, unit: str = "call", baseline: str = "reference") -> None:
    """One provider's time in a group; ratios to the baseline (and to "compiled") are printed at the end."""
    rows = RESULTS.setdefault(group, {})
    UNITS[group] = unit
    rows[provider] = {"per_sample": seconds}
    if provider == baseline:
        rows["baseline"] = {"name": provider, "per_sample": seconds}


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
    """Ratios to the baseline of each group, measured in the same run (the machines are noisy)."""
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
            terminalreporter.write_line(line)
