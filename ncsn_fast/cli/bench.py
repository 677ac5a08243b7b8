"""`ncsn-fast bench table6`: the paper's Table 6 beside this machine (Markdown, JSON and a PNG chart)."""

from __future__ import annotations

import argparse
from typing import Any

from ncsn_fast.cli import common
from ncsn_fast.vocab import PRECISION_NAMES


def register(sub: Any) -> None:
    b = sub.add_parser("bench", help="benchmarks a user can run: `bench table6` (paper Table 6 side by side)")
    bsub = b.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    t6 = bsub.add_parser("table6", help="sampling and training time per dataset beside the paper's Table 6")
    t6.add_argument("--device", default="cpu", help="cpu or cuda")
    t6.add_argument("--datasets", help="comma-separated subset of cifar10,celeba,church,bedroom,tower,ffhq")
    t6.add_argument("--precision", default="fp32", choices=list(PRECISION_NAMES))
    t6.add_argument("--quick", action="store_true", help="batch 1 and one timed call per figure (minutes on a CPU)")
    t6.add_argument("--k", type=int, help="timed calls per figure (default 3, quick 1)")
    t6.add_argument("--out", default="table6", help="folder for table6.json, table6.md and table6.png")
    t6.add_argument("--quiet", action="store_true")
    t6.set_defaults(run=run_table6)


def run_table6(args: argparse.Namespace) -> int:
    import time
    from dataclasses import asdict

    from ncsn_fast import table6 as t6

    common.positive_int("--k", args.k)
    datasets = [d.strip() for d in (args.datasets or ",".join(t6.PAPER)).split(",") if d.strip()]
    unknown = [d for d in datasets if d not in t6.PAPER]
    if unknown or not datasets:
        raise common.CommandError(f"--datasets: unknown {unknown or args.datasets!r}; choose from {','.join(t6.PAPER)}")
    out = common.check_output_dir("--out", args.out)
    device = common.check_device("--device", args.device)
    rows = t6.table6(datasets, device, args.precision, args.quick, args.k, progress=not args.quiet)
    table = t6.format_table(rows)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    note = f"{stamp}; `ncsn-fast bench table6 --device {args.device} --precision {args.precision}"
    note += " --quick`" if args.quick else "`"
    print(table)  # the result first: nothing below can lose it
    from ncsn_fast.io import Staged, atomic_write, write_json
    from ncsn_fast.plotting import save_figure, table6_figure

    text = f"{note}\n\n{table}\n".encode()
    with Staged() as stage:  # the three files replace an earlier run's together, only once all are written
        atomic_write(stage.path(out / "table6.md"), lambda f: f.write(text))
        write_json(stage.path(out / "table6.json"), {"when": stamp, "rows": [asdict(r) for r in rows]})
        save_figure(table6_figure(rows), stage.path(out / "table6.png"))
    print(f"\n{note}; wrote {out}/table6.md, table6.json, table6.png")
    return 0
