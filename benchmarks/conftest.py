"""Benchmarks (pytest-benchmark). Quick mode (`--quick` or NCSN_FAST_BENCH_QUICK=1) runs every group in seconds.

pytest benchmarks                       # full
pytest benchmarks --quick               # CI smoke run
"""

from __future__ import annotations

import os

import pytest

RESULTS: dict[str, dict[str, float]] = {}


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
        terminalreporter.write_line(f"\n{group}: time per sample, and speedup over the baseline ({base['name']})")
        for name, r in rows.items():
            if name == "baseline":
                continue
            terminalreporter.write_line(
                f"  {name:28s} {1000 * r['per_sample']:9.1f} ms/sample   ×{base['per_sample'] / r['per_sample']:.1f}"
            )
