"""Wall time per sample of the samplers on the bundled digits model (64 samples, one batch), at the budgets the
docs/sampling.md recommends: ALD's full schedule (246 evaluations, 0.89 confident), the recommended dpmpp_2m_sde at
25 (a tenth: 0.86 on 100 samples, 0.82 on 500), heun with churn 40 at 100 (0.93) and dpmpp_2m at 25 (deterministic,
0.50) — `python scripts/sampler_table.py digits` has every sampler at 10–100."""

from __future__ import annotations

import time

import pytest
import torch

from benchmarks.conftest import RESULTS
from ncsn_fast.pretrained import load_pretrained
from ncsn_fast.sampling import annealed_langevin, get_sampler, init_samples, prior_samples
from ncsn_fast.techniques import get_sigmas

# (label, sampler, NFE, options)
CASES = [
    ("ald-full", "ald", 246, {}),
    ("dpmpp_2m_sde", "dpmpp_2m_sde", 25, {}),
    ("heun-churn40", "heun", 100, {"churn": 40.0}),
    ("dpmpp_2m", "dpmpp_2m", 25, {}),
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
                sigmas = get_sigmas(cfg)[: 2 if quick else None]
                return annealed_langevin(model, x0, sigmas, 5, cfg.sampling.step_lr, generator=g)
            x0 = prior_samples(n, shape, smax, g).contiguous(memory_format=torch.channels_last)
            return get_sampler(name)(model.score, x0, 4 if quick else nfe, smax, smin, g, **options)

    benchmark.group = "samplers-digits"
    start = time.perf_counter()
    benchmark.pedantic(run, rounds=1, iterations=1)
    seconds = time.perf_counter() - start
    benchmark.extra_info.update(nfe=nfe, samples=n, seconds_per_sample=seconds / n)
    rows = RESULTS.setdefault("samplers-digits", {})
    rows[f"{label} (NFE {nfe})"] = {"per_sample": seconds / n}
    if label == "ald-full":
        rows["baseline"] = {"name": f"{label} (NFE {nfe})", "per_sample": seconds / n}
