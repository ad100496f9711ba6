"""Prompt-refiner subcommands and options, added to ``scalpedge train/eval/bench/export`` by
``server_train.cli`` (one call per group, so that module stays small).

- ``train refiner``: ``server_train.training.refiner_train``.
- ``eval seg`` / ``eval counts`` gain ``--stage coarse|refined|paper|fused`` (default: fused
  when a pixel refiner is found, else paper when a prompt refiner is, else coarse),
  ``--prompts auto|random``, ``--refiner DIR`` and ``--pixel-refiner DIR``.
- ``eval refiner``: the ablation JSON (every variant in one pass) and the Figure-3 PNG.
- ``bench refiner``: per-stage cost at 640x480 and the naive U²-NetP + TinyViT + SAM pipeline.
- ``export refiner``: encoder and decoder ONNX with checks, plus the model card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device.contracts.constants import MASK_STAGES, PIXEL_REFINER_MODEL
from device.contracts.constants import REFINER_DECODER_FILE as DECODER_FILE
from device.contracts.constants import REFINER_ENCODER_FILE as ENCODER_FILE
from device.models.segmentation import Segmenter
from server_train.cli_support import config_from_args, write_report

if TYPE_CHECKING:
    from device.refine.pixel import PixelRefiner

__all__ = [
    "add_train",
    "add_stage_args",
    "wrap_segmenter",
    "add_eval",
    "add_bench",
    "add_export",
    "bench_frames",
    "find_refiner",
    "find_pixel_refiner",
]


def find_refiner(spec: str | None) -> Path | None:
    """Folder holding the refiner's two ONNX files: ``spec`` if given (must hold them), else
    the shipped bundle (verified first) when it has them, else None."""
    from device.assets import default_bundle_path

    if spec:
        folder = Path(spec)
        if not (folder / ENCODER_FILE).is_file() or not (folder / DECODER_FILE).is_file():
            raise FileNotFoundError(f"{folder} lacks {ENCODER_FILE} and {DECODER_FILE}")
        return folder
    from device.models.bundle import Bundle

    bundle = Bundle.open(default_bundle_path())  # verified: signature, sizes and sha256 of every file
    if not {"refiner_encoder", "refiner_decoder"} <= set(bundle.models):
        return None
    folder = bundle.root
    return folder if (folder / ENCODER_FILE).is_file() and (folder / DECODER_FILE).is_file() else None


def _require_refiner(spec: str | None) -> Path:
    """``find_refiner``, or FileNotFoundError when there is none."""
    folder = find_refiner(spec)
    if folder is None:
        raise FileNotFoundError("no refiner: pass --refiner DIR")
    return folder


_TRAIN_OPTIONS = (
    ("data", str),
    ("cache", str),
    ("out", str),
    ("model", str),
    ("student", str),
    ("per_root", int),
    ("steps", int),
    ("groups_per_step", int),
    ("lr", float),
    ("weight_decay", float),
    ("warmup", int),
    ("degraded_share", float),
    ("random_prompt_share", float),
    ("subsample_share", float),
    ("teacher_checkpoint", str),
    ("distill_weight", float),
    ("seed", int),
    ("threads", int),
    ("ckpt_every", int),
)


def add_train(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser("refiner", help="train the prompt refiner (auto prompts from imperfect coarse masks)")
    for name, typ in _TRAIN_OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ)
    p.add_argument("--stop-after", type=int, help="pause at this step (last.pt; the schedule still spans --steps)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from server_train.training.refiner_train import RefinerTrainConfig, train_refiner

    cfg = config_from_args(RefinerTrainConfig, args)
    print(f"wrote {train_refiner(cfg, progress=not args.quiet, stop_after=args.stop_after)}")
    return 0


def add_stage_args(q: argparse.ArgumentParser) -> None:
    """--stage, --prompts, --refiner, --pixel-refiner for ``eval seg`` and ``eval counts``."""
    q.add_argument(
        "--stage",
        choices=list(MASK_STAGES),
        help="default: fused if a pixel refiner is found, else paper if a prompt refiner is, else coarse",
    )
    q.add_argument("--prompts", choices=["auto", "random"], default="auto", help="prompt points for the refiner")
    q.add_argument("--refiner", help=f"folder with {ENCODER_FILE} and {DECODER_FILE} (default: the shipped bundle)")
    q.add_argument(
        "--pixel-refiner",
        help=f"folder with {PIXEL_REFINER_MODEL}.onnx and its card (default: the shipped bundle)",
    )


def find_pixel_refiner(spec: str | None, threads: int) -> PixelRefiner | None:
    """The pixel refiner of folder ``spec`` (a staging folder of ``export pixel-refiner``), else
    the shipped bundle's (verified), else None."""
    from device.assets import default_bundle_path
    from device.models.bundle import Bundle
    from device.refine.pixel import PixelRefiner

    if spec:
        return PixelRefiner.from_folder(spec, threads=threads)
    return PixelRefiner.from_bundle(Bundle.open(default_bundle_path()), threads=threads)


