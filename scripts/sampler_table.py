"""Accuracy against score evaluations (NFE) for every sampler, as Markdown tables for the README.

python scripts/sampler_table.py gmm                  # 64-D Gaussian mixture, closed-form score
python scripts/sampler_table.py digits [--out docs]  # the bundled digits model, classifier figures + grids
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ncsn_fast import techniques as T  # noqa: E402
from ncsn_fast.sampling import annealed_langevin, get_sampler, init_samples, prior_samples  # noqa: E402

NFES = (25, 50, 100, 250)
SAMPLERS = ("ald", "cas", "pc", "heun")
# extra rows for the digits model: (label, sampler, options)
VARIANTS = {"heun-churn40": ("heun", {"churn": 40.0})}


def gmm_table(n: int) -> None:
    from tests.gmm import GaussianMixture

    gm = GaussianMixture(dim=64, weights=(0.2, 0.3, 0.5))
    sigma_1 = T.initial_sigma(gm.sample(20000, torch.Generator().manual_seed(1)))
    L = T.num_noise_levels(sigma_1, 0.01, 64)
    score = lambda x, s: gm.score_at(x, s.double())  # noqa: E731

    def row(name: str, nfe: int, out: torch.Tensor, seconds: float) -> None:
        rep = gm.report(out)
        w = max(abs(a - b) for a, b in zip(rep["weight"], gm.weights.tolist(), strict=True))
        print(
            f"| {name} | {nfe} | {w:.3f} | {100 * max(rep['mean_err']):.1f}% "
            f"| {100 * max(abs(s - 1) for s in rep['std']):.1f}% | {seconds:.1f} |"
        )

    print(f"64-D mixture of 3 Gaussians (weights 0.2/0.3/0.5, std 1), σ1 = {sigma_1:.1f} (Technique 1), σ_L = 0.01,")
    print(f"{n} samples; errors are the worst over the 3 modes.\n")
    print("| sampler | NFE | weight error | mean error | std error | seconds |")
    print("|---|---|---|---|---|---|")
    eps = T.langevin_step_lr(T.geometric_ratio(sigma_1, 0.01, L), 0.01, 100)
    sig = torch.tensor([sigma_1 * T.geometric_ratio(sigma_1, 0.01, L) ** -i for i in range(L)], dtype=torch.float64)
    t = time.time()
    x0 = init_samples(n, (64,), torch.Generator().manual_seed(2)).double()
    out = annealed_langevin(
        lambda x, y: score(x, sig[y]), x0, sig, 100, eps, generator=torch.Generator().manual_seed(3)
    )
    row(f"ald, T = 100, L = {L} (Techniques 1–4)", L * 100 + 1, out, time.time() - t)
    for name in SAMPLERS:
        for nfe in NFES:
            g = torch.Generator().manual_seed(2)
            x0 = init_samples(n, (64,), g) if name == "ald" else prior_samples(n, (64,), sigma_1, g)
            t = time.time()
            out = get_sampler(name)(score, x0.double(), nfe, sigma_1, 0.01, torch.Generator().manual_seed(3))
            row(name, nfe, out, time.time() - t)


def digits_table(n: int, outdir: Path, only: list[str] | None = None) -> None:
    from torchvision.utils import save_image

    from ncsn_fast.evaluation.digits import digits_classifier, score_digit_samples
    from ncsn_fast.pretrained import load_pretrained
    from ncsn_fast.techniques import get_sigmas

    model, cfg = load_pretrained("digits")
    model = model.to(memory_format=torch.channels_last)  # as the CLI runs it
    clf = digits_classifier(16)
    smax, smin = cfg.model.sigma_begin, cfg.model.sigma_end
    outdir.mkdir(parents=True, exist_ok=True)
    print(f"bundled digits model, {n} samples per row; classifier held-out accuracy on real digits {clf[1]:.3f}\n")
    print("| sampler | NFE | confident (p ≥ 0.8) | smallest class share | seconds |")
    print("|---|---|---|---|---|")

    def row(name: str, nfe: int, out: torch.Tensor, seconds: float) -> None:
        rep = score_digit_samples(out.clamp(0, 1), classifier=clf)
        print(f"| {name} | {nfe} | {rep.confident_fraction:.3f} | {rep.min_class_share:.3f} | {seconds:.1f} |")

    sigmas = get_sigmas(cfg)
    if not only:
        t = time.time()
        x0 = init_samples(n, (1, 16, 16), torch.Generator().manual_seed(0)).contiguous(
            memory_format=torch.channels_last
        )
        out = annealed_langevin(model, x0, sigmas, 5, cfg.sampling.step_lr, generator=torch.Generator().manual_seed(1))
        row("ald, full schedule (L = 49, T = 5)", 49 * 5 + 1, out, time.time() - t)
        save_image(out[:64].clamp(0, 1), outdir / "digits_ald_full.png", nrow=8, padding=1)
    rows = {name: (name, {}) for name in SAMPLERS} | VARIANTS
    for label, (name, options) in rows.items():
        if only and label not in only:
            continue
        for nfe in NFES:
            g = torch.Generator().manual_seed(0)
            x0 = init_samples(n, (1, 16, 16), g) if name == "ald" else prior_samples(n, (1, 16, 16), smax, g)
            x0 = x0.contiguous(memory_format=torch.channels_last)
            t = time.time()
            with torch.no_grad():
                out = get_sampler(name)(model.score, x0, nfe, smax, smin, torch.Generator().manual_seed(1), **options)
            row(label, nfe, out, time.time() - t)
            if nfe == 50:
                save_image(out[:64].clamp(0, 1), outdir / f"digits_{label}_nfe50.png", nrow=8, padding=1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["gmm", "digits"])
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--out", default="docs")
    p.add_argument("--only", nargs="*", help="digits: only these rows (e.g. heun-churn40)")
    a = p.parse_args()
    if a.what == "gmm":
        gmm_table(a.n or 4000)
    else:
        digits_table(a.n or 100, Path(a.out), a.only)


if __name__ == "__main__":
    main()
