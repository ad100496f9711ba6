"""What the fused mask changes on real frames, measured where labels say what is there.

Real microscope frames have no hair masks, so the figures are where labels exist:

- ``scalp-microscope/<split>`` (YOLO-seg condition polygons): the share of the dandruff polygons'
  area (classes d, ds) each mask calls hair (false hair on flakes and scale, lower is better),
  and the hair pixels outside every condition polygon (hair kept: fused / coarse).
- ``follicle-counts/<split>`` (one box per hair shaft): the share of boxes whose hair shaft the
  mask covers (at least 5 % and 25 % of the box area, ``BOX_COVERS``; hair found, higher is
  better) and
  the share of the mask's pixels outside every box (drawn where no hair is boxed).

For every stage asked (default: coarse, paper, fused), on the shipped bundle or ``--bundle``.
``--figure`` writes a grid of real dandruff frames: frame, then each stage's mask in red with
the dandruff polygons outlined in yellow. Frames of scalp-microscope are 640x640 stretched from
the camera's 4:3: they are resized back to 640x480, and the polygons with them.

    python benchmarks/fused_real_frames.py --microscope ../shared/data/scalp-microscope/valid \\
        --counts ../shared/data/follicle-counts/val --out benchmarks/reports/fused_real_frames.json \\
        --figure benchmarks/reports/fused_real_frames.png
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.app.analysis import analyse_frame
from device.app.pipeline import ScanPipeline
from device.assets import default_bundle_path
from device.capture.imageio import read_frame
from device.contracts.constants import DEFAULT_UM_PER_PX, FRAME_HEIGHT, FRAME_WIDTH
from device.models.bundle import Bundle
from device.refine.fusion import RefinedSegmenter
from server_train.evaluation.counts_eval import TEXT_BAR_PX, TRICHOSCOPY_UM_PER_PX, frame_boxes, load_labelled
from server_train.training.condition_maps import condition_maps

BOX_COVERS = (0.05, 0.25)  # a hair box counts as found when the mask covers at least this share of it
DANDRUFF = 0  # CONDITION_NAMES index of dandruff (d | ds polygons)


def stage_segmenters(bundle: Bundle, stages: list[str], threads: int) -> dict[str, Any]:
    """stage -> a Segmenter making that stage's mask with the bundle's models."""
    out: dict[str, Any] = {}
    for stage in stages:
        pipe = ScanPipeline(bundle, threads=threads, mask_stage=stage, parallel=False)
        out[stage] = (
            pipe.segmenter
            if stage == "coarse"
            else RefinedSegmenter(pipe.segmenter, pipe.refiner, stage=stage, pixel=pipe.pixel)
        )
    return out


def microscope(root: Path, segs: dict[str, Any], limit: int | None) -> tuple[dict[str, Any], list[Any]]:
    images = sorted((root / "images").glob("*.jpg"))[:limit]
    sums = {s: {"in_dandruff": 0.0, "outside": 0.0} for s in segs}
    area = 0.0
    examples = []
    for path in images:
        frame = cv2.resize(read_frame(path), (FRAME_WIDTH, FRAME_HEIGHT), interpolation=cv2.INTER_AREA)
        _, maps = condition_maps(root / "labels" / f"{path.stem}.txt", FRAME_HEIGHT, FRAME_WIDTH, supersample=1)
        dandruff, anything = maps[DANDRUFF] > 0, maps.max(axis=0) > 0
        area += float(dandruff.sum())
        masks = {}
        for stage, seg in segs.items():
            mask = analyse_frame(seg, frame, um_per_px=DEFAULT_UM_PER_PX).seg.mask()
            sums[stage]["in_dandruff"] += float((mask & dandruff).sum())
            sums[stage]["outside"] += float((mask & ~anything).sum())
            masks[stage] = mask
        if dandruff.mean() > 0.05 and len(examples) < 4:
            examples.append((frame, dandruff, masks))
    report = {
        "frames": len(images),
        "dandruff_area_px": area,
        "hair_share_of_dandruff_area": {s: round(v["in_dandruff"] / max(area, 1.0), 4) for s, v in sums.items()},
        "hair_px_outside_conditions_per_frame": {s: round(v["outside"] / max(len(images), 1)) for s, v in sums.items()},
    }
    base = sums.get("coarse", {}).get("outside")
    if base:
        report["hair_kept_outside_conditions_vs_coarse"] = {s: round(v["outside"] / base, 4) for s, v in sums.items()}
    return report, examples


def counts(root: Path, segs: dict[str, Any], limit: int | None) -> dict[str, Any]:
    items = load_labelled([root])[:limit]
    found = {s: dict.fromkeys(BOX_COVERS, 0) for s in segs}
    outside = {s: 0.0 for s in segs}
    total_px = {s: 0.0 for s in segs}
    n_boxes = 0
    for item in items:
        raw = read_frame(item.image)[TEXT_BAR_PX:]
        boxes, _ = frame_boxes(item, raw.shape)
        n_boxes += len(boxes)
        for stage, seg in segs.items():
            mask = analyse_frame(seg, raw, um_per_px=TRICHOSCOPY_UM_PER_PX).seg.mask()
            inside = np.zeros_like(mask)
            for x0, y0, x1, y1 in np.round(boxes).astype(int):
                x0, y0 = max(x0, 0), max(y0, 0)
                box = mask[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]
                inside[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)] = True
                for cover in BOX_COVERS:
                    found[stage][cover] += int(box.size > 0 and box.mean() >= cover)
            outside[stage] += float((mask & ~inside).sum())
            total_px[stage] += float(mask.sum())
    return {
        "frames": len(items),
        "boxes": n_boxes,
        "boxes_found": {
            f"cover_{c}": {s: round(v[c] / max(n_boxes, 1), 4) for s, v in found.items()} for c in BOX_COVERS
        },
        "mask_share_outside_boxes": {s: round(outside[s] / max(total_px[s], 1.0), 4) for s in segs},
    }


def figure(examples: list[Any], stages: list[str], path: Path) -> None:
    tiles = []
    for frame, dandruff, masks in examples:
        row = [frame]
        outline = cv2.dilate(dandruff.astype(np.uint8), np.ones((3, 3), np.uint8)) - dandruff.astype(np.uint8)
        for stage in stages:
            tile = frame.copy()
            tile[masks[stage]] = (0.45 * tile[masks[stage]] + 0.55 * np.array([0, 0, 255])).astype(np.uint8)
            tile[outline > 0] = (0, 255, 255)
            cv2.putText(tile, stage, (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2)
            row.append(tile)
        tiles.append(np.concatenate([cv2.resize(t, (320, 240), interpolation=cv2.INTER_AREA) for t in row], axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(tiles, axis=0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--microscope", help="scalp-microscope split folder (images/, labels/)")
    ap.add_argument("--counts", help="follicle-counts split folder (images/, annotations/)")
    ap.add_argument("--bundle", help="bundle folder (default: the shipped one)")
    ap.add_argument("--stages", default="coarse,paper,fused")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--figure", help="PNG grid of real dandruff frames (scalp-microscope: CC BY 4.0)")
    args = ap.parse_args(argv)
    bundle = Bundle.open(args.bundle or default_bundle_path())
    stages = args.stages.split(",")
    segs = stage_segmenters(bundle, stages, args.threads)
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "date": date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "bundle_version": bundle.version,
        "stages": stages,
    }
    if args.microscope:
        report["scalp_microscope"], examples = microscope(Path(args.microscope), segs, args.limit)
        if args.figure and examples:
            figure(examples, stages, Path(args.figure))
    if args.counts:
        report["follicle_counts"] = counts(Path(args.counts), segs, args.limit)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
