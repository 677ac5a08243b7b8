"""The main job as a user runs it: `ncsn-fast sample` in a fresh process (imports, model load, sampling, writing),
wall time and peak resident memory.

- time: the official sampler on the bundled model's full schedule (`--steps 5`, 246 evaluations) against the
  recommended sampler at a tenth of the budget (`--nfe 25`), 36 samples each;
- memory: `--n` samples in batches of 50 — peak RSS must not grow with --n (samples stream to disk).

Quick mode: a thinned schedule and tiny --n.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.conftest import record

RUN = (
    "import json, resource, sys, time\n"
    "from ncsn_fast.cli import main\n"
    "t = time.perf_counter()\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, 'seconds': time.perf_counter() - t,\n"
    "                  'peak_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
)


def run_cli(args: list[str], tmp_path) -> dict:
    out = subprocess.run([sys.executable, "-c", RUN, "sample", "--quiet", "--out", str(tmp_path), *args],
                         capture_output=True, text=True, check=True)  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, out.stderr[-500:]
    return result


@pytest.mark.parametrize("provider", ["ald-full-schedule", "recommended-nfe25"])
def test_cli_sample_wall_time(benchmark, quick, provider, tmp_path):
    if provider.startswith("ald"):
        args = ["--every", "8", "--steps", "1"] if quick else ["--steps", "5"]
    else:
        args = ["--nfe", "4" if quick else "25"]
    results = []
    benchmark.group = "cli-sample"
    benchmark.pedantic(lambda: results.append(run_cli(["--n", "36", *args], tmp_path)), rounds=1, iterations=1)
    r = results[-1]
    benchmark.extra_info.update(args=" ".join(args), peak_mib=round(r["peak_mib"]))
    record("cli-sample", provider, r["seconds"] / 36, unit="sample", baseline="ald-full-schedule")


@pytest.mark.parametrize("n", [100, 2000])
def test_cli_peak_memory_is_bounded_by_the_batch(benchmark, quick, n, tmp_path):
    n = n // 50 if quick else n
    results = []
    benchmark.group = "cli-memory"
    args = ["--n", str(n), "--batch-size", "50", "--nfe", "4" if quick else "10"]
    benchmark.pedantic(lambda: results.append(run_cli(args, tmp_path)), rounds=1, iterations=1)
    benchmark.extra_info.update(n=n, batch_size=50, peak_mib=round(results[-1]["peak_mib"]))
    print(f"\nncsn-fast sample --n {n} --batch-size 50: peak RSS {results[-1]['peak_mib']:.0f} MiB")
