"""``scalpedge calibrate int8|optics``: INT8 variants for a model card; micrometres per pixel."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("calibrate", help="INT8 calibration of exported models; optical calibration (um per pixel)")
    csub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    q = csub.add_parser("int8", help="quantize a model card's FP32 ONNX to INT8 Q/DQ variants, gated on accuracy")
    q.add_argument("--card", required=True, help="model card JSON (from `scalpedge export release`)")
    q.add_argument("--frames", nargs="+", required=True, help="calibration frames: files or folders")
    q.add_argument("--gate-data", required=True, help="held-out folder with images/ and masks/ for the gate")
    q.add_argument("--variants", default="tensorrt,ort-cpu", help="recipes: tensorrt, ort-cpu (comma-separated)")
    q.add_argument("--method", choices=["minmax", "entropy", "percentile"], help="calibration method (default minmax)")
    q.add_argument("--per-tensor", action="store_true", help="per-tensor weights instead of per-channel")
    q.add_argument("--exclude", default="", help="comma-separated node names to keep in FP32")
    q.add_argument("--keep-thin-fp32", type=int, help="keep Convs with <= N output channels FP32 (0: none)")
    q.add_argument("--limit", type=int, default=64, help="calibration frames (default 64)")
    q.add_argument("--gate-limit", type=int, default=100, help="held-out frames scored by the gate (default 100)")
    q.add_argument("--max-drop", type=float, default=0.005, help="largest allowed Dice loss (default 0.005 = 0.5 pt)")
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
    from calibration.card import calibrate_card
    from calibration.gate import segmenter_dice
    from calibration.quantize import RECIPES, producing_convs
    from calibration.readers import FrameReader, frame_files
    from device.contracts.constants import SEG_OUT_ENDS

    card = json.loads(Path(args.card).read_text())
    if card.get("task") != "hair-segmentation":
        raise ValueError(
            f"{args.card}: calibrate int8 gates segmenters (task hair-segmentation), not {card.get('task')}"
        )
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {sorted(RECIPES)}")
    exclude = tuple(n for n in args.exclude.split(",") if n)
    fp32 = next(v for v in card["variants"] if v["precision"] == "fp32")
    fp32_path = Path(args.card).parent / fp32["file"]
    if card.get("instance_head") == "ends":  # a frame's count sums this output: keep its conv FP32
        exclude += tuple(n for n in producing_convs(fp32_path, SEG_OUT_ENDS) if n not in exclude)
    recipes = [
        RECIPES[n].with_options(
            method=args.method,
            per_channel=False if args.per_tensor else None,
            exclude=exclude or None,
            keep_thin_fp32=args.keep_thin_fp32,
        )
        for n in names
    ]
    shape = _input_shape(fp32_path)
    files = frame_files(args.frames, limit=args.limit)
    name = next(iter(shape))

    def make_reader() -> Any:
        return FrameReader(files, name, shape[name][2], shape[name][3])

    def score(path: Path) -> float:
        return segmenter_dice(path, args.gate_data, limit=args.gate_limit, threads=args.threads)

    calibrate_card(
        args.card,
        make_reader,
        score,
        "dice",
        recipes,
        args.max_drop,
        runs=args.runs,
        threads=args.threads,
        min_speedup=args.min_speedup,
    )
    print(f"updated {args.card}")
    return 0


def _input_shape(path: Path) -> dict[str, tuple[int, ...]]:
    from device.models.backends import OrtBackend

    return OrtBackend(path, threads=1).input_shapes


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
