"""`ncsn-fast fid`, `fid-stats`, `fid-select` and `neighbors`: argument parsing and the runs behind them."""

from __future__ import annotations

import argparse
import math
import re
import time
from pathlib import Path
from typing import Any

import torch

from ncsn_fast.evaluation.fid import (
    FEATURE_DIM,
    FIDError,
    FIDSampling,
    GaussianStats,
    InceptionFeatures,
    feature_stats,
    fid_batches,
    find_standard_weights,
    frechet_distance,
    load_inception,
    load_stats,
    quantize_8bit,
    sample_statistics,
    save_stats,
    write_json,
)

WEIGHTS_HELP = (
    "FID Inception weights (pt_inception-2015-12-05-6726825d.pth); default: torch.hub's cache, downloaded when "
    "missing. 'random': same network, random weights — tests the pipeline, the numbers mean nothing"
)


def _positive(name: str, value: int | float | None) -> None:
    if value is not None and not value > 0:
        raise FIDError(f"{name}: must be positive, got {value}")


def _check_args(args: argparse.Namespace, positive: tuple[str, ...], out_suffix: str) -> None:
    for name in positive:
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    if not str(args.out).endswith(out_suffix):
        raise FIDError(f"--out: must end in {out_suffix}, got {args.out!r}")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="preset name or YAML (default: the checkpoint's own config)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: each rank its local GPU)")
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, help="samples per Langevin batch (default: the config's)")
    p.add_argument("--steps", type=int, help="Langevin steps per noise level T (default: the config's)")
    p.add_argument("--step-lr", type=float, help="ε (default: the config's)")
    p.add_argument("--backend", default="auto", help="Langevin update backend (see `sample --backend`)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument(
        "--method",
        default="sqrtm",
        choices=["sqrtm", "eigh"],
        help="matrix square root of the Fréchet distance: scipy sqrtm (the TTUR reference) or symmetric "
        "eigendecompositions (5x faster, same value to ~1e-12)",
    )


def add_arguments(sub: Any) -> None:
    f = sub.add_parser("fid", help="FID of a model against a statistics file (standard protocol; torchrun-aware)")
    f.add_argument("--ckpt", help="checkpoint (default: the bundled digits model)")
    # --num-samples: torchrun's own parser rejects "--n" anywhere on its command line (a prefix of its --nnodes)
    f.add_argument(
        "--n",
        "--num-samples",
        dest="n",
        type=int,
        default=50000,
        help="number of samples (the standard protocol: 50000); --num-samples under torchrun",
    )
    f.add_argument("--stats", required=True, help="reference statistics .npz (TTUR format: mu, sigma)")
    f.add_argument("--denoise", dest="denoise", action="store_true", default=None)
    f.add_argument("--no-denoise", dest="denoise", action="store_false", help="default: the config's sampling.denoise")
    f.add_argument("--out", default="fid", help="folder for fid.json, samples.png, sample_stats.npz")
    f.add_argument("--save-samples", action="store_true", help="also write every sample (uint8) to OUT/samples.pt")
    _add_model_args(f)
    _add_sampling_args(f)
    f.set_defaults(func=run_fid)

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
    s.set_defaults(func=run_fid_stats)

    c = sub.add_parser(
        "fid-select",
        help="Appendix B.2: FID on 1000 samples per checkpoint, with and without denoising; report the best",
    )
    c.add_argument("--ckpts", required=True, nargs="+", help="a folder of checkpoint_<step>.pth, or files")
    c.add_argument("--stats", required=True, help="reference statistics .npz")
    c.add_argument(
        "--n",
        "--num-samples",
        dest="n",
        type=int,
        help="samples per checkpoint (default: the config's fast_fid.num_samples)",
    )
    c.add_argument("--begin", type=int, help="skip checkpoints before this step")
    c.add_argument("--end", type=int, help="skip checkpoints after this step")
    c.add_argument("--out", default="fid_select", help="folder for select.json and select.png")
    _add_model_args(c)
    _add_sampling_args(c)
    c.set_defaults(func=run_fid_select)

    nb = sub.add_parser("neighbors", help="nearest training images of samples, flips included (Appendix C.5.2)")
    nb.add_argument("--ckpt", help="checkpoint (default: the bundled digits model)")
    nb.add_argument("--samples", help="samples.pt written by `ncsn-fast sample` (default: draw --n new ones)")
    nb.add_argument("--n", type=int, default=8, help="samples to draw (the config's T and ε) without --samples")
    nb.add_argument("--data", help="training data folder (not needed for digits)")
    nb.add_argument("--k", type=int, default=10)
    nb.add_argument(
        "--features",
        default="auto",
        choices=["auto", "inception", "pixels"],
        help="auto: Inception when its weights are given or cached, else pixels",
    )
    nb.add_argument("--no-flips", action="store_true", help="do not consider flipped training images")
    nb.add_argument("--batch-size", type=int, default=256, help="training images per feature batch")
    nb.add_argument("--out", default="neighbors.png", help="grid PNG (a .json with indices and distances beside)")
    _add_model_args(nb)
    nb.set_defaults(func=run_neighbors)


