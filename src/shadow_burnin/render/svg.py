"""Plots as inline SVG, drawn server-side (no script, no library, no network).

Every plot is ``<svg class="plot" data-plot=NAME>``; each series a ``<g class="series"
data-series=NAME data-points=N>`` holding a polyline and one ``<circle>`` per point whose
``<title>`` is the hover text. Colours come from CSS classes (``render/assets/style.css``).
Every string that came from data (category names, …) goes through ``escape.html``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import msgspec

from shadow_burnin.render.escape import html as esc

W, H = 720, 260
PAD_L, PAD_R, PAD_T, PAD_B = 62, 16, 14, 34

Point = tuple[float, float | None]


class Series(msgspec.Struct):
    name: str
    css: str
    points: list[Point]
    fmt: Callable[[float], str] = lambda v: f"{v:g}"


class Band(msgspec.Struct):
    css: str
    points: list[tuple[float, float, float]]  # x, lo, hi


class Chart(msgspec.Struct):
    name: str
    title: str
    series: list[Series]
    band: Band | None = None
    x_time: bool = True
    y_label: str = ""
    y_min: float | None = None
    y_max: float | None = None
    x_fmt: Callable[[float], str] | None = None
    notes: list[str] = msgspec.field(default_factory=list)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    out, v = [], start
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


def time_fmt(span: float) -> Callable[[float], str]:
    if span <= 2 * 86400:
        return lambda t: datetime.fromtimestamp(t, UTC).strftime("%H:%M")
    return lambda t: datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M")


def hover_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def line_chart(c: Chart) -> str:
    xs = [x for s in c.series for x, y in s.points if y is not None]
    ys = [y for s in c.series for _x, y in s.points if y is not None]
    if c.band:
        xs += [x for x, _lo, _hi in c.band.points]
        ys += [v for _x, lo, hi in c.band.points for v in (lo, hi)]
    head = (f'<figure class="chart"><figcaption>{esc(c.title)}</figcaption>'
            f'<svg class="plot" data-plot="{esc(c.name)}" data-series-count="{len(c.series)}" '
            f'viewBox="0 0 {W} {H}" role="img" aria-label="{esc(c.title)}" '
            f'xmlns="http://www.w3.org/2000/svg">')
    if not xs:
        return head + (f'<text class="empty" x="{W / 2}" y="{H / 2}" text-anchor="middle">'
                       'no data yet</text></svg></figure>')
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    y0 = c.y_min if c.y_min is not None else min(0.0, min(ys))
    y1 = c.y_max if c.y_max is not None else max(ys)
    if y1 <= y0:
        y1 = y0 + 1
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def px(x: float) -> float:
        return round(PAD_L + (x - x0) / (x1 - x0) * pw, 1)

    def py(y: float) -> float:
        return round(PAD_T + (1 - (y - y0) / (y1 - y0)) * ph, 1)

    out = [head, '<g class="axes">']
    for t in _ticks(y0, y1):
        out.append(f'<line class="grid" x1="{PAD_L}" x2="{W - PAD_R}" y1="{py(t)}" '
                   f'y2="{py(t)}"/><text class="tick" x="{PAD_L - 6}" y="{py(t) + 4}" '
                   f'text-anchor="end">{esc(_yfmt(c, t))}</text>')
    xf = c.x_fmt or (time_fmt(x1 - x0) if c.x_time else (lambda v: f"{v:g}"))
    for t in _xticks(x0, x1, c.x_time):
        out.append(f'<text class="tick" x="{px(t)}" y="{H - PAD_B + 16}" '
                   f'text-anchor="middle">{esc(xf(t))}</text>')
    out.append(f'<line class="axis" x1="{PAD_L}" x2="{W - PAD_R}" y1="{PAD_T + ph}" '
               f'y2="{PAD_T + ph}"/>')
    if c.y_label:
        out.append(f'<text class="label" x="12" y="{PAD_T + ph / 2}" text-anchor="middle" '
                   f'transform="rotate(-90 12 {PAD_T + ph / 2})">{esc(c.y_label)}</text>')
    out.append("</g>")
    if c.band and c.band.points:
        top = " ".join(f"{px(x)},{py(hi)}" for x, _lo, hi in c.band.points)
        bottom = " ".join(f"{px(x)},{py(lo)}" for x, lo, _hi in reversed(c.band.points))
        out.append(f'<polygon class="band {esc(c.band.css)}" points="{top} {bottom}"/>')
    for s in c.series:
        pts = [(x, y) for x, y in s.points if y is not None]
        out.append(f'<g class="series {esc(s.css)}" data-series="{esc(s.name)}" '
                   f'data-points="{len(pts)}">')
        if len(pts) > 1:
            line = " ".join(f"{px(x)},{py(y)}" for x, y in pts)
            out.append(f'<polyline points="{line}"/>')
        for x, y in pts:
            label = f"{s.name}: {s.fmt(y)} at {hover_time(x) if c.x_time else xf(x)}"
            out.append(f'<circle cx="{px(x)}" cy="{py(y)}" r="2.6"><title>{esc(label)}'
                       '</title></circle>')
        out.append("</g>")
    out.append("</svg>")
    out.append('<ul class="legend">' + "".join(
        f'<li class="{esc(s.css)}"><span class="swatch"></span>{esc(s.name)}</li>'
        for s in c.series) + "</ul></figure>")
    return "".join(out)


def _yfmt(c: Chart, v: float) -> str:
    if c.y_max == 1.0 and c.y_min is not None:
        return f"{100 * v:.0f}%"
    return f"{v:,.0f}" if abs(v) >= 10 else f"{v:g}"


def _xticks(x0: float, x1: float, is_time: bool) -> list[float]:
    if not is_time:
        return _ticks(x0, x1, 6)
    span = x1 - x0
    for step in (60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400):
        if span / step <= 7:
            break
    start = math.ceil(x0 / step) * step
    return [float(t) for t in range(int(start), int(x1) + 1, step)][:8]


def bar_chart(name: str, title: str, labels: Sequence[str], values: Sequence[float | None],
              fmt: Callable[[float], str], sub: Sequence[str] = ()) -> str:
    """Horizontal bars, one per label (0..1 values), as one series."""
    row = 22
    height = PAD_T + row * max(1, len(labels)) + 10
    out = [f'<figure class="chart"><figcaption>{esc(title)}</figcaption>'
           f'<svg class="plot" data-plot="{esc(name)}" data-series-count="1" '
           f'viewBox="0 0 {W} {height}" role="img" aria-label="{esc(title)}" '
           f'xmlns="http://www.w3.org/2000/svg">']
    shown = [(lab, v, sub[i] if i < len(sub) else "") for i, (lab, v) in
             enumerate(zip(labels, values, strict=True)) if v is not None]
    out.append(f'<g class="series bars" data-series="{esc(title)}" data-points="{len(shown)}">')
    left, width = 180, W - 180 - 90
    for i, (lab, v, extra) in enumerate(shown):
        y = PAD_T + i * row
        out.append(f'<text class="tick" x="{left - 8}" y="{y + 14}" text-anchor="end">'
                   f'{esc(lab[:28])}</text>'
                   f'<rect x="{left}" y="{y + 3}" width="{round(max(v, 0) * width, 1)}" '
                   f'height="{row - 7}"><title>{esc(f"{lab}: {fmt(v)} {extra}".strip())}'
                   f'</title></rect><text class="tick" x="{left + width + 6}" y="{y + 14}">'
                   f'{esc(fmt(v))}</text>')
    out.append("</g></svg></figure>")
    return "".join(out)
