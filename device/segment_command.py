"""``scalpedge segment``: segment and measure frames, write overlays and metrics.json."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import cv2

from device.analysis import analyse_frame
from device.assets import default_model_path, sample_frames
from device.constants import DEFAULT_UM_PER_PX, THIN_HAIR_UM
from device.imageio import FrameError, list_images, read_frame
from device.onnx_segmenter import ModelSegmenter

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("segment", help="segment hair in images, write overlays and metrics.json")
    p.add_argument("paths", nargs="*", help="images or folders (default: the bundled sample frames)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default=None, help="segmenter ONNX file (default: the shipped student)")
    p.add_argument(
        "--um-per-px", type=float, default=None, help=f"micrometres per input pixel (default {DEFAULT_UM_PER_PX})"
    )
    p.add_argument(
        "--thin-um", type=float, default=None, help=f"thin-hair diameter threshold, um (default {THIN_HAIR_UM})"
    )
    p.add_argument("--threads", type=int, default=2, help="inference threads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = Path(args.model) if args.model else default_model_path()
    um_per_px = args.um_per_px if args.um_per_px is not None else DEFAULT_UM_PER_PX
    thin_um = args.thin_um if args.thin_um is not None else THIN_HAIR_UM
    if um_per_px <= 0:
        raise ValueError("--um-per-px must be positive")
    paths = list_images(args.paths) if args.paths else sample_frames()
    segmenter = ModelSegmenter.from_onnx(model, threads=args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    failures = 0
    for path in paths:
        record: dict[str, Any] = {"file": str(path)}
        try:
            frame = read_frame(path)
        except FrameError as exc:
            failures += 1
            record["error"] = str(exc)
            print(f"skipped: {exc}", file=sys.stderr)
            frames.append(record)
            continue
        result = analyse_frame(segmenter, frame, um_per_px=um_per_px, thin_um=thin_um)
        overlay_path = out / f"{path.stem}_overlay.png"
        cv2.imwrite(str(overlay_path), result.overlay())
        record.update(
            width=frame.shape[1],
            height=frame.shape[0],
            overlay=overlay_path.name,
            **result.metrics.to_dict(),
            timings_ms={k: round(v, 2) for k, v in result.timings_ms.items()},
        )
        frames.append(record)
        print(f"{path.name}: {result.metrics.count} hairs" + (f" ({result.problem})" if result.problem else ""))
    report = {"model": str(model), "um_per_px": um_per_px, "thin_um": thin_um, "frames": frames}
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'metrics.json'} ({len(frames) - failures} measured, {failures} unreadable)")
    return 1 if failures else 0