# ---------------------------------------------------------------------------------------------------------------


def _model(args: argparse.Namespace, ckpt: str | None, device: torch.device):
    from ncsn_fast.cli import _load_model

    ns = argparse.Namespace(config=args.config, ckpt=ckpt, no_ema=args.no_ema)
    return _load_model(ns, device)


def _device_and_ranks(args: argparse.Namespace) -> tuple[torch.device, int, int]:
    from ncsn_fast.cli import _device
    from ncsn_fast.train import _distributed

    rank, world, local = _distributed()
    device = _device(args.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    return device, rank, world


def _plan(args: argparse.Namespace, cfg, section: str, n: int) -> FIDSampling:
    src = cfg.fast_fid if section == "fast_fid" else cfg.sampling
    _positive("--n", n)
    _positive("--batch-size", args.batch_size)
    _positive("--steps", args.steps)
    _positive("--step-lr", args.step_lr)
    from ncsn_fast.techniques import get_sigmas, step_lr_for

    steps = args.steps or src.n_steps_each
    return FIDSampling(
        n=n,
        batch_size=args.batch_size or min(src.batch_size, n),
        n_steps_each=steps,
        step_lr=args.step_lr or step_lr_for(get_sigmas(cfg), steps, src.n_steps_each, src.step_lr),
        seed=args.seed,
        backend=args.backend,
        precision=args.precision,
    )


def _gather_kept(kept: list[tuple[int, torch.Tensor]], world: int) -> torch.Tensor | None:
    import torch.distributed as dist

    if world > 1:
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, kept)
        kept = [item for part in parts for item in part]
    if not kept:
        return None
    return torch.cat([t for _, t in sorted(kept, key=lambda bt: bt[0])])


def _grid(images: torch.Tensor, path: Path, n: int = 64) -> None:
    from torchvision.utils import save_image

    imgs = images[:n].float() / 255.0
    save_image(imgs, path, nrow=max(1, math.ceil(math.sqrt(len(imgs)))), padding=1)


def _describe(protocol: dict[str, Any]) -> str:
    keys = [
        "n",
        "denoise",
        "weights",
        "sha256",
        "standard",
        "resize",
        "quantize",
        "steps_each",
        "step_lr",
        "seed",
        "world_size",
        "precision",
    ]
    parts = []
    for k in keys:
        if k in protocol:
            v = protocol[k]
            parts.append(f"{k}={v[:16] + '…' if k == 'sha256' and v else v}")
    return "protocol: " + ", ".join(parts)


def _process_group(fn):
    """Under torchrun: tear the process group down however the run ends."""
    import functools

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        import torch.distributed as dist

        try:
            return fn(args)
        finally:
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()

    return wrapper


