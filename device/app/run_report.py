"""What ``scalpedge device run`` tells the operator: one line per diagnosis as it happens
(``diagnosis_line``, logged at INFO on stderr), a short status for the preview
(``status_line``), and the results table and timing summary printed at the end."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from device.app.runtime import ResultRow, RunSummary

__all__ = ["diagnosis_line", "status_line", "print_summary", "summary_dict", "GRADE_NAMES"]

GRADE_NAMES = ("dandruff", "sebum", "erythema", "alopecia")


def diagnosis_line(row: ResultRow, *, publishing: bool = False, calibrated: bool = True) -> str:
    """One line for a diagnosis: seq, trigger (and the still's file), hairs, density per cm2,
    thin ratio, median thickness (flagged when the scale is uncalibrated), grades, and where the
    record went (stored and sending, stored on the scanner only, or not stored and why)."""
    f = row.fields
    seq = "-" if row.seq is None else str(row.seq)
    origin = row.trigger + (f", {Path(row.frame_name).name}" if row.frame_name else "")
    if str(f.get("frame", {}).get("source", "")).startswith("synthetic://"):
        origin += ", SYNTHETIC frame"
    if row.error is not None and not f:
        return f"diagnosis seq {seq} ({origin}): {row.error}"
    if row.accepted:
        thickness = _value(f, "median_thickness")
        measures = [
            f"{_value(f, 'hair_count')} hairs",
            f"{_value(f, 'density')} hairs/cm2",
            f"thin {_percent(_raw(f, 'thin_ratio'))} %",
            f"median {thickness} um" + ("" if calibrated or thickness == "-" else " (uncalibrated scale)"),
        ]
        grades = [f"{name} {_level(f, name)}" for name in GRADE_NAMES if name in f.get("conditions", {})]
        what = ", ".join(measures) + ("; " + ", ".join(grades) if grades else "")
    else:
        what = f"rejected: {f.get('quality', {}).get('reason') or 'unusable frame'}"
    return f"diagnosis seq {seq} ({origin}): {what}; {_where(row, publishing)}"


def status_line(row: ResultRow, *, publishing: bool = False) -> str:
    """The last diagnosis in a few words, for the preview's status bar."""
    seq = "-" if row.seq is None else str(row.seq)
    if not row.accepted:
        reason = str(row.fields.get("quality", {}).get("reason") or row.error or "unusable frame")
        return f"#{seq} rejected: {reason.split(' (')[0]}"
    f = row.fields
    density = _value(f, "density")
    return (
        f"#{seq} {_value(f, 'hair_count')} hairs, {density}/cm2, thin {_percent(_raw(f, 'thin_ratio'))}% - "
        + _where(row, publishing).split(",")[0]
    )


def _where(row: ResultRow, publishing: bool) -> str:
    if row.error is not None:
        return row.error
    if row.seq is None:
        return "not stored (no outbox)"
    return "stored, sending" if publishing else "stored on the scanner (publish off)"


def _value(fields: dict[str, Any], name: str, fmt: str = "{:.0f}") -> str:
    v = fields.get("metrics", {}).get(name, {}).get("value")
    return "-" if v is None else fmt.format(v)


def _level(fields: dict[str, Any], name: str) -> str:
    c = fields.get("conditions", {}).get(name)
    return "-" if c is None else str(c["level"])


def print_summary(summary: RunSummary) -> None:
    """Print one row per diagnosis, then per-stage median timings and the live path's FPS."""
    cols = ("seq", "trigger", "hairs", "median um", "thin %", "/cm2", "dandruff", "sebum", "erythema", "alopecia", "ms")
    rows = []
    for r in summary.results:
        f = r.fields
        rows.append(
            (
                "-" if r.seq is None else str(r.seq),
                r.trigger,
                _value(f, "hair_count"),
                _value(f, "median_thickness"),
                _percent(_raw(f, "thin_ratio")),
                _value(f, "density"),
                _level(f, "dandruff"),
                _level(f, "sebum"),
                _level(f, "erythema"),
                _level(f, "alopecia"),
                "{:.0f}".format(f.get("timings_ms", {}).get("total", 0.0)),
            )
        )
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    for r in summary.results:
        if r.error or not r.accepted:
            print(f"seq {r.seq}: {r.error or 'frame rejected: ' + str(r.fields.get('quality', {}).get('reason'))}")
    print(
        f"frames {summary.frames} (rejected by the quality gate {summary.rejected_frames}, failed "
        f"{summary.failed_frames}); live path {summary.live_fps:.1f} fps; stopped: {summary.stop_reason}"
    )
    if summary.source:
        skipped = int(summary.source_stats.get("skipped_files", 0))
        print(f"source: {summary.source}" + (f" ({skipped} unreadable file(s) skipped)" if skipped else ""))
    print(
        "live path median ms: " + ", ".join(f"{k.removesuffix('_ms')} {v}" for k, v in summary.medians("live").items())
    )
    print("diagnosis median ms: " + ", ".join(f"{k} {v}" for k, v in summary.medians("diagnosis").items()))


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.0f}"


def _raw(fields: dict[str, Any], name: str) -> float | None:
    v = fields.get("metrics", {}).get(name, {}).get("value")
    return None if v is None else float(v)


def summary_dict(summary: RunSummary) -> dict[str, Any]:
    """JSON-ready summary (for benchmarks and tests)."""
    return {
        "frames": summary.frames,
        "rejected_frames": summary.rejected_frames,
        "failed_frames": summary.failed_frames,
        "live_fps": summary.live_fps,
        "stop_reason": summary.stop_reason,
        "source": summary.source,
        "source_stats": summary.source_stats,
        "live_ms_median": summary.medians("live"),
        "diagnosis_ms_median": summary.medians("diagnosis"),
        "results": [
            {"seq": r.seq, "trigger": r.trigger, "accepted": r.accepted, "error": r.error, "overlay": r.overlay}
            | r.fields
            for r in summary.results
        ],
    }
