"""A comparison (`realsr_cli.quality.compare.Comparison`) as one self-contained HTML page: per image, a
before/after slider between any two columns (bicubic and the first model to start with), a zoom for the whole page,
and the `realsr eval` scores of every column beside it.

Self-contained means it works offline and can be mailed: every image is a PNG inlined as a data: URI, the CSS and
the script are inline, and a Content-Security-Policy forbids the page from loading anything else.

No torch here.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math

import numpy as np
from PIL import Image

from realsr_cli.quality.compare import CompareRow, Comparison
from realsr_cli.quality.evaluate import Scores

ZOOMS = (1, 2, 3, 4, 6, 8)  # the zoom menu: whole multiples keep every pixel the same size under pixelated scaling

# (column header, Scores field, decimals, which value is best: max, min, or None where neither is, as for the grid
# score, whose natural level is ~0.1: too smooth scores lower, a checkerboard higher); a score no column has is
# left out
SCORE_COLUMNS = (
    ("PSNR-Y dB", "psnr_y", 2, max),
    ("SSIM-Y", "ssim_y", 4, max),
    ("PSNR-RGB dB", "psnr_rgb", 2, max),
    ("NIQE", "niqe", 3, min),
    ("grid", "grid", 3, None),
)

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_STYLE = """
:root { --zoom: 2; font-family: system-ui, sans-serif; color: #222; background: #fafafa; }
body { margin: 1.5rem; }
header { display: flex; gap: 2rem; align-items: baseline; flex-wrap: wrap; }
h1 { font-size: 1.3rem; margin: 0; }
h2 { font-size: 1rem; margin: 0 0 .5rem; font-family: ui-monospace, monospace; }
section.image { display: flex; gap: 1.5rem; align-items: flex-start; flex-wrap: wrap; margin: 1.5rem 0;
  padding-top: 1rem; border-top: 1px solid #ddd; }
.viewer { position: relative; width: calc(var(--cell) * var(--zoom)); height: calc(var(--cell) * var(--zoom));
  cursor: ew-resize; touch-action: none; user-select: none; background: #000; }
.viewer img { position: absolute; inset: 0; width: 100%; height: 100%; image-rendering: pixelated; }
.viewer .bar { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px; background: #fff;
  box-shadow: 0 0 3px #000; pointer-events: none; }
.viewer .tag { position: absolute; top: 4px; padding: 1px 5px; font-size: 12px; color: #fff;
  background: rgba(0, 0, 0, .6); pointer-events: none; }
.viewer .tag.left { left: 4px; } .viewer .tag.right { right: 4px; }
.controls { display: flex; gap: .5rem; align-items: center; margin-top: .4rem;
  width: max(calc(var(--cell) * var(--zoom)), 20rem); }
.controls input[type=range] { flex: 1; }
table { border-collapse: collapse; font-size: .85rem; font-variant-numeric: tabular-nums; }
th, td { padding: 2px 8px; text-align: right; border-bottom: 1px solid #e4e4e4; }
th:first-child, td:first-child { text-align: left; }
tr.shown td:first-child { font-weight: bold; }
td.best { background: #dff0d8; }
caption { caption-side: bottom; text-align: left; color: #666; padding-top: .4rem; max-width: 32rem; }
"""

# one handler per viewer: the slider (or a drag on the picture) moves the split, the menus pick the two columns
_SCRIPT = """
const CELLS = JSON.parse(document.getElementById("cells").textContent);
for (const section of document.querySelectorAll("section.image")) {
  const cells = CELLS[Number(section.dataset.row)];
  const viewer = section.querySelector(".viewer");
  const [leftImg, rightImg] = viewer.querySelectorAll("img");
  const bar = viewer.querySelector(".bar");
  const slider = section.querySelector("input.split");
  const [leftMenu, rightMenu] = section.querySelectorAll("select");
  const [leftTag, rightTag] = viewer.querySelectorAll(".tag");
  const split = () => {
    rightImg.style.clipPath = `inset(0 0 0 ${slider.value}%)`;
    bar.style.left = `${slider.value}%`;
  };
  const pick = () => {
    leftImg.src = cells[leftMenu.value];
    rightImg.src = cells[rightMenu.value];
    leftTag.textContent = leftMenu.selectedOptions[0].text;
    rightTag.textContent = rightMenu.selectedOptions[0].text;
    for (const row of section.querySelectorAll("tbody tr")) {
      row.classList.toggle("shown", row.dataset.col === leftMenu.value || row.dataset.col === rightMenu.value);
    }
  };
  const drag = (event) => {
    if (event.type === "pointermove" && !event.buttons) return;
    const box = viewer.getBoundingClientRect();
    slider.value = Math.round(Math.min(Math.max((event.clientX - box.left) / box.width, 0), 1) * 100);
    split();
  };
  slider.addEventListener("input", split);
  leftMenu.addEventListener("change", pick);
  rightMenu.addEventListener("change", pick);
  viewer.addEventListener("pointerdown", (event) => {
    event.preventDefault();  // no native image drag, which would cancel the pointer
    viewer.setPointerCapture(event.pointerId);
    drag(event);
  });
  viewer.addEventListener("pointermove", drag);
  pick();
  split();
}
const zoom = document.getElementById("zoom");
const setZoom = () => document.documentElement.style.setProperty("--zoom", zoom.value);
zoom.addEventListener("change", setZoom);
setZoom();
"""


def render_page(comparison: Comparison, zoom: int, title: str = "realsr compare") -> str:
    """The page's HTML. `zoom` is the starting magnification (snapped to the nearest of ZOOMS)."""
    labels = comparison.labels
    start = min(ZOOMS, key=lambda z: abs(z - zoom))
    cell = comparison.rows[0].cells[0].shape[0] if comparison.rows else 0
    cells = [[_data_uri(pixels) for pixels in row.cells] for row in comparison.rows]
    zoom_menu = "".join(f'<option value="{z}"{" selected" if z == start else ""}>{z}x</option>' for z in ZOOMS)
    sections = "\n".join(_section(index, row, comparison) for index, row in enumerate(comparison.rows))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body style="--cell: {cell}px">
<header>
<h1>{html.escape(title)}</h1>
<span>{html.escape(" | ".join(labels))}</span>
<label>zoom <select id="zoom">{zoom_menu}</select></label>
</header>
<p>Drag across a picture, or move its slider, to compare two columns; the menus pick which two. The scores are
<code>realsr eval</code>'s, measured on the whole image; the pictures show its most detailed crop.</p>
{sections}
<script type="application/json" id="cells">{json.dumps(cells)}</script>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def _section(index: int, row: CompareRow, comparison: Comparison) -> str:
    labels = comparison.labels
    right_start = 1 if len(labels) > 1 else 0  # bicubic against the first model

    def menu(side: str, selected: int) -> str:
        options = "".join(
            f'<option value="{col}"{" selected" if col == selected else ""}>{html.escape(label)}</option>'
            for col, label in enumerate(labels)
        )
        return f'<select aria-label="{side} picture">{options}</select>'

    name = html.escape(row.name)
    return f"""<section class="image" data-row="{index}">
<div>
<h2>{name}</h2>
<div class="viewer" role="img" aria-label="{name}: two columns split by the slider">
<img alt="left" draggable="false"><img alt="right" draggable="false">
<div class="bar"></div><span class="tag left"></span><span class="tag right"></span>
</div>
<div class="controls">{menu("left", 0)}
<input class="split" type="range" min="0" max="100" value="50" aria-label="split">
{menu("right", right_start)}</div>
</div>
{_score_table(row.scores, comparison)}
</section>"""


def _score_table(scores: tuple[Scores, ...], comparison: Comparison) -> str:
    """Each column's scores, the best upscaler's value of each score shaded; empty when the comparison was not
    scored."""
    labels = comparison.labels
    shown = [c for c in SCORE_COLUMNS if any(getattr(s, c[1]) is not None for s in scores)]
    if not shown:
        return ""
    head = "".join(f"<th>{header}</th>" for header, *_ in shown)
    # the HR scores only its own NIQE, which no upscaler is meant to beat: it never counts as the best
    upscalers = scores[:-1] if comparison.has_reference else scores
    best = {}
    for _, field, _, pick in shown:
        values = [getattr(s, field) for s in upscalers if getattr(s, field) is not None]
        best[field] = pick(values) if pick and values else None
    body = []
    for col, (label, score) in enumerate(zip(labels, scores, strict=True)):
        cells = []
        for _, field, digits, _ in shown:
            value = getattr(score, field)
            is_best = col < len(upscalers) and value is not None and value == best[field]
            cells.append(f"<td{' class=best' if is_best else ''}>{_number(value, digits)}</td>")
        body.append(f'<tr data-col="{col}"><td>{html.escape(label)}</td>{"".join(cells)}</tr>')
    caption = (
        ("PSNR and SSIM against the HR (higher is better), " if comparison.has_reference else "No HR images: ")
        + "NIQE (lower is more natural) and the sub-pixel grid score (natural images ~0.1), as "
        "<code>realsr eval</code> measures them; the best upscaler's value is shaded"
    )
    head = f"<thead><tr><th></th>{head}</tr></thead>"
    return f"<table><caption>{caption}</caption>{head}<tbody>{''.join(body)}</tbody></table>"


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _data_uri(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
