"""`ncsn-fast tune-schedule`: a noise schedule tuned to the model by Align Your Steps
(:func:`ncsn_fast.sampling.tuning.align_your_steps`), stored beside its weights (:func:`save_tuned_schedule`)."""

from __future__ import annotations

import argparse
from typing import Any

from ncsn_fast.cli import common
from ncsn_fast.cli.common import CommandError

DATA_MAX = 2048  # training images drawn from (a random subset of) the dataset


def register(sub: Any) -> None:
    s = sub.add_parser(
        "tune-schedule",
        help="tune a noise schedule to the model (Align Your Steps) and store it beside the weights",
    )
    common.add_model_args(s)
    s.add_argument(
        "--nfe",
        type=int,
        required=True,
        help="number of noise levels σ_max … σ_min: the sampler's steps (its evaluations less any "
        "corrector steps; heun: (nfe + 1)/2)",
    )
    s.add_argument("--solver", default="sde", choices=["sde", "ode"], help="sampler family (default sde: the KLUB)")
    s.add_argument("--data", help="dataset folder (not needed for digits)")
    s.add_argument(
        "--init", default="karras", choices=["karras", "geometric"], help="starting schedule (default karras)"
    )
    s.add_argument("--iterations", type=int, default=4, help="at most this many rounds of coordinate descent (4)")
    s.add_argument("--samples", type=int, default=16, help="Monte Carlo draws per candidate σ (default 16)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(run=run, flag_names={"data_root": "--data", "data": "--data"})


def _check_args(args: argparse.Namespace) -> None:
    common.positive_int("--nfe", args.nfe, 3)  # 2 levels are σ_max and σ_min: nothing to tune
    common.positive_int("--iterations", args.iterations)
    common.positive_int("--samples", args.samples)
    common.positive_int("--seed", args.seed, 0)
    if args.data is not None:
        from pathlib import Path

        if not Path(args.data).is_dir():
            raise CommandError(f"--data: no such folder {args.data!r}")


def _training_data(cfg: Any, root: str | None, seed: int) -> Any:
    """Up to DATA_MAX training images (a seeded random subset) in the model's data space."""
    import torch

    from ncsn_fast.data import build_dataset, data_transform, first_item

    dataset = build_dataset(cfg, data_root=root)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[:DATA_MAX].tolist()
    x = torch.stack([first_item(dataset[i]) for i in idx]).float()
    return data_transform(cfg, x, generator=g)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    device = common.check_device("--device", args.device)
    import torch

    from ncsn_fast.sampling.tuning import align_your_steps, save_tuned_schedule, schedules_path

    out = schedules_path(args.ckpt)
    # the schedules file beside the weights must be writable: checked before any work
    common.check_output_file("--ckpt" if args.ckpt else "--ckpt (default: the bundled model's folder)", out)
    model, cfg = common.load_model(args, device)
    data = _training_data(cfg, args.data, args.seed).to(device)
    sigma_max, sigma_min = float(cfg.model.sigma_begin), float(cfg.model.sigma_end)
    info: dict = {}
    sigmas = align_your_steps(
        model, data, args.nfe, sigma_max, sigma_min, solver=args.solver, iterations=args.iterations,
        samples=args.samples, init=args.init, generator=torch.Generator().manual_seed(args.seed),
        progress=not args.quiet, info=info,
    )  # fmt: skip
    record = {
        "method": "align_your_steps" if args.solver == "sde" else "ode proxy (ncsn_fast.sampling.tuning)",
        "init": args.init,
        "seed": args.seed,
        "data": f"{cfg.data.dataset} ({len(data)} training images)",
        "iterations": info["iterations"],
        "samples": args.samples,
        "objective_init": round(info["objective_init"], 6),
        "objective": round(info["objective"], 6),
        "evaluations": info["evaluations"],
    }
    path = save_tuned_schedule(args.ckpt, sigmas, solver=args.solver, ema=not args.no_ema, info=record)
    print("σ: " + ", ".join(f"{v:.6g}" for v in sigmas.tolist()))
    print(
        f"objective ({'KLUB' if args.solver == 'sde' else 'ODE proxy'}) {info['objective_init']:.4g} ({args.init}) → "
        f"{info['objective']:.4g}; {info['iterations']} rounds ({info['stopped']}), {info['evaluations']} images "
        "through the network"
    )
    print(f"stored in {path} (solver {args.solver}, nfe {args.nfe}, σ {sigma_max:g} … {sigma_min:g})")
    return 0
