"""Training: Adam per the config, annealed DSM loss with random labels, EMA, atomic checkpoints, exact resume,
bf16/fp16 autocast, torch.compile, and DDP under torchrun (nccl on GPUs, gloo on CPU).

    train(load_config("digits"), "runs/digits")                      # the library
    ncsn-fast train --config digits --workdir runs/digits             # the command line (ncsn_fast.cli)

Determinism: the global batch of step k is fixed by (seed, epoch, position) and its labels, flips and noise come
from one generator whose state is checkpointed, so a run killed at any moment continues with ``resume=True`` from
its last complete checkpoint exactly as if it had never stopped — and K DDP ranks, each taking 1/K of every
global batch, train the same model as one.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ncsn_fast import distributed
from ncsn_fast.checkpoint import checkpoint_step, load_state, read_checkpoint, save_checkpoint
from ncsn_fast.config import Config
from ncsn_fast.data import build_dataset, data_transform
from ncsn_fast.ema import EMA, unwrap_model
from ncsn_fast.io import atomic_write
from ncsn_fast.losses import dsm_loss
from ncsn_fast.models import build_model
from ncsn_fast.precision import check_precision
from ncsn_fast.seeding import make_generator
from ncsn_fast.techniques import get_sigmas
from ncsn_fast.validation import check_device, check_int


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
    """Deterministic, resumable order of global batches: epoch e is randperm(n) from the stream (seed, order, e)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < batch_size:
            raise ValueError(f"training.batch_size: {batch_size} is larger than the dataset ({n} images)")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.index = 0, 0
        self._perm = self._epoch_perm()

    def _epoch_perm(self) -> torch.Tensor:
        return torch.randperm(self.n, generator=make_generator(self.seed, "train/order", self.epoch))

    def next_epoch(self) -> int:
        """The epoch the next batch belongs to."""
        return self.epoch + 1 if (self.index + 1) * self.batch_size > self.n else self.epoch

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


