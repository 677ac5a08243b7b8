"""Training: Adam per the config, annealed DSM loss with random labels, EMA, atomic checkpoints, exact resume,
bf16/fp16 autocast, torch.compile, and DDP under torchrun (nccl on GPUs, gloo on CPU).

    ncsn-fast train --config digits --workdir runs/digits
    torchrun --nproc_per_node=2 -m ncsn_fast.train --config cifar10 --data ~/data --workdir runs/c10

Determinism: the global batch of step k is fixed by (seed, epoch, position) and its labels, flips and noise come
from one generator whose state is checkpointed, so a run killed at any moment continues with ``--resume`` from
its last complete checkpoint exactly as if it had never stopped — and K DDP ranks, each taking 1/K of every
global batch, train the same model as one process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ncsn_fast.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from ncsn_fast.config import Config, load_config
from ncsn_fast.data import build_dataset, data_transform
from ncsn_fast.ema import EMA, unwrap_model
from ncsn_fast.losses import dsm_loss
from ncsn_fast.models import build_model
from ncsn_fast.techniques import get_sigmas

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def lr_at(cfg: Config, step: int) -> float:
    lr = cfg.optim.lr
    for start, value in cfg.optim.lr_schedule or []:
        if step >= start:
            lr = float(value)
    return lr


def make_optimizer(cfg: Config, params: Any) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.optimizer.lower() == "adam":
        return torch.optim.Adam(
            params, lr=o.lr, betas=(o.beta1, 0.999), eps=o.eps, weight_decay=o.weight_decay, amsgrad=o.amsgrad
        )
    if o.optimizer.lower() == "rmsprop":
        return torch.optim.RMSprop(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.optimizer.lower() == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=0.9)
    raise ValueError(f"optim.optimizer: unknown optimizer {o.optimizer!r}; choose Adam, RMSProp or SGD")


class GlobalBatches:
    """Deterministic, resumable order of global batches: epoch e is randperm(n) seeded by (seed, e)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < batch_size:
            raise ValueError(f"training.batch_size: {batch_size} is larger than the dataset ({n} images)")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.index = 0, 0
        self._perm = self._epoch_perm()

    def _epoch_perm(self) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch))

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        if (self.index + 1) * self.batch_size > self.n:
            self.epoch, self.index = self.epoch + 1, 0
            self._perm = self._epoch_perm()
        idx = self._perm[self.index * self.batch_size : (self.index + 1) * self.batch_size]
        self.index += 1
        return idx

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._perm = self._epoch_perm()


class _RankBatches(torch.utils.data.Sampler):
    """The rank's share of each global batch, for a DataLoader (its own copy of the order, from a state)."""

    def __init__(self, order: GlobalBatches, rank: int, world: int) -> None:
        self.order, self.rank, self.world = order, rank, world

    def __iter__(self):
        for idx in self.order:
            yield idx[self.rank :: self.world].tolist()


def _numpy_state() -> dict[str, Any]:
    # As tensors and plain values, so that checkpoints load with torch.load(weights_only=True).
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _set_numpy_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["cached"]))


def _step_of(path: Path) -> int:
    return int(path.stem.split("_")[1])


def latest_checkpoint(workdir: Path) -> Path | None:
    ckpts = sorted(Path(workdir).glob("checkpoint_*.pth"), key=_step_of)
    return ckpts[-1] if ckpts else None


def _check_workdir(workdir: Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"--workdir: cannot write to {str(workdir)!r}: {exc.strerror or exc}") from None


def _config_mismatch(saved: dict[str, Any], cfg: Config) -> list[str]:
    now = cfg.to_dict()
    diffs = []
    for section in ("model", "data"):
        for key, value in now[section].items():
            old = saved.get(section, {}).get(key)
            if key in ("num_workers",) or old == value:
                continue
            diffs.append(f"{section}.{key}: checkpoint {old!r}, config {value!r}")
    return diffs


def plot_loss_curve(metrics: Path, out: Path) -> None:
    """Log-scale loss-vs-step PNG (nothing written before two logged steps)."""
    from ncsn_fast.plotting import line_chart

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    pts = [(r["step"], r["loss"]) for r in rows if r.get("loss", 0) > 0]
    if len(pts) >= 2:
        line_chart({"DSM loss": pts}, out, f"DSM loss, steps {pts[0][0]}-{pts[-1][0]}", log_y=True)


