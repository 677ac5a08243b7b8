"""The Sampling page's tables: every sampler at 10/15/25/50/100 evaluations on the 64-D Gaussian mixture (closed
form) and on the bundled digits model (judged by the tests' classifier), with a PNG grid per sampler at 25 NFE and
the comparison chart.

    python scripts/sampler_table.py gmm                     # 4000 samples per row, float64, seconds
    python scripts/sampler_table.py digits --n 100          # minutes; writes docs/samplers/*.png
    python scripts/sampler_table.py digits --n 500 --nfes 10 25 --only dpmpp_2m_sde dpmpp_2m_sde+c2   # + ALD
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ncsn_fast import techniques as T  # noqa: E402
from ncsn_fast.sampling import SAMPLERS, get_sampler, init_samples, prior_samples  # noqa: E402

NFES = (10, 15, 25, 50, 100)
# Rows beyond each sampler at its defaults: a corrector on the solvers ("+cK": K Langevin steps at the last level,
# out of the same budget), heun with churn.
VARIANTS = {
    "heun-churn40": ("heun", {"churn": 40.0}),
    "dpmpp_2m_sde+c2": ("dpmpp_2m_sde", {"corrector_steps": 2}),
    "dpmpp_3m_sde+c2": ("dpmpp_3m_sde", {"corrector_steps": 2}),
    "unipc+c2": ("unipc", {"corrector_steps": 2}),
    "ipndm+c2": ("ipndm", {"corrector_steps": 2}),
    "dpmpp_2m_sde-sn0.9": ("dpmpp_2m_sde", {"s_noise": 0.9}),
    "dpmpp_2m_sde-sn0.95": ("dpmpp_2m_sde", {"s_noise": 0.95}),
    "dpmpp_2m_sde-sn0.95-rho3": ("dpmpp_2m_sde", {"s_noise": 0.95, "rho": 3.0}),
    "ipndm-order3": ("ipndm", {"order": 3}),
}


def rows() -> dict[str, tuple[str, dict]]:
    return {name: (name, {}) for name in SAMPLERS} | VARIANTS


def gmm_table(n: int, only: list[str] | None = None, nfes: tuple[int, ...] = NFES) -> list[dict]:
    from tests.gmm import GaussianMixture

    gm = GaussianMixture(dim=64, weights=(0.2, 0.3, 0.5))
    sigma_1 = T.initial_sigma(gm.sample(20000, torch.Generator().manual_seed(1)))
    score = lambda x, s: gm.score_at(x, s.double())  # noqa: E731
    print(f"64-D mixture of 3 Gaussians (weights 0.2/0.3/0.5, std 1), σ1 = {sigma_1:.1f} (Technique 1), σ_L = 0.01, "
          f"{n} samples; errors are the worst over the 3 modes.\n")  # fmt: skip
    print("| sampler | NFE | weight error | mean error | std error | seconds |\n|---|---|---|---|---|---|")
    out_rows = []
    for label, (name, options) in rows().items():
        if only and label not in only:
            continue
        for nfe in nfes:
            g = torch.Generator().manual_seed(2)
            x0 = init_samples(n, (64,), g).double() if name == "ald" else prior_samples(n, (64,), sigma_1, g).double()
            t = time.time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    out = get_sampler(name)(score, x0, nfe, sigma_1, 0.01, torch.Generator().manual_seed(3), **options)
                except ValueError:
                    continue  # below this sampler's minimum budget
            rep = gm.report(out)
            row = {
                "sampler": label,
                "nfe": nfe,
                "weight_error": max(abs(a - b) for a, b in zip(rep["weight"], gm.weights.tolist(), strict=True)),
                "mean_error": max(rep["mean_err"]),
                "std_error": max(abs(s - 1.0) for s in rep["std"]),
                "seconds": time.time() - t,
            }
            out_rows.append(row)
            print(f"| {label} | {nfe} | {row['weight_error']:.3f} | {100 * row['mean_error']:.1f}% | "
                  f"{100 * row['std_error']:.1f}% | {row['seconds']:.1f} |", flush=True)  # fmt: skip
    return out_rows


def digits_table(
    n: int, outdir: Path, only: list[str] | None, nfes: tuple[int, ...] = NFES, seed: int = 0, processes: int = 1
) -> list[dict]:
    from ncsn_fast.evaluation.digits import digits_classifier, score_digit_samples
    from ncsn_fast.images import save_grid
    from ncsn_fast.sampling import SamplingPlan

    outdir.mkdir(parents=True, exist_ok=True)
    plans = [("ald, full schedule (L = 49, T = 5)", SamplingPlan(), 246)]  # the bar, in the same run
    for label, (name, options) in rows().items():
        if not only or label in only:
            plans += [(label, SamplingPlan(sampler=name, nfe=nfe, options=options), nfe) for nfe in nfes]
    out_rows = []
    jobs = [(label, plan, nfe, n, seed, processes > 1) for label, plan, nfe in plans]
    if processes > 1:  # one thread each, the rows spread over the cores (the same judge judges every row)
        import multiprocessing as mp

        with mp.get_context("fork").Pool(processes) as pool:
            results = pool.map(_run_row, jobs, chunksize=1)
    else:
        results = list(map(_run_row, jobs))
    clf = digits_classifier(16)  # after the rows: a forked worker never inherits a used OpenMP pool
    threads = 1 if processes > 1 else torch.get_num_threads()
    print(f"bundled digits model, {n} samples per row (seed {seed}), batch 100, {processes} process(es) × {threads} "
          f"thread(s); classifier held-out accuracy {clf[1]:.3f}\n")  # fmt: skip
    print("| sampler | NFE | confident (p ≥ 0.8) | smallest class share | ms per sample |\n|---|---|---|---|---|")
    for (label, _plan, nfe, *_), (images, ms) in zip(jobs, results, strict=True):
        if images is None:
            continue
        rep = score_digit_samples(images, classifier=clf)
        row = {"sampler": label, "nfe": nfe, "confident": rep.confident_fraction, "min_share": rep.min_class_share,
               "ms_per_sample": ms, "n": n, "seed": seed}  # fmt: skip
        out_rows.append(row)
        print(f"| {label} | {nfe} | {rep.confident_fraction:.3f} | {rep.min_class_share:.3f} | {ms:.0f} |", flush=True)
        if nfe in (25, 246):
            save_grid(images[:64], outdir / f"digits_{label.split(',')[0]}_nfe{nfe}.png", nrow=8)
    return out_rows


def _run_row(job: tuple) -> tuple[torch.Tensor | None, float]:
    """(images, ms per sample) of one table row; None for a budget below the sampler's minimum. ``single``: one
    thread (rows run in parallel processes)."""
    from ncsn_fast.pretrained import load_pretrained
    from ncsn_fast.sampling import sample_batches

    label, plan, nfe, n, seed, single = job
    if single:
        torch.set_num_threads(1)
    model, cfg = load_pretrained("digits")
    model = model.to(memory_format=torch.channels_last)  # as the CLI runs it
    plan.seed = seed
    t = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            images = torch.cat([b.images for b in sample_batches(model, cfg, plan, n, 100, progress=False)])
        except ValueError:
            return None, 0.0
    return images, 1000 * (time.time() - t) / n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["gmm", "digits"])
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--out", default="docs/samplers")
    p.add_argument("--only", nargs="*", help="only these rows (e.g. heun-churn40 dpmpp_2m_sde)")
    p.add_argument("--nfes", nargs="*", type=int, help=f"budgets (default {' '.join(map(str, NFES))})")
    p.add_argument("--seed", type=int, default=0, help="digits: the sampling seed of every row")
    p.add_argument("--processes", type=int, default=1, help="digits: rows in parallel, one thread each")
    a = p.parse_args()
    out = Path(a.out)
    if a.what == "gmm":
        result = gmm_table(a.n or 4000, a.only, tuple(a.nfes or NFES))
    else:
        result = digits_table(a.n or 100, out, a.only, tuple(a.nfes or NFES), a.seed, a.processes)
        from ncsn_fast.plotting import sampler_comparison_figure, save_figure

        fig = sampler_comparison_figure([r for r in result if r["nfe"] <= 100], "confident",
                                        "confident fraction of samples (classifier p ≥ 0.8)")  # fmt: skip
        fig.axes[0].axhline(next(r["confident"] for r in result if r["nfe"] == 246),
                            color="k", ls="--", lw=1, label="ald, full schedule (246 NFE)")  # fmt: skip
        fig.axes[0].legend(fontsize=8)
        save_figure(fig, out / "digits_samplers.png")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.what}_table.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
