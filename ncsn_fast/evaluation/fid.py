"""FID with the standard protocol, as library functions: :func:`fid`, :func:`fid_stats`, :func:`select_checkpoints`.

Samples come from :func:`ncsn_fast.sampling.sample_batches` (global batches with their own seed streams, sharded
over torchrun ranks, the same samples on 1 or N processes); features from the FID Inception
(:mod:`~ncsn_fast.evaluation.inception`); statistics streamed in float64 (:mod:`~ncsn_fast.evaluation.stats`);
the distance by :func:`~ncsn_fast.evaluation.frechet.frechet_distance`. Each result carries its protocol (how the
samples were drawn, which network and weights, resize, quantization), stored with every number.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ncsn_fast.evaluation.frechet import FIDError, frechet_distance
from ncsn_fast.evaluation.inception import (
    FEATURE_DIM,
    InceptionFeatures,
    feature_stats,
    load_inception,
    to_uint8,
)
from ncsn_fast.evaluation.stats import GaussianStats, load_stats
from ncsn_fast.sampling.generate import SamplingPlan, sample_batches
from ncsn_fast.validation import check_choice, check_int

if TYPE_CHECKING:
    from ncsn_fast.config import Config
    from ncsn_fast.distributed import Ranks

METHODS = ("sqrtm", "eigh")


def reference_stats(stats: str | os.PathLike | tuple[Any, Any]) -> tuple[Any, Any, dict[str, Any] | None]:
    """(mu, cov, protocol) of a TTUR ``.npz`` path or of a (mu, cov) pair; FIDError for another dimension."""
    if isinstance(stats, tuple):
        mu, cov, protocol = stats[0], stats[1], None
    else:
        mu, cov, protocol = load_stats(stats)
    if len(mu) != FEATURE_DIM:
        raise FIDError(f"stats: {len(mu)}-dimensional statistics, not the Inception's {FEATURE_DIM}")
    return mu, cov, protocol


@dataclass
class FIDResult:
    fid: float  # NaN on ranks other than 0 under torchrun
    stats: GaussianStats  # of the samples, all ranks combined
    protocol: dict[str, Any]
    samples: torch.Tensor | None  # the first ``keep`` samples, uint8 (N, C, H, W), in global order (rank 0)
    seconds: float


def sample_statistics(
    model: torch.nn.Module,
    cfg: Config,
    plan: SamplingPlan,
    n: int,
    batch_size: int,
    features: Callable[[torch.Tensor], torch.Tensor],
    both_modes: bool = False,
    ranks: Ranks | None = None,
    keep: int = 0,
    progress: bool = True,
) -> tuple[dict[bool, GaussianStats], list[tuple[int, torch.Tensor]]]:
    """Feature statistics of this rank's samples, all ranks combined: {denoised: stats} (both denoising modes of
    the same chains with ``both_modes``), and this rank's first ``keep`` samples of the plan's mode as
    (global batch index, uint8 images) pairs."""
    from ncsn_fast.distributed import Ranks

    ranks = ranks or Ranks()
    check_int("n", n, 2)
    resolved = plan.resolve(cfg, getattr(model, "conditional", False))
    modes = [resolved.denoise, not resolved.denoise] if both_modes else [resolved.denoise]
    stats = {m: GaussianStats(FEATURE_DIM) for m in modes}
    kept: list[tuple[int, torch.Tensor]] = []
    n_kept = 0
    batches = sample_batches(
        model, cfg, resolved, n, batch_size, rank=ranks.rank, world=ranks.world, progress=progress,
        both_modes=both_modes,
    )  # fmt: skip
    for batch in batches:
        for mode, images in zip(modes, (batch.images, batch.other), strict=False):
            stats[mode].update(features(images))
        if n_kept < keep:
            kept.append((batch.index, to_uint8(batch.images[: keep - n_kept]).cpu()))
            n_kept += len(kept[-1][1])
    device = next(model.parameters()).device
    for st in stats.values():
        st.all_reduce(device if device.type == "cuda" else None)
    return stats, kept


def _gather(kept: list[tuple[int, torch.Tensor]], world: int) -> torch.Tensor | None:
    import torch.distributed as dist

    if world > 1:
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, kept)
        kept = [item for part in parts for item in part]
    return torch.cat([t for _, t in sorted(kept, key=lambda bt: bt[0])]) if kept else None


def fid(
    model: torch.nn.Module,
    cfg: Config,
    stats: str | os.PathLike | tuple[Any, Any],
    n: int = 50000,
    plan: SamplingPlan | None = None,
    batch_size: int | None = None,
    inception: InceptionFeatures | None = None,
    weights: str | os.PathLike | None = None,
    method: str = "sqrtm",
    keep: int = 64,
    ranks: Ranks | None = None,
    progress: bool = True,
) -> FIDResult:
    """The FID of ``n`` samples of ``model`` against reference statistics (a TTUR ``.npz`` or (mu, cov)).

    ``plan``: how to sample (default: the config's ALD schedule with its denoising); ``batch_size`` default: the
    config's ``sampling.batch_size``; ``inception`` or ``weights`` (see :func:`load_inception`); ``method`` of the
    matrix square root ("sqrtm" as TTUR, or "eigh"). Under torchrun pass ``ranks`` (every rank calls this; the
    number is computed on rank 0). Raises FIDError/ValueError naming the argument.
    """
    check_int("n", n, 2)
    check_choice("method", method, METHODS)
    plan = (plan or SamplingPlan()).check()
    batch_size = check_int("batch_size", batch_size or min(cfg.sampling.batch_size, n), 1)
    mu_ref, cov_ref, ref_protocol = reference_stats(stats)  # fail fast, before hours of sampling
    device = next(model.parameters()).device
    inception = inception or load_inception(weights, device)
    t0 = time.time()
    st, kept = sample_statistics(model, cfg, plan, n, batch_size, inception, False, ranks, keep, progress)
    stat = next(iter(st.values()))
    world = ranks.world if ranks else 1
    images = _gather(kept, world)
    resolved = plan.resolve(cfg, getattr(model, "conditional", False))
    protocol = {
        **resolved.protocol(device),
        **inception.protocol(),
        "n": n,
        "denoise": resolved.denoise,
        "world_size": world,
        "method": method,
        "stats": str(stats) if not isinstance(stats, tuple) else "given (mu, cov)",
        "stats_protocol": ref_protocol,
    }
    value = math.nan
    if ranks is None or ranks.is_main:
        value = frechet_distance(stat.mu, stat.cov, mu_ref, cov_ref, method=method)
    return FIDResult(value, stat, protocol, images, time.time() - t0)


def fid_stats(
    data: torch.utils.data.Dataset | torch.Tensor,
    inception: InceptionFeatures | None = None,
    weights: str | os.PathLike | None = None,
    batch_size: int = 50,
    n: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> GaussianStats:
    """Inception statistics of images: a Dataset of (C, H, W) images in [0, 1] (or (image, label) pairs), or a
    tensor (N, C, H, W) (uint8, or floats in [0, 1]). ``n``: the first n images. See :func:`image_source` to turn a
    folder, an array file or a preset into a Dataset. FIDError for fewer than 2 images or mixed sizes."""
    from tqdm import tqdm

    from ncsn_fast.data import first_item

    check_int("batch_size", batch_size, 1)
    dataset = torch.utils.data.TensorDataset(data) if isinstance(data, torch.Tensor) else data
    count = len(dataset) if n is None else min(check_int("n", n, 1), len(dataset))
    if count < 2:
        raise FIDError(f"data: statistics need at least 2 images, got {count}")

    def collate(items: list[Any]) -> torch.Tensor:
        xs = [first_item(it) for it in items]
        shapes = {tuple(x.shape) for x in xs}
        if len(shapes) > 1:
            raise FIDError(f"data: images of different sizes {sorted(shapes)[:3]}: resize them (image_size)")
        return torch.stack(xs)

    subset = torch.utils.data.Subset(dataset, range(count))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    inception = inception or load_inception(weights, device)
    return feature_stats(tqdm(loader, desc="features", disable=not progress, dynamic_ncols=True), inception)


def image_source(
    source: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    split: str = "train",
    image_size: int | None = None,
) -> tuple[torch.utils.data.Dataset, str]:
    """(Dataset of images in [0, 1], description) for a preset (its ``split`` at the model's resolution, files under
    ``data_root``), an image folder (resized and centre-cropped to ``image_size`` when given) or a ``.npy``/``.pt``
    array (N, C, H, W) or (N, H, W, C), C = 1 or 3. FIDError naming ``data`` otherwise."""
    from ncsn_fast.config import PRESETS, load_config
    from ncsn_fast.data import ImageFolderDataset, _resize_crop, build_dataset
    from ncsn_fast.images import load_tensor

    text, p = str(source), Path(source)
    if text in PRESETS and not p.exists():
        cfg = load_config(text)
        return build_dataset(cfg, data_root, split=split), f"{cfg.data.dataset} {split} set at {cfg.data.image_size} px"
    if p.is_dir():
        from torchvision import transforms as T

        tf = _resize_crop(image_size) if image_size else T.ToTensor()
        what = f"image folder {p}" + (f" at {image_size} px" if image_size else "")
        return ImageFolderDataset(p, tf, 3), what
    if p.is_file() and p.suffix.lower() in (".npy", ".pt", ".npz"):
        t = load_tensor(p, "data")
        if t.dim() == 4 and t.shape[1] not in (1, 3) and t.shape[-1] in (1, 3):
            t = t.permute(0, 3, 1, 2)  # (N, H, W, C), as numpy image arrays usually are
        if t.dim() != 4 or t.shape[1] not in (1, 3):
            raise FIDError(f"data: expected (N, C, H, W) or (N, H, W, C) images with C = 1 or 3, got {tuple(t.shape)}")
        return torch.utils.data.TensorDataset(t if t.dtype == torch.uint8 else t.float()), f"array {p.name}"
    raise FIDError(f"data: {text!r} is not an image folder, a .npy/.pt array or a preset ({', '.join(PRESETS)})")


@dataclass
class Selection:
    rows: list[dict[str, Any]] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)

    def best(self) -> dict[str, dict[str, Any]]:
        out = {}
        for key in ("fid", "fid_denoised"):
            r = min(self.rows, key=lambda row: row[key])
            out[key] = {"step": r["step"], "ckpt": r["ckpt"], "value": r[key]}
        return out


def select_checkpoints(
    checkpoints: Sequence[tuple[int, str | os.PathLike]],
    stats: str | os.PathLike | tuple[Any, Any],
    config: str | os.PathLike | Config | None = None,
    n: int | None = None,
    plan: SamplingPlan | None = None,
    batch_size: int | None = None,
    inception: InceptionFeatures | None = None,
    weights: str | os.PathLike | None = None,
    method: str = "sqrtm",
    ema: bool = True,
    device: torch.device | str = "cpu",
    ranks: Ranks | None = None,
    progress: bool = True,
    on_row: Callable[[Selection], None] | None = None,
) -> Selection:
    """Appendix B.2's model selection: the FID of ``n`` (default ``fast_fid.num_samples``) samples of every
    (step, checkpoint), with and without the final denoising step (one chain gives both), the config's
    ``fast_fid`` T and ε, the same seed for every checkpoint (common random numbers). ``on_row`` is called after
    each checkpoint (the CLI rewrites select.json there, so a stopped run keeps what it measured)."""
    from ncsn_fast.pretrained import load_model

    check_choice("method", method, METHODS)
    mu_ref, cov_ref, _ = reference_stats(stats)
    if not checkpoints:
        raise FIDError("checkpoints: none to score")
    plan = plan or SamplingPlan(section="fast_fid")
    inception = inception or load_inception(weights, device)
    selection = Selection()
    for step, path in checkpoints:
        model, cfg, _ = load_model(path, config, ema=ema, device=device)
        count = n or cfg.fast_fid.num_samples
        size = batch_size or min(cfg.fast_fid.batch_size, count)
        st, _ = sample_statistics(model, cfg, plan, count, size, inception, True, ranks, 0, progress)
        main = ranks is None or ranks.is_main
        fids = {m: frechet_distance(s.mu, s.cov, mu_ref, cov_ref, method=method) if main else math.nan
                for m, s in st.items()}  # fmt: skip
        selection.rows.append({"step": step, "ckpt": str(path), "fid": fids[False], "fid_denoised": fids[True]})
        resolved = plan.resolve(cfg, getattr(model, "conditional", False))
        selection.protocol = {**resolved.protocol(device), **inception.protocol(), "n": count, "method": method,
                              "world_size": ranks.world if ranks else 1}  # fmt: skip
        if on_row is not None:
            on_row(selection)
    return selection
