"""`ncsn-fast configure`: Techniques 1, 2 and 4 for a dataset (σ1, γ, L, ε) and the config that uses them."""

from __future__ import annotations

import argparse
from typing import Any

from ncsn_fast.cli import common


def register(sub: Any) -> None:
    c = sub.add_parser("configure", help="Techniques 1, 2, 4: σ1, γ, L and ε for a dataset; write a config")
    c.add_argument("data", metavar="DATA_OR_PRESET", help="a preset (digits offline) or a .pt/.npy array (N, C, H, W)")
    c.add_argument("--data", dest="data_root", help="dataset folder for a preset other than digits")
    c.add_argument("--steps-each", type=int, help="T, Langevin steps per level (default: the preset's)")
    c.add_argument("--sigma-end", type=float, default=0.01, help="σ_L (default 0.01, as the paper)")
    c.add_argument("--out", help="write the config YAML here")
    c.set_defaults(run=run, flag_names={"data": "DATA"})


def run(args: argparse.Namespace) -> int:
    common.positive_int("--steps-each", args.steps_each)
    common.positive_float("--sigma-end", args.sigma_end)
    out = common.check_output_file("--out", args.out) if args.out else None
    from ncsn_fast.configure import configure

    result = configure(args.data, args.sigma_end, args.steps_each, args.data_root)
    for line in result.report():
        print(line)
    if out is not None:
        from ncsn_fast.io import atomic_write

        text = result.config.to_yaml().encode()
        atomic_write(out, lambda f: f.write(text))
        print(f"wrote {out} (use it as --config {out})")
    return 0
