"""The visit report: one self-contained HTML page per visit of a client (no external file,
script or font: overlays are embedded as base64 JPEG thumbnails, plots as inline SVG).

Contents: the visit (pseudonymous client id, date, session, scanner, scans), the whole-visit
figures and grades with the change since the previous visit, bar charts of each figure per site
(previous visit beside this one), the client's history over every visit held, then one section
per site: its overlay, figures, grades and change. Changes carry a sign and an arrow, green
when the figure moved the good way (more hair, thicker; fewer thin hairs), red otherwise.
``write_pdf`` prints the page with a headless Chromium when one is installed.
"""

from __future__ import annotations

import base64
import html
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import cv2

from device.app.visits import METRICS, NO_SITE, Change, Metric, SiteFigures, Visit, compare
from device.contracts.constants import LEVEL_NAMES

__all__ = ["THUMB_WIDTH", "format_change", "render_report", "write_pdf", "write_report"]

THUMB_WIDTH = 560  # pixels: overlays are shrunk to this width (at most) and stored as JPEG
JPEG_QUALITY = 82
CURRENT, PREVIOUS = "#2563eb", "#9ca3af"
CSS = """
body{font:15px/1.45 system-ui,sans-serif;color:#111827;margin:24px auto;max-width:1180px;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb}
table{border-collapse:collapse;margin:6px 0}td,th{padding:4px 10px;text-align:right;border-bottom:1px solid #f3f4f6}
th:first-child,td:first-child{text-align:left}.muted{color:#6b7280}
.better{color:#15803d;font-weight:600}.worse{color:#b91c1c;font-weight:600}.same{color:#6b7280}
.charts{display:flex;flex-wrap:wrap;gap:12px}.site{display:flex;gap:20px;align-items:flex-start;flex-wrap:wrap}
.site img{width:420px;border:1px solid #d1d5db}.note{background:#fef3c7;padding:4px 8px}
"""


