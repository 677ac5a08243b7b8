"""A GPU machine must not report ok with a CPU-only ncsn_fast._C: the `cuda` test below fails there, and so does
benchmarks/cuda_sanitize.py. Both are checked here, without a GPU, by faking one (torch.cuda.is_available) and the
CPU-only build (NCSN_FAST_DISABLE_EXT=1 / has_kernel patched)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ncsn_fast.ops import _backend
from tests.conftest import REPO


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_kernels_are_built():
    assert _backend.missing_cuda_kernels() == [], (
        f"a CUDA GPU but ncsn_fast._C has no CUDA kernel for {_backend.missing_cuda_kernels()} "
        f"(extension: {_backend.extension_error() or 'loaded'}); rebuild with NCSN_FAST_BUILD_CUDA=1"
    )


# A pytest plugin, loaded before the test module: a GPU that is "present".
FAKE_GPU = "import torch\ntorch.cuda.is_available = lambda: True\n"


def run_cuda_test_with_fake_gpu(tmp_path, disable_ext: bool) -> subprocess.CompletedProcess:
    (tmp_path / "fake_gpu.py").write_text(FAKE_GPU)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "TRITON_INTERPRET": "1"}
    env.pop("NCSN_FAST_DISABLE_EXT", None)
    if disable_ext:
        env["NCSN_FAST_DISABLE_EXT"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "fake_gpu", "-p", "no:cacheprovider", "-q", "-m", "cuda",
         "tests/ops/test_cuda_build.py::test_cuda_kernels_are_built"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_cuda_test_fails_on_a_gpu_machine_with_a_cpu_only_build(tmp_path):
    done = run_cuda_test_with_fake_gpu(tmp_path, disable_ext=True)
    assert done.returncode == 1 and "1 failed" in done.stdout, done.stdout[-2000:]
    assert "no CUDA kernel for ['instance_norm_pp_elu'" in done.stdout


@pytest.mark.skipif(_backend.missing_cuda_kernels() != [], reason="ncsn_fast._C here was built without CUDA")
def test_cuda_test_passes_with_the_cuda_kernels_built(tmp_path):
    # The same fake GPU with the real _C (CI builds the CUDA kernels): the test runs, not skips, and passes.
    done = run_cuda_test_with_fake_gpu(tmp_path, disable_ext=False)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-2000:]


def test_sanitizer_fails_on_a_gpu_machine_with_a_cpu_only_build(monkeypatch, capsys):
    from benchmarks import cuda_sanitize

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_backend, "has_kernel", lambda op, device_type: device_type != "cuda")
    assert cuda_sanitize.main() == 1
    assert "FAILED: a CUDA GPU but no CUDA kernel" in capsys.readouterr().out


def test_sanitizer_without_a_gpu_is_not_a_pass(monkeypatch):
    from benchmarks import cuda_sanitize

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_sanitize.main() == 2


def test_build_with_cuda_required_fails_loudly_without_cuda(tmp_path):
    # NCSN_FAST_BUILD_CUDA=1 with no toolkit to find: setup.py stops, naming why (no CPU-only fallback).
    env = {**os.environ, "NCSN_FAST_BUILD_CUDA": "1", "CUDA_HOME": str(tmp_path), "CUDA_PATH": str(tmp_path)}
    code = "import os, runpy; os.path.isfile = lambda p, f=os.path.isfile: f(p) and not p.endswith('/bin/nvcc'); "
    code += "runpy.run_path('setup.py', run_name='__main__')"
    done = subprocess.run(
        [sys.executable, "-c", code, "--name"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "NCSN_FAST_BUILD_CUDA=1 but the CUDA kernels cannot be built: no nvcc" in done.stderr, done.stderr[-2000:]
