"""FID evaluation costs.

Group ``frechet-distance``: the distance between two 2048-dimensional Gaussians (the FID's last step), providers
- sqrtm: scipy.linalg.sqrtm of Σ1Σ2, the TTUR / pytorch-fid reference (the default);
- eigh: Tr (Σ1^½ Σ2 Σ1^½)^½ from two symmetric eigendecompositions (``method="eigh"``).
Group ``inception-features``: pool3 features of a batch of 32 × 32 images (resized to 299 inside), random weights
(the cost does not depend on them), per image; on the GPU when there is one (batches of 200).
Quick mode: D = 256 and 2 images of 16 × 16.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.conftest import allocated_mib, record, sync_if_cuda

pytest.importorskip("pytorch_fid")
from ncsn_fast.evaluation.frechet import frechet_distance  # noqa: E402
from ncsn_fast.evaluation.inception import InceptionFeatures, random_inception_state  # noqa: E402


@pytest.fixture(scope="module")
def gaussians(quick):
    d = 256 if quick else 2048
    rng = np.random.default_rng(0)
    out = []
    for shift in (0.0, 0.1):
        f = rng.normal(size=(d + 500, d)) @ (rng.normal(size=(d, d)) / np.sqrt(d)) + shift
        out += [f.mean(0), np.cov(f, rowvar=False)]
    return out


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_distance(benchmark, quick, gaussians, method):
    benchmark.group = "frechet-distance"
    value = benchmark.pedantic(lambda: frechet_distance(*gaussians, method=method), rounds=1 if quick else 3)
    benchmark.extra_info["fid"] = value
    record("frechet-distance", method, benchmark.stats.stats.mean, baseline="sqrtm")


def test_inception_features(benchmark, quick):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n, size = (2, 16) if quick else ((200, 32) if device == "cuda" else (16, 32))
    net = InceptionFeatures(random_inception_state(0)).to(device)
    x = torch.rand(n, 3, size, size, device=device)

    def call():
        net(x)
        sync_if_cuda(device)

    call()  # warm-up
    benchmark.group = "inception-features"
    benchmark.pedantic(call, rounds=1 if quick else 3)
    if not quick and device == "cpu":
        benchmark.extra_info["mib_allocated"] = round(allocated_mib(lambda: net(x)), 1)
    record("inception-features", "inception", benchmark.stats.stats.mean / n, unit="image", baseline="inception")
