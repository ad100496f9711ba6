"""Diffusion commands: ``train diffusion`` and ``eval translation`` (added to the ``train`` and
``eval`` groups by ``server_train.cli``), and the top-level ``translate`` and ``augment``
(entry points ``scalpedge.commands``). Torch is imported only when a command runs.

    scalpedge train diffusion --data D1,D2 --out RUN [--config tiny|cpu|gpu] [--steps N]
    scalpedge translate IMAGE --target sebum=severe [--target ...] --out F [--model RUN/final.pt] [--unmasked]
    scalpedge augment --data DIR --balance inverse --out DIR [--model RUN/final.pt] [--n N] [--seed S]
    scalpedge eval translation --out R.json [--model ...] [--data DIR] [--n N] [--figure F.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from device.contracts.constants import CONDITION_NAMES, LEVEL_NAMES
from server_train.cli_support import need_torch, print_summary, write_report

__all__ = [
    "add_train",
    "add_eval",
    "register_translate",
    "register_augment",
    "train_options",
    "config_of",
    "parse_targets",
    "DEFAULT_MODEL",
]

DEFAULT_MODEL = "runs/diffusion/final.pt"


def parse_targets(specs: list[str] | None) -> dict[str, int]:
    """["sebum=severe", "dandruff=2"] -> {"sebum": 3, "dandruff": 2}; ValueError naming the
    known conditions or levels on a bad spec."""
    if not specs:
        raise ValueError("give at least one --target CONDITION=LEVEL")
    out: dict[str, int] = {}
    for spec in specs:
        cond, sep, level = spec.partition("=")
        cond, level = cond.strip().lower(), level.strip().lower()
        if not sep or cond not in CONDITION_NAMES:
            raise ValueError(f"bad target {spec!r}: CONDITION=LEVEL with CONDITION one of {', '.join(CONDITION_NAMES)}")
        if level.isdigit() and int(level) < len(LEVEL_NAMES):
            out[cond] = int(level)
        elif level in LEVEL_NAMES:
            out[cond] = LEVEL_NAMES.index(level)
        else:
            raise ValueError(f"bad level in {spec!r}: one of {', '.join(LEVEL_NAMES)} (or 0..{len(LEVEL_NAMES) - 1})")
    return out


def train_options(p: argparse.ArgumentParser) -> None:
    """Options of ``train diffusion`` (also ``python -m server_train.diffusion.train``)."""
    p.add_argument(
        "--data", required=True, help="comma-separated folders: synth --conditions sets, images/+labels/ ..."
    )
    p.add_argument("--out", required=True, help="run folder (resumes from last.pt)")
    p.add_argument("--config", dest="preset", choices=["tiny", "cpu", "gpu"], help="preset (default cpu)")
    for name, typ in (
        ("steps", int),
        ("batch", int),
        ("lr", float),
        ("size", int),
        ("load", int),
        ("base", int),
        ("ema", float),
        ("cond-drop", float),
        ("warmup", int),
        ("seed", int),
        ("save-every", int),
        ("limit", int),
        ("threads", int),
    ):
        p.add_argument(f"--{name}", type=typ)
    p.add_argument("--stop-after", type=int, help="pause at this step (last.pt)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def config_of(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """DiffusionConfig from parsed ``train_options``."""
    from server_train.cli_support import config_from_args
    from server_train.diffusion.train import DiffusionConfig

    return config_from_args(DiffusionConfig, args)


def add_train(tsub: argparse._SubParsersAction) -> None:
    p = tsub.add_parser("diffusion", help="train the conditional scalp diffusion model (DDPM, DDIM sampling)")
    train_options(p)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    need_torch()
    from server_train.diffusion.train import train

    print(f"wrote {train(config_of(args), progress=not args.quiet, stop_after=args.stop_after)}")
    return 0


def _translation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"diffusion checkpoint (default {DEFAULT_MODEL})")
    p.add_argument("--segmenter", help="hair segmenter: .onnx, .pt or a baseline (default: the shipped bundle)")
    p.add_argument(
        "--features", help="condition-grader checkpoint .pt for the guidance features (default: ImageNet Lite0)"
    )
    p.add_argument("--refs", help="labelled set (synth --conditions layout) for the style prototypes")
    p.add_argument("--strength", type=float, help="noise level t0/T the source is taken to (0..1)")
    p.add_argument("--ddim-steps", type=int, help="reverse steps")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    p.add_argument("--grad-scale", type=float, help="scale of the feature-loss guidance gradient (0: off)")
    p.add_argument(
        "--cover", type=float, help="share of a model pixel hair must cover for it to be kept from the source"
    )
    p.add_argument("--clear-rounds", type=int, help="rounds of inpainting hair the output gains (0: off)")
    p.add_argument(
        "--resolution",
        type=int,
        help="side (px) the frame is drawn at (default: the model's crop size; its load: the scale it learned)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)


def register_translate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="DiffuseIT-M: translate a frame toward target condition levels (server)")
    p.add_argument("image", help="source frame")
    p.add_argument("--target", action="append", help="CONDITION=LEVEL, e.g. sebum=severe (repeatable)")
    p.add_argument("--out", required=True, help="output image")
    p.add_argument("--unmasked", action="store_true", help="no hair copy (the ablation)")
    _translation_options(p)
    p.set_defaults(func=_run_translate)


def _translator(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from server_train.diffusion.translate import TranslateConfig, Translator

    over = {"strength": args.strength, "ddim_steps": args.ddim_steps, "guidance": args.guidance}
    over.update(grad_scale=args.grad_scale, cover=args.cover, clear_rounds=args.clear_rounds)
    over.update(resolution=args.resolution)
    cfg = TranslateConfig(**{k: v for k, v in over.items() if v is not None})
    return Translator.load(args.model, cfg, segmenter=args.segmenter, features=args.features, refs=args.refs)


def _run_translate(args: argparse.Namespace) -> int:
    targets = parse_targets(args.target)
    src = Path(args.image)
    if not src.is_file():
        raise FileNotFoundError(f"no image {src}")
    need_torch()
    import cv2
    import torch

    from device.capture.imageio import read_frame

    torch.set_num_threads(args.threads)
    tr = _translator(args)
    result = tr.translate(read_frame(src), targets, seed=args.seed, masked=not args.unmasked)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), result.image):
        raise OSError(f"cannot write {args.out}")
    print(f"wrote {args.out}")
    return 0


def register_augment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("augment", help="balance a labelled condition set with translated frames (+ provenance)")
    p.add_argument("--data", required=True, help="labelled set: labels.jsonl + images/ (synth --conditions layout)")
    p.add_argument("--out", required=True, help="output set (same layout) with provenance.jsonl")
    p.add_argument(
        "--balance",
        choices=["inverse", "severe"],
        default="inverse",
        help="inverse: every condition's target level by inverse frequency; severe: one condition per frame "
        "translated to severe, the others kept",
    )
    p.add_argument("--n", type=int, help="frames to generate (default: as many as the source set has)")
    p.add_argument("--no-copy", action="store_true", help="write only the generated frames")
    p.add_argument("--unmasked", action="store_true", help="translate without the hair copy (the ablation)")
    p.add_argument(
        "--perturb",
        choices=["noise", "augmix"],
        help="instead of translating: the same number of frames drawn by rarity with Gaussian noise or AugMix, "
        "labels kept (the Table 3 baselines)",
    )
    p.add_argument(
        "--accept",
        metavar="GRADER",
        help="condition grader ONNX: keep the first of --tries translations it grades at the target "
        "(else the most probable); provenance records the seed kept",
    )
    p.add_argument("--tries", type=int, default=4, help="translations tried per frame with --accept (default 4)")
    p.add_argument(
        "--redraw",
        action="store_true",
        help="with --accept: drop a draw none of whose tries the grader accepts, draw another (<= 20 per frame)",
    )
    _translation_options(p)
    p.set_defaults(func=_run_augment)


def _run_augment(args: argparse.Namespace) -> int:
    if not (Path(args.data) / "labels.jsonl").is_file():
        raise FileNotFoundError(f"{args.data} has no labels.jsonl")
    need_torch()
    import torch

    from server_train.diffusion.augment import Acceptance, augment, perturb

    accept = None
    if args.accept:
        from device.models.classifiers import SeverityClassifier

        if not Path(args.accept).is_file():
            raise FileNotFoundError(f"no grader {args.accept}")
        grader = SeverityClassifier.from_onnx(args.accept, threads=args.threads)
        accept = Acceptance(grader, args.accept, args.tries, redraw=args.redraw)
    elif args.redraw:
        raise ValueError("--redraw needs --accept GRADER")
    torch.set_num_threads(args.threads)
    if args.perturb:
        if args.unmasked or args.accept:
            raise ValueError("--perturb excludes --unmasked and --accept (a perturbation translates nothing)")
        out = perturb(args.data, args.out, args.perturb, n=args.n, seed=args.seed, copy=not args.no_copy)
        print(f"wrote {out}")
        return 0
    out = augment(
        _translator(args),
        args.data,
        args.out,
        n=args.n,
        seed=args.seed,
        copy=not args.no_copy,
        masked=not args.unmasked,
        balance=args.balance,
        accept=accept,
    )
    print(f"wrote {out}")
    return 0


def add_eval(esub: argparse._SubParsersAction) -> None:
    p = esub.add_parser("translation", help="translation quality: hair Dice and PSNR, target hit rate, KID, grid")
    p.add_argument("--out", required=True, help="JSON report")
    p.add_argument("--data", default="../shared/data/scalp-microscope/valid", help="folder of source frames")
    p.add_argument("--n", type=int, default=16, help="source frames")
    p.add_argument("--targets", default="dandruff,sebum,erythema", help="conditions translated to severe, in turn")
    p.add_argument("--grader", help="severity classifier ONNX (default: the shipped bundle's)")
    p.add_argument("--figure", help="PNG grid: source / masked / unmasked per target")
    _translation_options(p)
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    need_torch()
    import torch

    from server_train.diffusion.quality import evaluate_translation

    torch.set_num_threads(args.threads)
    conds = [c.strip() for c in args.targets.split(",") if c.strip()]
    parse_targets([f"{c}=severe" for c in conds])
    report = evaluate_translation(
        _translator(args),
        args.data,
        n=args.n,
        conditions=conds,
        grader=args.grader,
        figure=args.figure,
        seed=args.seed,
    )
    write_report(args.out, report)
    print_summary(report)
    return 0