def wrap_segmenter(base: Segmenter, args: argparse.Namespace) -> Segmenter:
    """``base`` (the coarse student) at the stage asked for on the command line."""
    from device.refine.fusion import RefinedSegmenter
    from device.refine.refiner import PromptRefiner

    folder = find_refiner(getattr(args, "refiner", None))
    pixel = find_pixel_refiner(getattr(args, "pixel_refiner", None), args.threads)
    default = "fused" if pixel is not None else "paper" if folder is not None else "coarse"
    stage = getattr(args, "stage", None) or default
    if stage == "coarse":
        return base
    if stage == "fused":
        if pixel is None:
            raise FileNotFoundError("--stage fused needs a pixel refiner: pass --pixel-refiner DIR")
        if not pixel.takes_prompt:
            return RefinedSegmenter(base, None, stage="fused", pixel=pixel)
    if folder is None:
        raise FileNotFoundError(f"--stage {stage} needs a refiner: pass --refiner DIR (scalpedge export refiner)")
    refiner = PromptRefiner.from_onnx(folder / ENCODER_FILE, folder / DECODER_FILE, threads=args.threads)
    return RefinedSegmenter(base, refiner, stage=stage, prompts=args.prompts, pixel=pixel)


def add_eval(esub: argparse._SubParsersAction) -> None:
    p = esub.add_parser("refiner", help="ablation: M^, M_AP (auto/random prompts), M on synthetic and FDU sets")
    p.add_argument("--synthetic", help="synthetic set with images/, masks/, truth.jsonl (e.g. data/heldout)")
    p.add_argument("--counts", help="VOC-box count set (e.g. /work/shared/data/follicle-counts/val)")
    p.add_argument("--out", required=True, help="JSON report")
    p.add_argument("--figure", help="PNG of the Figure-3-style grid on the first --synthetic frames")
    p.add_argument(
        "--figure-counts", help="PNG of the same grid on the first --counts frames (real data: keep out of git)"
    )
    p.add_argument("--figure-only", action="store_true", help="write the figures, skip the ablation")
    p.add_argument("--model", help="coarse segmenter (default: the shipped student)")
    p.add_argument("--refiner", help=f"folder with {ENCODER_FILE} and {DECODER_FILE}")
    p.add_argument("--limit", type=int)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--um-per-px", type=float, default=None)
    p.add_argument("--threshold", type=float, help="M_AP threshold on the decoder's P(hair) (default: constants)")
    p.add_argument("--tune", help="validation set: choose the M_AP threshold there first (report only)")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    import cv2

    from device.capture.imageio import read_frame
    from device.contracts.constants import REFINER_MASK_THRESHOLD
    from device.contracts.preprocess import prepare_frame
    from device.refine.refiner import PromptRefiner
    from server_train.evaluation.counts_eval import TEXT_BAR_PX, TRICHOSCOPY_UM_PER_PX
    from server_train.evaluation.loading import load_segmenter
    from server_train.evaluation.refiner_eval import ablation_counts, ablation_synthetic, figure, tune_refined_threshold

    folder = _require_refiner(args.refiner)
    student = load_segmenter(args.model, args.threads)
    threshold = args.threshold if args.threshold is not None else REFINER_MASK_THRESHOLD
    refiner = PromptRefiner.from_onnx(folder / ENCODER_FILE, folder / DECODER_FILE, args.threads, threshold=threshold)
    report: dict[str, Any] = {"refiner": str(folder), "student": getattr(student, "name", ""), "threshold": threshold}
    if args.tune:
        report["tuning"] = tune_refined_threshold(student, refiner, args.tune, limit=args.limit)
        print(json.dumps(report["tuning"]["best"]))
    if args.synthetic and not args.figure_only:
        report["synthetic"] = ablation_synthetic(student, refiner, args.synthetic, args.limit)
    if args.counts and not args.figure_only:
        um = args.um_per_px if args.um_per_px is not None else TRICHOSCOPY_UM_PER_PX
        report["counts"] = ablation_counts(student, refiner, args.counts, um, args.limit)
    if not args.figure_only:
        write_report(args.out, report)
    if args.figure and args.synthetic:
        root = Path(args.synthetic)
        rows = []
        for stem in sorted(p.stem for p in (root / "images").glob("*.png"))[:4]:
            gt = cv2.imread(str(root / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE) > 127
            rows.append((read_frame(root / "images" / f"{stem}.png"), gt))
        print(f"wrote {figure(student, refiner, rows, args.figure)}")
    if args.figure_counts and args.counts:
        paths = sorted((Path(args.counts) / "images").glob("*.jpg"))[:3]
        real = [(prepare_frame(read_frame(path)[TEXT_BAR_PX:]), None) for path in paths]
        print(f"wrote {figure(student, refiner, real, args.figure_counts)}")
    return 0


def add_bench(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser("refiner", help="per-stage cost of the fused path at 640x480 vs the naive SAM pipeline")
    p.add_argument("--out", required=True)
    p.add_argument("--refiner", help=f"folder with {ENCODER_FILE} and {DECODER_FILE}")
    p.add_argument("--checkpoint", help="refiner checkpoint, for GFLOP counts")
    p.add_argument(
        "--frames", help="folder of frames to time on (default: the sample frames shipped in device/assets/samples)"
    )
    p.add_argument("--n-frames", type=int, default=8, help="time on at most this many frames of --frames")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--no-naive", action="store_true")
    p.set_defaults(func=_run_bench)


def bench_frames(folder: str | None, limit: int) -> list[Path]:
    """The first ``limit`` image files of ``folder`` (sorted by name), or of the shipped sample
    frames when ``folder`` is None; ValueError when there are none (or ``limit`` < 1),
    FileNotFoundError when ``folder`` does not exist."""
    from device.assets import sample_frames
    from device.capture.imageio import IMAGE_SUFFIXES

    if limit < 1:
        raise ValueError(f"--n-frames must be at least 1, got {limit}")
    if folder is None:
        return sample_frames()[:limit]
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"--frames {root}: no such folder")
    frames = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not frames:
        raise ValueError(f"--frames {root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it")
    return frames[:limit]


def _run_bench(args: argparse.Namespace) -> int:
    from device.assets import default_model_path
    from server_train.evaluation.refiner_speed import bench_refiner, gflops

    folder = _require_refiner(args.refiner)
    frames = bench_frames(args.frames, args.n_frames)
    where = args.frames or f"{frames[0].parent} (the shipped samples; --frames to choose)"
    print(f"timing on {len(frames)} frames from {where}")
    threads = tuple(int(t) for t in args.threads.split(","))
    report = bench_refiner(
        default_model_path(),
        folder / ENCODER_FILE,
        folder / DECODER_FILE,
        frames,
        threads,
        args.runs,
        not args.no_naive,
    )
    if args.checkpoint:
        from device.models.backends import OrtBackend
        from server_train.training.refiner_train import load_refiner

        k = OrtBackend(folder / DECODER_FILE, threads=1).input_shapes["point_coords"][1]
        report["gflop"] = {name: round(v, 3) for name, v in gflops(load_refiner(args.checkpoint)[0], k).items()}
    write_report(args.out, report, rows="results")
    return 0


def add_export(esub: argparse._SubParsersAction) -> None:
    p = esub.add_parser("refiner", help="export the refiner (encoder + decoder ONNX, checked) and its model card")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", default="runs/refiner_release", help="staging folder (ONNX files + card)")
    p.add_argument("--metrics", nargs="*", default=[], help="JSON reports to record in the card")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from export.release import command_line
    from server_train.release import release_refiner_checkpoint

    metrics = {Path(p).stem: json.loads(Path(p).read_text()) for p in args.metrics}
    for card in release_refiner_checkpoint(args.checkpoint, args.out, metrics, command=command_line()):
        print(f"wrote {card}")
    return 0
