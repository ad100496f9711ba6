"""Server-side subcommands, registered into ``scalpedge`` through entry points.

Each ``register_*`` only declares arguments; heavy imports (torch) happen when a command runs,
so listing commands on a device without the ``train`` extra stays cheap and says what is
missing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from server_train import classifier_cli, hair_class_cli, pixel_refiner_cli, refiner_cli
from server_train.cli_support import command_group, config_from_args, need_torch, print_summary, write_report
from server_train.diffusion import cli as diffusion_cli
from server_train.hair_photo import cli as hair_photo_cli

if TYPE_CHECKING:
    from device.models.hair_classes import HairClassifier

__all__ = ["register_train", "register_eval", "register_bench", "register_export"]


def register_train(sub: argparse._SubParsersAction) -> None:
    tsub = command_group(sub, "train", "train models (server; needs the train extra)")
    seg = tsub.add_parser("seg", help="train a segmenter on synthetic pseudo-labels, or distil one from a teacher")
    seg.add_argument("--data", required=True, help="folder written by `scalpedge synth`")
    seg.add_argument("--out", required=True, help="run folder (checkpoints; resumes from last.pt)")
    seg.add_argument("--model", help="registry name (teacher, student, *_tiny, u2netp, u2net)")
    seg.add_argument("--teacher-checkpoint", help="distil from this teacher checkpoint")
    seg.add_argument("--init-checkpoint", help="initialise from this checkpoint (same model)")
    for name, typ in (
        ("steps", int),
        ("batch", int),
        ("lr", float),
        ("warmup", int),
        ("crop", int),
        ("kd-weight", float),
        ("seed", int),
        ("workers", int),
        ("threads", int),
    ):
        seg.add_argument(f"--{name}", type=typ)
    seg.add_argument("--centre-loss", choices=["bce", "focal", "lines", "ends"], help="loss of the instance output")
    seg.add_argument("--instance-target", choices=["centres", "lines", "ends"], help="what the instance output learns")
    seg.add_argument("--centre-weight", type=float, help="weight of the centre heatmap loss")
    seg.add_argument("--no-kd-centre", dest="kd_centre", action="store_const", const=False, help="distil only the mask")
    seg.add_argument("--stop-after", type=int, help="pause at this step (last.pt; the schedule still spans --steps)")
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    seg.set_defaults(func=_run_train_seg)
    counts = tsub.add_parser("counts", help="hair and thin-hair density heads from real trichoscopy boxes")
    counts.add_argument("--data", required=True, help="comma-separated folders with images/ and annotations/ (VOC)")
    counts.add_argument("--out", required=True, help="run folder (checkpoints; resumes from last.pt)")
    counts.add_argument("--init-onnx", help="start from this segmenter graph (default: from scratch, the baseline)")
    counts.add_argument(
        "--init-config", help="JSON model_config of --init-onnx (default: the one its exporter recorded)"
    )
    counts.add_argument("--model", help="registry name of a from-scratch student (student, student_tiny)")
    for name, typ in (
        ("val-percent", int),
        ("steps", int),
        ("batch", int),
        ("lr", float),
        ("warmup", int),
        ("thin-weight", float),
        ("mask-weight", float),
        ("peak-weight", float),
        ("crop-height", int),
        ("crop-width", int),
        ("zoom", float),
        ("seed", int),
        ("threads", int),
        ("limit", int),
    ):
        counts.add_argument(f"--{name}", type=typ)
    counts.add_argument(
        "--no-freeze-bn", dest="freeze_bn", action="store_const", const=False, help="BatchNorm statistics train too"
    )
    counts.add_argument("--stop-after", type=int, help="pause at this step (last.pt; the schedule still spans --steps)")
    counts.add_argument("--quiet", action="store_true", help="no progress bar")
    counts.set_defaults(func=_run_train_counts)
    classifier_cli.add_train(tsub)
    hair_class_cli.add_train(tsub)
    hair_photo_cli.add_train(tsub)
    refiner_cli.add_train(tsub)
    pixel_refiner_cli.add_train(tsub)
    diffusion_cli.add_train(tsub)


def _run_train_seg(args: argparse.Namespace) -> int:
    need_torch()
    from server_train.training.train import TrainConfig, train

    print(f"wrote {train(config_from_args(TrainConfig, args), progress=not args.quiet, stop_after=args.stop_after)}")
    return 0


def _run_train_counts(args: argparse.Namespace) -> int:
    need_torch()
    from server_train.training.count_train import CountTrainConfig, train_counts

    cfg = config_from_args(CountTrainConfig, args)
    print(f"wrote {train_counts(cfg, progress=not args.quiet, stop_after=args.stop_after)}")
    return 0


def register_eval(sub: argparse._SubParsersAction) -> None:
    esub = command_group(sub, "eval", "evaluate segmenters (JSON reports)")
    seg = esub.add_parser("seg", help="pixel scores on a folder with images/ and masks/")
    cnt = esub.add_parser("counts", help="hair counts against Pascal VOC boxes (one per hair)")
    for q in (seg, cnt):
        q.add_argument(
            "--data", required=True, help="folder (eval counts: comma-separated folders) with images/ and labels"
        )
        q.add_argument("--out", required=True, help="JSON report")
        q.add_argument(
            "--model",
            help="shipped student (default), .onnx, checkpoint .pt, or blackhat_otsu / ridge; eval seg also "
            "hair_photo (the shipped hair-photo segmenter, scored on whole photos) or a hair-photo .onnx",
        )
        q.add_argument("--limit", type=int, help="first N frames only")
        q.add_argument("--threads", type=int, default=2)
        refiner_cli.add_stage_args(q)
    cnt.add_argument(
        "--um-per-px",
        type=float,
        default=None,
        help="micrometres per original pixel (default 2.8: 70x trichoscopy at 1280x1024)",
    )
    cnt.add_argument(
        "--hair-classes",
        default="shipped",
        help="per-hair class model telling miniaturised hairs: shipped (the default bundle's), an .onnx, or none "
        "(by measured diameter)",
    )
    cnt.add_argument(
        "--split",
        choices=["all", "val", "train"],
        default="all",
        help="all frames, or the held-out (val) or training subjects of the counting runs' subject split",
    )
    cnt.add_argument("--val-percent", type=int, default=20, help="share of subjects held out (as in train counts)")
    seg.add_argument(
        "--split",
        choices=["all", "val", "train"],
        default="all",
        help="hair_photo only: all photos, or the val/train split of `train hair-photo` (its --val-percent 15)",
    )
    cnt.add_argument("--plot", help="PNG: predicted vs true counts and the Bland-Altman plot")
    sheet = esub.add_parser("sheet", help="contact sheet PNG of masks on unlabelled real frames")
    sheet.add_argument("--data", required=True, help="folder of frames")
    sheet.add_argument("--out", required=True, help="PNG file")
    sheet.add_argument("--model", help="as for eval seg")
    sheet.add_argument("--n", type=int, default=12)
    sheet.add_argument("--threads", type=int, default=2)
    sheet.set_defaults(func=_run_eval_sheet)
    tune = esub.add_parser("tune-counts", help="choose centre-line threshold and min strand length on synthetic data")
    tune.add_argument("--data", required=True, help="synthetic validation set (scalpedge synth)")
    tune.add_argument("--out", required=True, help="JSON report")
    tune.add_argument("--model", help="as for eval seg (needs a centre-line output)")
    tune.add_argument("--limit", type=int)
    tune.add_argument("--threads", type=int, default=2)
    tune.set_defaults(func=_run_eval_tune)
    geo = esub.add_parser("geometry", help="hair geometry statistics of mask folders (synthetic vs real)")
    geo.add_argument("folders", nargs="+", help="folders of binary PNG masks")
    geo.add_argument("--out", required=True, help="JSON report")
    geo.add_argument("--limit", type=int, help="first N masks per folder")
    geo.set_defaults(func=_run_eval_geometry)
    seg.set_defaults(func=_run_eval_seg)
    cnt.set_defaults(func=_run_eval_counts)
    classifier_cli.add_eval(esub)
    refiner_cli.add_eval(esub)
    diffusion_cli.add_eval(esub)


def _run_eval_seg(args: argparse.Namespace) -> int:
    from server_train.evaluation.loading import load_hair_photo_segmenter, load_segmenter
    from server_train.evaluation.seg_eval import evaluate_photos, evaluate_seg

    photo = load_hair_photo_segmenter(args.model, args.threads)
    if photo is not None:
        from server_train.hair_photo.split import split_pairs

        pairs = split_pairs(args.data, args.split)[: args.limit]
        report = {"model": args.model, "data": args.data, "split": args.split} | evaluate_photos(photo, pairs)
        write_report(args.out, report)
        print_summary(report)
        return 0
    if args.split != "all":
        raise ValueError("eval seg --split is for hair_photo models only")

    segmenter = refiner_cli.wrap_segmenter(load_segmenter(args.model, args.threads), args)
    report = evaluate_seg(segmenter, args.data, limit=args.limit)
    write_report(args.out, report)
    print_summary(report)
    return 0


def _run_eval_counts(args: argparse.Namespace) -> int:
    from server_train.evaluation.counts_eval import TRICHOSCOPY_UM_PER_PX, evaluate_counts, plot_counts
    from server_train.evaluation.loading import load_segmenter

    um = args.um_per_px if args.um_per_px is not None else TRICHOSCOPY_UM_PER_PX
    segmenter = refiner_cli.wrap_segmenter(load_segmenter(args.model, args.threads), args)
    roots = [r for r in args.data.split(",") if r]
    report = evaluate_counts(
        segmenter,
        roots,
        um_per_px=um,
        limit=args.limit,
        split=args.split,
        val_percent=args.val_percent,
        hair_classes=_hair_classes(args.hair_classes, args.threads),
    )
    write_report(args.out, report)
    if args.plot:
        print(f"wrote {plot_counts(report, args.plot)}")
    print_summary(report)
    return 0


def _hair_classes(spec: str, threads: int) -> HairClassifier | None:
    """The per-hair class model of ``--hair-classes``: "shipped", an .onnx file or "none"."""
    from device.models.hair_classes import HairClassifier

    if spec == "none":
        return None
    if spec == "shipped":
        return HairClassifier.shipped(threads)
    if not Path(spec).is_file():
        raise FileNotFoundError(f"--hair-classes {spec!r}: no such file (give shipped, none or an .onnx file)")
    return HairClassifier.from_onnx(spec, threads=threads)


def _run_eval_sheet(args: argparse.Namespace) -> int:
    from server_train.evaluation.loading import load_segmenter
    from server_train.evaluation.sheet import mask_sheet

    print(f"wrote {mask_sheet(load_segmenter(args.model, args.threads), args.data, args.out, n=args.n)}")
    return 0


def _run_eval_tune(args: argparse.Namespace) -> int:
    from server_train.evaluation.loading import load_segmenter
    from server_train.evaluation.tune_counts import tune_line_counts

    report = tune_line_counts(load_segmenter(args.model, args.threads), args.data, limit=args.limit)
    write_report(args.out, report)
    print("best:", json.dumps(report["best"]))
    return 0


def _run_eval_geometry(args: argparse.Namespace) -> int:
    from server_train.evaluation.geometry import folder_geometry

    write_report(args.out, {"folders": [folder_geometry(f, args.limit) for f in args.folders]}, rows="folders")
    return 0


def register_bench(sub: argparse._SubParsersAction) -> None:
    bsub = command_group(sub, "bench", "benchmarks (JSON reports)")
    sp = bsub.add_parser("speed", help="ONNX Runtime CPU latency of the segmenters at 640x480")
    sp.add_argument("--out", required=True)
    sp.add_argument("--models", default="student,teacher,u2netp,u2net", help="comma-separated registry names")
    sp.add_argument("--threads", default="2", help="comma-separated thread counts, e.g. 1,2")
    sp.add_argument("--runs", type=int, default=20)
    sp.add_argument(
        "--precision",
        default="fp32",
        help="fp32: the registry models; int8 or fp32,int8: every variant of the bundle's models (FP32 and INT8)",
    )
    sp.add_argument("--bundle", help="bundle for --precision int8 (default: the shipped bundle)")
    sp.set_defaults(func=_run_bench_speed)
    sy = bsub.add_parser("synth", help="frames per second of the synthetic generator")
    sy.add_argument("--out", required=True)
    sy.add_argument("--n", type=int, default=100)
    sy.add_argument("--repeats", type=int, default=3)
    sy.set_defaults(func=_run_bench_synth)
    dg = bsub.add_parser(
        "diagnosis",
        help="one diagnosis per stage (quality ... refiner, fusion ... record), the live path and the "
        "paper-style and naive SAM pipelines, timed in one process on the same frames",
    )
    dg.add_argument("--out", required=True)
    dg.add_argument("--bundle", help="bundle folder (default: the shipped bundle)")
    dg.add_argument("--trust", nargs="*", default=[], help="extra trusted public keys for --bundle (PEM files/folders)")
    dg.add_argument("--frames", help="folder of frames (default: the sample frames shipped in device/assets/samples)")
    dg.add_argument("--n-frames", type=int, default=8, help="time on at most this many frames of --frames")
    dg.add_argument("--threads", type=int, default=2)
    dg.add_argument("--runs", type=int, default=20, help="timed passes of the device diagnosis and the live path")
    dg.add_argument("--slow-runs", type=int, default=3, help="timed passes of each reference pipeline")
    dg.add_argument("--graphs", help="folder that keeps the reference pipelines' ONNX files between runs")
    dg.add_argument("--no-fused", action="store_true", help="leave the refiner and fusion out of the diagnosis")
    dg.add_argument(
        "--precision",
        choices=["fastest", "auto", "fp32", "int8"],
        default="fastest",
        help="model variants as the device picks them ([models] precision; default: fastest on this CPU)",
    )
    dg.add_argument(
        "--serial",
        action="store_true",
        help="run every stage in the frame loop's thread (default: the device's worker thread beside it)",
    )
    dg.add_argument("--no-paper", action="store_true", help="skip the paper-style pipeline (U2-Net + SAM ViT-B)")
    dg.add_argument("--no-naive", action="store_true", help="skip the naive edge pipeline (U2-NetP + TinyViT)")
    dg.set_defaults(func=_run_bench_diagnosis)
    classifier_cli.add_bench(bsub)
    refiner_cli.add_bench(bsub)


def _run_bench_diagnosis(args: argparse.Namespace) -> int:
    need_torch()
    from device.assets import default_bundle_path
    from server_train.evaluation.diagnosis_speed import bench_diagnosis
    from server_train.refiner_cli import bench_frames

    frames = bench_frames(args.frames, args.n_frames)
    report = bench_diagnosis(
        args.bundle or default_bundle_path(),
        frames,
        threads=args.threads,
        runs=args.runs,
        fused=not args.no_fused,
        paper=not args.no_paper,
        naive=not args.no_naive,
        slow_runs=args.slow_runs,
        graphs=args.graphs,
        trusted_keys=tuple(args.trust),
        parallel=False if args.serial else None,
        precision=args.precision,
    )
    write_report(args.out, report)
    stages = ", ".join(f"{k} {v}" for k, v in report["stages_ms"].items())
    print(f"diagnosis {report['total_ms']} ms ({stages}); live {report['live_ms']} ms")
    for name in ("paper_style", "naive_edge"):
        if f"{name}_ms" in report:
            print(f"{name} {report[f'{name}_ms']} ms = {report[f'{name}_over_total']}x the diagnosis")
    return 0


def _run_bench_speed(args: argparse.Namespace) -> int:
    precisions = set(args.precision.split(","))
    if not precisions <= {"fp32", "int8"}:
        raise ValueError(f"--precision takes fp32, int8 or fp32,int8, not {args.precision!r}")
    if "int8" in precisions:
        from device.assets import default_bundle_path
        from server_train.evaluation.speed import bench_bundle_variants

        threads = tuple(int(t) for t in args.threads.split(","))
        write_report(args.out, bench_bundle_variants(args.bundle or default_bundle_path(), threads, args.runs))
        return 0
    need_torch()
    from device.assets import default_model_path
    from server_train.evaluation.speed import bench_speed

    try:
        student = default_model_path()
    except FileNotFoundError:
        student = None
    report = bench_speed(
        tuple(args.models.split(",")), tuple(int(t) for t in args.threads.split(",")), args.runs, student_onnx=student
    )
    write_report(args.out, report)
    return 0


def _run_bench_synth(args: argparse.Namespace) -> int:
    from server_train.evaluation.synth_speed import bench_synth

    report = bench_synth(args.n, args.repeats)
    write_report(args.out, report)
    for row in report["results"]:
        print(f"{row['mode']:8s} hard={row['hard']!s:5s} {row['median_fps']:6.1f} frames/s (min {row['min_fps']})")
    return 0


def register_export(sub: argparse._SubParsersAction) -> None:
    esub = command_group(sub, "export", "export checkpoints to ONNX (server; needs the train extra)")
    seg = esub.add_parser("seg", help="export a segmenter checkpoint to ONNX (static 1x3x480x640)")
    seg.add_argument("--checkpoint", required=True)
    seg.add_argument("--out", required=True, help=".onnx file")
    seg.set_defaults(func=_run_export_seg)
    rel = esub.add_parser("release", help="export a checkpoint as the shipped default model (ONNX + manifest.json)")
    rel.add_argument("--checkpoint", required=True)
    rel.add_argument("--out", default="device/assets/default", help="folder (default: device/assets/default)")
    rel.add_argument("--metrics", nargs="*", default=[], help="JSON reports (eval seg/counts, bench speed) to record")
    rel.add_argument(
        "--count-scale",
        type=float,
        default=1.0,
        help="multiply a hair-density model's densities by this (a count calibration chosen on training subjects)",
    )
    rel.set_defaults(func=_run_export_release)
    classifier_cli.add_export(esub)
    hair_class_cli.add_export(esub)
    hair_photo_cli.add_export(esub)
    refiner_cli.add_export(esub)
    pixel_refiner_cli.add_export(esub)


def _run_export_seg(args: argparse.Namespace) -> int:
    need_torch()
    from export.onnx_export import export_segmenter
    from server_train.training.train import load_checkpoint

    model, ckpt = load_checkpoint(args.checkpoint)
    meta = {"model_config": ckpt["model_config"], "train_config": ckpt["train_config"], "step": ckpt["step"]}
    head = ckpt["train_config"].get("instance_target", "centres")
    path = export_segmenter(model, args.out, metadata=meta, instance_head=head)
    print(f"wrote {path}")
    return 0


def _run_export_release(args: argparse.Namespace) -> int:
    need_torch()
    from export.release import command_line
    from server_train.release import release_segmenter_checkpoint

    metrics = {}
    for path in args.metrics:
        report = json.loads(Path(path).read_text())
        metrics[Path(path).stem] = {k: v for k, v in report.items() if k not in ("per_frame",)}
    card = release_segmenter_checkpoint(
        args.checkpoint, args.out, metrics, command=command_line(), count_scale=args.count_scale
    )
    print(f"wrote {card}")
    return 0