def _distributed() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if world > 1:
        return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def train(
    cfg: Config,
    workdir: str | Path,
    max_steps: int | None = None,
    seed: int = 0,
    resume: bool = False,
    log_every: int = 50,
    snapshot_every: int | None = None,
    keep: int = 3,
    data: torch.Tensor | torch.utils.data.Dataset | None = None,
    data_root: str | Path | None = None,
    download: bool = False,
    precision: str = "fp32",
    compile: bool | None = None,
    device: str | torch.device | None = None,
    init: str | Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train ``build_model(cfg)``; returns a summary (final step, losses, wall time, model, EMA).

    Under torchrun (WORLD_SIZE > 1) each rank takes 1/world of every global batch of ``training.batch_size``;
    rank 0 writes checkpoints and logs.
    """
    workdir = Path(workdir)
    if precision not in PRECISIONS:
        raise ValueError(f"--precision: must be one of {list(PRECISIONS)}, got {precision!r}")
    rank, world, local_rank = _distributed()
    if cfg.training.batch_size % world:
        raise ValueError(f"training.batch_size: {cfg.training.batch_size} is not divisible by {world} processes")
    if rank == 0:
        _check_workdir(workdir)
        for stale in workdir.glob(".checkpoint_*.tmp"):  # left by a run killed while writing
            stale.unlink()
    dev = torch.device(device) if device else torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if isinstance(data, torch.Tensor):
        data = torch.utils.data.TensorDataset(data)
    dataset = data if data is not None else build_dataset(cfg, data_root, download)
    total = max_steps if max_steps is not None else cfg.training.n_iters
    snapshot_every = snapshot_every or cfg.training.snapshot_freq

    torch.manual_seed(seed)
    model = build_model(cfg).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    sigmas = get_sigmas(cfg).to(dev)
    optimizer = make_optimizer(cfg, model.parameters())
    ema = EMA(model, cfg.model.ema_rate) if cfg.model.ema else None
    order = GlobalBatches(len(dataset), cfg.training.batch_size, seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    step = 0
    ckpt_path = latest_checkpoint(workdir) if resume else None
    if ckpt_path is not None:
        ckpt = read_checkpoint(ckpt_path)
        diffs = _config_mismatch(ckpt.get("config") or {}, cfg)
        if diffs:
            raise ValueError(f"--resume: {ckpt_path.name} was trained with another config: {'; '.join(diffs[:4])}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        order.load_state_dict(ckpt["rng"]["order"])
        noise_gen.set_state(ckpt["rng"]["noise"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        _set_numpy_state(ckpt["rng"]["numpy"])
        random.setstate(ckpt["rng"]["python"])
        step = int(ckpt["step"])
    elif init is not None:  # start from an official (or our) checkpoint: weights, EMA and, if it fits, Adam state
        ckpt = read_checkpoint(init)
        model.load_state_dict(ckpt["model"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        with contextlib.suppress(ValueError, KeyError):
            optimizer.load_state_dict(ckpt["optimizer"])

    fwd = torch.compile(model) if (compile if compile is not None else dev.type == "cuda") else model
    ddp = None
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(fwd, device_ids=[dev.index] if dev.type == "cuda" else None)
        fwd = ddp
    amp_dtype = PRECISIONS[precision]
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=_RankBatches(order_copy := GlobalBatches(order.n, order.batch_size, seed), rank, world),
        num_workers=cfg.data.num_workers if not isinstance(dataset, torch.utils.data.TensorDataset) else 0,
        pin_memory=dev.type == "cuda",
        persistent_workers=cfg.data.num_workers > 0 and not isinstance(dataset, torch.utils.data.TensorDataset),
    )
    order_copy.load_state_dict(order.state_dict())
    batches = iter(loader)

    def snapshot() -> None:
        if rank != 0:
            return
        save_checkpoint(
            workdir / f"checkpoint_{step}.pth",
            model=unwrap_model(model).state_dict(),
            optimizer=optimizer.state_dict(),
            ema=ema.state_dict() if ema is not None else None,
            step=step,
            config=cfg.to_dict(),
            rng={
                "order": order.state_dict(),
                "noise": noise_gen.get_state(),
                "torch": torch.get_rng_state(),
                "numpy": _numpy_state(),
                "python": random.getstate(),
            },
        )
        for old in sorted(workdir.glob("checkpoint_*.pth"), key=_step_of)[:-keep]:
            old.unlink()
        with contextlib.suppress(OSError, ValueError):
            plot_loss_curve(workdir / "metrics.jsonl", workdir / "loss.png")

    log = (workdir / "metrics.jsonl").open("a") if rank == 0 else None
    model.train()
    losses: list[float] = []
    window: list[torch.Tensor] = []
    t0, t_log = time.time(), time.time()
    L, B = len(sigmas), cfg.training.batch_size
    bar = tqdm(total=total, initial=step, desc="train", disable=quiet or rank != 0, dynamic_ncols=True)
    while step < total:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step)
        next(order)  # the main process's copy of the order, for checkpoints
        batch = next(batches)
        x = (batch[0] if isinstance(batch, (list, tuple)) else batch).float()
        # labels, flips and noise for the whole global batch, then this rank's share: DDP == one process
        labels = torch.randint(0, L, (B,), generator=noise_gen)[rank::world]
        flip = (torch.rand(B, generator=noise_gen) < 0.5)[rank::world]
        z = torch.randn((B, *x.shape[1:]), generator=noise_gen)[rank::world]
        if cfg.data.random_flip:
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = data_transform(cfg, x, noise_gen)
        x, labels, z = x.to(dev, non_blocking=True), labels.to(dev), z.to(dev)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            per_sample = dsm_loss(fwd, x, sigmas, labels, z, cfg.training.anneal_power, reduction="none")
        loss = per_sample.mean()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training stopped: non-finite loss {loss.item()} at step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or float("inf"))
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema.update(model)
        step += 1
        losses.append(loss.item())
        window.append(torch.stack([per_sample.detach().float().cpu(), labels.float().cpu()], 1))
        bar.update(1)
        if log is not None and (step % log_every == 0 or step == total):
            w = torch.cat(window)
            buckets = {}
            for b in range(4):  # loss per quarter of the σ range (bucket 0 = largest σ)
                sel = (w[:, 1] * 4 // L) == b
                if sel.any():
                    buckets[f"loss_sigma_q{b}"] = float(w[sel, 0].mean())
            now = time.time()
            rec = {
                "step": step,
                "loss": float(np.mean(losses[-log_every:])),
                **buckets,
                "grad_norm": float(grad_norm),
                "lr": lr_at(cfg, step - 1),
                "images_per_s": round(len(w) * world / max(now - t_log, 1e-9), 1),
                "wall_s": round(now - t0, 1),
            }
            window.clear()
            t_log = now
            bar.set_postfix(loss=f"{rec['loss']:.3f}")
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if step % snapshot_every == 0 or step == total:
            snapshot()
            if rank == 0 and cfg.training.snapshot_sampling and ema is not None:
                _snapshot_samples(model, ema, cfg, workdir / f"samples_{step}.png")
    bar.close()
    if log is not None:
        log.close()
    return {"step": step, "losses": losses, "wall_s": time.time() - t0, "model": unwrap_model(model), "ema": ema}


def _snapshot_samples(model: torch.nn.Module, ema: EMA, cfg: Config, out: Path) -> None:
    """A quick 36-sample grid from the EMA weights (heun, 25 evaluations; thinned ALD for the original NCSN)."""
    from torchvision.utils import save_image

    from ncsn_fast.data import inverse_data_transform
    from ncsn_fast.sampling import annealed_langevin, heun, init_samples, prior_samples, thin_schedule

    base = unwrap_model(model)
    shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    dev = next(base.parameters()).device
    g = torch.Generator().manual_seed(0)
    with ema.average_parameters(base), torch.no_grad():
        base.eval()
        if getattr(base, "conditional", False):
            sig, labels, eps = thin_schedule(get_sigmas(cfg), max(1, cfg.model.num_classes // 10), 5)
            x = annealed_langevin(base, init_samples(36, shape, g, dev), sig, 5, eps, generator=g, labels=labels)
        else:
            smax, smin = cfg.model.sigma_begin, cfg.model.sigma_end
            x = heun(base.score, prior_samples(36, shape, smax, g, dev), 25, smax, smin)
        base.train()
    save_image(inverse_data_transform(cfg, x.cpu()), out, nrow=6, padding=1)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", required=True, help="preset name or YAML path")
    p.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, loss.png and sample grids go here")
    p.add_argument("--data", help="dataset folder (not needed for the digits preset)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR-10 / CelebA")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --workdir")
    p.add_argument("--init", help="start from this checkpoint's weights (official or ncsn-fast format)")
    p.add_argument("--compile", dest="compile", action="store_true", default=None, help="torch.compile (GPU default)")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS))
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the local GPU, else the CPU)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (default: n_iters)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (all processes together)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--snapshot-every", type=int, default=None)
    p.add_argument("--keep", type=int, default=3, help="keep the last K checkpoints")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    for name in ("max_steps", "batch_size", "log_every", "snapshot_every", "keep"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')}: must be at least 1, got {value}")
    cfg = load_config(args.config)
    if args.batch_size:
        cfg.training.batch_size = args.batch_size
    if args.init:
        read_checkpoint(args.init)  # a bad --init fails here, before any data is read
    train(
        cfg,
        args.workdir,
        args.max_steps,
        args.seed,
        args.resume,
        args.log_every,
        args.snapshot_every,
        keep=args.keep,
        data_root=args.data,
        download=args.download,
        precision=args.precision,
        compile=args.compile,
        device=args.device,
        init=args.init,
        quiet=args.quiet,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="python -m ncsn_fast.train", description=__doc__))
    try:
        return run(parser.parse_args(argv))
    except (ValueError, ImportError, CheckpointError) as exc:
        print(f"ncsn-fast train: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
