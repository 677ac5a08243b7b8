"""`ncsn-fast bench table6`: this library's sampling and training time per dataset beside the paper's Table 6.

For each dataset, its official architecture and config (L, T, sampling and training batch sizes): time K network
evaluations at a measurement batch and project one full sampling batch (L·T + 1 evaluations at the config's
sampling batch size), and time K training steps (forward, backward, Adam) and project the paper's iteration
count (Table 4) at the config's training batch size. A figure is "measured" only for what ran; everything at
the config's batch or the full count is "projected" (linear in batch and in count — on a GPU a larger batch is
usually cheaper per sample, so projections from a smaller batch are upper bounds there).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# Paper Table 6 (sampling one batch, whole training run) and Table 4 (training iterations).
PAPER: dict[str, dict[str, object]] = {
    "cifar10": {"device": "2x V100", "sampling_min": 2, "training_h": 22, "iterations": 300_000},
    "celeba": {"device": "4x V100", "sampling_min": 7, "training_h": 29, "iterations": 210_000},
    "church": {"device": "8x V100", "sampling_min": 17, "training_h": 52, "iterations": 200_000},
    "bedroom": {"device": "8x V100", "sampling_min": 19, "training_h": 52, "iterations": 150_000},
    "tower": {"device": "8x V100", "sampling_min": 19, "training_h": 52, "iterations": 150_000},
    "ffhq": {"device": "8x V100", "sampling_min": 50, "training_h": 41, "iterations": 80_000},
}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


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


def _time(fn, k: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(k):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / k


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
    dtype = PRECISIONS[precision]
    x = torch.rand(b, ch, size, size, device=device)
    y = torch.randint(0, len(sigmas), (b,), device=device)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else _null

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

    t_eval = _time(evaluate, k, device)
    t_step = _time(train_step, k, device)
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


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


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


def bar_chart(rows: list[Row], out: Path) -> None:
    """Paper vs ours, log scale, sampling (minutes) and training (hours), drawn with Pillow."""
    from PIL import Image, ImageDraw

    w, h, m = 760, 380, 56
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    values = [v for r in rows for v in (r.sampling_min, r.paper_sampling_min, r.training_h, r.paper_training_h)]
    lo = math.floor(math.log10(max(min(values), 1e-3)))
    hi = math.ceil(math.log10(max(values)))
    hi = hi if hi > lo else lo + 1

    def yv(v: float) -> float:
        return h - m - (h - 2 * m) * (math.log10(max(v, 10**lo)) - lo) / (hi - lo)

    d.rectangle([m, m, w - m, h - m], outline="black")
    for e in range(lo, hi + 1):
        d.line([m - 4, yv(10**e), m, yv(10**e)], fill="black")
        d.text((4, yv(10**e) - 6), f"1e{e}", fill="black")
    slot = (w - 2 * m) / max(len(rows), 1)
    colors = {"ours": (31, 119, 180), "paper": (200, 200, 200)}
    for i, r in enumerate(rows):
        x0 = m + i * slot + 6
        bw = (slot - 12) / 4
        bars = [
            (r.sampling_min, "ours"),
            (r.paper_sampling_min, "paper"),
            (r.training_h, "ours"),
            (r.paper_training_h, "paper"),
        ]
        for j, (v, who) in enumerate(bars):
            xa = x0 + j * bw
            d.rectangle([xa, yv(v), xa + bw - 2, h - m], fill=colors[who], outline="black")
        d.text((x0, h - m + 6), r.dataset, fill="black")
        d.text((x0, h - m + 20), "smp  train", fill="black")
    d.text(
        (m, 8), f"Table 6: sampling (min) and training (h), ours (blue, {rows[0].device}) vs paper (grey)", fill="black"
    )
    d.text((m, 24), "log scale; ours projected from measured evaluations/steps", fill="black")
    img.save(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--datasets", default=",".join(PAPER), help=f"comma-separated subset of {','.join(PAPER)}")
    p.add_argument("--precision", default="fp32", choices=sorted(PRECISIONS))
    p.add_argument("--quick", action="store_true", help="batch 1 and one timed call per figure (minutes on a CPU)")
    p.add_argument("--k", type=int, help="timed calls per figure (default 3, quick 1)")
    p.add_argument("--out", default="table6", help="folder for table6.json, table6.md and table6.png")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in PAPER]
    if unknown or not datasets:
        raise ValueError(f"--datasets: unknown {unknown or datasets!r}; choose from {','.join(PAPER)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available here")
    if args.k is not None and args.k < 1:
        raise ValueError(f"--k: must be at least 1, got {args.k}")
    rows = [measure(d, device, args.precision, args.quick, args.k) for d in tqdm(datasets, desc="table6")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(rows)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    note = f"{stamp}; `ncsn-fast bench table6 --device {args.device} --precision {args.precision}"
    note += " --quick`" if args.quick else "`"
    (out / "table6.md").write_text(f"{note}\n\n{table}\n")
    (out / "table6.json").write_text(json.dumps({"when": stamp, "rows": [asdict(r) for r in rows]}, indent=1))
    bar_chart(rows, out / "table6.png")
    print(table)
    print(f"\n{note}; wrote {out}/table6.md, table6.json, table6.png")
    return 0
