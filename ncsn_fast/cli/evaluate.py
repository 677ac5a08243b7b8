"""`ncsn-fast fid`, `fid-stats`, `fid-select` and `neighbors`: flags over :mod:`ncsn_fast.evaluation`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ncsn_fast.cli import common
from ncsn_fast.cli.common import CommandError

WEIGHTS_HELP = (
    "FID Inception weights (pt_inception-2015-12-05-6726825d.pth); default: torch.hub's cache, downloaded when "
    "missing. 'random': same network, random weights — tests the pipeline, the numbers mean nothing"
)
METHOD_HELP = (
    "matrix square root of the Fréchet distance: scipy sqrtm (the TTUR reference) or symmetric eigendecompositions "
    "(5x faster, same value to ~1e-12)"
)


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, help="samples per batch (default: the config's)")
    p.add_argument("--steps", type=int, help="Langevin steps per noise level T (default: the config's)")
    p.add_argument("--step-lr", type=float, help="ε (default: the config's, or Technique 4 for another T)")
    common.add_runtime_args(p)
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--method", default="sqrtm", choices=["sqrtm", "eigh"], help=METHOD_HELP)


def register(sub: Any) -> None:
    f = sub.add_parser("fid", help="FID of a model against a statistics file (standard protocol; torchrun-aware)")
    common.add_model_args(f)
    # --num-samples: torchrun's own parser rejects "--n" anywhere on its command line (a prefix of its --nnodes)
    f.add_argument("--n", "--num-samples", dest="n", type=int, default=50000,
                   help="number of samples (the standard protocol: 50000); --num-samples under torchrun")  # fmt: skip
    f.add_argument("--stats", required=True, help="reference statistics .npz (TTUR format: mu, sigma)")
    f.add_argument("--denoise", dest="denoise", action="store_true", default=None)
    f.add_argument("--no-denoise", dest="denoise", action="store_false", help="default: the config's sampling.denoise")
    f.add_argument("--out", default="fid", help="folder for fid.json, samples.png, sample_stats.npz")
    f.add_argument("--save-samples", action="store_true", help="also write every sample (uint8) to OUT/samples.pt")
    _sampling_args(f)
    f.set_defaults(run=run_fid)

    s = sub.add_parser("fid-stats", help="FID statistics (.npz, TTUR format) of a dataset, folder or array")
    s.add_argument(
        "data",
        metavar="DATA",
        help="an image folder, a .npy/.pt array (N, C, H, W), or a preset "
        "(digits, cifar10, celeba, ...: its training set at the model's resolution, --data for its files)",
    )
    s.add_argument("--out", required=True, help="FILE.npz")
    s.add_argument("--data", dest="data_root", help="dataset folder for a preset other than digits")
    s.add_argument(
        "--split",
        default="train",
        choices=["train", "test"],
        help="a preset's split: CIFAR-10 FIDs use train, CelebA's the test set (Appendix B.2)",
    )
    s.add_argument("--image-size", type=int, help="resize + center-crop folder images to this size")
    s.add_argument("--n", type=int, help="use the first N images (default: all)")
    s.add_argument("--batch-size", type=int, default=50)
    s.add_argument("--device", default="cpu")
    s.add_argument("--weights", help=WEIGHTS_HELP)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(run=run_fid_stats, flag_names={"data": "DATA"})  # fmt: skip

    c = sub.add_parser("fid-select", help="Appendix B.2: FID of 1000 samples per checkpoint, with and without "
                       "denoising; report the best")  # fmt: skip
    c.add_argument("--ckpts", required=True, nargs="+", help="a folder of checkpoint_<step>.pth, or files")
    c.add_argument("--stats", required=True, help="reference statistics .npz")
    c.add_argument("--n", "--num-samples", dest="n", type=int,
                   help="samples per checkpoint (default: the config's fast_fid.num_samples)")  # fmt: skip
    c.add_argument("--begin", type=int, help="skip checkpoints before this step (default: fast_fid.begin_ckpt)")
    c.add_argument("--end", type=int, help="skip checkpoints after this step (default: fast_fid.end_ckpt)")
    c.add_argument("--out", default="fid_select", help="folder for select.json and select.png")
    common.add_model_args(c, ckpt=False)
    _sampling_args(c)
    c.set_defaults(run=run_fid_select)

    t = sub.add_parser("test-loss", help="the official --test mode: DSM loss of checkpoints on the test split")
    t.add_argument("--ckpts", required=True, nargs="+", help="a folder of checkpoint_<step>.pth, or files")
    t.add_argument("--data", help="dataset folder (the config's dataset, its test split)")
    t.add_argument("--n", type=int, help="use the first N test images (default: all)")
    t.add_argument("--batch-size", type=int, help="default: the config's test.batch_size")
    t.add_argument("--begin", type=int, help="skip checkpoints before this step (default: test.begin_ckpt)")
    t.add_argument("--end", type=int, help="skip checkpoints after this step (default: test.end_ckpt)")
    t.add_argument("--out", default="test_loss.json", help="JSON file for the losses")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quiet", action="store_true")
    common.add_model_args(t, ckpt=False)
    t.set_defaults(run=run_test_loss)

    nb = sub.add_parser("neighbors", help="nearest training images of samples, flips included (Appendix C.5.2)")
    common.add_model_args(nb)
    nb.add_argument("--samples", help="samples.pt written by `ncsn-fast sample` (default: draw --n new ones)")
    nb.add_argument("--n", type=int, default=8, help="samples to draw (the config's T and ε) without --samples")
    nb.add_argument("--data", help="training data folder (not needed for digits)")
    nb.add_argument("--k", type=int, default=10)
    nb.add_argument("--features", default="auto", choices=["auto", "inception", "pixels"],
                    help="auto: Inception when its weights are given or cached, else pixels")  # fmt: skip
    nb.add_argument("--no-flips", action="store_true", help="do not consider flipped training images")
    nb.add_argument("--batch-size", type=int, default=256, help="training images per feature batch")
    nb.add_argument("--out", default="neighbors.png", help="grid PNG (a .json with indices and distances beside)")
    nb.add_argument("--weights", help=WEIGHTS_HELP)
    nb.add_argument("--seed", type=int, default=0)
    nb.add_argument("--quiet", action="store_true")
    nb.set_defaults(run=run_neighbors)


def _check_weights(args: argparse.Namespace) -> None:
    if args.weights not in (None, "random"):
        common.check_input_file("--weights", args.weights)


def _describe(protocol: dict[str, Any]) -> str:
    keys = ["n", "sampler", "denoise", "weights", "sha256", "standard", "resize", "quantize", "steps_each",
            "step_lr", "seed", "world_size", "precision"]  # fmt: skip
    parts = []
    for k in keys:
        if k in protocol:
            v = protocol[k]
            parts.append(f"{k}={v[:16] + '…' if k == 'sha256' and v else v}")
    return "protocol: " + ", ".join(parts)


def _check_fid_args(args: argparse.Namespace, section: str) -> tuple[Any, Path, Any]:
    """fid and fid-select: the flags, the statistics file and the weights, then the output folder and the device."""
    for flag in ("n", "batch_size", "steps"):
        common.positive_int("--" + flag.replace("_", "-"), getattr(args, flag), 2 if flag == "n" else 1)
    common.positive_float("--step-lr", args.step_lr)
    common.check_input_file("--stats", args.stats, (".npz",))
    _check_weights(args)
    plan = common.sampling_plan(args, section=section)
    return plan, common.check_output_dir("--out", args.out), common.check_device("--device", args.device)


def run_fid(args: argparse.Namespace) -> int:
    from ncsn_fast import distributed

    plan, out, device = _check_fid_args(args, "sampling")
    with distributed.process_group() as ranks:
        device = distributed.local_device(device, ranks)
        from ncsn_fast.evaluation import fid, load_inception
        from ncsn_fast.evaluation.fid import reference_stats

        reference_stats(args.stats)  # a bad statistics file fails before the network and hours of sampling
        model, cfg = common.load_model(args, device)
        inception = load_inception(args.weights, device)
        result = fid(
            model, cfg, args.stats, args.n, plan, args.batch_size, inception, method=args.method,
            keep=args.n if args.save_samples else 64, ranks=ranks, progress=not args.quiet,
        )  # fmt: skip
        if not ranks.is_main:
            return 0
    print(f"FID {result.fid:.4f}  ({result.stats.n} samples vs {Path(args.stats).name})")  # before any write
    print(_describe(result.protocol))
    import torch

    from ncsn_fast.evaluation import save_stats
    from ncsn_fast.images import save_grid
    from ncsn_fast.io import Staged, atomic_write, write_json

    protocol = {**result.protocol, "ckpt": args.ckpt or "bundled digits"}
    with Staged() as stage:  # the files replace an earlier run's together, only once all are written
        save_stats(stage.path(out / "sample_stats.npz"), result.stats.mu, result.stats.cov, protocol)
        if result.samples is not None:
            save_grid(result.samples[:64].float() / 255.0, stage.path(out / "samples.png"))
            if args.save_samples:
                atomic_write(stage.path(out / "samples.pt"), lambda fh: torch.save(result.samples, fh))
        write_json(stage.path(out / "fid.json"), {"fid": result.fid, "seconds": result.seconds, "protocol": protocol})
    print(f"wrote {out}/fid.json, sample_stats.npz" + (", samples.png" if result.samples is not None else ""))
    return 0


def run_fid_stats(args: argparse.Namespace) -> int:
    for flag in ("n", "batch_size", "image_size"):
        common.positive_int("--" + flag.replace("_", "-"), getattr(args, flag))
    _check_weights(args)
    out = common.check_output_file("--out", args.out, ".npz")
    device = common.check_device("--device", args.device)
    from ncsn_fast.evaluation import fid_stats, image_source, load_inception, save_stats

    dataset, what = image_source(args.data, args.data_root, args.split, args.image_size)
    inception = load_inception(args.weights, device)
    st = fid_stats(dataset, inception, batch_size=args.batch_size, n=args.n, progress=not args.quiet)
    protocol = {**inception.protocol(), "n": st.n, "source": what}
    print(_describe(protocol))
    save_stats(out, st.mu, st.cov, protocol)
    print(f"wrote {out}: statistics of {st.n} images ({what})")
    return 0


def _checkpoints(args: argparse.Namespace, cfg: Any, section: str = "fast_fid") -> list[tuple[int, Path]]:
    from ncsn_fast.checkpoint import checkpoint_step, is_safetensors

    found: list[Path] = []
    for item in args.ckpts:
        p = Path(item)
        if p.is_dir() and not is_safetensors(p):
            found += [q for q in p.glob("checkpoint_*.pth") if checkpoint_step(q) is not None]
        elif p.exists():
            found.append(p)
        else:
            raise CommandError(f"--ckpts: no such file or folder {item!r}")
    sec = getattr(cfg, section) if cfg is not None else None
    begin = args.begin if args.begin is not None else (sec.begin_ckpt if sec is not None else None)
    end = args.end if args.end is not None else (sec.end_ckpt if sec is not None else None)
    steps = sorted((checkpoint_step(p) if checkpoint_step(p) is not None else -1, p) for p in found)
    steps = [(s, p) for s, p in steps if (begin is None or s >= begin) and (end is None or s <= end)]
    if not steps:
        raise CommandError(f"--ckpts: no checkpoint_<step>.pth in {' '.join(args.ckpts)} within --begin/--end")
    return steps


def run_fid_select(args: argparse.Namespace) -> int:
    from ncsn_fast import distributed

    plan, out, device = _check_fid_args(args, "fast_fid")
    from ncsn_fast.config import load_config

    cfg = load_config(args.config) if args.config else None
    ckpts = _checkpoints(args, cfg)
    with distributed.process_group() as ranks:
        device = distributed.local_device(device, ranks)
        from ncsn_fast.evaluation import load_inception, select_checkpoints
        from ncsn_fast.evaluation.fid import reference_stats
        from ncsn_fast.io import write_json

        reference_stats(args.stats)
        inception = load_inception(args.weights, device)
        partial = _unused(out / "select.partial.json")

        def on_row(sel: Any) -> None:
            if ranks.is_main:
                r = sel.rows[-1]
                print(f"step {r['step']:>8}  FID {r['fid']:10.4f}  denoised {r['fid_denoised']:10.4f}", flush=True)
                # this run's own file, rewritten after every checkpoint: a long selection that is stopped keeps what
                # it measured, and an earlier run's select.json stays as it was
                write_json(partial, {"rows": sel.rows, "best": sel.best(), "protocol": sel.protocol})
                args.kept = f"{partial} holds the checkpoints scored so far"

        sel = select_checkpoints(
            ckpts, args.stats, args.config, args.n, plan, args.batch_size, inception, method=args.method,
            ema=not args.no_ema, device=device, ranks=ranks, progress=not args.quiet, on_row=on_row,
        )  # fmt: skip
        if not ranks.is_main:
            return 0
    best = sel.best()
    for key, label in (("fid", "without denoising"), ("fid_denoised", "with denoising")):
        b = best[key]
        print(f"best {label}: step {b['step']} (FID {b['value']:.4f})  {b['ckpt']}")
    print(_describe(sel.protocol))
    from ncsn_fast.io import Staged
    from ncsn_fast.plotting import fid_per_checkpoint_figure, save_figure

    with Staged() as stage:
        write_json(stage.path(out / "select.json"), {"rows": sel.rows, "best": best, "protocol": sel.protocol})
        save_figure(fid_per_checkpoint_figure(sel.rows, sel.protocol.get("n", 0)), stage.path(out / "select.png"))
        stage.remove(partial)  # its rows are in select.json now
    print(f"wrote {out}/select.json, select.png")
    return 0


def _unused(path: Path) -> Path:
    """``path``, else ``<stem>.2<suffix>``, ``<stem>.3<suffix>``, …: the first name no file has (an earlier run's
    file stays as it was)."""
    candidate, k = path, 1
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.stem}.{k}{path.suffix}")
    return candidate


def run_test_loss(args: argparse.Namespace) -> int:
    for flag in ("n", "batch_size"):
        common.positive_int("--" + flag.replace("_", "-"), getattr(args, flag))
    out = common.check_output_file("--out", args.out, ".json")
    device = common.check_device("--device", args.device)
    from ncsn_fast.config import load_config
    from ncsn_fast.evaluation.heldout import test_loss
    from ncsn_fast.io import write_json

    cfg = load_config(args.config) if args.config else None
    ckpts = _checkpoints(args, cfg, "test")
    rows = test_loss(
        ckpts, args.config, data_root=args.data, batch_size=args.batch_size, n=args.n, ema=not args.no_ema,
        seed=args.seed, device=device, progress=not args.quiet,
    )  # fmt: skip
    for r in rows:
        print(f"step {r['step']:>8}  test DSM loss {r['loss']:.6g}  ({r['n']} images)")
    write_json(out, {"rows": rows, "seed": args.seed, "ema": not args.no_ema})
    print(f"wrote {out}")
    return 0


def run_neighbors(args: argparse.Namespace) -> int:
    for flag in ("k", "n", "batch_size"):
        common.positive_int("--" + flag.replace("_", "-"), getattr(args, flag))
    common.check_input_file("--samples", args.samples, (".pt", ".npy", ".npz"))
    _check_weights(args)
    out = common.check_output_file("--out", args.out, ".png")
    device = common.check_device("--device", args.device)
    import torch

    from ncsn_fast.data import build_dataset
    from ncsn_fast.evaluation.inception import find_standard_weights, load_inception, quantize_8bit
    from ncsn_fast.evaluation.neighbors import neighbors, pixel_features
    from ncsn_fast.images import load_tensor, save_grid
    from ncsn_fast.io import Staged, write_json

    model, cfg = common.load_model(args, device)
    dataset = build_dataset(cfg, args.data)
    shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    if args.samples:
        samples = load_tensor(args.samples, "--samples")
        samples = samples.float() / 255.0 if samples.dtype == torch.uint8 else samples.float()
        if samples.dim() != 4 or tuple(samples.shape[1:]) != shape:
            raise CommandError(
                f"--samples: expected (N, {', '.join(map(str, shape))}) images, got {tuple(samples.shape)}"
            )
        if not torch.isfinite(samples).all() or samples.min() < 0 or samples.max() > 1:
            raise CommandError(f"--samples: values must be finite and in [0, 1] ({args.samples!r})")
    else:
        from ncsn_fast.sampling import SamplingPlan, sample_batches

        plan = SamplingPlan(seed=args.seed)
        samples = torch.cat([quantize_8bit(b.images).cpu() for b in sample_batches(
            model, cfg, plan, args.n, args.n, progress=not args.quiet)])  # fmt: skip
    mode = args.features
    if mode == "auto":
        mode = "inception" if args.weights or find_standard_weights() else "pixels"
    features = load_inception(args.weights, device) if mode == "inception" else pixel_features
    note = " (no Inception weights given or cached)" if args.features == "auto" and mode == "pixels" else ""
    print(f"features: {mode}{note}")
    nb, grid = neighbors(samples, dataset, args.k, features, not args.no_flips, args.batch_size, not args.quiet)
    with Staged() as stage:  # the grid and its JSON replace an earlier run's together, only once both are written
        save_grid(grid, stage.path(out), nrow=args.k + 1, mark_column=1)
        record = {"features": mode, "flips": not args.no_flips, "neighbors": nb.to_dict()}
        write_json(stage.path(out.with_suffix(".json")), record)
    flipped = int(nb.flipped[:, 0].sum())
    print(
        f"wrote {out} ({samples.shape[0]} samples × {args.k} neighbors, {mode} features; first column: the sample; "
        f"nearest is a flipped training image for {flipped}) and {out.with_suffix('.json')}"
    )
    return 0
