"""Charts as PNG files, drawn with matplotlib (Agg, no display needed): every chart has labelled axes with units.

Each chart is built by a ``*_figure`` function that returns the matplotlib Figure (tests read its axes) and saved
by the function without the suffix. matplotlib is imported on first use, so importing ncsn_fast stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _plain_log_ticks(axis: Any) -> None:
    """Tick labels of a log axis as plain numbers (0.5, 2, 40, 1000) rather than mathtext powers (4 × 10¹); minor
    ticks are labelled too when the axis spans few decades (matplotlib's own thresholds)."""
    from matplotlib.ticker import LogFormatter

    axis.set_major_formatter(LogFormatter())
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def save_figure(fig: Any, out: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG (atomically) and close it."""
    from ncsn_fast.io import atomic_write

    plt = _pyplot()
    try:
        atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return Path(out)


def loss_curve_figure(rows: Sequence[Mapping[str, Any]]) -> Any | None:
    """DSM loss against training step (log scale), overall and per quarter of the σ range; None without data."""
    pts = [(r["step"], r["loss"]) for r in rows if r.get("loss", 0) > 0]
    if not pts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*pts, strict=True), "o-" if len(pts) < 20 else "-", color="black", lw=2, label="all noise levels")
    names = ["largest σ (first quarter)", "second quarter", "third quarter", "smallest σ (last quarter)"]
    for q, name in enumerate(names):
        qs = [(r["step"], r[f"loss_sigma_q{q}"]) for r in rows if r.get(f"loss_sigma_q{q}", 0) > 0]
        if qs:
            ax.plot(*zip(*qs, strict=True), lw=1, alpha=0.8, label=name)
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("training step")
    ax.set_ylabel("DSM loss ½‖σ s(x̃, σ) + z‖² (log scale)")
    ax.set_title(f"Training loss, steps {pts[0][0]}–{pts[-1][0]}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def loss_curve(rows: Sequence[Mapping[str, Any]], out: str | os.PathLike) -> bool:
    """:func:`loss_curve_figure` saved to ``out``; False (nothing written) before the first logged step."""
    fig = loss_curve_figure(rows)
    if fig is None:
        return False
    save_figure(fig, out)
    return True


def fid_per_checkpoint_figure(rows: Sequence[Mapping[str, Any]], n: int) -> Any:
    """FID with and without the final denoising step against the checkpoint's training step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["fid"] for r in rows], "o-", label="without denoising")
    ax.plot(steps, [r["fid_denoised"] for r in rows], "s-", label="with denoising")
    ax.set_xlabel("training step of the checkpoint")
    ax.set_ylabel(f"FID ({n} samples)")
    ax.set_title("Checkpoint selection (Appendix B.2)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def table6_figure(rows: Sequence[Any]) -> Any:
    """Paper Table 6 beside this machine: sampling one batch (minutes) and training (hours), log scale."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = [r.dataset for r in rows]
    x = range(len(rows))
    w = 0.4
    panels = (("sampling_min", "paper_sampling_min", "one sampling batch (minutes)"),
              ("training_h", "paper_training_h", "whole training run (hours)"))  # fmt: skip
    for ax, (ours, paper, label) in zip(axes, panels, strict=True):
        ax.set_title(label.split(" (")[0].capitalize())
        ax.bar([i - w / 2 for i in x], [getattr(r, ours) for r in rows], w, label=f"ours: {rows[0].device}")
        ax.bar([i + w / 2 for i in x], [getattr(r, paper) for r in rows], w, label="paper (V100s)", color="0.7")
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        ax.set_xticks(list(x), names)
        ax.set_xlabel("dataset")
        ax.set_ylabel(label + ", log scale")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Table 6: ours projected from measured evaluations and steps vs the paper")
    fig.tight_layout()
    return fig


def sampler_comparison_figure(
    rows: Sequence[Mapping[str, Any]], metric: str, label: str, title: str | None = None
) -> Any:
    """One line per sampler: ``metric`` of each row against its number of network evaluations (log x, ticked at
    the NFE values measured); ``label`` names the metric and its unit on the y axis."""
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    by_sampler: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        by_sampler.setdefault(r["sampler"], []).append((r["nfe"], r[metric]))
    for name, pts in by_sampler.items():
        pts.sort()
        ax.plot(*zip(*pts, strict=True), "o-", label=name)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted({r["nfe"] for r in rows})))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("network evaluations per sample (NFE, log scale)")
    ax.set_ylabel(label)
    ax.set_title(title or f"Samplers: {label} against the evaluation budget")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig
