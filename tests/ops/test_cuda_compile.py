"""The CUDA sources compile for more than one architecture (slow lane; nvcc, no GPU needed). A list such as
"800,900" reaches the code as __CUDA_ARCH_LIST__ = 800,900: a one-parameter stringizing macro is then passed two
arguments and the build fails, which a one-architecture build (CI's default 9.0) never shows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO


def find_nvcc() -> str | None:
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


NVCC = find_nvcc()


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc not found (CUDA_HOME, CUDA_PATH, /usr/local/cuda, PATH): not compiled")
@pytest.mark.skipif(not torch.version.cuda, reason="torch is not a CUDA build (no CUDA headers): not compiled")
def test_instance_norm_cu_compiles_for_two_architectures(tmp_path):
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths

    includes = [*include_paths(device_type="cuda"), sysconfig.get_paths()["include"]]
    cmd = [NVCC, "-c", str(REPO / "csrc" / "cuda" / "instance_norm_pp_elu.cu"), "-o", str(tmp_path / "a.o")]
    cmd += [f"-I{p}" for p in includes] + COMMON_NVCC_FLAGS + ["-std=c++20", "-O1"]
    cmd += ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
