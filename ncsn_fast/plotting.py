"""Small PNG line charts drawn with Pillow (no plotting dependency): loss curves, FID per checkpoint."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def line_chart(
    series: dict[str, Sequence[tuple[float, float]]],
    out: str | Path,
    title: str,
    log_y: bool = False,
    size: tuple[int, int] = (640, 360),
) -> bool:
    """One line per series (name → [(x, y), ...]) with a legend; returns False (writes nothing) without data."""
    from PIL import Image, ImageDraw

    pts = [p for s in series.values() for p in s if not log_y or p[1] > 0]
    if len(pts) < 2:
        return False
    w, h = size
    m = 48

    def fy(v: float) -> float:
        return math.log10(v) if log_y else v

    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    lo, hi = min(fy(p[1]) for p in pts), max(fy(p[1]) for p in pts)
    hi = hi if hi > lo else lo + 1

    def xy(x: float, y: float) -> tuple[float, float]:
        return m + (w - 2 * m) * (x - x0) / max(x1 - x0, 1e-12), h - m - (h - 2 * m) * (fy(y) - lo) / (hi - lo)

    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([m, m, w - m, h - m], outline="black")
    for k, (name, s) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        line = [xy(*p) for p in s if not log_y or p[1] > 0]
        if len(line) > 1:
            d.line(line, fill=color, width=2)
        for px, py in line:
            d.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)
        d.text((w - m - 150, m + 6 + 14 * k), name, fill=color)
    d.text((m, 8), title + (" (log scale)" if log_y else ""), fill="black")
    d.text((m, h - m + 6), f"{x0:g}", fill="black")
    d.text((w - m - 40, h - m + 6), f"{x1:g}", fill="black")
    top, bottom = (10**hi, 10**lo) if log_y else (hi, lo)
    d.text((4, m - 6), f"{top:.3g}", fill="black")
    d.text((4, h - m - 6), f"{bottom:.3g}", fill="black")
    img.save(out)
    return True
