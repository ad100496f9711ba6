"""Prompt-refiner evaluation: the ablation of ScalpVision's Table 1 / Figure 3 on our data.

One pass per frame computes every variant from shared work (student once, encoder once,
decoder for the auto and for the random groups):

- ``coarse``: M^, the student's mask;
- ``refined_auto`` / ``refined_random``: M_AP from automatic / random prompts;
- ``fused_auto`` / ``fused_random``: M = M^ AND M_AP.

Synthetic sets (images/ + masks/ + truth.jsonl): pixel F1, Jaccard, Dice and hair-count error.
Real trichoscopy with one box per hair (FDU follicle counts): count MAE. Hair counts are the
device's (centre-line strands of the student inside each variant's mask).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from device.app.analysis import analyse_frame
from device.capture.imageio import read_frame
from device.contracts.constants import MASK_THRESHOLD
from device.contracts.preprocess import prepare_frame
from device.models.segmentation import Segmenter, SegOutput
from device.refine.fusion import fuse_prob
from device.refine.prompts import PromptConfig, PromptGroups, auto_prompts, random_prompts
from device.refine.refiner import PromptRefiner
from scoring.seg_metrics import confusion, summarise

__all__ = ["VARIANTS", "frame_variants", "ablation_synthetic", "ablation_counts", "figure", "tune_refined_threshold"]

VARIANTS = ("coarse", "refined_random", "refined_auto", "fused_random", "fused_auto")


class _Given:
    """A Segmenter that returns an already computed SegOutput (to reuse ``analyse_frame``)."""

    def __init__(self, out: SegOutput) -> None:
        self.name, self.out = "given", out

    def segment(self, frame_bgr: np.ndarray) -> SegOutput:
        return self.out


def frame_variants(
    student: Segmenter, refiner: PromptRefiner, frame: np.ndarray, seed: int
) -> tuple[dict[str, SegOutput], dict[str, PromptGroups]]:
    """Every variant's SegOutput for one 480x640 BGR frame, and the two prompt sets."""
    coarse = student.segment(frame)
    mask = coarse.prob >= MASK_THRESHOLD
    config = PromptConfig(group_size=refiner.k)
    groups = {"auto": auto_prompts(mask, config), "random": random_prompts(mask, seed=seed, config=config)}
    outs = {"coarse": coarse}
    if any(g.count for g in groups.values()):
        refiner.set_image(frame, coarse.prob)
    for kind, g in groups.items():
        prob = refiner.predict(g).prob if g.count else np.zeros_like(coarse.prob)
        outs[f"refined_{kind}"] = dataclasses.replace(coarse, prob=prob)
        outs[f"fused_{kind}"] = dataclasses.replace(coarse, prob=fuse_prob(coarse.prob, prob))
    return outs, groups


def _truth(root: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in (root / "truth.jsonl").read_text().splitlines() if line.strip()]
    return {r["stem"]: r for r in rows}