def render_report(
    visit: Visit,
    previous: Visit | None,
    history: Sequence[Visit],
    overlay_of: Callable[[SiteFigures], Path | None],
    generated: datetime | None = None,
) -> str:
    """The report's HTML. ``history``: every visit of the client, oldest first (a trend needs
    two); ``overlay_of``: the overlay image file of a site's latest scan, or None."""
    changes = compare(visit, previous) if previous is not None else {}
    when = (generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    e = html.escape
    before = (
        f"compared with the visit of {e(previous.visit_date)} (session {e(previous.session_id)})"
        if previous is not None
        else "first visit on record: no comparison"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Visit report {e(visit.client_id)} {e(visit.visit_date)}</title><style>{CSS}</style></head><body>",
        f"<h1>Scalp visit report: client {e(visit.client_id)}</h1>",
        f"<p>Visit of <b>{e(visit.visit_date)}</b>, session <code>{e(visit.session_id)}</code>; "
        f"{visit.scans} scan(s) at {len(visit.sites)} site(s); {before}.<br>"
        f'<span class="muted">scanner {e(", ".join(visit.devices))}, models {e(", ".join(visit.bundles))}; '
        f"generated {when}</span></p>",
        f"<h2>Whole visit (mean over {sum(1 for s in visit.sites.values() if s.accepted)} site(s))</h2>",
        _figure_table(visit.figures, changes.get("visit")),
        _grade_table(visit.grades, previous.grades if previous is not None else None),
        "<h2>Per site</h2>",
        '<div class="charts">' + "".join(_bars(m, visit, previous) for m in METRICS) + "</div>",
    ]
    if len(history) >= 2:
        parts += ["<h2>History</h2>", '<div class="charts">']
        parts += [_trend(m, history, visit.session_id) for m in METRICS[:2]]
        parts.append("</div>")
    for site in visit.sites.values():
        parts.append(_site_section(site, changes.get(site.site), previous, overlay_of(site)))
    parts.append(
        '<p class="muted">Figures are means over the accepted scans of each site; the whole visit is the mean '
        "over its sites. Grades are the most severe seen. Changes: this visit minus the previous one "
        "(▲ up, ▼ down; green is the better way).</p></body></html>"
    )
    return "\n".join(parts) + "\n"


def write_report(text: str, out: str | Path) -> Path:
    """Write the page atomically (a temporary file beside it, then a rename)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:  # the umask's permissions, like any other output
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def write_pdf(html_file: str | Path, pdf: str | Path, timeout_s: float = 120.0) -> Path:
    """Print ``html_file`` to ``pdf`` with a headless Chromium; FileNotFoundError when none is installed."""
    browser = next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
    )
    if browser is None:
        raise FileNotFoundError("a PDF needs chromium (apt-get install chromium); the HTML report prints as well")
    pdf = Path(pdf).resolve()
    cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer"]
    cmd += [f"--print-to-pdf={pdf}", Path(html_file).resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0 or not pdf.is_file():
        raise OSError(f"chromium could not print {html_file} to {pdf}: {done.stderr.strip()[-300:]}")
    return pdf


def format_change(metric: Metric, change: Change | None) -> str:
    """``+3 ▲ (+20.0 %)``, ``-1.2 pp ▼`` or ``= (no change)`` in a span classed better/worse/same;
    ``n/a`` when either visit lacks the figure."""
    d = None if change is None else change.delta
    if d is None:
        return '<span class="same">n/a</span>'
    step = 10.0**-metric.decimals
    if abs(d) < step / 2:
        return '<span class="same">= (no change)</span>'
    unit = " pp" if metric.unit == "%" else ""
    text = f"{d:+.{metric.decimals}f}{unit} {'▲' if d > 0 else '▼'}"
    pct = change.percent if change is not None and metric.unit != "%" else None
    text += f" ({pct:+.1f} %)" if pct is not None else ""
    cls = "better" if d * metric.better > 0 else "worse"
    return f'<span class="{cls}">{html.escape(text)}</span>'


def _fmt(metric: Metric, value: float | None) -> str:
    return "-" if value is None else f"{value:.{metric.decimals}f}"


def _figure_table(figures: dict[str, float | None], changes: dict[str, Change] | None) -> str:
    head = "<tr><th>figure</th><th>this visit</th>" + ("<th>previous</th><th>change</th>" if changes else "") + "</tr>"
    rows = []
    for m in METRICS:
        cells = f"<td>{m.label} ({html.escape(m.unit)})</td><td>{_fmt(m, figures.get(m.key))}</td>"
        if changes:
            c = changes.get(m.key)
            cells += f"<td>{_fmt(m, c.before if c else None)}</td><td>{format_change(m, c)}</td>"
        rows.append(f'<tr data-metric="{m.key}">{cells}</tr>')
    return f'<table class="figures">{head}{"".join(rows)}</table>'


def _grade_table(grades: dict[str, str], before: dict[str, str] | None) -> str:
    if not grades:
        return '<p class="muted">No grades (the bundle has no classifiers, or no scan was accepted).</p>'
    head = "<tr><th>grade</th><th>this visit</th>" + ("<th>previous</th><th>change</th>" if before else "") + "</tr>"
    rows = []
    for name, level in grades.items():
        cells = f"<td>{html.escape(name.replace('_', ' ').capitalize())}</td><td>{html.escape(level)}</td>"
        if before is not None:
            old = before.get(name)
            cells += f"<td>{html.escape(old or '-')}</td><td>{_grade_change(old, level)}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="grades">{head}{"".join(rows)}</table>'


def _grade_change(before: str | None, now: str) -> str:
    if before is None:
        return '<span class="same">n/a</span>'
    steps = LEVEL_NAMES.index(now) - LEVEL_NAMES.index(before)
    if steps == 0:
        return '<span class="same">= (no change)</span>'
    cls, word = ("worse", "worse") if steps > 0 else ("better", "better")
    return f'<span class="{cls}">{html.escape(before)} → {html.escape(now)} ({word})</span>'


def _site_section(
    site: SiteFigures, changes: dict[str, Change] | None, previous: Visit | None, image: Path | None
) -> str:
    title = "Site not set" if site.site == NO_SITE else site.site.capitalize()
    e = html.escape
    scans = f"{len(site.seqs)} scan(s), seq {', '.join(map(str, site.seqs))}"
    if site.rejected:
        scans += (
            f'; <span class="note">{len(site.rejected)} rejected: {e("; ".join(sorted(set(site.rejected))))}</span>'
        )
    picture = _thumbnail(image) if image is not None else None
    figure = (
        f'<img alt="overlay of the {e(site.site)} scan" src="data:image/jpeg;base64,{picture}">'
        if picture
        else '<p class="muted">(no overlay saved for this site)</p>'
    )
    if previous is not None and site.site not in previous.sites:
        note = '<p class="muted">Not scanned at the previous visit.</p>'
    else:
        note = ""
    old = previous.sites[site.site].grades if previous is not None and site.site in previous.sites else None
    return (
        f'<section class="site" id="site-{e(site.site)}" data-site="{e(site.site)}"><div>{figure}</div><div>'
        f"<h2>{e(title)}</h2><p class='muted'>{scans}</p>{note}"
        f"{_figure_table(site.figures, changes)}{_grade_table(site.grades, old)}</div></section>"
    )


def _thumbnail(path: Path) -> str | None:
    """The image at ``path`` as a base64 JPEG at most THUMB_WIDTH wide, or None if unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None
    h, w = image.shape[:2]
    if w > THUMB_WIDTH:
        image = cv2.resize(image, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return base64.b64encode(data.tobytes()).decode("ascii") if ok else None


def _bars(metric: Metric, visit: Visit, previous: Visit | None, width: int = 280, height: int = 190) -> str:
    """Grouped bars per site: the previous visit (grey) beside this one (blue), values on top."""
    sites = [s for s in visit.sites if visit.sites[s].accepted]
    values = [(visit.sites[s].figures.get(metric.key), _site_value(previous, s, metric)) for s in sites]
    top = max([v for pair in values for v in pair if v is not None] + [1e-9])
    left, base, plot_h = 8, height - 34, height - 70
    slot = (width - 2 * left) / max(1, len(sites))
    bar = min(26.0, slot / 2.6)
    out = [_svg_open(width, height, f"{metric.label} ({metric.unit})")]
    for i, (site, (now, before)) in enumerate(zip(sites, values, strict=True)):
        x0 = left + i * slot + slot / 2
        for value, colour, dx in ((before, PREVIOUS, -bar), (now, CURRENT, 0.0)):
            if value is None or (colour == PREVIOUS and previous is None):
                continue
            h = plot_h * value / top
            out.append(
                f'<rect x="{x0 + dx:.1f}" y="{base - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}"/>'
            )
            out.append(_text(x0 + dx + bar / 2, base - h - 3, _fmt(metric, value), 10))
        out.append(_text(x0, base + 14, site, 11))
    out.append(f'<line x1="{left}" y1="{base}" x2="{width - left}" y2="{base}" stroke="#6b7280"/>')
    legend = [("this visit", CURRENT)] + ([("previous", PREVIOUS)] if previous is not None else [])
    for j, (name, colour) in enumerate(legend):
        out.append(f'<rect x="{left + j * 110}" y="{height - 12}" width="10" height="10" fill="{colour}"/>')
        out.append(_text(left + j * 110 + 14, height - 3, name, 10, "start"))
    return "".join(out) + "</svg>"


def _trend(metric: Metric, history: Sequence[Visit], current: str, width: int = 420, height: int = 190) -> str:
    """The whole-visit figure over every visit of the client (this one marked)."""
    points = [(v.visit_date, v.figures.get(metric.key), v.session_id == current) for v in history]
    known = [p for p in points if p[1] is not None]
    lo = min([p[1] for p in known if p[1] is not None] + [0.0])
    hi = max([p[1] for p in known if p[1] is not None] + [1e-9])
    left, base, plot_h = 30, height - 34, height - 70
    step = (width - 2 * left) / max(1, len(points) - 1)
    out = [_svg_open(width, height, f"{metric.label} over visits ({metric.unit})")]
    xy = []
    for i, (day, value, mine) in enumerate(points):
        x = left + i * step
        out.append(_text(x, base + 14, day, 10))
        if value is None:
            continue
        y = base - plot_h * (value - lo) / ((hi - lo) or 1.0)
        xy.append(f"{x:.1f},{y:.1f}")
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{5 if mine else 3}" fill="{CURRENT if mine else PREVIOUS}"/>')
        out.append(_text(x, y - 7, _fmt(metric, value), 10))
    out.insert(1, f'<polyline points="{" ".join(xy)}" fill="none" stroke="{PREVIOUS}" stroke-width="2"/>')
    return "".join(out) + "</svg>"


def _site_value(visit: Visit | None, site: str, metric: Metric) -> float | None:
    if visit is None or site not in visit.sites:
        return None
    return visit.sites[site].figures.get(metric.key)


def _svg_open(width: int, height: int, title: str) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">'
        f'<rect width="{width}" height="{height}" fill="#f9fafb"/>' + _text(8, 16, title, 12, "start", bold=True)
    )


def _text(x: float, y: float, text: str, size: int, anchor: str = "middle", bold: bool = False) -> str:
    weight = ' font-weight="600"' if bold else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{weight} '
        f'font-family="system-ui,sans-serif">{html.escape(text)}</text>'
    )
