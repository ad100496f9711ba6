"""``scalpedge segment``: segment and measure frames, write overlays, masks, metrics.jsonl (as
each frame is measured) and metrics.json. Frames not 4:3 are centre-cropped, never stretched."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from device.app.analysis import analyse_frame
from device.app.frame_files import OutputError, ResultsFolder, read_each, unreadable
from device.app.overlay import draw_overlay
from device.assets import default_bundle_path, sample_frames
from device.capture.imageio import FrameError, list_images, skipped_subfolders
from device.contracts.constants import DEFAULT_UM_PER_PX, FRAME_HEIGHT, FRAME_WIDTH, HAIR_PHOTO_INPUT, THIN_HAIR_UM
from device.contracts.errors import ExitCode
from device.contracts.preprocess import crop_box
from device.measure.optics import OpticsProfile, load_profile
from device.models.backends import BACKENDS, open_backend
from device.models.bundle import Bundle
from device.models.hair_classes import HAIR_CLASSES_MODEL, HairClassifier
from device.models.hair_photo import HAIR_PHOTO_MODEL, HairPhotoSegmenter
from device.models.onnx_segmenter import ModelSegmenter

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


DESCRIPTION = (
    "Segment hair in images or folders and measure each: hair count, thickness, thin-hair ratio, "
    "density. Each image is brought to the camera geometry, 640x480 (4:3), before it is measured: "
    "an image of another aspect ratio is centre-cropped to 4:3 (the sides of a wide one, the top "
    "and bottom of a tall one are left out), never stretched, and micrometres per pixel follow "
    "the crop; the overlay (and --save-mask's mask) shows the cropped frame, and each result "
    "records the crop box in input pixels. Results are appended to OUT/metrics.jsonl as each "
    "image is measured (one JSON object a line), then summarised in OUT/metrics.json. Exit "
    "1 when an input is unreadable or an output cannot be written (reported once, with its path; "
    "what was written stays). With --model hair_photo, ordinary photos of a head (not microscope "
    "frames) are segmented whole, at their own size, by the bundle's hair-photo segmenter: the "
    "overlay shows the hair it found and each result gives hair_coverage, the share of the photo "
    "that is hair."
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "segment", help="segment hair in images, write overlays and metrics.json", description=DESCRIPTION
    )
    p.add_argument("paths", nargs="*", help="images or folders (default: the bundled sample frames)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--recursive",
        action="store_true",
        help="also segment images in subfolders (outputs mirror them); without it subfolders are reported, not read",
    )
    p.add_argument(
        "--save-mask",
        action="store_true",
        help="also write <name>_mask.png: the 640x480 frame's binary hair mask (255 = hair; none for rejected frames)",
    )
    p.add_argument("--bundle", default=None, help="signed model bundle folder (default: the shipped bundle)")
    p.add_argument("--trust", nargs="*", default=[], help="extra trusted public keys for --bundle (PEM files/folders)")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime", help="inference backend")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "int8"],
        default="auto",
        help="bundle variant: auto = the one the bundle prefers for the backend",
    )
    p.add_argument(
        "--model",
        default=None,
        help="hair_photo: the bundle's hair-photo segmenter for ordinary photos of a head; or an unbundled "
        "segmenter ONNX file instead (development; unverified)",
    )
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


def _load_segmenter(args: argparse.Namespace) -> tuple[ModelSegmenter, HairClassifier | None, dict[str, Any]]:
    """The segmenter to run, the bundle's per-hair class model (None with --model or a bundle
    without one) and a description of where they came from (for metrics.json)."""
    if args.model:
        segmenter = ModelSegmenter(open_backend(args.model, args.backend, threads=args.threads))
        return segmenter, None, {"model": args.model}
    bundle = Bundle.open(args.bundle or default_bundle_path(), trusted_keys=args.trust)
    target = "tensorrt" if args.backend == "tensorrt" else "onnxruntime-cpu"
    variant = bundle.select("segmenter", target, args.precision)
    # A TensorRT engine from an FP32 file is built in FP16; Q/DQ files build as INT8.
    trt_precision = "int8" if variant.precision == "int8" else "fp16"
    backend = open_backend(
        variant.path, args.backend, threads=args.threads, precision=trt_precision, onnx_sha256=variant.sha256
    )
    source = {"bundle": str(bundle.root), "bundle_version": bundle.version, "model": variant.path.name}
    hair_classes = HairClassifier.from_bundle(bundle, threads=args.threads)
    if hair_classes is not None:
        source["hair_classes"] = HAIR_CLASSES_MODEL
    return (
        ModelSegmenter(backend, name="segmenter"),
        hair_classes,
        source | {"precision": variant.precision, "backend": args.backend},
    )


def _load_photo_segmenter(args: argparse.Namespace) -> tuple[HairPhotoSegmenter, dict[str, Any]] | None:
    """The hair-photo segmenter that --model names (hair_photo: the bundle's; or an ONNX file
    whose input is the hair-photo input) and where it came from; None for a scalp segmenter."""
    if args.model == HAIR_PHOTO_MODEL:
        bundle = Bundle.open(args.bundle or default_bundle_path(), trusted_keys=args.trust)
        target = "tensorrt" if args.backend == "tensorrt" else "onnxruntime-cpu"
        if HAIR_PHOTO_MODEL not in bundle.models:
            raise ValueError(f"bundle {bundle.root} ({bundle.version}) has no {HAIR_PHOTO_MODEL} model")
        variant = bundle.select(HAIR_PHOTO_MODEL, target, args.precision)
        backend = open_backend(
            variant.path, args.backend, threads=args.threads, precision=variant.precision, onnx_sha256=variant.sha256
        )
        source = {"bundle": str(bundle.root), "bundle_version": bundle.version, "model": variant.path.name}
        return HairPhotoSegmenter(backend), source | {"precision": variant.precision, "backend": args.backend}
    if args.model and str(args.model).endswith(".onnx") and Path(args.model).is_file():
        backend = open_backend(args.model, args.backend, threads=args.threads)
        if HAIR_PHOTO_INPUT in getattr(backend, "input_shapes", {}):
            return HairPhotoSegmenter(backend), {"model": args.model, "backend": args.backend}
    return None


def _um_per_px(args: argparse.Namespace, profile: OpticsProfile | None, frame_width: int) -> float:
    """Micrometres per pixel of a frame ``frame_width`` wide: --um-per-px, else the optics
    profile, else the default (defined at 640 wide)."""
    if args.um_per_px is not None:
        return float(args.um_per_px)
    if profile is not None:
        return profile.um_per_px_at(frame_width)
    return DEFAULT_UM_PER_PX * FRAME_WIDTH / frame_width


def _output_names(inputs: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """(image, output base name) with each name unique: a name taken before gets the image's
    extension (x.png, x.jpg -> x, x_jpg), then a number."""
    taken: set[str] = set()
    named: list[tuple[Path, str]] = []
    for path, base in inputs:
        name = base
        if name in taken:
            name = f"{base}_{path.suffix.lstrip('.').lower()}"
        k = 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        named.append((path, name))
    return named


def _inputs(args: argparse.Namespace, out: Path) -> tuple[list[tuple[Path, str]], list[Path]]:
    """The images to segment, each with its output base name (its path within the folder given,
    without suffix), and the subfolders left out without --recursive. The output folder is
    never read as input."""
    if not args.paths:
        return _output_names([(p, p.stem) for p in sample_frames()]), []
    found: list[tuple[Path, str]] = []
    skipped: list[Path] = []
    for arg in map(Path, args.paths):
        if not arg.is_dir():
            found += [(p, p.stem) for p in list_images([arg])]
            continue
        nested = [] if args.recursive else skipped_subfolders([arg], exclude=(out,))
        try:
            files = list_images([arg], recursive=args.recursive, exclude=(out,))
        except FrameError as exc:
            if nested:
                some = "1 subfolder holds" if len(nested) == 1 else f"{len(nested)} subfolders hold"
                raise FrameError(f"{arg}: no images in the folder itself; {some} some: use --recursive") from None
            raise exc
        skipped += nested
        found += [(p, p.relative_to(arg).with_suffix("").as_posix()) for p in files]
    return _output_names(found), skipped


def _crop_note(shape: tuple[int, ...]) -> tuple[list[int], str]:
    """The crop box [x0, y0, w, h] (input px) that ``prepare_frame`` keeps of an image of
    ``shape``, and a note for the operator when it is not the whole image."""
    x0, y0, w, h = crop_box(shape[0], shape[1])
    if (w, h) == (shape[1], shape[0]):
        return [x0, y0, w, h], ""
    return [x0, y0, w, h], f" (centre-cropped to 4:3: {shape[1]}x{shape[0]} -> {w}x{h})"


def run(args: argparse.Namespace) -> int:
    if args.um_per_px is not None and args.um_per_px <= 0:
        raise ValueError("--um-per-px must be positive")
    profile = load_profile(args.calibration)
    thin_um = args.thin_um if args.thin_um is not None else THIN_HAIR_UM
    out = Path(args.out)
    inputs, skipped = _inputs(args, out)
    if skipped:
        shown = ", ".join(str(p) for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        n = "1 subfolder" if len(skipped) == 1 else f"{len(skipped)} subfolders"
        print(f"{n} skipped ({shown}): use --recursive to segment them too", file=sys.stderr)
    photo = _load_photo_segmenter(args)
    if photo is not None and (args.um_per_px is not None or args.thin_um is not None or args.calibration):
        raise ValueError(
            "--um-per-px, --thin-um and --calibration measure microscope frames; a hair photo has no scale"
        )
    if photo is None:
        segmenter, hair_classes, source = _load_segmenter(args)
    try:
        results = ResultsFolder(out)
    except OutputError as exc:
        print(f"scalpedge segment: cannot write the results: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    with results:
        try:
            if photo is not None:
                return _segment_photos(args, inputs, skipped, photo, results)
            return _segment_all(args, inputs, skipped, (segmenter, hair_classes), source, profile, thin_um, results)
        except OutputError as exc:
            kept = (
                f"{results.written} results kept in {results.lines_path}" if results.written else "no results written"
            )
            print(f"scalpedge segment: cannot write the results: {exc} ({kept})", file=sys.stderr)
            return ExitCode.FAILED


def _segment_photos(
    args: argparse.Namespace,
    inputs: list[tuple[Path, str]],
    skipped: list[Path],
    photo: tuple[HairPhotoSegmenter, dict[str, Any]],
    results: ResultsFolder,
) -> int:
    """Segment each photo whole with the hair-photo segmenter: overlay (and --save-mask's
    mask) at the photo's size, its line (hair_coverage) in ``results``; then metrics.json."""
    segmenter, source = photo
    names = {path: name for path, name in inputs}
    frames: list[dict[str, Any]] = []
    for path, image, record in read_each(names, frames, on_unreadable=results.add):
        found = segmenter.segment(image)
        record.update(width=image.shape[1], height=image.shape[0], hair_coverage=round(found.coverage, 4), overlay=None)
        text = f"hair covers {found.coverage:.1%} of the photo"
        try:
            results.write_image(overlay := f"{names[path]}_overlay.png", draw_overlay(image, found.mask, lines=[text]))
            record["overlay"] = overlay
            if args.save_mask:
                results.write_image(mask_name := f"{names[path]}_mask.png", found.mask.astype(np.uint8) * 255)
                record["mask"] = mask_name
        except OutputError as exc:
            record["output_error"] = str(exc)
            with contextlib.suppress(OutputError):
                results.add(record)
            raise
        results.add(record)
        print(f"{path}: {text}")
    report = {
        **source,
        "task": "hair in ordinary photos (whole photo, its own size)",
        "skipped_subfolders": [str(p) for p in skipped],
        "lines": results.lines_path.name,
        "frames": frames,
    }
    summary = results.write_json("metrics.json", report)
    failures = unreadable(frames)
    print(f"wrote {summary} ({len(frames) - failures} segmented, {failures} unreadable)")
    return ExitCode.FAILED if failures else ExitCode.OK


