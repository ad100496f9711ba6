"""``scalpedge segment``: segment and measure frames, write overlays and metrics.json."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import cv2

from device.app.analysis import analyse_frame
from device.app.frame_files import read_each, unreadable
from device.assets import default_bundle_path, sample_frames
from device.capture.imageio import list_images
from device.contracts.constants import DEFAULT_UM_PER_PX, FRAME_WIDTH, THIN_HAIR_UM
from device.measure.optics import OpticsProfile, load_profile
from device.models.backends import BACKENDS, open_backend
from device.models.bundle import Bundle
from device.models.onnx_segmenter import ModelSegmenter

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("segment", help="segment hair in images, write overlays and metrics.json")
    p.add_argument("paths", nargs="*", help="images or folders (default: the bundled sample frames)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--bundle", default=None, help="signed model bundle folder (default: the shipped bundle)")
    p.add_argument("--trust", nargs="*", default=[], help="extra trusted public keys for --bundle (PEM files/folders)")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime", help="inference backend")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "int8"],
        default="auto",
        help="bundle variant: auto = the one the bundle prefers for the backend",
    )
    p.add_argument("--model", default=None, help="an unbundled segmenter ONNX file instead (development; unverified)")
    p.add_argument(
        "--um-per-px",
        type=float,
        default=None,
        help=f"micrometres per input pixel (default: the optics profile, else {DEFAULT_UM_PER_PX} at 640 wide)",
    )
    p.add_argument("--calibration", default=None, help="optics profile JSON (default: the device's calibration.json)")
    p.add_argument(
        "--thin-um", type=float, default=None, help=f"thin-hair diameter threshold, um (default {THIN_HAIR_UM})"
    )
    p.add_argument("--threads", type=int, default=2, help="inference threads")
    p.set_defaults(func=run)


def _load_segmenter(args: argparse.Namespace) -> tuple[ModelSegmenter, dict[str, Any]]:
    """The segmenter to run and a description of where it came from (for metrics.json)."""
    if args.model:
        return ModelSegmenter(open_backend(args.model, args.backend, threads=args.threads)), {"model": args.model}
    bundle = Bundle.open(args.bundle or default_bundle_path(), trusted_keys=args.trust)
    target = "tensorrt" if args.backend == "tensorrt" else "onnxruntime-cpu"
    variant = bundle.select("segmenter", target, args.precision)
    # A TensorRT engine from an FP32 file is built in FP16; Q/DQ files build as INT8.
    trt_precision = "int8" if variant.precision == "int8" else "fp16"
    backend = open_backend(
        variant.path, args.backend, threads=args.threads, precision=trt_precision, onnx_sha256=variant.sha256
    )
    source = {"bundle": str(bundle.root), "bundle_version": bundle.version, "model": variant.path.name}
    return ModelSegmenter(backend, name="segmenter"), source | {"precision": variant.precision, "backend": args.backend}


def _um_per_px(args: argparse.Namespace, profile: OpticsProfile | None, frame_width: int) -> float:
    """Micrometres per pixel of a frame ``frame_width`` wide: --um-per-px, else the optics
    profile, else the default (defined at 640 wide)."""
    if args.um_per_px is not None:
        return float(args.um_per_px)
    if profile is not None:
        return profile.um_per_px_at(frame_width)
    return DEFAULT_UM_PER_PX * FRAME_WIDTH / frame_width


def run(args: argparse.Namespace) -> int:
    if args.um_per_px is not None and args.um_per_px <= 0:
        raise ValueError("--um-per-px must be positive")
    profile = load_profile(args.calibration)
    thin_um = args.thin_um if args.thin_um is not None else THIN_HAIR_UM
    paths = list_images(args.paths) if args.paths else sample_frames()
    segmenter, source = _load_segmenter(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames: list[dict[str, Any]] = []
    for path, frame, record in read_each(paths, frames):
        um_per_px = _um_per_px(args, profile, frame.shape[1])
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
        m = result.metrics
        visible = f", {m.visible_count} visible strands" if m.visible_count is not None else ""
        print(f"{path.name}: {m.count} hairs{visible}" + (f" ({result.problem})" if result.problem else ""))
    calibration = "--um-per-px" if args.um_per_px is not None else ("optics profile" if profile else "default")
    report = {**source, "um_per_px_source": calibration, "thin_um": thin_um, "frames": frames}
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    failures = unreadable(frames)
    print(f"wrote {out / 'metrics.json'} ({len(frames) - failures} measured, {failures} unreadable)")
    return 1 if failures else 0
