"""`ncsn-fast sample`: annealed Langevin dynamics (or a budget sampler), interpolation, inpainting, SDEdit,
colorization, super-resolution (:mod:`ncsn_fast.cli.edit`) — streamed in batches to OUT/samples.pt with a grid of
the first ≤ 100 in OUT/samples.png."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ncsn_fast.cli import common, edit
from ncsn_fast.cli.common import CommandError
from ncsn_fast.sampler_specs import SPECS, check_option, cli_options, flags_of, option_help, takers

GRID_MAX = 100
# Every sampler option is a flag, made from its declaration (ncsn_fast.sampler_specs): its help names the samplers
# that take it, and _check_contradictions refuses it for the others. dest: the plan's field name (--steps for T).
OPTIONS = cli_options()
DESTS = {name: ("steps" if name == "n_steps_each" else name) for name in OPTIONS}
DENOISE_HELP = "the final denoising step (default: ald the config's sampling.denoise, cas and adaptive on)"
# ald on its own schedule only: (flag, dest)
ALD_SCHEDULE_FLAGS = (("--inpaint", "inpaint"), ("--interpolate", "interpolate"), ("--every", "every"),
                      ("--data-init", "data_init"))  # fmt: skip


def _takers(option: str) -> str:
    return ", ".join(takers(option))


def _flag(option: str, value: Any) -> str:
    o = OPTIONS[option]
    return o.cli_flag if o.type is not bool else (o.cli_flag if value else f"--no-{o.cli_flag[2:]}")


def _metavar(o: Any) -> str | None:
    return "{" + ",".join(o.choices) + "}" if o.choices else None


def register(sub: Any) -> None:
    s = sub.add_parser("sample", help="sample images (bundled digits model by default)")
    common.add_model_args(s)
    s.add_argument("--n", type=int, default=36, help="number of samples (rows when interpolating)")
    s.add_argument("--batch-size", type=int, help="samples per batch (default: the config's sampling.batch_size)")
    s.add_argument("--every", type=int, help="ald on its own schedule: every K-th noise level only (fast preview; ε "
                   "by Technique 4)")  # fmt: skip
    common.add_runtime_args(s)
    s.add_argument(
        "--sampler",
        help="; ".join(f"{name}: {flags_of(name)}" for name in SPECS)
        + " (default: ald on the config's full schedule; with --nfe alone: the sampler recommended for that budget, "
        "docs/sampling.md)",
    )
    s.add_argument("--nfe", type=int, help="score-evaluation budget (default: ald's full schedule; 100 for others)")
    for name, o in OPTIONS.items():
        if o.type is bool:
            help_text = f"{_takers(name)}: {DENOISE_HELP}" if name == "denoise" else option_help(o)
            s.add_argument(o.cli_flag, dest=DESTS[name], action="store_true", default=None, help=help_text)
            s.add_argument(f"--no-{o.cli_flag[2:]}", dest=DESTS[name], action="store_false")
        else:
            s.add_argument(o.cli_flag, dest=DESTS[name], type=o.type, help=option_help(o), metavar=_metavar(o))
    s.add_argument("--out", default="samples", help="output folder for samples.png and samples.pt")
    s.add_argument("--interpolate", type=int, metavar="N", help="N interpolations between pairs (Appendix B.2)")
    s.add_argument("--inpaint", metavar="IMAGE", help="image (PNG, JPEG or .pt) whose known pixels are kept")
    s.add_argument("--mask", metavar="MASK", help="mask image, white/1 = known pixel; same size as IMAGE")
    edit.register(s)
    s.add_argument("--data-init", dest="data_init", action="store_true", default=None, help="start from data + σ1")
    s.add_argument("--no-data-init", dest="data_init", action="store_false", help="default: sampling.data_init")
    s.add_argument("--data", help="dataset folder for --data-init (not needed for digits)")
    s.add_argument("--verbose", action="store_true", help="where each value came from, per-level ‖s‖, ‖x‖, SNR")
    s.set_defaults(run=run)


def _check_args(args: argparse.Namespace) -> None:
    for flag in ("n", "every", "interpolate", "batch_size", "nfe"):
        common.positive_int("--" + flag.replace("_", "-"), getattr(args, flag))
    for name, o in OPTIONS.items():
        problem = check_option(o, getattr(args, DESTS[name]), o.cli_flag)
        if problem:
            raise CommandError(problem)
    if (args.inpaint is None) != (args.mask is None):
        raise CommandError("--inpaint and --mask go together: give both or neither")
    if args.inpaint is not None and args.interpolate is not None:
        raise CommandError("--inpaint and --interpolate cannot be combined")
    edit.check_args(args)
    chosen, explicit = f"--sampler {args.sampler}", args.sampler is not None
    if args.sampler is None:
        args.sampler = "ald"
        chosen = "ald (the default sampler, on the config's own schedule)"
        if args.nfe is not None:  # the recommended sampler for the budget (ncsn_fast.sampling.recommended)
            from ncsn_fast.sampling import recommended

            args.sampler, args.recommended_options = recommended(args.nfe)
            chosen = f"{args.sampler} (the sampler for --nfe {args.nfe})"
    _check_contradictions(args, chosen, explicit)
    common.check_input_file("--inpaint", args.inpaint)
    common.check_input_file("--mask", args.mask)
    common.positive_int("--seed", args.seed, 0)
    if args.cuda_graphs and not args.device.startswith("cuda"):
        raise CommandError(f"--cuda-graphs: needs --device cuda (the samples would be on {args.device})")


def _check_contradictions(args: argparse.Namespace, chosen: str, explicit: bool) -> None:
    """Options the run would ignore: one line naming the flag, the sampler (``chosen``: as the user asked for it;
    ``explicit``: by --sampler), and what that sampler does take."""
    for flag, dest in ALD_SCHEDULE_FLAGS:
        if not getattr(args, dest):
            continue
        if args.sampler != "ald" and explicit:
            raise CommandError(
                f"{flag}: goes with ald on its own schedule (--sampler ald or none, without --nfe), not with {chosen}"
            )
        if args.nfe is not None:
            raise CommandError(f"{flag}: goes with ald on its own schedule, without --nfe: drop --nfe {args.nfe}")
    if args.sampler not in SPECS:
        return  # an unknown name: the plan's check names the choices
    taken = SPECS[args.sampler].option_names
    for option in OPTIONS:
        value = getattr(args, DESTS[option])
        if value is None or option in taken:
            continue
        raise CommandError(
            f"{_flag(option, value)}: an option of {_takers(option)}, not of {chosen}, which takes "
            f"{flags_of(args.sampler)}"
        )


def _verbose_callback(args: argparse.Namespace) -> Any:
    if not args.verbose:
        return None
    from tqdm import tqdm

    def callback(info: dict) -> None:
        tqdm.write(
            "level {level:4d}  σ={sigma:9.4g}  α={step_size:9.3g}  ‖s‖={grad_norm:10.4g}  ‖z‖={noise_norm:8.4g}  "
            "‖x‖={x_norm:8.4g}  snr={snr:7.4f}".format(**info)
        )

    return callback


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    plan = common.sampling_plan(args, every=args.every, data_init=args.data_init)
    out = common.check_output_dir("--out", args.out)
    device = common.check_device("--device", args.device)
    model, cfg = common.load_model(args, device)
    resolved = plan.resolve(cfg, getattr(model, "conditional", False))
    batch_size = args.batch_size or cfg.sampling.batch_size
    if args.verbose:
        print(
            f"plan: {resolved.describe()}; batch size {batch_size} ({'--batch-size' if args.batch_size else 'config'})"
        )
    if args.inpaint is not None:
        return _inpaint(args, model, cfg, resolved, out, batch_size)
    if any(getattr(args, dest) is not None for _, dest in edit.MODES[2:]):
        return edit.run(args, model, cfg, resolved, out, batch_size, _write)
    if args.interpolate is not None:
        return _interpolate(args, model, cfg, resolved, out, batch_size)
    data = _data_init_images(args, cfg) if resolved.data_init else None
    from ncsn_fast.sampling import sample_batches

    shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    batches = sample_batches(
        model, cfg, resolved, args.n, batch_size, data=data, progress=not args.quiet,
        callback=_verbose_callback(args),
    )  # fmt: skip
    _write(out, ((b.images, None) for b in batches), args.n, shape, None)
    print(f"wrote {out}/samples.png and samples.pt: ({args.n}, {', '.join(map(str, shape))}), {resolved.describe()}")
    return 0


def _write(out: Path, batches: Any, n: int, shape: tuple[int, ...], grid: Any, nrow: int | None = None) -> None:
    """Stream batches into OUT/samples.pt; the grid of the first ≤ 100 (after ``grid``'s own images, if any). Both
    files are staged and replace the previous ones together on success: a failed or interrupted run leaves OUT as it
    was (and no folder it created)."""
    import torch

    from ncsn_fast.images import save_grid
    from ncsn_fast.io import Staged, TensorFile

    with Staged() as stage:
        writer = TensorFile(stage.path(out / "samples.pt"), n, shape)
        shown: list[torch.Tensor] = []
        try:
            for images, _ in batches:
                writer.write(images)
                if sum(len(t) for t in shown) < GRID_MAX:
                    shown.append(images[: GRID_MAX - sum(len(t) for t in shown)].cpu())
            tiles = torch.cat(shown)
            if grid is not None:
                tiles = torch.cat([grid, tiles])
            save_grid(tiles, stage.path(out / "samples.png"), nrow=nrow)
            writer.close()
        finally:
            writer.discard()


def _data_init_images(args: argparse.Namespace, cfg: Any) -> Any:
    """--data-init: min(N, dataset size) random training images (seeded), in [0, 1]."""
    import torch

    from ncsn_fast.data import build_dataset, first_item
    from ncsn_fast.seeding import make_generator

    dataset = build_dataset(cfg, args.data)
    picks = torch.randperm(len(dataset), generator=make_generator(args.seed, "data_init"))[: args.n]
    return torch.stack([first_item(dataset[int(i)]) for i in picks])


def _load_inpaint_inputs(args: argparse.Namespace, cfg: Any) -> tuple[Any, Any]:
    """The image and mask at the model's size: the short side resized and the centre cropped, as the data pipeline
    does (nearest for the mask); the mask binarised (> 0.5 = known)."""
    from ncsn_fast.images import read_image, resize_center_crop

    image = read_image(args.inpaint, "--inpaint")
    mask = read_image(args.mask, "--mask")
    if mask.shape[-2:] != image.shape[-2:]:
        raise CommandError(
            f"--mask: size {tuple(mask.shape[-2:])} differs from the --inpaint image's {tuple(image.shape[-2:])}"
        )
    size, channels = cfg.data.image_size, cfg.data.channels
    image = resize_center_crop(image, size)
    mask = (resize_center_crop(mask[:1], size, mode="nearest") > 0.5).float()
    if image.shape[0] != channels:
        if image.shape[0] == 3 and channels == 1:
            image = image.mean(0, keepdim=True)
        elif image.shape[0] == 1 and channels == 3:
            image = image.expand(3, -1, -1)
        else:
            raise CommandError(f"--inpaint: image has {image.shape[0]} channels, the model {channels}")
    return image, mask


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(b, min(batch_size, n - b * batch_size)) for b in range(-(-n // batch_size))]


def _inpaint(args: argparse.Namespace, model: Any, cfg: Any, r: Any, out: Path, batch_size: int) -> int:
    import torch

    from ncsn_fast.data import data_transform, inverse_data_transform
    from ncsn_fast.sampling import init_samples, inpaint
    from ncsn_fast.sampling.generate import batch_seed, check_data_range

    image, mask = _load_inpaint_inputs(args, cfg)
    device = next(model.parameters()).device
    known = data_transform(cfg, image[None], dequantize=False)[0]  # [0, 1] → the model's data space
    shape = tuple(image.shape)
    p = r.plan
    backend = "torch" if p.backend == "auto" else p.backend  # the official update unless a backend is asked for

    def batches() -> Any:
        for b, size in _batches(args.n, batch_size):
            gen = torch.Generator().manual_seed(batch_seed(p.seed, b))
            x0 = init_samples(size, shape, gen, device, config=cfg)
            x = inpaint(
                model, x0, known, mask, r.sigmas, r.n_steps_each, r.step_lr, r.denoise, gen, r.labels, False,
                not args.quiet, p.precision, backend, callback=_verbose_callback(args),
            )  # fmt: skip
            check_data_range(cfg, x)
            # known pixels exactly as given, in image space (a data transform need not round-trip exactly)
            yield mask * image + (1 - mask) * inverse_data_transform(cfg, x.cpu()), None

    masked = mask * image + (1 - mask) * 0.5
    header = torch.stack([image, mask.expand_as(image), masked])
    nrow = max(3, int(min(args.n, GRID_MAX) ** 0.5 + 0.999))
    header = torch.cat([header, torch.zeros(nrow - 3, *shape)])  # the first row: input, mask, known pixels
    _write(out, batches(), args.n, shape, header, nrow)
    print(
        f"wrote {out}/samples.png (first row: image, mask, known pixels) and samples.pt: ({args.n}, "
        f"{', '.join(map(str, shape))}), {r.describe()}"
    )
    return 0


def _interpolate(args: argparse.Namespace, model: Any, cfg: Any, r: Any, out: Path, batch_size: int) -> int:

    from ncsn_fast.data import inverse_data_transform
    from ncsn_fast.sampling import init_samples, interpolate
    from ncsn_fast.sampling.generate import check_data_range
    from ncsn_fast.seeding import make_generator

    device = next(model.parameters()).device
    shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    k = args.interpolate + 2
    rows_per_batch = max(1, batch_size // k)
    data = _data_init_images(args, cfg) if r.data_init else None
    p = r.plan

    def batches() -> Any:
        for b, rows in _batches(args.n, rows_per_batch):
            g1, g2 = make_generator(p.seed, b, "interpolate", 1), make_generator(p.seed, b, "interpolate", 2)
            x0 = init_samples(rows, shape, g1, device, data, float(r.sigmas[0]), config=cfg)
            x = interpolate(
                model, x0, r.sigmas, r.n_steps_each, r.step_lr, args.interpolate, (g1, g2), r.denoise, r.labels,
                not args.quiet, p.precision, p.backend, _verbose_callback(args),
            )  # fmt: skip
            check_data_range(cfg, x)
            yield inverse_data_transform(cfg, x.cpu()), None

    _write(out, batches(), args.n * k, shape, None, nrow=k)
    print(f"wrote {out}/samples.png and samples.pt: ({args.n * k}, {', '.join(map(str, shape))}), {args.n} rows of "
          f"{k}, {r.describe()}")  # fmt: skip
    return 0
