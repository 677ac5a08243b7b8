"""Training loop: Adam per the config, annealed DSM loss with random labels, EMA, atomic checkpoints, resume.

``python -m ncsn_fast.train --config digits --workdir runs/digits`` trains the bundled digits model.
A killed run continues with ``--resume`` from its latest complete checkpoint, with the same batches and noise.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ncsn_fast.checkpoint import read_checkpoint, save_checkpoint
from ncsn_fast.config import Config, load_config
from ncsn_fast.ema import EMA
from ncsn_fast.losses import dsm_loss
from ncsn_fast.models import build_model
from ncsn_fast.techniques import get_sigmas


def load_training_data(cfg: Config) -> torch.Tensor:
    if cfg.data.dataset.upper() == "DIGITS":
        from ncsn_fast.data import load_digits

        return load_digits(cfg.data.image_size)
    raise NotImplementedError(
        f"data.dataset: {cfg.data.dataset!r} is not wired into training yet; the digits preset is (DIGITS)"
    )


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


class BatchSampler:
    """Shuffled epochs of indices from a seeded generator whose state is saved in checkpoints."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.generator)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])


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


def latest_checkpoint(workdir: Path) -> Path | None:
    ckpts = sorted(workdir.glob("checkpoint_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
    return ckpts[-1] if ckpts else None


def train(
    cfg: Config,
    workdir: str | Path,
    max_steps: int | None = None,
    seed: int = 0,
    resume: bool = False,
    log_every: int = 50,
    snapshot_every: int | None = None,
    keep: int = 3,
    data: torch.Tensor | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train ``build_model(cfg)`` and return a summary (final step, last losses, wall time)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = load_training_data(cfg) if data is None else data
    total = max_steps if max_steps is not None else cfg.training.n_iters
    snapshot_every = snapshot_every or cfg.training.snapshot_freq

    torch.manual_seed(seed)
    model = build_model(cfg)
    sigmas = get_sigmas(cfg)
    optimizer = make_optimizer(cfg, model.parameters())
    ema = EMA(model, cfg.model.ema_rate) if cfg.model.ema else None
    sampler = BatchSampler(len(data), cfg.training.batch_size, seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    step = 0
    if resume and (ckpt_path := latest_checkpoint(workdir)) is not None:
        ckpt = read_checkpoint(ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        sampler.load_state_dict(ckpt["rng"]["sampler"])
        noise_gen.set_state(ckpt["rng"]["noise"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        _set_numpy_state(ckpt["rng"]["numpy"])
        random.setstate(ckpt["rng"]["python"])
        step = int(ckpt["step"])

    def snapshot() -> None:
        save_checkpoint(
            workdir / f"checkpoint_{step}.pth",
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            ema=ema.state_dict() if ema is not None else None,
            step=step,
            config=cfg.to_dict(),
            rng={
                "sampler": sampler.state_dict(),
                "noise": noise_gen.get_state(),
                "torch": torch.get_rng_state(),
                "numpy": _numpy_state(),
                "python": random.getstate(),
            },
        )
        for old in sorted(workdir.glob("checkpoint_*.pth"), key=lambda p: int(p.stem.split("_")[1]))[:-keep]:
            old.unlink()

    log = (workdir / "metrics.jsonl").open("a")
    model.train()
    losses: list[float] = []
    t0 = time.time()
    bar = tqdm(total=total, initial=step, desc="train", disable=quiet, dynamic_ncols=True)
    while step < total:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step)
        x = data[sampler.next()]
        if cfg.data.random_flip:
            flip = torch.rand(x.shape[0], generator=noise_gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        labels = torch.randint(0, len(sigmas), (x.shape[0],), generator=noise_gen)
        z = torch.randn(x.shape, generator=noise_gen)
        loss = dsm_loss(model, x, sigmas, labels, z, cfg.training.anneal_power)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training stopped: non-finite loss {loss.item()} at step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        step += 1
        losses.append(loss.item())
        bar.update(1)
        if step % log_every == 0 or step == total:
            recent = float(np.mean(losses[-log_every:]))
            bar.set_postfix(loss=f"{recent:.3f}")
            rec = {"step": step, "loss": recent, "lr": lr_at(cfg, step - 1), "wall_s": round(time.time() - t0, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if step % snapshot_every == 0 or step == total:
            snapshot()
    bar.close()
    log.close()
    return {"step": step, "losses": losses, "wall_s": time.time() - t0, "model": model, "ema": ema}


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", required=True, help="preset name or YAML path")
    p.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl and logs go here")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --workdir")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (default: n_iters)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--snapshot-every", type=int, default=None)
    return p


def run(args: argparse.Namespace) -> int:
    for name in ("max_steps", "batch_size", "log_every", "snapshot_every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')}: must be at least 1, got {value}")
    cfg = load_config(args.config)
    if args.batch_size:
        cfg.training.batch_size = args.batch_size
    train(cfg, args.workdir, args.max_steps, args.seed, args.resume, args.log_every, args.snapshot_every)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="python -m ncsn_fast.train", description=__doc__))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
