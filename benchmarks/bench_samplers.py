"""Wall time per sample of each sampler on the bundled digits model, at the NFE where it matches the quality
of ALD's full schedule (the classifier figures of `python scripts/sampler_table.py digits`, README)."""

from __future__ import annotations

import time

import pytest
import torch

from benchmarks.conftest import RESULTS
from ncsn_fast.pretrained import load_pretrained
from ncsn_fast.sampling import annealed_langevin, get_sampler, init_samples, prior_samples
from ncsn_fast.techniques import get_sigmas

# (sampler, NFE): ALD's full schedule, and each other sampler at the smallest NFE of the README table whose
# confident fraction is at least ALD's.
CASES = [("ald-full", 246), ("heun", 50), ("cas", 50), ("pc", 100)]


@pytest.fixture(scope="module")
def bundled():
    return load_pretrained("digits")


@pytest.mark.parametrize("name,nfe", CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_sampler_time_per_sample(benchmark, bundled, quick, name, nfe):
    model, cfg = bundled
    n = 4 if quick else 64
    shape = (1, cfg.data.image_size, cfg.data.image_size)
    smax, smin = cfg.model.sigma_begin, cfg.model.sigma_end

    def run():
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            if name == "ald-full":
                x0 = init_samples(n, shape, g)
                return annealed_langevin(model, x0, get_sigmas(cfg), 5, cfg.sampling.step_lr, generator=g)
            x0 = prior_samples(n, shape, smax, g)
            return get_sampler(name)(model.score, x0, nfe, smax, smin, g)

    benchmark.group = "samplers-digits"
    start = time.perf_counter()
    benchmark.pedantic(run, rounds=1, iterations=1)
    seconds = time.perf_counter() - start
    benchmark.extra_info.update(nfe=nfe, samples=n, seconds_per_sample=seconds / n)
    rows = RESULTS.setdefault("samplers-digits", {})
    rows[f"{name} (NFE {nfe})"] = {"per_sample": seconds / n}
    if name == "ald-full":
        rows["baseline"] = {"name": f"{name} (NFE {nfe})", "per_sample": seconds / n}
