"""`ncsn-fast train` (and `python -m ncsn_fast.cli train …` under torchrun): the training loop of
:func:`ncsn_fast.train.train` with its arguments as flags."""

from __future__ import annotations

import argparse
from typing import Any

from ncsn_fast.cli import common
from ncsn_fast.vocab import PRECISION_NAMES


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", required=True, help="preset name or YAML path")
    p.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, loss.png and sample grids go here")
    p.add_argument("--data", help="dataset folder (not needed for the digits preset)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR-10 / CelebA")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --workdir")
    p.add_argument("--init", help="start from this checkpoint's weights (official, ncsn-fast or safetensors)")
    p.add_argument(
        "--adopt-schedule", action="store_true", help="with --init: use the checkpoint's σ schedule if it differs"
    )
    p.add_argument("--compile", dest="compile", action="store_true", default=None, help="torch.compile (GPU default)")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--precision", default="fp32", choices=list(PRECISION_NAMES))
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the local GPU, else the CPU)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (default: n_iters)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (all processes together)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--snapshot-every", type=int, default=None, help="default: the config's training.snapshot_freq")
    p.add_argument("--keep", type=int, default=3, help="keep the last K checkpoints")
    p.add_argument("--quiet", action="store_true")
    return p


def register(sub: Any) -> None:
    t = add_arguments(sub.add_parser("train", help="train a model (the digits preset works offline)"))
    t.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    for name in ("max_steps", "batch_size", "log_every", "snapshot_every", "keep"):
        common.positive_int("--" + name.replace("_", "-"), getattr(args, name))
    common.positive_int("--seed", args.seed, 0)
    if args.device is not None:
        common.check_device("--device", args.device)
    workdir = Path(args.workdir)
    if workdir.exists() and not workdir.is_dir():
        raise common.CommandError(f"--workdir: {args.workdir!r} exists and is a file, not a folder")
    common.check_output_dir("--workdir", workdir)
    if args.resume and args.init:
        raise common.CommandError("--resume and --init cannot be combined: resume continues a run, init starts one")
    from ncsn_fast.config import load_config
    from ncsn_fast.train import existing_run, train

    held = existing_run(workdir) if not args.resume else None
    if held is not None:  # train() refuses too; here before the config and the data are read
        raise common.CommandError(
            f"--workdir: {args.workdir!r} already holds a run ({held}); continue it with --resume, or give another "
            "--workdir"
        )

    cfg = load_config(args.config)
    if args.batch_size:
        cfg.training.batch_size = args.batch_size
    if args.init:
        common.check_input_file("--init", args.init) if not Path(args.init).is_dir() else None
        from ncsn_fast.checkpoint import read_checkpoint

        read_checkpoint(args.init)  # a bad --init fails here, before any data is read
    args.kept = _Kept(workdir)
    summary = train(
        cfg, workdir, args.max_steps, args.seed, args.resume, args.log_every, args.snapshot_every,
        keep=args.keep, data_root=args.data, download=args.download, precision=args.precision,
        compile=args.compile, device=args.device, init=args.init, quiet=args.quiet,
        adopt_schedule=args.adopt_schedule,
    )  # fmt: skip
    losses = summary["losses"]
    tail = f", last loss {losses[-1]:.4g}" if losses else ""
    print(f"trained to step {summary['step']} in {summary['wall_s']:.0f} s{tail}; workdir {workdir}")
    return 0


class _Kept:
    """What a Ctrl-C leaves, said when it comes: the workdir's checkpoints, or nothing (a run that saved none
    removes what it made)."""

    def __init__(self, workdir: Any) -> None:
        self.workdir = workdir

    def __str__(self) -> str:
        from ncsn_fast.train import latest_checkpoint

        newest = latest_checkpoint(self.workdir)
        return f"the checkpoints in {self.workdir} are kept, newest {newest.name} (continue with --resume)" if newest \
            else "nothing written"  # fmt: skip
