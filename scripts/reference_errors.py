"""Print the relative errors of ncsn-fast against the official implementation's vectors (../shared/reference).

python scripts/reference_errors.py [REFERENCE_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import ncsn_fast as nf
from ncsn_fast.sampling import annealed_langevin


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def main() -> None:
    root = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1].parent / "shared" / "reference"
    )
    print("| case | model | forward | forward (EMA) | DSM loss | Langevin (3 levels, denoised) |")
    print("|---|---|---|---|---|---|")
    for folder in sorted(p for p in root.iterdir() if (p / "vectors.pt").is_file()):
        cfg = nf.load_config(folder / "config.yml")
        v = torch.load(folder / "vectors.pt", weights_only=True)
        model = nf.build_model(cfg).eval()
        nf.load_checkpoint(model, folder / "checkpoint.pth", ema=False)
        with torch.no_grad():
            fwd = rel(model(v["forward_x"], v["forward_labels"]), v["forward_out"])
            loss = rel(
                nf.dsm_loss(model, v["dsm_samples"], nf.get_sigmas(cfg), v["dsm_labels"], v["dsm_unit_noise"]),
                v["dsm_loss"],
            )
        g = torch.Generator().manual_seed(int(v["langevin_rng_seed"]))
        out = annealed_langevin(
            model,
            v["langevin_x0"],
            v["langevin_sigmas"],
            int(v["langevin_n_steps_each"]),
            float(v["langevin_step_lr"]),
            generator=g,
            backend="torch",
        )
        ald = rel(out, v["langevin_out_denoised"])
        nf.load_checkpoint(model, folder / "checkpoint.pth", ema=True)
        with torch.no_grad():
            ema = rel(model(v["forward_x"], v["forward_labels"]), v["forward_out_ema"])
        print(f"| {folder.name} | {type(model).__name__} | {fwd:.1e} | {ema:.1e} | {loss:.1e} | {ald:.1e} |")


if __name__ == "__main__":
    main()