def ablation_synthetic(
    student: Segmenter, refiner: PromptRefiner, root: str | Path, limit: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """Per variant: pixel scores (scoring.seg_metrics.summarise) and hair-count MAE/bias."""
    root = Path(root)
    truth = _truth(root)
    stems = sorted(truth)[:limit]
    confs: dict[str, list] = {v: [] for v in VARIANTS}
    errs: dict[str, list[float]] = {v: [] for v in VARIANTS}
    groups_n: list[int] = []
    for i, stem in enumerate(tqdm(stems, disable=not progress, desc="ablation synthetic")):
        frame = read_frame(root / "images" / f"{stem}.png")
        gt = cv2.imread(str(root / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE) > 127
        outs, groups = frame_variants(student, refiner, frame, seed=i)
        groups_n.append(groups["auto"].count)
        for v in VARIANTS:
            confs[v].append(confusion(outs[v].mask(), gt))
            m = analyse_frame(_Given(outs[v]), frame).metrics
            errs[v].append(float(m.count - truth[stem]["count"]))
    report: dict[str, Any] = {"data": str(root), "frames": len(stems), "mean_auto_groups": float(np.mean(groups_n))}
    for v in VARIANTS:
        e = np.asarray(errs[v])
        report[v] = {**summarise(confs[v]), "count_mae": float(np.abs(e).mean()), "count_bias": float(e.mean())}
    return report


def ablation_counts(
    student: Segmenter,
    refiner: PromptRefiner,
    root: str | Path,
    um_per_px: float,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Per variant: hair-count MAE, bias and Pearson r against the boxes of a VOC folder."""
    from server_train.evaluation.counts_eval import TEXT_BAR_PX, read_voc_boxes

    root = Path(root)
    images = sorted((root / "images").glob("*.jpg"))[:limit]
    true: list[int] = []
    pred: dict[str, list[int]] = {v: [] for v in VARIANTS}
    for i, path in enumerate(tqdm(images, disable=not progress, desc="ablation counts")):
        ann = root / "annotations" / f"{path.stem}.xml"
        if not ann.exists():
            continue
        raw = read_frame(path)[TEXT_BAR_PX:]
        h, w = raw.shape[:2]
        frame = prepare_frame(raw)
        um = um_per_px * float(np.sqrt((w / frame.shape[1]) * (h / frame.shape[0])))
        outs, _ = frame_variants(student, refiner, frame, seed=i)
        true.append(len(read_voc_boxes(ann)))
        for v in VARIANTS:
            pred[v].append(analyse_frame(_Given(outs[v]), frame, um_per_px=um).metrics.count)
    t = np.asarray(true, float)
    report: dict[str, Any] = {"data": str(root), "frames": len(true), "um_per_px": um_per_px}
    for v in VARIANTS:
        p = np.asarray(pred[v], float)
        r = float(np.corrcoef(p, t)[0, 1]) if len(t) > 2 and p.std() > 0 and t.std() > 0 else None
        report[v] = {"count_mae": float(np.abs(p - t).mean()), "count_bias": float((p - t).mean()), "pearson_r": r}
    return report


def tune_refined_threshold(
    student: Segmenter,
    refiner: PromptRefiner,
    root: str | Path,
    thresholds: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5),
    coarse_thresholds: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6),
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Dice of M_AP for each M_AP threshold on the decoder's P(hair), and of M for each pair
    (M^ threshold on the student's P(hair), M_AP threshold), auto prompts (from M^ at
    MASK_THRESHOLD); ``best`` maximises M's Dice. Run it on a validation set, never on the
    held-out set."""
    root = Path(root)
    stems = sorted(_truth(root))[:limit]
    refined_c: dict[float, list] = {t: [] for t in thresholds}
    fused_c: dict[tuple[float, float], list] = {(c, t): [] for c in coarse_thresholds for t in thresholds}
    coarse_c: dict[float, list] = {c: [] for c in coarse_thresholds}
    for stem in tqdm(stems, disable=not progress, desc="tune refiner threshold"):
        frame = read_frame(root / "images" / f"{stem}.png")
        gt = cv2.imread(str(root / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE) > 127
        coarse = student.segment(frame)
        mask = coarse.prob >= MASK_THRESHOLD
        groups = auto_prompts(mask, PromptConfig(group_size=refiner.k))
        if groups.count:
            refiner.set_image(frame, coarse.prob)
            low = refiner.predict_low_res(groups).max(axis=0)
            up = cv2.resize(low, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
        else:
            up = np.full(mask.shape, -30.0, np.float32)
        for c in coarse_thresholds:
            coarse_c[c].append(confusion(coarse.prob >= c, gt))
        for t in thresholds:
            refined = up >= np.log(t / (1 - t))
            refined_c[t].append(confusion(refined, gt))
            for c in coarse_thresholds:
                fused_c[(c, t)].append(confusion(refined & (coarse.prob >= c), gt))
    rows = [
        {
            "coarse_threshold": c,
            "threshold": t,
            "refined": summarise(refined_c[t])["dice"],
            "fused": summarise(f)["dice"],
        }
        for (c, t), f in fused_c.items()
    ]
    best = max(rows, key=lambda r: r["fused"])
    coarse_dice = {str(c): summarise(v)["dice"] for c, v in coarse_c.items()}
    report = {"data": str(root), "frames": len(stems), "dice_by_threshold": rows, "coarse_dice": coarse_dice}
    return {**report, "best": best}


def _tile(mask: np.ndarray, frame: np.ndarray, groups: PromptGroups | None, title: str) -> np.ndarray:
    tile = (frame * 0.45).astype(np.uint8)
    tile[mask] = (0, 255, 255)
    if groups is not None:
        for x, y in groups.positives.astype(int):
            cv2.circle(tile, (int(x), int(y)), 5, (0, 200, 0), -1)
        for x, y in groups.negatives.astype(int):
            cv2.circle(tile, (int(x), int(y)), 6, (0, 0, 255), -1)
    cv2.putText(tile, title, (8, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2, cv2.LINE_AA)
    return cv2.resize(tile, (320, 240), interpolation=cv2.INTER_AREA)


def figure(
    student: Segmenter, refiner: PromptRefiner, frames: list[tuple[np.ndarray, np.ndarray | None]], out_png: str | Path
) -> Path:
    """Figure-3-style grid, one row per (480x640 BGR frame, HxW bool truth or None): frame,
    M^, M_AP from random prompts (points: green hair, red scalp), M_AP from auto prompts, M,
    truth. Dice against the truth in each title when given."""
    rows = []
    for i, (frame, gt) in enumerate(frames):
        outs, groups = frame_variants(student, refiner, frame, seed=i)

        def title(name: str, v: str, outs: dict[str, SegOutput] = outs, gt: np.ndarray | None = gt) -> str:
            if gt is None:
                return name
            return f"{name} {100 * summarise([confusion(outs[v].mask(), gt)])['dice']:.1f}"

        tiles = [cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA)]
        tiles.append(_tile(outs["coarse"].mask(), frame, None, title("M^", "coarse")))
        tiles.append(
            _tile(outs["refined_random"].mask(), frame, groups["random"], title("M_AP rand", "refined_random"))
        )
        tiles.append(_tile(outs["refined_auto"].mask(), frame, groups["auto"], title("M_AP auto", "refined_auto")))
        tiles.append(_tile(outs["fused_auto"].mask(), frame, None, title("M", "fused_auto")))
        truth = gt if gt is not None else np.zeros(frame.shape[:2], bool)
        tiles.append(_tile(truth, frame, None, "truth" if gt is not None else "(no pixel truth)"))
        rows.append(np.hstack(tiles))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), np.vstack(rows))
    return out_png
