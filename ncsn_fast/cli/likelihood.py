"""`ncsn-fast likelihood`: bits/dim of held-out images by the probability-flow ODE (flags over
:mod:`ncsn_fast.evaluation.likelihood`)."""

from __future__ import annotations

import argparse
from typing import Any

from ncsn_fast.cli import common


def register(sub: Any) -> None:
    p = sub.add_parser(
        "likelihood",
        help="bits/dim of held-out images by the probability-flow ODE (score_sde's dequantisation convention)",
    )
    common.add_model_args(p)
    p.add_argument("--data", help="dataset folder (the config's dataset, its test split); the digits need none: "
                   "their fixed held-out 297 of 1797 (seed 0)")  # fmt: skip
    p.add_argument("--n", "--num-samples", dest="n", type=int,
                   help="use the first N held-out images (default: all); --num-samples under torchrun")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=100, help="images per ODE solve")
    p.add_argument(
        "--divergence",
        default="hutchinson",
        choices=["hutchinson", "exact"],
        help="Hutchinson–Skilling with --probes Rademacher probes, or exact (one backward per dimension)",
    )
    p.add_argument("--probes", type=int, default=4, help="Hutchinson probes per image (≥ 2: their spread is the SE)")
    p.add_argument("--rtol", type=float, default=1e-5, help="dopri5 relative tolerance")
    p.add_argument("--atol", type=float, default=1e-5, help="dopri5 absolute tolerance")
    p.add_argument("--seed", type=int, default=0, help="dequantisation noise and probes")
    p.add_argument("--out", default="likelihood.json", help="JSON file: per-image bits/dim, the mean, the protocol")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run_likelihood, flag_names={"n_probes": "--probes"})


def run_likelihood(args: argparse.Namespace) -> int:
    for flag in ("n", "batch_size"):
        common.positive_int("--" + flag.replace("_", "-"), getattr(args, flag))
    common.positive_int("--probes", args.probes, 2)
    common.positive_int("--seed", args.seed, 0)
    for flag in ("rtol", "atol"):
        common.positive_float("--" + flag, getattr(args, flag))
    out = common.check_output_file("--out", args.out, ".json")
    device = common.check_device("--device", args.device)
    from ncsn_fast import distributed

    with distributed.process_group() as ranks:
        return _run(args, out, distributed.local_device(device, ranks), ranks)  # torchrun: batches over ranks


def _run(args: argparse.Namespace, out, device, ranks) -> int:
    from ncsn_fast.evaluation.likelihood import dataset_likelihood, digits_split, gaussian_bpd
    from ncsn_fast.io import write_json

    model, cfg = common.load_model(args, device)
    baseline = None
    if cfg.data.dataset.upper() == "DIGITS":
        train, data = digits_split(cfg.data.image_size)
        what = f"scikit-learn digits, held-out {len(data)} of 1797 (seed 0; the bundled model saw all 1797)"
    else:
        from ncsn_fast.data import build_dataset

        train, data = None, build_dataset(cfg, args.data, split="test")
        what = f"{cfg.data.dataset} test split"
    res = dataset_likelihood(
        model, cfg, data, n=args.n, batch_size=args.batch_size, divergence=args.divergence, n_probes=args.probes,
        rtol=args.rtol, atol=args.atol, seed=args.seed, device=device, progress=not args.quiet and ranks.is_main,
        ranks=ranks,
    )  # fmt: skip
    if not ranks.is_main:  # every rank holds the figures; rank 0 reports and writes them
        return 0
    n = len(res.bpd)
    print(f"{res.mean_bpd:.4f} bits/dim ± {res.sem_bpd:.4f} (SE over {n} images; {what})  NFE {res.nfe}, "
          f"{res.seconds:.1f} s")  # fmt: skip
    if train is not None:
        baseline = gaussian_bpd(cfg, train, data[:n], seed=args.seed)
        print(f"{float(baseline.mean()):.4f} bits/dim: a full-covariance Gaussian fitted on the other {len(train)}")
    print(f"convention: {res.protocol['convention']}; transform {res.protocol['transform']}")
    record = {
        "bpd": res.mean_bpd, "sem": res.sem_bpd, "n": n, "nfe": res.nfe, "seconds": res.seconds, "data": what,
        "ckpt": args.ckpt or "bundled digits", "per_image_bpd": res.bpd.tolist(),
        "per_image_stderr": res.stderr.tolist(), "protocol": res.protocol,
    }  # fmt: skip
    if baseline is not None:
        record["gaussian_bpd"] = float(baseline.mean())
    write_json(out, record)
    print(f"wrote {out}")
    return 0