def _segment_all(
    args: argparse.Namespace,
    inputs: list[tuple[Path, str]],
    skipped: list[Path],
    models: tuple[ModelSegmenter, HairClassifier | None],
    source: dict[str, Any],
    profile: OpticsProfile | None,
    thin_um: float,
    results: ResultsFolder,
) -> int:
    """Measure each input, writing its images and its line to ``results`` before the next one;
    then metrics.json. Raises OutputError at the first output that cannot be written (after
    trying to keep that frame's line)."""
    names = {path: name for path, name in inputs}
    frames: list[dict[str, Any]] = []
    for path, frame, record in read_each(names, frames, on_unreadable=results.add):
        um_per_px = _um_per_px(args, profile, frame.shape[1])
        result = analyse_frame(models[0], frame, um_per_px=um_per_px, thin_um=thin_um, hair_classes=models[1])
        crop, note = _crop_note(frame.shape)
        record.update(width=frame.shape[1], height=frame.shape[0], crop=crop, overlay=None)
        if args.save_mask:
            record["mask"] = None
        record.update(**result.metrics.to_dict(), timings_ms={k: round(v, 2) for k, v in result.timings_ms.items()})
        try:
            results.write_image(overlay := f"{names[path]}_overlay.png", result.overlay())
            record["overlay"] = overlay  # relative to the output folder
            if args.save_mask and result.seg is not None:
                results.write_image(mask_name := f"{names[path]}_mask.png", result.seg.mask().astype(np.uint8) * 255)
                record["mask"] = mask_name
        except OutputError as exc:
            record["output_error"] = str(exc)
            with contextlib.suppress(OutputError):  # keep the measurement if the lines file still takes it
                results.add(record)
            raise
        results.add(record)
        m = result.metrics
        print(f"{path}: {m.count} hairs{note}" + (f" ({result.problem})" if result.problem else ""))
    calibration = "--um-per-px" if args.um_per_px is not None else ("optics profile" if profile else "default")
    report = {
        **source,
        "um_per_px_source": calibration,
        "thin_um": thin_um,
        "frame_size": [FRAME_WIDTH, FRAME_HEIGHT],
        "aspect_ratio": "centre-cropped to 4:3, never stretched (crop: [x0, y0, w, h] in input pixels)",
        "skipped_subfolders": [str(p) for p in skipped],
        "lines": results.lines_path.name,
        "frames": frames,
    }
    summary = results.write_json("metrics.json", report)
    failures = unreadable(frames)
    print(f"wrote {summary} ({len(frames) - failures} measured, {failures} unreadable)")
    return ExitCode.FAILED if failures else ExitCode.OK
