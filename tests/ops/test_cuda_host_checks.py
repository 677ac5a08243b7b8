"""Host-side parts of the CUDA InstanceNorm++ that can be checked without a GPU.

- The channels-last launch shape (csrc/cuda/launch_config.h): N on gridDim.x (no 65535 cap), H·W split across
  blocks for small N, a grid past 2^31 - 1 refused; tests/cpp/test_launch_config.cpp compiled with the host
  compiler and run (ctest runs it too).
- The backward's argument checks: one function, check_backward_args, called by the CPU and the CUDA backward
  before any kernel (mean and rstd must hold N·C values); its effect is seen through the CPU op.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import torch

from ncsn_fast.ops import _backend
from tests.conftest import REPO

CXX = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


@pytest.mark.skipif(CXX is None, reason="no host C++ compiler (c++, g++, clang++): not compiled")
def test_channels_last_launch_config(tmp_path):
    exe = tmp_path / "test_launch_config"
    build = subprocess.run(
        [CXX, "-std=c++17", "-O1", "-o", str(exe), str(REPO / "tests" / "cpp" / "test_launch_config.cpp")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "launch config: ok" in run.stdout, run.stdout[-3000:]


def test_cuda_kernels_launch_channels_last_on_grid_x_only():
    # The reductions' grid is l.blocks on gridDim.x; a dim3 grid with N on .y (cap 65535) is gone.
    src = (REPO / "csrc" / "cuda" / "instance_norm_pp_elu.cu").read_text()
    assert not re.search(r"<<<\s*dim3\(", src), "a 2-D/3-D grid: N or tiles on gridDim.y/z (65535 at most)"
    # forward and backward, both checked against kMaxGridX
    assert src.count("nhwc_launch_here(N, C, HW, x.get_device())") == 2


def _function_body(src: str, name: str) -> str:
    start = src.index(name + "(")
    return src[start : src.index("\n}\n", start)]


@pytest.mark.parametrize("path", ["cpu/instance_norm_pp_elu.cpp", "cuda/instance_norm_pp_elu.cu"])
def test_every_backward_checks_mean_and_rstd_before_its_kernels(path):
    src = (REPO / "csrc" / path).read_text()
    impl = re.search(r'm\.impl\("instance_norm_pp_elu_backward",\s*&(\w+)\)', src).group(1)
    body = _function_body(src, impl)
    call = body.find("check_backward_args(grad_out, out_in, x_in, mean_in, rstd_in)")
    assert call >= 0, f"{path}: {impl} does not call check_backward_args (mean.numel() == N*C)"
    assert call < body.index("AT_DISPATCH"), f"{path}: the check comes after the kernels"


@pytest.mark.skipif(not _backend.has_kernel("instance_norm_pp_elu_backward", "cpu"), reason="no ncsn_fast._C here")
def test_backward_rejects_mean_of_the_wrong_size():
    x = torch.randn(2, 3, 4, 4)
    y, mean, rstd = torch.ops.ncsn_fast.instance_norm_pp_elu(x, torch.ones(3), torch.ones(3), None, 1e-5, True)
    args = (torch.ones(3), torch.ones(3), 1e-5, True)
    with pytest.raises(RuntimeError, match=r"mean and rstd must be \(N, C\)"):
        torch.ops.ncsn_fast.instance_norm_pp_elu_backward(torch.ones_like(y), y, x, mean[:1], rstd, *args)
    with pytest.raises(RuntimeError, match=r"mean and rstd must be \(N, C\)"):
        torch.ops.ncsn_fast.instance_norm_pp_elu_backward(torch.ones_like(y), y, x, mean, rstd.flatten()[:5], *args)
