"""Every chart of :mod:`ncsn_fast.plotting`, built from fresh random data: its axes labels (with units), scales,
tick labels, title and legend are read from the figure before it is saved, the plotted data are the input, and
the saved PNG opens with Pillow."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from PIL import Image

from ncsn_fast import plotting
from ncsn_fast.table6 import Row


def drawn(fig):
    fig.canvas.draw()  # tick labels are only formatted when the figure is drawn
    return fig


def tick_texts(axis_labels):
    return [t.get_text() for t in axis_labels if t.get_text()]


def plain_numbers(texts):
    """Tick labels that read as numbers: plain (0.5, 40, 1000), not mathtext powers such as $4\\times10^{1}$."""
    assert texts and all("$" not in t and "10^" not in t for t in texts), texts
    return [float(t.replace("−", "-")) for t in texts]


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def saved_png(fig, path):
    out = plotting.save_figure(fig, path)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        im.load()
        assert im.format == "PNG" and im.width > 300 and im.height > 200
        assert len(im.convert("L").getcolors(256)) > 10  # not a blank canvas
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    return out


def random_rows(n=12):
    steps = sorted(torch.randperm(5000)[:n].add(1).tolist())
    rows = []
    for s in steps:
        row = {"step": s, "loss": float(torch.rand(1)) * 10 + 0.1}
        row.update({f"loss_sigma_q{q}": float(torch.rand(1)) * 10 + 0.1 for q in range(4)})
        rows.append(row)
    return rows


def test_loss_curve_with_quarters_on_a_log_scale(tmp_path):
    rows = random_rows()
    fig = drawn(plotting.loss_curve_figure(rows))
    (ax,) = fig.axes
    assert ax.get_xlabel() == "training step"
    assert ax.get_ylabel().startswith("DSM loss") and "log scale" in ax.get_ylabel()
    assert ax.get_yscale() == "log" and ax.get_xscale() == "linear"
    assert ax.get_title() == f"Training loss, steps {rows[0]['step']}–{rows[-1]['step']}"
    assert legend_texts(ax) == [
        "all noise levels",
        "largest σ (first quarter)",
        "second quarter",
        "third quarter",
        "smallest σ (last quarter)",
    ]
    lines = ax.get_lines()
    assert list(lines[0].get_xdata()) == [r["step"] for r in rows]
    assert list(lines[0].get_ydata()) == [r["loss"] for r in rows]
    for q in range(4):
        assert list(lines[q + 1].get_ydata()) == [r[f"loss_sigma_q{q}"] for r in rows]
    xticks = plain_numbers(tick_texts(ax.get_xticklabels()))
    assert len(xticks) >= 3 and min(xticks) <= rows[-1]["step"] and max(xticks) >= rows[0]["step"]
    yticks = plain_numbers(tick_texts(ax.get_yticklabels()) + tick_texts(ax.get_yticklabels(minor=True)))
    lo, hi = ax.get_ylim()
    assert len([v for v in yticks if lo <= v <= hi]) >= 2  # at least two labelled values on the log axis
    saved_png(fig, tmp_path / "loss.png")


def test_loss_curve_from_a_training_log_and_without_data(tmp_path):
    from ncsn_fast.train import plot_loss_curve

    metrics = tmp_path / "metrics.jsonl"
    rows = random_rows(3)
    rows[1].pop("loss_sigma_q2")  # a quarter not seen in a logging window
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert plot_loss_curve(metrics, tmp_path / "loss.png")
    with Image.open(tmp_path / "loss.png") as im:
        assert im.format == "PNG"
    assert plotting.loss_curve_figure([]) is None
    assert plotting.loss_curve([{"step": 0}], tmp_path / "none.png") is False
    assert not (tmp_path / "none.png").exists()


def test_table6_chart(tmp_path):
    datasets = ["cifar10", "celeba", "church"]
    fields = {f.name: f.type for f in dataclasses.fields(Row)}
    rows = []
    for name in datasets:
        values = {k: (float(torch.rand(1)) * 50 + 0.5 if t == "float" else 1) for k, t in fields.items()}
        values.update(dataset=name, model="NCSNv2", device="cpu", precision="fp32", paper_device="2x V100")
        rows.append(Row(**values))
    fig = drawn(plotting.table6_figure(rows))
    assert fig._suptitle.get_text().startswith("Table 6")
    panels = {"sampling_min": "minutes", "training_h": "hours"}
    for ax, (field, unit) in zip(fig.axes, panels.items(), strict=True):
        assert tick_texts(ax.get_xticklabels()) == datasets
        assert ax.get_xlabel() == "dataset"
        assert unit in ax.get_ylabel() and "log scale" in ax.get_ylabel() and ax.get_yscale() == "log"
        assert ax.get_title() in ("One sampling batch", "Whole training run")
        heights = [p.get_height() for p in ax.patches]
        ours, paper = heights[: len(rows)], heights[len(rows) :]
        assert ours == pytest.approx([getattr(r, field) for r in rows])
        assert paper == pytest.approx([getattr(r, "paper_" + field) for r in rows])
        lo, hi = ax.get_ylim()
        yticks = plain_numbers(tick_texts(ax.get_yticklabels()) + tick_texts(ax.get_yticklabels(minor=True)))
        assert len([v for v in yticks if lo <= v <= hi]) >= 2, (lo, hi, yticks)
    assert legend_texts(fig.axes[0]) == ["ours: cpu", "paper (V100s)"]
    saved_png(fig, tmp_path / "table6.png")


def test_fid_per_checkpoint_chart(tmp_path):
    steps = sorted(torch.randperm(100)[:6].add(1).mul(500).tolist())
    rows = [{"step": s, "fid": float(torch.rand(1)) * 80 + 5, "fid_denoised": float(torch.rand(1)) * 80 + 5}
            for s in steps]  # fmt: skip
    fig = drawn(plotting.fid_per_checkpoint_figure(rows, 1000))
    (ax,) = fig.axes
    assert ax.get_xlabel() == "training step of the checkpoint"
    assert ax.get_ylabel() == "FID (1000 samples)"
    assert ax.get_title() == "Checkpoint selection (Appendix B.2)"
    assert legend_texts(ax) == ["without denoising", "with denoising"]
    a, b = ax.get_lines()
    assert list(a.get_xdata()) == steps and list(a.get_ydata()) == [r["fid"] for r in rows]
    assert list(b.get_ydata()) == [r["fid_denoised"] for r in rows]
    assert tick_texts(ax.get_xticklabels()) and tick_texts(ax.get_yticklabels())
    saved_png(fig, tmp_path / "select.png")


def test_sampler_comparison_chart(tmp_path):
    nfes = [25, 50, 100, 250]
    samplers = ["ald", "cas", "pc", "heun"]
    rows = [{"sampler": s, "nfe": n, "confident": float(torch.rand(1))} for s in samplers for n in reversed(nfes)]
    fig = drawn(plotting.sampler_comparison_figure(rows, "confident", "confident fraction (p ≥ 0.8)"))
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and "NFE" in ax.get_xlabel()
    assert ax.get_ylabel() == "confident fraction (p ≥ 0.8)"
    assert "against the evaluation budget" in ax.get_title()
    assert tick_texts(ax.get_xticklabels()) == [str(n) for n in nfes]  # the budgets measured, as plain numbers
    assert legend_texts(ax) == samplers
    for line, name in zip(ax.get_lines(), samplers, strict=True):
        assert list(line.get_xdata()) == nfes
        assert list(line.get_ydata()) == [r["confident"] for n in nfes for r in rows if (r["sampler"], r["nfe"]) ==
                                          (name, n)]  # fmt: skip
    titled = plotting.sampler_comparison_figure(rows, "confident", "x", title="Digits")
    assert titled.axes[0].get_title() == "Digits"
    plotting._pyplot().close(titled)
    saved_png(fig, tmp_path / "samplers.png")
