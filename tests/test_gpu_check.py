"""benchmarks/gpu_check.sh without a GPU: its --dry-run runs the preflight only and must name every step that did
not run (a skipped step is never reported as a pass)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

STEPS = [
    "build",
    "doctor",
    "compute-sanitizer memcheck",
    "compute-sanitizer racecheck",
    "tests -m cuda",
    "op benchmark",
    "sde/langevin benchmark",
    "model benchmark (fp32 + bf16)",
    "inference eager/jit/aot (fp32 + bf16 + CUDA graphs)",
    "sampling benchmark (fp32 + bf16)",
    "table6 bf16",
    "table6 fp32",
]


def run_dry(tmp_path, **env) -> str:
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", str(tmp_path)],
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "summary.txt").read_text() == done.stdout  # the summary file is what was printed
    return done.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
def test_dry_run_names_every_step_that_did_not_run(tmp_path):
    out = run_dry(tmp_path)
    lines = out.splitlines()
    assert lines[1].startswith("== dry run")
    assert re.match(r"preflight: (ok|MISSING)", lines[2]), lines[2]
    for name in STEPS:
        assert f"{name}: NOT RUN (dry run; would run: " in out, name
    assert not [s for s in lines[3:] if re.search(r": (ok|FAILED|TIMED OUT) ", s)]  # no step claims to have run
    for tool in ("memcheck", "racecheck"):  # overruns inside the caching allocator's blocks are invisible otherwise
        assert f"would run: env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool {tool}" in out
    assert "would run: env NCSN_FAST_BUILD_CUDA=1 " in out  # a CPU-only build is a failed build
    last = lines[-1]
    assert last == f"== did not run ({len(STEPS)}): " + ", ".join(STEPS), last


def test_the_inference_benchmark_it_runs_works_here():
    """The script of the GPU step "inference eager/jit/aot" on this CPU, eager only (seconds): one header line and
    one row per mode, each with its ratio and error against the first mode. The GPU minutes are too few to lose a
    step to a broken script."""
    script = [sys.executable, str(REPO / "scripts" / "bench_inference.py"), "--repeats", "2", "--batch", "3"]
    done = subprocess.run([*script, "--modes", "eager"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    head, row = done.stdout.splitlines()
    assert head.startswith("digits NCSNv2, batch 3, ")
    assert re.match(r"fp32  eager +[0-9.]+ ms/call \( 1\.00x eager; median of 2, interleaved\), first call", row), row
    assert row.endswith("rel err vs eager 0.00e+00")
    bad = subprocess.run([*script, "--modes", "eager,fast"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--modes: unknown ['fast']" in bad.stderr
