"""The loss chart of a training run: one panel per logged series against the step, drawn with Pillow (no
matplotlib dependency). No torch here."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np

from realsr_cli._files import atomic_write

_PANEL_W, _PANEL_H, _PAD = 420, 150, 40


def plot_losses(history: list[dict], path: str | os.PathLike, max_points: int = 400) -> Path:
    """One panel per logged series (loss terms, lr, validation scores) against the step, as a PNG.

    Long series are averaged into at most `max_points` buckets; each panel's y-range spans the bucket means.
    """
    from PIL import Image, ImageDraw, ImageFont

    keys = sorted({k for r in history for k in r if k not in ("step", "time")}, key=_plot_order)
    cols = 2
    rows = max(1, math.ceil(len(keys) / cols))
    img = Image.new("RGB", (cols * (_PANEL_W + _PAD) + _PAD, rows * (_PANEL_H + _PAD) + _PAD), "white")
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    for i, key in enumerate(keys):
        corner = (_PAD + (i % cols) * (_PANEL_W + _PAD), _PAD + (i // cols) * (_PANEL_H + _PAD))
        points = [(r["step"], r[key]) for r in history if key in r and math.isfinite(r[key])]
        _draw_panel(draw, font, corner, key, points, max_points)
    path = Path(path)
    with atomic_write(path) as fh:
        img.save(fh, format="PNG")
    return path


def _draw_panel(draw, font, corner: tuple[int, int], key: str, points: list[tuple], max_points: int) -> None:
    """One series' panel with its top-left corner at `corner`: frame, line, title with the last value, y-range
    labels and the last step."""
    x0, y0 = corner
    draw.rectangle([x0, y0, x0 + _PANEL_W, y0 + _PANEL_H], outline=(160, 160, 160))
    if not points:
        return
    steps = np.array([p[0] for p in points], dtype=np.float64)
    vals = np.array([p[1] for p in points], dtype=np.float64)
    if len(vals) > max_points:
        edges = np.linspace(0, len(vals), max_points + 1).astype(int)
        steps = np.array([steps[a:b].mean() for a, b in itertools.pairwise(edges)])
        vals = np.array([vals[a:b].mean() for a, b in itertools.pairwise(edges)])
    lo, hi = float(vals.min()), float(vals.max())
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * abs(lo or 1), hi + 0.5 * abs(hi or 1)
    s_lo, s_hi = float(steps.min()), float(max(steps.max(), steps.min() + 1))
    xy = [
        (x0 + (s - s_lo) / (s_hi - s_lo) * _PANEL_W, y0 + _PANEL_H - (v - lo) / (hi - lo) * _PANEL_H)
        for s, v in zip(steps, vals, strict=True)
    ]
    colour = (214, 96, 24) if key.startswith("val_") else (31, 90, 180)
    if len(xy) > 1:
        draw.line(xy, fill=colour, width=2)
    for px, py in xy if len(xy) < 60 else []:
        draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
    draw.text((x0, y0 - 15), f"{key}   last {points[-1][1]:.4g}", fill="black", font=font)
    for y, text in ((y0 + 2, f"{hi:.4g}"), (y0 + _PANEL_H - 15, f"{lo:.4g}")):  # range labels on a white box
        draw.rectangle(draw.textbbox((x0 + 3, y), text, font=font), fill="white")
        draw.text((x0 + 3, y), text, fill=(90, 90, 90), font=font)
    draw.text((x0 + _PANEL_W - 90, y0 + _PANEL_H + 2), f"step {int(s_hi)}", fill=(90, 90, 90), font=font)


_ORDER = (
    "loss_g",
    "loss_d",
    "l_rec",
    "l_cyc",
    "l_res",
    "l_idt",
    "l_align",
    "l_sty",
    "l_grid",
    "d_align",
    "d_sty",
    "d_adv",
    "lr",
)


def _plot_order(key: str) -> tuple[int, str]:
    """The panels' order: the objectives, the generator's terms, the discriminators' terms, lr, then the rest."""
    return (_ORDER.index(key), key) if key in _ORDER else (len(_ORDER), key)