@_process_group
def run_fid(args: argparse.Namespace) -> int:
    device, rank, world = _device_and_ranks(args)
    mu_ref, sigma_ref, ref_protocol = load_stats(args.stats)  # fail fast, before hours of sampling
    if mu_ref.shape[0] != FEATURE_DIM:
        raise FIDError(f"--stats: {args.stats!r} holds {mu_ref.shape[0]}-dimensional statistics, not {FEATURE_DIM}")
    inception = load_inception(args.weights, device)
    model, cfg = _model(args, args.ckpt, device)
    plan = _plan(args, cfg, "sampling", args.n)
    denoise = cfg.sampling.denoise if args.denoise is None else args.denoise
    keep = args.n if args.save_samples else 64
    t0 = time.time()
    stats, kept = sample_statistics(
        model, cfg, plan, inception, (denoise,), device, rank, world, keep, progress=not args.quiet
    )
    st = stats[denoise].all_reduce(device if device.type == "cuda" else None)
    images = _gather_kept(kept[denoise], world)
    if rank != 0:
        return 0
    fid = frechet_distance(st.mu, st.sigma, mu_ref, sigma_ref, method=args.method)
    protocol = {
        **plan.protocol(),
        **inception.protocol(),
        "denoise": denoise,
        "world_size": world,
        "method": args.method,
        "ckpt": args.ckpt or "bundled digits",
        "stats": str(args.stats),
        "stats_protocol": ref_protocol,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_stats(out / "sample_stats.npz", st.mu, st.sigma, protocol)
    if images is not None:
        _grid(images, out / "samples.png")
        if args.save_samples:
            torch.save(images, out / "samples.pt")
    write_json(out / "fid.json", {"fid": fid, "seconds": time.time() - t0, "protocol": protocol})
    print(f"FID {fid:.4f}  ({st.n} samples vs {Path(args.stats).name})")
    print(_describe(protocol))
    print(f"wrote {out}/fid.json, sample_stats.npz" + (", samples.png" if images is not None else ""))
    return 0


# ---------------------------------------------------------------------------------------------------------------


def _array_images(path: Path) -> torch.Tensor:
    import numpy as np

    if path.suffix == ".pt":
        t = torch.load(path, map_location="cpu", weights_only=True)
        if not torch.is_tensor(t):
            raise FIDError(f"DATA: {str(path)!r} does not hold a tensor")
    else:
        t = torch.from_numpy(np.load(path))
    if t.dim() == 4 and t.shape[1] not in (1, 3) and t.shape[-1] in (1, 3):
        t = t.permute(0, 3, 1, 2)  # (N, H, W, C), as numpy image arrays usually are
    if t.dim() != 4 or t.shape[1] not in (1, 3):
        raise FIDError(f"DATA: expected (N, C, H, W) or (N, H, W, C) images with C = 1 or 3, got {tuple(t.shape)}")
    return t if t.dtype == torch.uint8 else t.float()


def _image_batches(args: argparse.Namespace):
    """(batches, description) of DATA for fid-stats."""
    from ncsn_fast.config import PRESETS, load_config
    from ncsn_fast.data import ImageFolderDataset, _resize_crop, build_dataset, first_item

    src = args.data
    p = Path(src)
    if src in PRESETS and not p.exists():
        cfg = load_config(src)
        dataset = build_dataset(cfg, args.data_root, split=args.split)
        what = f"{cfg.data.dataset} {args.split} set at {cfg.data.image_size} px"
    elif p.is_dir():
        from torchvision import transforms as T

        tf = _resize_crop(args.image_size) if args.image_size else T.ToTensor()
        dataset = ImageFolderDataset(p, tf, 3)
        what = f"image folder {p}" + (f" at {args.image_size} px" if args.image_size else "")
    elif p.is_file() and p.suffix in (".npy", ".pt"):
        dataset = torch.utils.data.TensorDataset(_array_images(p))
        what = f"array {p.name}"
    else:
        raise FIDError(f"DATA: {src!r} is not an image folder, a .npy/.pt array or a preset ({', '.join(PRESETS)})")
    n = len(dataset) if args.n is None else min(args.n, len(dataset))
    if n < 2:
        raise FIDError(f"DATA: statistics need at least 2 images, {src!r} has {n}")
    subset = torch.utils.data.Subset(dataset, range(n))

    def collate(items):
        xs = [first_item(it) for it in items]
        shapes = {tuple(x.shape) for x in xs}
        if len(shapes) > 1:
            raise FIDError(f"DATA: images of different sizes {sorted(shapes)[:3]}: pass --image-size S")
        return torch.stack(xs)

    loader = torch.utils.data.DataLoader(subset, batch_size=args.batch_size, shuffle=False, collate_fn=collate)
    return loader, what, n


def run_fid_stats(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    _check_args(args, ("n", "batch_size", "image_size"), ".npz")
    from ncsn_fast.cli import _device

    device = _device(args.device)
    loader, what, n = _image_batches(args)
    inception = load_inception(args.weights, device)
    batches = tqdm(loader, desc="features", disable=args.quiet, dynamic_ncols=True)
    st = feature_stats(batches, inception)
    protocol = {**inception.protocol(), "n": st.n, "source": what}
    save_stats(args.out, st.mu, st.sigma, protocol)
    print(f"wrote {args.out}: statistics of {st.n} images ({what})")
    print(_describe(protocol))
    return 0


# ---------------------------------------------------------------------------------------------------------------


def _checkpoints(args: argparse.Namespace) -> list[tuple[int, Path]]:
    found: list[Path] = []
    for item in args.ckpts:
        p = Path(item)
        if p.is_dir():
            found += sorted(p.glob("checkpoint_*.pth"))
        elif p.is_file():
            found.append(p)
        else:
            raise FIDError(f"--ckpts: no such file or folder {item!r}")
    steps = []
    for p in found:
        m = re.search(r"(\d+)", p.stem)
        steps.append((int(m.group(1)) if m else -1, p))
    steps = [
        (s, p)
        for s, p in sorted(steps)
        if (args.begin is None or s >= args.begin) and (args.end is None or s <= args.end)
    ]
    if not steps:
        raise FIDError(f"--ckpts: no checkpoint_<step>.pth in {' '.join(args.ckpts)} within --begin/--end")
    return steps


@_process_group
def run_fid_select(args: argparse.Namespace) -> int:
    from ncsn_fast.plotting import line_chart

    device, rank, world = _device_and_ranks(args)
    mu_ref, sigma_ref, _ = load_stats(args.stats)
    ckpts = _checkpoints(args)
    inception = load_inception(args.weights, device)
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    for step, path in ckpts:
        model, cfg = _model(args, str(path), device)
        plan = _plan(args, cfg, "fast_fid", args.n or cfg.fast_fid.num_samples)
        stats, _ = sample_statistics(
            model, cfg, plan, inception, (False, True), device, rank, world, 0, progress=not args.quiet
        )
        fids = {}
        for mode in (False, True):
            st: GaussianStats = stats[mode].all_reduce(device if device.type == "cuda" else None)
            fids[mode] = (
                frechet_distance(st.mu, st.sigma, mu_ref, sigma_ref, method=args.method) if rank == 0 else math.nan
            )
        rows.append({"step": step, "ckpt": str(path), "fid": fids[False], "fid_denoised": fids[True]})
        if rank == 0:
            print(f"step {step:>8}  FID {fids[False]:10.4f}  denoised {fids[True]:10.4f}", flush=True)
            best = _best(rows)
            # rewritten after every checkpoint: a long selection that is stopped keeps what it measured
            write_json(
                out / "select.json",
                {
                    "rows": rows,
                    "best": best,
                    "protocol": {
                        **plan.protocol(),
                        **inception.protocol(),
                        "world_size": world,
                        "stats": str(args.stats),
                        "method": args.method,
                    },
                },
            )
    if rank != 0:
        return 0
    best = _best(rows)
    line_chart(
        {"FID": [(r["step"], r["fid"]) for r in rows], "FID, denoised": [(r["step"], r["fid_denoised"]) for r in rows]},
        out / "select.png",
        f"FID on {plan.n} samples per checkpoint",
    )
    for key, label in (("fid", "without denoising"), ("fid_denoised", "with denoising")):
        b = best[key]
        print(f"best {label}: step {b['step']} (FID {b['value']:.4f})  {b['ckpt']}")
    print(_describe({**plan.protocol(), **inception.protocol()}))
    print(f"wrote {out}/select.json" + (", select.png" if len(rows) > 1 else ""))
    return 0


def _best(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for key in ("fid", "fid_denoised"):
        r = min(rows, key=lambda row: row[key])
        out[key] = {"step": r["step"], "ckpt": r["ckpt"], "value": r[key]}
    return out


# ---------------------------------------------------------------------------------------------------------------


def run_neighbors(args: argparse.Namespace) -> int:
    from torchvision.utils import save_image

    from ncsn_fast.cli import _device
    from ncsn_fast.data import build_dataset, first_item
    from ncsn_fast.evaluation.neighbors import nearest_neighbors, neighbor_grid, pixel_features

    _check_args(args, ("k", "n", "batch_size"), ".png")
    device = _device(args.device)
    model, cfg = _model(args, args.ckpt, device)
    dataset = build_dataset(cfg, args.data)
    if args.samples:
        p = Path(args.samples)
        if not p.is_file():
            raise FIDError(f"--samples: no such file {args.samples!r}")
        samples = torch.load(p, map_location="cpu", weights_only=True)
        if not torch.is_tensor(samples) or samples.dim() != 4:
            raise FIDError(f"--samples: expected a (N, C, H, W) tensor in {args.samples!r}")
        samples = samples.float() / 255.0 if samples.dtype == torch.uint8 else samples.float()
    else:
        plan = FIDSampling(args.n, args.n, cfg.sampling.n_steps_each, cfg.sampling.step_lr, seed=args.seed)
        denoise = cfg.sampling.denoise
        batches = fid_batches(model, cfg, plan, (denoise,), device, progress=not args.quiet)
        samples = torch.cat([quantize_8bit(images[denoise]).cpu() for _, images in batches])
    mode = args.features
    if mode == "auto":
        mode = "inception" if args.weights or find_standard_weights() else "pixels"
    features = pixel_features
    if mode == "inception":
        inception: InceptionFeatures = load_inception(args.weights, device)
        features = inception
    print(
        f"features: {mode}"
        + (" (no Inception weights given or cached)" if args.features == "auto" and mode == "pixels" else "")
    )

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=False,
        collate_fn=lambda items: torch.stack([first_item(it) for it in items]),
    )
    from tqdm import tqdm

    nb = nearest_neighbors(
        samples, tqdm(loader, desc="neighbors", disable=args.quiet), features, args.k, not args.no_flips
    )
    grid = neighbor_grid(samples, lambda i: first_item(dataset[i]), nb)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, out, nrow=args.k + 1, padding=1)
    write_json(out.with_suffix(".json"), {"features": mode, "flips": not args.no_flips, "neighbors": nb.to_dict()})
    flipped = int(nb.flipped[:, 0].sum())
    print(
        f"wrote {out} ({samples.shape[0]} samples × {args.k} neighbors, {mode} features; nearest is a flipped "
        f"training image for {flipped}) and {out.with_suffix('.json')}"
    )
    return 0
