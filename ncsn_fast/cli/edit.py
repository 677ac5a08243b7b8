"""`ncsn-fast sample`'s image editing: SDEdit (``--init-image``, ``--strength``) and the linear inverse problems
beside ``--inpaint``: colorization (``--colorize``) and super-resolution (``--super-resolve``, ``--factor``).

Every input is checked before the network runs once and before anything is written: one line naming the flag."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ncsn_fast.cli import common
from ncsn_fast.cli.common import CommandError

MODES = (("--inpaint", "inpaint"), ("--interpolate", "interpolate"), ("--init-image", "init_image"),
         ("--colorize", "colorize"), ("--super-resolve", "super_resolve"))  # fmt: skip
DEFAULT_STRENGTH = 0.5


def register(s: Any) -> None:
    s.add_argument(
        "--init-image",
        dest="init_image",
        metavar="IMAGE",
        help="SDEdit: IMAGE (PNG, JPEG or .pt, in "
        "[0, 1]) perturbed to --strength, then sampled down (default --nfe 100, the recommended sampler)",
    )
    s.add_argument(
        "--strength",
        type=float,
        help=f"SDEdit strength S in (0, 1] (default {DEFAULT_STRENGTH}): "
        "σ_start = σ_min·(σ_max/σ_min)^S on the model's schedule (SDEdit's t0 on the VE SDE)",
    )
    s.add_argument(
        "--colorize",
        metavar="IMAGE",
        help="grayscale IMAGE kept as the samples' channel mean, the colour "
        "sampled (RGB models; an RGB IMAGE is averaged)",
    )
    s.add_argument(
        "--super-resolve",
        dest="super_resolve",
        metavar="IMAGE",
        help="low-resolution IMAGE kept as the samples' K×K block means (--factor K; IMAGE is the model's size / K)",
    )
    s.add_argument("--factor", type=int, help="--super-resolve: the upsampling factor K")  # fmt: skip


def check_args(args: argparse.Namespace) -> None:
    """The flags alone (no model, no file read): modes one at a time, strength and factor in range, files present."""
    given = [flag for flag, dest in MODES if getattr(args, dest) is not None]
    if len(given) > 1:
        raise CommandError(f"{given[0]} and {given[1]} cannot be combined")
    if args.strength is not None:
        if args.init_image is None:
            raise CommandError("--strength: goes with --init-image (SDEdit)")
        if not 0 < args.strength <= 1:
            raise CommandError(f"--strength: must be in (0, 1], got {args.strength:g}")
    if (args.super_resolve is None) != (args.factor is None):
        raise CommandError("--super-resolve and --factor go together: give both or neither")
    common.positive_int("--factor", args.factor)
    for flag, dest in MODES[2:]:
        common.check_input_file(flag, getattr(args, dest))
        if getattr(args, dest) is not None and args.data_init:
            raise CommandError(f"--data-init: not with {flag} (the start is the input or the prior)")
    if args.init_image is not None and args.every is not None:
        raise CommandError("--every: not with --init-image (SDEdit runs a budget sampler from σ_start: use --nfe)")
    if args.init_image is not None and args.sampler is None and args.nfe is None:
        args.nfe = 100  # SDEdit runs a budget sampler from σ_start: the one recommended for 100 evaluations


def _channels(image: Any, channels: int, flag: str) -> Any:
    if image.shape[0] == channels:
        return image
    if image.shape[0] == 3 and channels == 1:
        return image.mean(0, keepdim=True)
    if image.shape[0] == 1 and channels == 3:
        return image.expand(3, -1, -1)
    raise CommandError(f"{flag}: image has {image.shape[0]} channels, the model {channels}")


def load_inputs(args: argparse.Namespace, cfg: Any) -> tuple[str, Any]:
    """(mode, the observed image in [0, 1]): SDEdit's and colorization's at the model's size (short side resized,
    centre cropped, as the data pipeline); super-resolution's exactly the model's size / K."""
    from ncsn_fast.images import read_image, resize_center_crop

    size, channels = cfg.data.image_size, cfg.data.channels
    if args.init_image is not None:
        image = resize_center_crop(read_image(args.init_image, "--init-image"), size)
        return "sdedit", _channels(image, channels, "--init-image")
    if args.colorize is not None:
        if channels != 3:
            raise CommandError(f"--colorize: needs an RGB model, this one has {channels} channel(s)")
        image = resize_center_crop(read_image(args.colorize, "--colorize"), size)
        return "colorize", image.mean(0, keepdim=True)
    k = args.factor
    if size % k:
        raise CommandError(f"--factor: {k} does not divide the model's image size {size}")
    image = _channels(read_image(args.super_resolve, "--super-resolve"), channels, "--super-resolve")
    if tuple(image.shape[1:]) != (size // k, size // k):
        raise CommandError(
            f"--super-resolve: image is {tuple(image.shape[1:])}, the model's {size}×{size} at --factor {k} needs "
            f"({size // k}, {size // k})"
        )
    return "super_resolve", image


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(b, min(batch_size, n - b * batch_size)) for b in range(-(-n // batch_size))]


def run(
    args: argparse.Namespace, model: Any, cfg: Any, r: Any, out: Path, batch_size: int, write: Callable[..., None]
) -> int:
    import torch
    import torch.nn.functional as F

    from ncsn_fast.data import data_transform, inverse_data_transform
    from ncsn_fast.sampling import init_samples, prior_samples, sdedit, strength_sigma
    from ncsn_fast.sampling.generate import batch_seed, check_data_range
    from ncsn_fast.sampling.inverse import BoxDownsample, Grayscale, langevin_solve, solve

    mode, image = load_inputs(args, cfg)
    device = next(model.parameters()).device
    size, channels = cfg.data.image_size, cfg.data.channels
    shape = (channels, size, size)
    p = r.plan
    rt = {"precision": p.precision, "backend": p.backend}
    sigma_max, sigma_min = float(cfg.model.sigma_begin), float(cfg.model.sigma_end)
    options = dict(p.options)
    if p.budget and p.sampler == "ald":
        options.update(n_steps_each=r.n_steps_each, step_lr=p.step_lr, denoise=r.denoise)
    elif p.denoise is not None:
        options.update(denoise=p.denoise)
    if mode == "sdedit":
        strength = DEFAULT_STRENGTH if args.strength is None else args.strength
        sigma_start = strength_sigma(strength, sigma_min, sigma_max)
        start = data_transform(cfg, image[None], dequantize=False).to(device)
        header, what = image, f"SDEdit from σ = {sigma_start:.4g} (strength {strength:g})"
    elif mode == "colorize":  # the gray image's data-space value is the channel mean of its data-space RGB
        known = data_transform(cfg, image.expand(3, -1, -1)[None], dequantize=False).mean(1, keepdim=True)
        observation = Grayscale(known.to(device))
        header, what = image.expand(3, -1, -1), "colorization"
    else:
        known = data_transform(cfg, image[None], dequantize=False)
        observation = BoxDownsample(known.to(device), args.factor)
        header = F.interpolate(image[None], scale_factor=args.factor, mode="nearest")[0]
        what = f"super-resolution ×{args.factor}"

    def batches() -> Any:
        for b, n in _batches(args.n, batch_size):
            gen = torch.Generator().manual_seed(batch_seed(p.seed, b))
            if mode == "sdedit":
                x = sdedit(model, start.expand(n, *shape), sigma_start, sigma_min, p.sampler, r.nfe,
                           generator=gen, progress=not args.quiet, **rt, **options)  # fmt: skip
            elif not p.budget:  # ald on the config's schedule, as --inpaint
                x0 = init_samples(n, shape, gen, device, config=cfg)
                backend = "torch" if p.backend == "auto" else p.backend
                x = langevin_solve(model, observation, x0, r.sigmas, r.n_steps_each, r.step_lr, r.denoise, gen,
                                   r.labels, True, not args.quiet, p.precision, backend)  # fmt: skip
            else:
                x0 = (init_samples(n, shape, gen, device, config=cfg) if p.sampler == "ald"
                      else prior_samples(n, shape, sigma_max, gen, device))  # fmt: skip
                x = solve(model, observation, x0, r.nfe, sigma_max, sigma_min, p.sampler, gen,
                          progress=not args.quiet, **rt, **options)  # fmt: skip
            check_data_range(cfg, x, sampler=p.sampler)
            yield inverse_data_transform(cfg, x.float().cpu()), None

    nrow = max(2, int(min(args.n, 100) ** 0.5 + 0.999))
    grid = torch.cat([header[None], torch.zeros(nrow - 1, *shape)])  # the first row: the input
    write(out, batches(), args.n, shape, grid, nrow)
    print(
        f"wrote {out}/samples.png (first row: the input) and samples.pt: ({args.n}, {', '.join(map(str, shape))}), "
        f"{what}, {r.describe()}"
    )
    return 0
