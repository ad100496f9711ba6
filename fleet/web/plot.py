"""A client's trend as an inline SVG line plot, drawn on the server (no JavaScript, no image
files): one point per visit, the value on y, visits in order on x, each labelled with its date."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

__all__ = ["trend_svg"]

WIDTH, HEIGHT = 380, 210  # the plot's size in CSS pixels
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 16, 30, 40  # margins around the plotting area, pixels
_INSET = 34  # the first and last points sit this far inside the plotting area (room for their dates)


def trend_svg(
    title: str, labels: Sequence[str], values: Sequence[float | None], unit: str = "", decimals: int = 0
) -> Markup:
    """An SVG plot of ``values`` (one per visit, None where the visit has no accepted scan)
    over ``labels`` (the visits' dates, oldest first). Each point is a ``<circle class="point">``
    with a ``<title>`` (label and value); points of consecutive visits are joined by a polyline.
    ``unit`` follows each value; ``decimals``: digits after the point in labels."""
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels for {len(values)} values")
    known = [v for v in values if v is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
    pad = (hi - lo) * 0.15 or (abs(hi) * 0.1 or 1.0)
    lo, hi = lo - pad, hi + pad
    if min(known, default=0.0) >= 0 and lo < 0:
        lo = 0.0  # counts, densities and ratios are never negative
    inner_w, inner_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def x(i: int) -> float:  # points kept _INSET from the frame so the first and last dates fit
        span = inner_w - 2 * _INSET
        return _LEFT + _INSET + (span / 2 if len(values) == 1 else span * i / (len(values) - 1))

    def y(v: float) -> float:
        return _TOP + inner_h * (1 - (v - lo) / (hi - lo))

    def fmt(v: float) -> str:
        return f"{v:.{decimals}f}"

    parts = [
        f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
        f'<text class="title" x="{_LEFT}" y="18">{escape(title)}{" (" + escape(unit) + ")" if unit else ""}</text>',
        f'<rect class="frame" x="{_LEFT}" y="{_TOP}" width="{inner_w}" height="{inner_h}"/>',
    ]
    for v in (lo, (lo + hi) / 2, hi):  # three y ticks
        parts.append(f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + inner_w}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>')
        parts.append(f'<text class="tick" x="{_LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{fmt(v)}</text>')
    run: list[str] = []  # consecutive visits with a value form one line
    for i, value in enumerate([*values, None]):
        if value is not None:
            run.append(f"{x(i):.1f},{y(value):.1f}")
        elif run:
            if len(run) > 1:
                parts.append(f'<polyline class="line" points="{" ".join(run)}"/>')
            run = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        parts.append(
            f'<text class="tick" x="{x(i):.1f}" y="{HEIGHT - _BOTTOM + 16}" text-anchor="middle">{escape(label)}</text>'
        )
        if value is not None:
            parts.append(
                f'<circle class="point" cx="{x(i):.1f}" cy="{y(value):.1f}" r="4.5">'
                f"<title>{escape(label)}: {fmt(value)} {escape(unit)}</title></circle>"
            )
    if not known:
        parts.append(f'<text class="empty" x="{_LEFT + 10}" y="{_TOP + inner_h / 2:.0f}">no accepted scan</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
