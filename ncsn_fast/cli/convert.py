"""`ncsn-fast convert`: a checkpoint (official or ncsn-fast, .pth or .safetensors, a save_pretrained folder or a
training workdir) → a save_pretrained folder: config.yaml (official schema) and model.safetensors (EMA weights),
no pickle; prints which weights went where."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ncsn_fast.cli import common


def register(sub: Any) -> None:
    c = sub.add_parser(
        "convert",
        help="checkpoint → save_pretrained folder (config.yaml + model.safetensors, no pickle)",
        description="Convert a checkpoint to a folder that from_pretrained, --ckpt and the diffusers pipeline read "
        "without pickle: config.yaml (the official schema) and model.safetensors (the EMA weights).",
    )
    c.add_argument(
        "ckpt",
        metavar="CKPT",
        help="official or ncsn-fast checkpoint (.pth), .safetensors file, save_pretrained folder, or training "
        "workdir (its sampling.ckpt_id checkpoint, else the latest)",
    )
    c.add_argument("--config", help="preset or YAML file (default: the checkpoint's own, or a run folder's config.yml)")
    c.add_argument("--out", required=True, help="output folder (created; files of the same names are replaced)")
    c.add_argument("--raw", action="store_true", help="also write the raw (non-EMA) weights to model_raw.safetensors")
    c.add_argument(
        "--adopt-schedule",
        action="store_true",
        help="when the checkpoint's σ schedule differs from the config's, write the checkpoint's (default: refuse)",
    )
    c.set_defaults(run=run, flag_names={"checkpoint": "CKPT", "ckpt": "CKPT", "directory": "--out"})


def run(args: argparse.Namespace) -> int:
    if not os.path.exists(args.ckpt):
        raise common.CommandError(f"CKPT: no such file or folder {args.ckpt!r}")
    out = common.check_output_dir("--out", args.out)
    from ncsn_fast.pretrained import convert

    result = convert(args.ckpt, out, config=args.config, raw=args.raw, adopt_schedule=args.adopt_schedule)
    for line in result.report():
        print(line)
    return 0