def _rng_state(order: GlobalBatches, noise_gen: torch.Generator) -> dict[str, Any]:
    # As tensors and plain values, so that checkpoints load with torch.load(weights_only=True).
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }
    return {
        "order": order.state_dict(),
        "noise": noise_gen.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": numpy_state,
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any], order: GlobalBatches, noise_gen: torch.Generator) -> None:
    order.load_state_dict(state["order"])
    noise_gen.set_state(state["noise"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(state["python"])


def checkpoints(workdir: str | Path) -> list[Path]:
    """``checkpoint_<step>.pth`` files of a workdir, by step."""
    found = [p for p in Path(workdir).glob("checkpoint_*.pth") if checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(workdir: str | Path) -> Path | None:
    found = checkpoints(workdir) if Path(workdir).is_dir() else []
    return found[-1] if found else None


def existing_run(workdir: str | Path) -> str | None:
    """What shows that ``workdir`` holds a run already (its newest checkpoint, else metrics.jsonl), in words; None."""
    if (newest := latest_checkpoint(workdir)) is not None:
        return f"newest checkpoint {newest.name}, step {checkpoint_step(newest)}"
    stopped = (Path(workdir) / "metrics.jsonl").is_file()
    return "metrics.jsonl of a run stopped before its first checkpoint" if stopped else None


def _check_workdir(workdir: Path) -> bool:
    """Create (if needed) and probe the workdir; returns whether it was created by this call."""
    created = not workdir.exists()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"workdir: cannot write to {str(workdir)!r}: {exc.strerror or exc}") from None
    return created


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


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the log lines written after the checkpoint a run resumes from (they will be written again)."""
    if path.is_file():
        rows = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
        text = "".join(r + "\n" for r in rows).encode()
        atomic_write(path, lambda f: f.write(text))


def plot_loss_curve(metrics: Path, out: Path) -> bool:
    """The loss curve PNG of a metrics.jsonl (see :func:`ncsn_fast.plotting.loss_curve`); False without data."""
    from ncsn_fast.plotting import loss_curve

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return loss_curve(rows, out)


def _log_record(window: list[torch.Tensor], losses: list[float], levels: int, per_level: bool) -> dict[str, Any]:
    w = torch.cat(window)
    rec: dict[str, Any] = {"loss": float(np.mean(losses[-len(window) :]))}
    for b in range(4):  # loss per quarter of the σ range (bucket 0 = largest σ)
        sel = (w[:, 1] * 4 // levels) == b
        if sel.any():
            rec[f"loss_sigma_q{b}"] = float(w[sel, 0].mean())
    if per_level:  # training.log_all_sigmas: the loss of every noise level seen in the window
        rec["loss_sigma"] = {int(k): float(w[w[:, 1] == k, 0].mean()) for k in w[:, 1].unique().tolist()}
    return rec


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
    adopt_schedule: bool = False,
) -> dict[str, Any]:
    """Train ``build_model(cfg)`` for ``min(max_steps or training.n_iters, training.n_epochs epochs)`` steps.

    Writes ``workdir/checkpoint_<step>.pth`` (every ``snapshot_every`` steps, default ``training.snapshot_freq``,
    and at the end; the last ``keep``), ``metrics.jsonl`` every ``log_every`` steps and ``loss.png``.
    ``resume`` continues from the latest checkpoint (ValueError "nothing to resume" when the workdir does not exist);
    without it a workdir that holds a run (:func:`existing_run`) is refused, untouched. Pruning to the last ``keep``
    removes only this run's own checkpoints (with ``resume``, also those of the run it continues).
    ``init`` starts from a checkpoint's weights (its EMA when it has one, else the EMA starts from the loaded
    weights; its σ schedule must match the config's unless ``adopt_schedule``). ``data``: a tensor (N, C, H, W) in
    [0, 1] or a Dataset instead of the config's dataset. Under torchrun (WORLD_SIZE > 1) each rank takes 1/world of
    every global batch of ``training.batch_size``; rank 0 writes. Returns a summary (final step, losses, wall time,
    model, EMA). Errors name the parameter (``workdir: …``); a run that fails before its first checkpoint removes
    the files it created (and the workdir, when it made it), nothing else.
    """
    workdir = Path(workdir)
    amp_dtype = check_precision("precision", precision)
    for name, value in (("max_steps", max_steps), ("log_every", log_every), ("snapshot_every", snapshot_every)):
        if value is not None:
            check_int(name, value, 1)
    check_int("keep", keep, 1)
    dev = check_device("device", device) if device is not None else None
    if not resume and (held := existing_run(workdir)):
        raise ValueError(f"workdir: {str(workdir)!r} already holds a run ({held}); continue it with resume=True, or "
                         "choose another workdir")  # fmt: skip
    ranks = distributed.setup()
    if cfg.training.batch_size % ranks.world:
        raise ValueError(f"training.batch_size: {cfg.training.batch_size} is not divisible by {ranks.world} processes")
    ckpt_path = latest_checkpoint(workdir) if resume else None
    if resume and not workdir.is_dir():  # a mistyped workdir; one that exists but holds no checkpoint yet (a run
        # killed before its first one) starts again at step 0
        raise ValueError(f"resume: nothing to resume in {str(workdir)!r} (no such folder)")
    ckpt = read_checkpoint(ckpt_path or init) if (ckpt_path or init) else None
    dev = dev or distributed.local_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"), ranks)
    dataset = torch.utils.data.TensorDataset(data) if isinstance(data, torch.Tensor) else data
    dataset = dataset if dataset is not None else build_dataset(cfg, data_root, download)

    torch.manual_seed(seed)
    model = build_model(cfg).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model.parameters())
    order = GlobalBatches(len(dataset), cfg.training.batch_size, seed)
    noise_gen = make_generator(seed, "train/noise")
    step = 0
    if ckpt_path is not None:
        diffs = _config_mismatch(ckpt.get("config") or {}, cfg)
        if diffs:
            raise ValueError(f"resume: {ckpt_path.name} was trained with another config: {'; '.join(diffs[:4])}")
        load_state(model, ckpt, f"checkpoint {str(ckpt_path)!r}", ema=False)
        optimizer.load_state_dict(ckpt["optimizer"])
        _set_rng_state(ckpt["rng"], order, noise_gen)
        step = int(ckpt["step"])
    elif ckpt is not None:  # --init: an official (or our) checkpoint's weights and, if it fits, its Adam state
        load_state(model, ckpt, f"init {str(init)!r}", ema=False, adopt_schedule=adopt_schedule)
        with contextlib.suppress(ValueError, KeyError, TypeError):
            optimizer.load_state_dict(ckpt["optimizer"])
    # Technique 5: the EMA starts from the weights the model holds now (the loaded ones with init/resume), unless
    # the checkpoint carries EMA state of its own.
    ema = EMA(model, cfg.model.ema_rate) if cfg.model.ema else None
    if ema is not None and ckpt is not None and ckpt.get("ema"):
        ema.load_state_dict(ckpt["ema"])
    sigmas = get_sigmas(cfg).to(dev)  # after loading: adopt_schedule may have replaced the config's schedule
    created = False
    before = set(workdir.iterdir()) if ranks.is_main and workdir.is_dir() else set()
    own = checkpoints(workdir) if ckpt_path is not None else []  # what pruning may remove
    if ranks.is_main:
        created = _check_workdir(workdir)
        for stale in workdir.glob(".checkpoint_*.tmp"):  # left by a run killed while writing
            stale.unlink()
        if resume:
            _truncate_metrics(workdir / "metrics.jsonl", step)
        if not quiet:
            where = f"resumed from {ckpt_path.name} (step {step})" if ckpt_path else "starting at step 0"
            where += " (no checkpoint to resume from yet)" if resume and ckpt_path is None else ""
            tqdm.write(f"train: {where}; workdir {workdir}")
    try:
        return _loop(
            cfg, workdir, model, optimizer, ema, order, noise_gen, sigmas, dataset, step, ranks, dev, amp_dtype,
            compile, max_steps if max_steps is not None else cfg.training.n_iters,
            log_every, snapshot_every or cfg.training.snapshot_freq, keep, seed, quiet, own,
        )  # fmt: skip
    except BaseException:
        if ranks.is_main and workdir.is_dir() and all(p in before for p in checkpoints(workdir)):
            for path in set(workdir.iterdir()) - before:  # a run that saved nothing removes what it made, only that
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            if created and not any(workdir.iterdir()):
                workdir.rmdir()
        raise


def _loop(
    cfg, workdir, model, optimizer, ema, order, noise_gen, sigmas, dataset, step, ranks, dev, amp_dtype, compile,
    total, log_every, snapshot_every, keep, seed, quiet, own,
) -> dict[str, Any]:  # fmt: skip
    rank, world = ranks.rank, ranks.world
    fwd = torch.compile(model) if (compile if compile is not None else dev.type == "cuda") else model
    if world > 1:
        fwd = torch.nn.parallel.DistributedDataParallel(fwd, device_ids=[dev.index] if dev.type == "cuda" else None)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
    tensors = isinstance(dataset, torch.utils.data.TensorDataset)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=_RankBatches(order_copy := GlobalBatches(order.n, order.batch_size, seed), rank, world),
        num_workers=0 if tensors else cfg.data.num_workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=cfg.data.num_workers > 0 and not tensors,
    )
    order_copy.load_state_dict(order.state_dict())
    batches = iter(loader)
    metrics = workdir / "metrics.jsonl"

    def snapshot() -> None:
        path = workdir / f"checkpoint_{step}.pth"
        save_checkpoint(
            path,
            model=unwrap_model(model).state_dict(),
            optimizer=optimizer.state_dict(),
            ema=ema.state_dict() if ema is not None else None,
            step=step,
            config=cfg.to_dict(),
            rng=_rng_state(order, noise_gen),
        )
        own[:] = sorted({*own, path}, key=checkpoint_step)
        for old in own[:-keep]:  # this run's own checkpoints (and those of the run it resumes), never another's
            old.unlink(missing_ok=True)
        del own[:-keep]
        with contextlib.suppress(OSError, ValueError):
            plot_loss_curve(metrics, workdir / "loss.png")
        if not quiet:
            tqdm.write(f"train: saved {path.name}")

    model.train()
    losses: list[float] = []
    window: list[torch.Tensor] = []
    t0 = t_log = time.time()
    L, B = len(sigmas), cfg.training.batch_size
    bar = tqdm(total=total, initial=step, desc="train", disable=quiet or rank != 0, dynamic_ncols=True)
    while step < total and order.next_epoch() < cfg.training.n_epochs:
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
        last = step == total or order.next_epoch() >= cfg.training.n_epochs
        if rank == 0 and (step % log_every == 0 or last):
            now = time.time()
            rec = {"step": step, **_log_record(window, losses, L, cfg.training.log_all_sigmas)}
            rec.update(
                grad_norm=float(grad_norm),
                lr=lr_at(cfg, step - 1),
                images_per_s=round(len(torch.cat(window)) * world / max(now - t_log, 1e-9), 1),
                wall_s=round(now - t0, 1),
            )
            window.clear()
            t_log = now
            bar.set_postfix(loss=f"{rec['loss']:.3f}")
            with metrics.open("a") as log:
                log.write(json.dumps(rec) + "\n")
        if rank == 0 and (step % snapshot_every == 0 or last):
            snapshot()
            if cfg.training.snapshot_sampling and ema is not None:
                _snapshot_samples(model, ema, cfg, workdir / f"samples_{step}.png")
    bar.close()
    return {"step": step, "losses": losses, "wall_s": time.time() - t0, "model": unwrap_model(model), "ema": ema}


def _snapshot_samples(model: torch.nn.Module, ema: EMA, cfg: Config, out: Path) -> None:
    """A quick 36-sample grid from the EMA weights (heun, 25 evaluations; thinned ALD for the original NCSN)."""
    from ncsn_fast.data import inverse_data_transform
    from ncsn_fast.images import save_grid
    from ncsn_fast.sampling import annealed_langevin, heun, init_samples, prior_samples, thin_schedule

    base = unwrap_model(model)
    shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    dev = next(base.parameters()).device
    g = torch.Generator().manual_seed(0)
    with ema.average_parameters(base), torch.no_grad():
        base.eval()
        if getattr(base, "conditional", False):
            sig, labels, eps = thin_schedule(get_sigmas(cfg), max(1, cfg.model.num_classes // 10), 5)
            x0 = init_samples(36, shape, g, dev, config=cfg)
            x = annealed_langevin(base, x0, sig, 5, eps, generator=g, labels=labels)
        else:
            smax, smin = cfg.model.sigma_begin, cfg.model.sigma_end
            x = heun(base.score, prior_samples(36, shape, smax, g, dev), 25, smax, smin)
        base.train()
    save_grid(inverse_data_transform(cfg, x.cpu()), out, nrow=6)


if __name__ == "__main__":  # `python -m ncsn_fast.train …`: a thin alias of `python -m ncsn_fast.cli train …`
    import sys

    from ncsn_fast.cli.main import main

    sys.exit(main(["train", *sys.argv[1:]]))
