from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

# Triton kernels run on CPU tensors in Triton's interpreter; it must be chosen before the kernels are defined
# (at `import ncsn_fast`). On a GPU machine they compile for the GPU instead.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# A shell without job control starts background commands (`cmd &`, as a CI wrapper may) with SIGINT ignored, and
# every child inherits that: the Ctrl-C tests (io.Staged, sample, train) would then see no interrupt at all. They
# test the default disposition a user's terminal gives, so the test process restores it (children exec'd from a
# process with a handler start with the default).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
CASES = ["ncsnv2_32", "ncsn_32", "ncsnv2deeper_64", "ncsnv2deepest_64"]


def reference_root() -> Path:
    """../shared/reference beside the checkout (NCSN_FAST_REFERENCE overrides)."""
    env = os.environ.get("NCSN_FAST_REFERENCE")
    return Path(env) if env else REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    root = reference_root()
    if not (root / "ncsnv2_32" / "vectors.pt").is_file():
        pytest.fail(f"ground truth missing: {root} (set NCSN_FAST_REFERENCE to the shared/reference folder)")
    return root


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(autouse=True)
def _seed() -> None:
    # Fresh random inputs per test, but reproducible when a test fails.
    torch.manual_seed(int.from_bytes(os.urandom(4), "little") if os.environ.get("NCSN_FAST_RANDOM_SEED") else 1234)


def cpu_backends(op: str = "instance_norm_pp_elu") -> list[str]:
    """Backends of ``op`` that run on CPU tensors here (the Triton interpreter included)."""
    from ncsn_fast.ops import available

    return available(op, "cpu")
