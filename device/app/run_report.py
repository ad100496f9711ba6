"""The results table and timing summary that ``scalpedge device run`` prints at the end."""

from __future__ import annotations

from typing import Any

from device.app.runtime import RunSummary

__all__ = ["print_summary", "summary_dict"]


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
        "live_ms_median": summary.medians("live"),
        "diagnosis_ms_median": summary.medians("diagnosis"),
        "results": [
            {"seq": r.seq, "trigger": r.trigger, "accepted": r.accepted, "error": r.error, "overlay": r.overlay}
            | r.fields
            for r in summary.results
        ],
    }
