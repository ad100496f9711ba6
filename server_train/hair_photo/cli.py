"""``scalpedge train hair-photo`` and ``scalpedge export hair-photo``: the hair-photo segmenter
(Figaro-1k) and its bundle model ``hair_photo``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from server_train.cli_support import config_from_args, need_torch

__all__ = ["add_train", "add_export"]


def add_train(tsub: argparse._SubParsersAction) -> None:
    from server_train.hair_photo.names import PHOTO_MODELS

    p = tsub.add_parser("hair-photo", help="hair segmenter for ordinary photos (Figaro-1k images/ + masks/)")
    p.add_argument("--data", required=True, help="folder with images/ and masks/ (255 = hair)")
    p.add_argument("--out", required=True, help="run folder (resumes from last.pt)")
    p.add_argument("--model", choices=PHOTO_MODELS, help="network (default lite0_unet)")
    p.add_argument("--diffusion", help="diffusion final.pt (for --model diffusion_features)")
    p.add_argument("--init", help="final.pt of a run of the same network to start from (e.g. at a larger --side)")
    for name, typ in (
        ("t", int),
        ("feature-side", int),
        ("side", int),
        ("crop", int),
        ("steps", int),
        ("batch", int),
        ("lr", float),
        ("warmup", int),
        ("val-percent", int),
        ("eval-every", int),
        ("seed", int),
        ("threads", int),
        ("limit", int),
    ):
        p.add_argument(f"--{name}", type=typ)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_run_train)


def add_export(esub: argparse._SubParsersAction) -> None:
    p = esub.add_parser("hair-photo", help="hair-photo checkpoint -> ONNX (+ INT8 when it pays) + model card")
    p.add_argument("--checkpoint", required=True, help="final.pt of `scalpedge train hair-photo`")
    p.add_argument("--out", required=True, help="folder for hair_photo.onnx and hair_photo.card.json")
    p.add_argument(
        "--int8",
        metavar="DATA",
        help="also quantize: DATA (images/ + masks/, the training run's folder) gives calibration photos from its "
        "train split and gates on its val split; kept only if it passes the gate",
    )
    p.add_argument("--calib-n", type=int, default=64, help="calibration photos (default 64)")
    p.add_argument(
        "--int8-only", action="store_true", help="list only the INT8 file in the card (so the bundle carries it alone)"
    )
    p.add_argument(
        "--mirror", action="store_true", help="average the logits of each photo and its mirror image (2x the cost)"
    )
    p.add_argument("--metrics", nargs="*", default=[], help="JSON reports to record in the card")
    p.set_defaults(func=_run_export)


def _run_train(args: argparse.Namespace) -> int:
    need_torch()
    from server_train.hair_photo.train import HairPhotoConfig, train_hair_photo

    final = train_hair_photo(config_from_args(HairPhotoConfig, args), progress=not args.quiet)
    print(f"wrote {final}")
    print((Path(final).parent / "result.json").read_text().strip())
    return 0


def _run_export(args: argparse.Namespace) -> int:
    need_torch()
    from export.hair_photo_export import export_hair_photo
    from export.release import command_line
    from server_train.hair_photo.split import split_pairs
    from server_train.hair_photo.train import load_hair_photo

    model, ckpt = load_hair_photo(args.checkpoint)
    calib, gate = [], []
    if args.int8_only and not args.int8:
        raise ValueError("--int8-only needs --int8 DATA")
    if args.int8:
        val_percent = int(ckpt["train_config"]["val_percent"])
        train = split_pairs(args.int8, "train", val_percent)
        calib = [i for i, _ in train[:: max(1, len(train) // args.calib_n)]][: args.calib_n]
        gate = split_pairs(args.int8, "val", val_percent)
    metrics = {}
    for path in args.metrics:
        report = json.loads(Path(path).read_text())
        metrics[Path(path).stem] = {k: v for k, v in report.items() if k != "per_photo"}
    card = export_hair_photo(
        model,
        ckpt,
        args.out,
        [command_line()],
        metrics,
        calib=calib,
        gate_pairs=gate,
        mirror=args.mirror,
        int8_only=args.int8_only,
    )
    print(f"wrote {card}")
    return 0
