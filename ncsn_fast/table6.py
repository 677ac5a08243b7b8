"""Paper Table 6 (`ncsn-fast bench table6`): sampling and training time per dataset beside the paper's.

For each dataset, its official architecture and config (L, T, sampling and training batch sizes): time K network
evaluations at a measurement batch and project one full sampling batch (L·T + 1 evaluations at the config's
sampling batch size), and time K training steps (forward, backward, Adam) and project the paper's iteration
count (Table 4) at the config's training batch size. A figure is "measured" only for what ran; everything at
the config's batch or the full count is "projected" (linear in batch and in count — on a GPU a larger batch is
usually cheaper per sample, so projections from a smaller batch are upper bounds there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ncsn_fast.precision import check_precision

# Paper Table 6 (sampling one batch, whole training run) and Table 4 (training iterations).
PAPER: dict[str, dict[str, object]] = {
    "cifar10": {"device": "2x V100", "sampling_min": 2, "training_h": 22, "iterations": 300_000},
    "celeba": {"device": "4x V100", "sampling_min": 7, "training_h": 29, "iterations": 210_000},
    "church": {"device": "8x V100", "sampling_min": 17, "training_h": 52, "iterations": 200_000},
    "bedroom": {"device": "8x V100", "sampling_min": 19, "training_h": 52, "iterations": 150_000},
    "tower": {"device": "8x V100", "sampling_min": 19, "training_h": 52, "iterations": 150_000},
    "ffhq": {"device": "8x V100", "sampling_min": 50, "training_h": 41, "iterations": 80_000},
}


@dataclass
class Row:
    dataset: str
    model: str
    image_size: int
    device: str
    precision: str
    levels: int
    steps_each: int
    evaluations: int
    sampling_batch: int
    training_batch: int
    iterations: int
    measured_batch: int
    eval_s: float  # measured: one network evaluation at measured_batch
    train_step_s: float  # measured: one training step at measured_batch
    sampling_min: float  # projected: one sampling batch
    training_h: float  # projected: the paper's iteration count
    paper_device: str
    paper_sampling_min: float
    paper_training_h: float


def _time(fn: Callable[[], None], k: int) -> float:
    """Seconds per call: one warm-up call, then ``torch.utils.benchmark.Timer`` over k calls (it synchronizes CUDA
    around the timed region and runs with the current thread count)."""
    from torch.utils.benchmark import Timer

    fn()
    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).timeit(k).mean


def measure(dataset: str, device: torch.device, precision: str, quick: bool, k: int | None = None) -> Row:
    import ncsn_fast as nf

    cfg = nf.load_config(dataset)
    torch.manual_seed(0)
    model = nf.build_model(cfg).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    sigmas = nf.get_sigmas(cfg).to(device)
    size, ch = cfg.data.image_size, cfg.data.channels
    b_sample, b_train = cfg.sampling.batch_size, cfg.training.batch_size
    b = 1 if quick else min(b_sample, b_train)
    k = k or (1 if quick else 3)
    dtype = check_precision("precision", precision)
    x = torch.rand(b, ch, size, size, device=device)
    y = torch.randint(0, len(sigmas), (b,), device=device)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext

    def evaluate() -> None:
        with torch.no_grad(), autocast():
            model.eval()(x, y)

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step() -> None:
        model.train()
        with autocast():
            loss = nf.dsm_loss(model, x, sigmas)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_eval = _time(evaluate, k)
    t_step = _time(train_step, k)
    levels, steps = len(sigmas), cfg.sampling.n_steps_each
    evals = levels * steps + int(cfg.sampling.denoise)
    paper = PAPER[dataset]
    return Row(
        dataset=dataset,
        model=type(model).__name__,
        image_size=size,
        device=_device_name(device),
        precision=precision,
        levels=levels,
        steps_each=steps,
        evaluations=evals,
        sampling_batch=b_sample,
        training_batch=b_train,
        iterations=int(paper["iterations"]),
        measured_batch=b,
        eval_s=t_eval,
        train_step_s=t_step,
        sampling_min=t_eval * (b_sample / b) * evals / 60,
        training_h=t_step * (b_train / b) * int(paper["iterations"]) / 3600,
        paper_device=str(paper["device"]),
        paper_sampling_min=float(paper["sampling_min"]),
        paper_training_h=float(paper["training_h"]),
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU x{torch.get_num_threads()} threads"


def _fmt(v: float, unit: str) -> str:
    if unit == "min" and v >= 120:
        return f"{v / 60:.1f} h"
    if unit == "h" and v >= 48:
        return f"{v / 24:.1f} d"
    return f"{v:.3g} {unit}"


def format_table(rows: list[Row]) -> str:
    head = (
        "| dataset | model | device, precision | eval (measured, batch) | sampling one batch (projected) | paper "
        "| training (projected) | paper |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r.dataset} | {r.model} {r.image_size}px | {r.device}, {r.precision} | "
            f"{1000 * r.eval_s:.1f} ms (b={r.measured_batch}) | {_fmt(r.sampling_min, 'min')} "
            f"({r.evaluations} evals × b={r.sampling_batch}) | {r.paper_sampling_min:g} min, {r.paper_device} | "
            f"{_fmt(r.training_h, 'h')} ({r.iterations // 1000}k × b={r.training_batch}) | "
            f"{r.paper_training_h:g} h, {r.paper_device} |"
        )
    return "\n".join(lines)


def table6(
    datasets: Sequence[str] = tuple(PAPER),
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    quick: bool = False,
    k: int | None = None,
    progress: bool = True,
) -> list[Row]:
    """One :class:`Row` per dataset of the paper's Table 6 (see the module docstring); ValueError naming the
    argument for an unknown dataset, device or precision."""
    from tqdm import tqdm

    from ncsn_fast.validation import check_device, check_int

    unknown = [d for d in datasets if d not in PAPER]
    if unknown or not datasets:
        raise ValueError(f"datasets: unknown {unknown or list(datasets)!r}; choose from {','.join(PAPER)}")
    dev = check_device("device", device)
    check_precision("precision", precision)
    if k is not None:
        check_int("k", k, 1)
    return [measure(d, dev, precision, quick, k) for d in tqdm(datasets, desc="table6", disable=not progress)]
