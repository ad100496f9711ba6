"""``scalpedge calibrate int8|optics``: INT8 variants for a model card; micrometres per pixel."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("calibrate", help="INT8 calibration of exported models; optical calibration (um per pixel)")
    csub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    q = csub.add_parser(
        "int8",
        help="quantize a model card's FP32 ONNX (segmenter, classifier or pixel refiner) to INT8 Q/DQ variants, "
        "gated on accuracy",
    )
    q.add_argument(
        "--card", required=True, help="model card JSON (`scalpedge export release`, `export classifier-card`)"
    )
    q.add_argument("--frames", nargs="+", required=True, help="calibration frames: files or folders")
    q.add_argument(
        "--gate-data",
        help="segmenter, pixel refiner: held-out folder with images/ and masks/ (Dice; the pixel refiner's "
        "fused mask); classifier: frames to compare with FP32 (default: the calibration frames)",
    )
    q.add_argument(
        "--bundle",
        help="pixel refiner: the bundle whose student and prompt refiner make its inputs (default: the shipped one)",
    )
    q.add_argument("--variants", help="recipes, comma-separated (default: the model's rules, calibration.rules)")
    q.add_argument("--method", choices=["minmax", "entropy", "percentile"], help="calibration method (default minmax)")
    q.add_argument("--per-tensor", action="store_true", help="per-tensor weights instead of per-channel")
    q.add_argument("--exclude", default="", help="comma-separated node names to keep in FP32 (besides the rules')")
    q.add_argument(
        "--keep-thin-fp32", type=int, help="override the rules: Convs with <= N output channels stay FP32 (0: none)"
    )
    q.add_argument("--limit", type=int, default=64, help="calibration frames (default 64)")
    q.add_argument("--gate-limit", type=int, default=100, help="frames scored by the gate (default 100)")
    q.add_argument(
        "--max-drop", type=float, help="override the rules' largest allowed score loss (segmenter: 0.005 Dice)"
    )
    q.add_argument("--runs", type=int, default=20, help="timed runs per model")
    q.add_argument(
        "--min-speedup", type=float, default=1.2, help="INT8 is preferred on ONNX Runtime only this much faster"
    )
    q.add_argument("--threads", type=int, default=2)
    q.set_defaults(func=_run_int8)
    o = csub.add_parser("optics", help="micrometres per pixel from a frame of a ruler or calibration slide")
    o.add_argument("frame", help="image of parallel ruler lines filling most of the view")
    o.add_argument("--spacing-um", type=float, required=True, help="distance between adjacent lines, micrometres")
    o.add_argument("--profile", help="where to write the profile (default: the device's calibration.json)")
    o.add_argument("--dry-run", action="store_true", help="print the result, write nothing")
    o.set_defaults(func=_run_optics)


def _run_int8(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401  (quantization needs the onnx package)
    except ImportError:
        from device.contracts.errors import MissingExtra

        raise MissingExtra("needs the onnx package: pip install -e '.[train]'") from None
    from dataclasses import replace

    from calibration.card import calibrate_card
    from calibration.readers import frame_files, model_reader
    from calibration.rules import judge_for, model_kind, recipes_for, rules_for

    card = json.loads(Path(args.card).read_text())
    fp32 = next((v for v in card["variants"] if v["precision"] == "fp32"), None)
    if fp32 is None:
        raise ValueError(f"{args.card}: no fp32 variant to quantize")
    fp32_path = Path(args.card).parent / fp32["file"]
    rules = rules_for(card, fp32_path)
    overrides = {
        "recipes": tuple(n for n in (args.variants or "").split(",") if n) or None,
        "keep_thin_fp32": args.keep_thin_fp32,
        "max_drop": args.max_drop,
        "exclude": rules.exclude + tuple(n for n in args.exclude.split(",") if n and n not in rules.exclude),
    }
    rules = replace(rules, **{k: v for k, v in overrides.items() if v is not None})
    recipes = recipes_for(rules, fp32_path, method=args.method, per_channel=False if args.per_tensor else None)
    files = frame_files(args.frames, limit=args.limit)
    kind = model_kind(fp32_path)
    make_reader: Callable[[], Any]
    if kind == "pixel_refiner":
        make_reader, judge = _pixel_refiner_inputs(args, card, fp32_path, rules.max_drop, files)
    else:
        segmenter = kind == "segmenter"
        gate_frames = None if segmenter or not args.gate_data else frame_files([args.gate_data], limit=args.gate_limit)
        judge = judge_for(
            kind,
            rules,
            model_reader(gate_frames or files, fp32_path),
            gate_data=args.gate_data if segmenter else None,
            gate_limit=args.gate_limit,
            threads=args.threads,
        )

        def make_reader() -> Any:
            return model_reader(files, fp32_path)

    calibrate_card(
        args.card, make_reader, judge, recipes, runs=args.runs, threads=args.threads, min_speedup=args.min_speedup
    )
    print(f"updated {args.card}")
    return 0


def _pixel_refiner_inputs(
    args: argparse.Namespace, card: dict[str, Any], fp32_path: Path, max_drop: float, files: list[Path]
) -> tuple[Callable[[], Any], Any]:
    """(calibration reader factory, gate) of a pixel refiner card: its inputs made by the
    bundle's student and prompt refiner (``calibration.pixel_refiner``), gated on the fused
    mask's held-out Dice."""
    from calibration.pixel_refiner import FusedDiceGate, held_out_masks, pixel_refiner_feeds
    from calibration.readers import ArrayReader
    from device.assets import default_bundle_path
    from device.models.bundle import Bundle
    from device.refine.pixel import PixelRefiner

    if not args.gate_data:
        raise ValueError("a pixel refiner's INT8 gate needs held-out frames with masks (--gate-data)")
    bundle = Bundle.open(args.bundle or default_bundle_path())
    feeds, kept = pixel_refiner_feeds(files, fp32_path, bundle, args.threads)
    print(f"calibration: {len(feeds)} frames ({len(files) - len(kept)} rejected by the quality gate)")
    gate_files, truths = held_out_masks(args.gate_data, args.gate_limit)
    gate_feeds, gate_kept = pixel_refiner_feeds(gate_files, fp32_path, bundle, args.threads)
    kept = set(gate_kept)
    kept_truths = [t for f, t in zip(gate_files, truths, strict=True) if f in kept]
    print(f"gate: {len(gate_feeds)} held-out frames ({len(gate_files) - len(gate_kept)} rejected by the quality gate)")
    judge = FusedDiceGate(gate_feeds, kept_truths, PixelRefiner.card_threshold(card), max_drop, args.threads)
    return lambda: ArrayReader(feeds), judge


def _run_optics(args: argparse.Namespace) -> int:
    from calibration.optics import profile_from_frame
    from device.capture.imageio import read_frame
    from device.measure.optics import save_profile

    profile = profile_from_frame(read_frame(args.frame), args.spacing_um, source=str(args.frame))
    print(
        f"line spacing {profile.spacing_px:.3f} px = {args.spacing_um} um -> {profile.um_per_px:.4f} um/px "
        f"at {profile.frame_width}x{profile.frame_height} ({profile.um_per_px_at(640):.4f} um/px at 640 wide)"
    )
    if not args.dry_run:
        print(f"wrote {save_profile(profile, args.profile)}")
    return 0
