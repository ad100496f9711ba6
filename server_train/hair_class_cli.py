"""``scalpedge train hair-classes`` and ``scalpedge export hair-classes``: the per-hair class
model (miniaturised or terminal) learnt from real trichoscopy boxes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from server_train.cli_support import config_from_args, need_torch

__all__ = ["add_train", "add_export"]


def add_train(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser("hair-classes", help="per-hair class model (miniaturised or terminal) from trichoscopy boxes")
    p.add_argument("--data", required=True, help="comma-separated folders with images/ and annotations/ (VOC)")
    p.add_argument("--out", required=True, help="run folder (patch caches, checkpoints; resumes from last.pt)")
    for name, typ in (
        ("val-percent", int),
        ("tune-percent", int),
        ("steps", int),
        ("batch", int),
        ("lr", float),
        ("margin", int),
        ("seed", int),
        ("threads", int),
        ("limit", int),
    ):
        p.add_argument(f"--{name}", type=typ)
    p.add_argument(
        "--segmenter",
        help="segmenter graph (.onnx or .pt): cut patches at the hairs it locates (the device's path), "
        "labelled by the box each falls in; default: at the box centres",
    )
    p.add_argument(
        "--kind",
        choices=("patch", "pair"),
        help="patch: one network on a 40 px patch (default); pair: a near and a half-resolution wide "
        "view of a 112 px field in one graph (exported mirrored too unless `export hair-classes --no-mirror`)",
    )
    p.add_argument(
        "--classes",
        type=int,
        choices=(1, 3),
        help="1: thin vs the rest (default); 3: located hairs in no box / in another box / in an undersize box",
    )
    p.add_argument(
        "--refit",
        action="store_true",
        default=None,
        help="after choosing the threshold on the tuning subjects, train again on training + tuning "
        "subjects (refit/final.pt)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)


def add_export(esub: argparse._SubParsersAction) -> None:
    p = esub.add_parser("hair-classes", help="per-hair class checkpoint -> ONNX + model card (for `bundle build`)")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="final.pt of `scalpedge train hair-classes`, or a hair_classes.onnx exported from one (its weights, "
        "configs and threshold recovered: re-exporting a release whose checkpoint is gone)",
    )
    p.add_argument("--out", required=True, help="folder for hair_classes.onnx and hair_classes.card.json")
    p.add_argument(
        "--no-mirror",
        action="store_true",
        help="two-field pair: leave out the mirrored passes (half the cost; no loss on held-out subjects)",
    )
    p.add_argument("--metrics", nargs="*", default=[], help="JSON reports to record in the card")
    p.set_defaults(func=_run_export)


def _run_train(args: argparse.Namespace) -> int:
    need_torch()
    from server_train.training.hair_class_train import HairClassConfig, train_hair_classes

    final = train_hair_classes(config_from_args(HairClassConfig, args), progress=not args.quiet)
    print(f"wrote {final}")
    threshold = Path(final).parent / "threshold.json"
    if threshold.exists():
        print(threshold.read_text().strip())
    return 0


def _run_export(args: argparse.Namespace) -> int:
    need_torch()
    from export.hair_class_export import export_hair_classes
    from export.release import command_line
    from server_train.models.hair_patch import HairFieldPair
    from server_train.training.hair_class_train import load_hair_classes

    model, ckpt = load_hair_classes(args.checkpoint)
    if args.no_mirror:
        if not isinstance(model, HairFieldPair):
            raise SystemExit("--no-mirror: the checkpoint holds one patch network, which reads no mirrored view")
        model.mirror = False
        ckpt["model_config"] = {**ckpt["model_config"], "mirror": False}
    metrics = {}
    for path in args.metrics:
        report = json.loads(Path(path).read_text())
        metrics[Path(path).stem] = {k: v for k, v in report.items() if k != "per_frame"}
    print(f"wrote {export_hair_classes(model, ckpt, args.out, [command_line()], metrics)}")
    return 0
