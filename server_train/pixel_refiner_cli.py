"""Pixel-refiner subcommands, added to ``scalpedge train/export`` by ``server_train.cli``.

- ``train pixel-refiner``: ``server_train.training.pixel_refiner_train`` (resumable).
- ``export pixel-refiner --checkpoint C --tune DIR``: the refined mask's threshold chosen on the
  validation folder ``DIR`` (a ``scalpedge synth`` set never scored), then the checked ONNX
  graph and its card (``export.pixel_refiner_export``), ready for ``scalpedge bundle build``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from server_train.cli_support import config_from_args

__all__ = ["add_train", "add_export"]

_TRAIN_OPTIONS = (
    ("data", str),
    ("out", str),
    ("student", str),
    ("per_root", int),
    ("widths", str),
    ("prompt_refiner", str),
    ("negatives", str),
    ("negative_share", float),
    ("negative_weight", float),
    ("steps", int),
    ("batch", int),
    ("crop", int),
    ("lr", float),
    ("weight_decay", float),
    ("warmup", int),
    ("seed", int),
    ("threads", int),
    ("ckpt_every", int),
)


def add_train(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser(
        "pixel-refiner", help="train the pixel refiner (the student's P(hair) refined at full resolution)"
    )
    for name, typ in _TRAIN_OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ)
    p.add_argument(
        "--no-prompt-input",
        dest="prompt_input",
        action="store_false",
        default=None,
        help="refine the student's map alone (default: also the prompt refiner's M_AP)",
    )
    p.add_argument("--stop-after", type=int, help="pause at this step (last.pt; the schedule still spans --steps)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from server_train.training.pixel_refiner_train import PixelRefinerTrainConfig, train_pixel_refiner

    cfg = config_from_args(PixelRefinerTrainConfig, args)
    print(f"wrote {train_pixel_refiner(cfg, progress=not args.quiet, stop_after=args.stop_after)}")
    return 0


def add_export(esub: argparse._SubParsersAction) -> None:
    p = esub.add_parser("pixel-refiner", help="choose the pixel refiner's threshold, export it (checked) and its card")
    p.add_argument("--checkpoint", required=True, help="final.pt of `scalpedge train pixel-refiner`")
    p.add_argument("--tune", required=True, help="validation folder (images/, masks/) the threshold is chosen on")
    p.add_argument("--out", default="runs/pixel_refiner_release", help="staging folder (ONNX + card)")
    p.add_argument("--limit", type=int, help="first N frames of --tune only")
    p.add_argument("--student", help="the coarse segmenter (ONNX; default: the shipped student)")
    p.add_argument("--prompt-refiner", help="folder with the prompt refiner's graphs (default: the shipped bundle)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--metrics", nargs="*", default=[], help="JSON reports to record in the card")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    import torch

    from export.pixel_refiner_export import export_pixel_refiner
    from export.release import command_line
    from server_train.training.pixel_refiner_train import (
        choose_threshold,
        default_student,
        load_frames,
        load_pixel_refiner,
        prompt_refiner_of,
        refine_probabilities,
    )

    torch.set_num_threads(args.threads)
    model, ckpt = load_pixel_refiner(args.checkpoint)
    prompt = prompt_refiner_of(args.prompt_refiner or "", args.threads) if model.prompt_input else None
    val = load_frames(args.tune, default_student(args.student or "", args.threads), args.limit, prompt)
    choice = choose_threshold(refine_probabilities(model, val), val) | {"data": args.tune}
    print(json.dumps({k: v for k, v in choice.items() if k in ("threshold", "dice", "frames")}))
    metrics = {Path(p).stem: json.loads(Path(p).read_text()) for p in args.metrics}
    card = export_pixel_refiner(model, ckpt, args.out, choice, [command_line()], metrics)
    print(f"wrote {card}")
    return 0
