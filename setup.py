"""Build of ncsn_fast._C, the compiled kernels (CPU always, CUDA when a toolkit and a CUDA torch are present).

Switches (environment): NCSN_FAST_BUILD_EXT=0 skips the extension; NCSN_FAST_BUILD_CUDA=0 forces CUDA off, =1
requires it (the build fails, naming why, when the toolkit or a CUDA torch is missing; default: on when both are
present); TORCH_CUDA_ARCH_LIST (default: the
visible GPU's, else 9.0+PTX) and MAX_JOBS (default: the core count, capped by memory) are honoured.
torch is imported from the environment being installed into, also under pip's build isolation (see
import_installed_torch); without torch there, a pure-Python package is built and ops use Triton / PyTorch.
"""

import glob
import os
import sys
import sysconfig
import warnings

from setuptools import setup


def resolve_cuda_home():
    """CUDA_HOME from the environment, else the conventional /usr/local/cuda.

    torch guesses CUDA_HOME from the `nvcc` on PATH; on machines where that is a wrapper outside the toolkit the
    guess is wrong and linking -lcudart fails, so the location is settled here before torch looks.
    """
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if candidate and os.path.isfile(os.path.join(candidate, "bin", "nvcc")):
            os.environ["CUDA_HOME"] = candidate
            return candidate
    return None


def default_max_jobs():
    cores = os.cpu_count() or 1
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = 8
    return str(max(1, min(cores, int(mem_gib // 4))))  # a CUDA translation unit can take ~4 GiB


def import_installed_torch():
    """Import torch for the build, preferring the torch already installed in the target environment.

    Under pip's build isolation the environment's own site-packages is hidden and torch is not a build requirement
    (installing it again into a throwaway environment costs minutes and gigabytes). The interpreter pip runs is
    the target environment's, so its purelib/platlib directories are where `pip install torch` put torch.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        for key in ("purelib", "platlib"):
            path = sysconfig.get_paths()[key]
            if path not in sys.path:
                sys.path.append(path)
    import torch

    return torch


def extensions():
    cpp = sorted(glob.glob("csrc/cpu/*.cpp")) + sorted(glob.glob("csrc/*.cpp"))
    cu = sorted(glob.glob("csrc/cuda/*.cu"))
    if not cpp or os.environ.get("NCSN_FAST_BUILD_EXT", "1") == "0":
        return [], {}
    cuda_home = resolve_cuda_home()
    os.environ.setdefault("MAX_JOBS", default_max_jobs())
    try:
        torch = import_installed_torch()
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        warnings.warn("torch is not importable at build time: building without ncsn_fast._C", stacklevel=1)
        return [], {}
    flag = os.environ.get("NCSN_FAST_BUILD_CUDA")
    if flag == "1":
        # Required, not preferred: a CPU-only _C on a GPU machine would let every check pass without one .cu
        # kernel running (gpu_check.sh builds this way), so what stops CUDA is an error, never a fallback.
        why = [
            reason
            for bad, reason in (
                (not cu, "no csrc/cuda/*.cu sources"),
                (cuda_home is None, "no nvcc under CUDA_HOME, CUDA_PATH or /usr/local/cuda"),
                (not torch.version.cuda, f"torch {torch.__version__} is not a CUDA build"),
            )
            if bad
        ]
        if why:
            raise SystemExit("NCSN_FAST_BUILD_CUDA=1 but the CUDA kernels cannot be built: " + "; ".join(why))
    use_cuda = bool(cu) and (flag == "1" or (flag is None and cuda_home is not None and torch.version.cuda))
    link = []
    cxx = ["-O3"]  # the C++ standard is the one torch asks for (C++17 up to torch 2.9, C++20 after)
    if sys.platform != "win32":
        # The ELU select and exp, the Philox noise (sqrt) of csrc/cpu vectorize only when FP operations may be
        # speculated (no traps) and sqrt need not set errno.
        cxx += ["-fno-trapping-math", "-fno-math-errno"]
    if sys.platform.startswith("linux"):
        # at::parallel_for is an inline `#pragma omp parallel` when torch uses OpenMP: without -fopenmp it runs on
        # one thread. libgomp.so.1 resolves at run time to the copy torch already loaded (same soname).
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    elif sys.platform != "win32":
        cxx.append("-fopenmp-simd")  # `#pragma omp simd` only (vectorized reductions), no OpenMP runtime
    args = {"cxx": cxx}
    if use_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # With no GPU to ask, torch would compile for every architecture nvcc knows (many times the build time).
        # Hopper plus PTX (JIT-compiled by the driver on newer GPUs); set TORCH_CUDA_ARCH_LIST for others.
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0+PTX"
    if use_cuda:
        # No --use_fast_math: its approximate div/sqrt and flush-to-zero would change the Philox/Box-Muller noise
        # against the CPU kernels (csrc/philox.h) for no gain (the kernels are bandwidth-bound).
        args["nvcc"] = ["-O3"]
        ext = CUDAExtension("ncsn_fast._C", cpp + cu, extra_compile_args=args, extra_link_args=link)
    else:
        ext = CppExtension("ncsn_fast._C", cpp, extra_compile_args=args, extra_link_args=link)
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
