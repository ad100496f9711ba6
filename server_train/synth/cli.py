"""``scalpedge synth``: write a synthetic hair-segmentation data set.

    scalpedge synth --n 2000 --seed 0 --out data/synth [--mode scalp|trimmed|mixed]
                    [--hard] [--backgrounds DIR] [--workers 2]
                    [--conditions aihub|uniform]

``--conditions`` writes a labelled classification set instead (``images/*.jpg`` and
``labels.jsonl`` with dandruff, sebum, erythema and hair-loss levels 0..3, drawn with the AI-Hub
level shares or uniformly; see ``condition_dataset.py``).

``mixed`` puts about 70% scalp and 30% trimmed frames, chosen by index (deterministic).
Options default to None and are dropped, so the defaults stay in ``SynthConfig``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import cv2

from .config import SynthConfig
from .dataset import write_dataset

__all__ = ["register", "run", "MIXED_TRIMMED_SHARE"]

MIXED_TRIMMED_SHARE = 0.3


def register(subparsers: Any) -> None:
    """Add the ``synth`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "synth",
        help="render synthetic hair frames with exact masks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, required=True, help="number of frames")
    p.add_argument("--seed", type=int, required=True, help="base seed of the data set")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--mode", choices=("scalp", "trimmed", "mixed"), default=None)
    p.add_argument(
        "--hard",
        action="store_true",
        default=None,
        help="hard held-out mix (thin/pale/translucent hair, heavy dandruff)",
    )
    p.add_argument("--backgrounds", default=None, help="folder of real frames used (hair removed) as backgrounds")
    p.add_argument("--workers", type=int, default=None, help="processes (default 1)")
    p.add_argument(
        "--conditions",
        choices=("aihub", "uniform"),
        default=None,
        help="write a labelled condition classification set, levels sampled by AI-Hub shares or uniformly",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``synth``; returns the process exit code."""
    if args.n < 0:
        print("synth: --n must be >= 0")
        return 2
    mode = args.mode or "scalp"
    fields = {"mode": "scalp" if mode == "mixed" else mode, "hard": args.hard, "backgrounds": args.backgrounds}
    config = SynthConfig(**{k: v for k, v in fields.items() if v is not None})
    if config.backgrounds and not Path(config.backgrounds).is_dir():
        print(f"synth: backgrounds folder not found: {config.backgrounds}")
        return 2
    share = MIXED_TRIMMED_SHARE if mode == "mixed" else None
    cv2.setNumThreads(1)  # measured faster than OpenCV's 2 threads for these small ops
    t0 = time.perf_counter()
    if getattr(args, "conditions", None):
        from .condition_dataset import write_condition_dataset

        write_condition_dataset(args.out, args.n, args.seed, config, args.conditions, workers=args.workers or 1)
        print(f"synth: wrote {args.n} condition frames to {args.out} in {time.perf_counter() - t0:.1f} s")
        return 0
    out = write_dataset(
        args.out,
        args.n,
        args.seed,
        config,
        progress=not args.no_progress,
        workers=args.workers or 1,
        trimmed_share=share,
    )
    dt = time.perf_counter() - t0
    counts, modes = [], {"scalp": 0, "trimmed": 0}
    with open(out / "truth.jsonl") as fh:
        for line in fh:
            rec = json.loads(line)
            counts.append(rec["count"])
            modes[rec["mode"]] += 1
    mean = sum(counts) / len(counts) if counts else 0.0
    print(
        f"synth: wrote {len(counts)} frames to {out} in {dt:.1f} s "
        f"({len(counts) / max(dt, 1e-9):.1f} frames/s); modes {modes}; "
        f"strands/frame mean {mean:.1f}; hard={config.hard}"
    )
    return 0
