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

# (label, sampler, NFE, options): ALD's full schedule (0.89 of samples confident in the README's digits table),
# and each other sampler at the smallest NFE of that table within 0.05 of it with every class ≥ 4%
# (`python scripts/sampler_table.py digits`): heun with churn 40 at 50 (0.90), cas and pc at 250 (0.85).
CASES = [
    ("ald-full", "ald", 246, {}),
    ("heun-churn40", "heun", 50, {"churn": 40.0}),
    ("cas", "cas", 250, {}),
    ("pc", "pc", 250, {}),
]


@pytest.fixture(scope="module")
def bundled():
    return load_pretrained("digits")


@pytest.mark.parametrize("label,name,nfe,options", CASES, ids=[c[0] for c in CASES])
def test_sampler_time_per_sample(benchmark, bundled, quick, label, name, nfe, options):
    model, cfg = bundled
    model = model.to(memory_format=torch.channels_last)
    n = 4 if quick else 64
    shape = (1, cfg.data.image_size, cfg.data.image_size)
    smax, smin = cfg.model.sigma_begin, cfg.model.sigma_end

    def run():
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            if label == "ald-full":
                x0 = init_samples(n, shape, g).contiguous(memory_format=torch.channels_last)
                return annealed_langevin(model, x0, get_sigmas(cfg), 5, cfg.sampling.step_lr, generator=g)
            x0 = prior_samples(n, shape, smax, g).contiguous(memory_format=torch.channels_last)
            return get_sampler(name)(model.score, x0, nfe, smax, smin, g, **options)

    benchmark.group = "samplers-digits"
    start = time.perf_counter()
    benchmark.pedantic(run, rounds=1, iterations=1)
    seconds = time.perf_counter() - start
    benchmark.extra_info.update(nfe=nfe, samples=n, seconds_per_sample=seconds / n)
    rows = RESULTS.setdefault("samplers-digits", {})
    rows[f"{label} (NFE {nfe})"] = {"per_sample": seconds / n}
    if label == "ald-full":
        rows["baseline"] = {"name": f"{label} (NFE {nfe})", "per_sample": seconds / n}
