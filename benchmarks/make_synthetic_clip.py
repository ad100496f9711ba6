"""Render the demo clip that ``synthetic://`` plays (device/assets/samples/clip/).

One generator frame (server_train.synth) rendered larger than the camera frame, then 24 windows
of 640x480 cut along a closed circle: consecutive frames, the last one included, move by a
few pixels like a steady hand, so the quality gate's motion check passes the clip on loop.
Writes JPEG quality 90 and checks the folder stays under 1.5 MB.

    .venv/bin/python benchmarks/make_synthetic_clip.py [--seed 21] [--out device/assets/samples/clip]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2

from server_train.synth.config import SynthConfig
from server_train.synth.render import render

FRAME_W, FRAME_H = 640, 480
SCENE_W, SCENE_H = 736, 576  # frame + 2 x 48 px margin for the circular path
RADIUS_PX = 40.0  # 24 steps round this circle: ~10.5 px between frames
MAX_BYTES = 1_500_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--out", type=Path, default=Path("device/assets/samples/clip"))
    args = parser.parse_args()
    config = SynthConfig(mode="scalp", width=SCENE_W, height=SCENE_H, p_letterbox=0.0, p_annotations=0.0)
    scene = render(args.seed, config).image
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.jpg"):
        old.unlink()
    cx, cy = (SCENE_W - FRAME_W) / 2, (SCENE_H - FRAME_H) / 2
    for i in range(args.n):
        a = 2 * math.pi * i / args.n
        x, y = round(cx + RADIUS_PX * math.cos(a)), round(cy + RADIUS_PX * math.sin(a))
        crop = scene[y : y + FRAME_H, x : x + FRAME_W]
        cv2.imwrite(str(args.out / f"clip_{i:03d}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, args.quality])
    total = sum(p.stat().st_size for p in args.out.glob("*.jpg"))
    print(f"{args.n} frames, {total / 1e6:.2f} MB in {args.out}")
    return 0 if total <= MAX_BYTES else 1


if __name__ == "__main__":
    raise SystemExit(main())
