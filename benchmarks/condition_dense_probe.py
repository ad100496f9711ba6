"""Do frozen ImageNet Lite0 features at 2x the grader's resolution rank the scalp conditions better?
A probe, not a product model.

``features``: each frame of ``train`` and ``valid`` resized to W x H (default 512 x 384, 2x the
shipped grader's 256 x 192; the 640 x 640 frames are stretched from a 4:3 camera, so this restores
the aspect), itself and mirrored, through the frozen ImageNet EfficientNet-Lite0: the stride-16
output of block 11 (112 channels) and the stride-32 output of block 16 (320) with the head conv
(1280), cached as float16 with the presence and the polygon maps at stride 16 (``condition_maps``).

``fit``: the shipped grader's presence head and training (``PresenceHead``,
``fit_presence_head``: 1x1 conv 1712 -> 96 -> 3 on the stride-16 grid, the stride-32 features
upsampled nearest after their part of the first conv; presence logit = the top-5 % mean of each
map, scaled; presence BCE with inverse-frequency weights plus map BCE with positive weight 5; 600
steps, batch 32, AdamW 1e-3), per fold of 5 folds of the training originals (sha256 of the
original name). Thresholds: the out-of-fold F1-maximising one per condition.
``valid`` is scored by the mean of the 5 fold models
(mirror-averaged) at those thresholds; ``upper_bound_macro_f1`` is with thresholds picked on
``valid`` itself (not a method).

    python benchmarks/condition_dense_probe.py features --data ../shared/data/scalp-microscope --cache runs/dense_probe
    python benchmarks/condition_dense_probe.py fit --cache runs/dense_probe --out R.json [--data DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score

from server_train.evaluation.presence_thresholds import prevalence_threshold
from server_train.models.condition_grader import PresenceHead
from server_train.models.efficientnet_lite import EfficientNetLite, load_lite0_imagenet
from server_train.training.condition_grader_train import GraderConfig, fit_presence_head, presence_probs
from server_train.training.condition_maps import condition_maps, original_name

NAMES = ("dandruff", "oiliness", "erythema")
S16_END, S32_END = 11, 16  # Lite0 blocks: stride-16 stage ends after block 11, the last after 16


def extract(data: Path, cache: Path, width: int, height: int) -> None:
    """Write ``cache``/{split}_{W}x{H}.npz: f16 N x 2 x 112 x H/16 x W/16, f32 N x 2 x 1600 x H/32 x
    W/32 (float16; index 1 of axis 1: mirrored, mirrored back), presence N x 3, maps N x 3 x H/16 x
    W/16, names (originals)."""
    model = load_lite0_imagenet(EfficientNetLite()).eval()
    cache.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid"):
        paths = sorted((data / split / "images").glob("*.jpg"))
        f16s, f32s, presence, maps = [], [], [], []
        for p in paths:
            rgb = cv2.resize(cv2.imread(str(p)), (width, height), interpolation=cv2.INTER_AREA)[:, :, ::-1]
            views = []
            for flip in (False, True):
                im = rgb[:, ::-1] if flip else rgb
                x = torch.from_numpy(((im.astype(np.float32) - 127) / 128).transpose(2, 0, 1).copy())[None]
                with torch.no_grad():
                    x = model.act(model._bn0(model._conv_stem(model._pad0(x))))
                    for j, block in enumerate(model._blocks):
                        x = block(x)
                        if j + 1 == S16_END:
                            s16 = x
                    head = model.act(model._bn1(model._conv_head(x)))
                a, b = s16[0].numpy(), torch.cat([x, head], 1)[0].numpy()
                views.append((a[:, :, ::-1], b[:, :, ::-1]) if flip else (a, b))
            f16s.append(np.stack([v[0] for v in views]).astype(np.float16))
            f32s.append(np.stack([v[1] for v in views]).astype(np.float16))
            pr, mp = condition_maps(data / split / "labels" / f"{p.stem}.txt", height // 16, width // 16)
            presence.append(pr)
            maps.append(mp)
        np.savez(
            cache / f"{split}_{width}x{height}.npz",
            f16=np.stack(f16s),
            f32=np.stack(f32s),
            presence=np.stack(presence),
            maps=np.stack(maps),
            names=np.array([original_name(p) for p in paths]),
        )
        print(split, len(paths), "frames", flush=True)


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def fit_head(d: dict[str, np.ndarray], idx: np.ndarray, seed: int, steps: int) -> PresenceHead:
    """One head on frames ``idx`` of the cached set: the shipped grader's head and training
    (``fit_presence_head``, its default settings but ``steps``)."""
    return fit_presence_head(d, d["presence"], d["maps"], idx, GraderConfig(steps=steps), seed)


def presence_scores(head: PresenceHead, d: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
    """P(present) len(idx) x 3, the mean logit of the frame and its mirror."""
    return presence_probs(head, d, idx, mirror=True)


def _fold(name: str, k: int) -> int:
    return int(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2.0**64 * k)


def _best_threshold(y: np.ndarray, s: np.ndarray) -> float:
    return float(max(np.unique(s), key=lambda t: f1_score(y, s >= t)))


def _concat(a: dict[str, np.ndarray], b: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    """``a`` with frames ``idx`` of ``b`` appended (same keys)."""
    return {k: np.concatenate([a[k], b[k][idx]]) for k in a}


def crossfit_valid(cache: Path, size: str, steps: int, folds: int, halves: int = 2) -> dict[str, object]:
    """``valid`` scored by heads that never saw its frames but did see the rest of ``valid``: for
    each of ``halves`` parts of ``valid`` (by original), ``folds`` heads are fitted on the
    training frames plus the other parts, their out-of-fold scores choose the thresholds (both
    rules), and their mean scores the held-out part. Asks whether frames like ``valid`` (sharp,
    unaugmented, more of the timestamp-named camera) in the pool make thresholds transfer."""
    tr, va = _load(cache / f"train_{size}.npz"), _load(cache / f"valid_{size}.npz")
    part = np.array([_fold("valid:" + str(n), halves) for n in va["names"]])
    yva = va["presence"]
    scores = np.zeros((len(yva), 3))
    pred = {"f1_max": np.zeros((len(yva), 3), bool), "prevalence": np.zeros((len(yva), 3), bool)}
    for h in range(halves):
        pool = _concat(tr, va, np.where(part != h)[0])
        fold = np.array([_fold(str(n), folds) for n in pool["names"]])
        oof, heads = np.zeros((len(fold), 3)), []
        for k in range(folds):
            head = fit_head(pool, np.where(fold != k)[0], 10 * h + k, steps)
            oof[fold == k] = presence_scores(head, pool, np.where(fold == k)[0])
            heads.append(head)
        held = np.where(part == h)[0]
        scores[held] = np.mean([presence_scores(hd, va, held) for hd in heads], 0)
        for c in range(3):
            y = pool["presence"][:, c]
            pred["f1_max"][held, c] = scores[held, c] >= _best_threshold(y, oof[:, c])
            pred["prevalence"][held, c] = scores[held, c] >= prevalence_threshold(y, oof[:, c])
        print("part", h, "done", flush=True)
    out: dict[str, object] = {"size": size, "steps": steps, "folds": folds, "halves": halves}
    for rule, p in pred.items():
        f1 = [float(f1_score(yva[:, c], p[:, c])) for c in range(3)]
        out[rule] = {"macro_f1": float(np.mean(f1)), "f1": dict(zip(NAMES, f1, strict=True))}
    out["auc"] = {n: float(roc_auc_score(yva[:, c], scores[:, c])) for c, n in enumerate(NAMES)}
    return out


def sharpest_copies(data: Path, names: np.ndarray) -> np.ndarray:
    """Indices (into the sorted ``train/images``) of the sharpest of each original's copies (the
    largest variance of the grey Laplacian): the export blurred every training copy by a random
    0-2.5 px and left ``valid`` alone, so the sharpest copy is the closest to what a scanner sees."""
    paths = sorted((data / "train" / "images").glob("*.jpg"))
    if len(paths) != len(names):
        raise ValueError(f"{len(paths)} training images, {len(names)} cached frames: not the cached set")
    sharp = np.array([cv2.Laplacian(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), cv2.CV_64F).var() for p in paths])
    best: dict[str, int] = {}
    for i, name in enumerate(names):
        if str(name) not in best or sharp[i] > sharp[best[str(name)]]:
            best[str(name)] = i
    return np.array(sorted(best.values()))


def fit(cache: Path, size: str, steps: int, folds: int, data: Path | None = None) -> dict[str, object]:
    tr, va = _load(cache / f"train_{size}.npz"), _load(cache / f"valid_{size}.npz")
    fold = np.array([_fold(str(n), folds) for n in tr["names"]])
    oof, heads = np.zeros((len(fold), 3)), []
    for k in range(folds):
        head = fit_head(tr, np.where(fold != k)[0], k, steps)
        oof[fold == k] = presence_scores(head, tr, np.where(fold == k)[0])
        heads.append(head)
        print("fold", k, "done", flush=True)
    ytr, yva = tr["presence"], va["presence"]
    sva = np.mean([presence_scores(h, va, np.arange(len(yva))) for h in heads], 0)
    per: dict[str, dict[str, float]] = {}
    for c, name in enumerate(NAMES):
        t, t_valid = _best_threshold(ytr[:, c], oof[:, c]), _best_threshold(yva[:, c], sva[:, c])
        per[name] = {
            "threshold_oof": t,
            "f1": float(f1_score(yva[:, c], sva[:, c] >= t)),
            "auc": float(roc_auc_score(yva[:, c], sva[:, c])),
            "oof_auc": float(roc_auc_score(ytr[:, c], oof[:, c])),
            "f1_thresholds_tuned_on_valid": float(f1_score(yva[:, c], sva[:, c] >= t_valid)),
            "threshold_prevalence": (tp := prevalence_threshold(ytr[:, c], oof[:, c])),
            "f1_prevalence": float(f1_score(yva[:, c], sva[:, c] >= tp)),
        }
    np.savez(cache / f"scores_{size}.npz", oof=oof, valid=sva, train_presence=ytr, valid_presence=yva)
    report: dict[str, object] = {
        "size": size,
        "steps": steps,
        "folds": folds,
        "valid_frames": len(yva),
        "macro_f1": float(np.mean([v["f1"] for v in per.values()])),
        "upper_bound_macro_f1": float(np.mean([v["f1_thresholds_tuned_on_valid"] for v in per.values()])),
        "prevalence_macro_f1": float(np.mean([v["f1_prevalence"] for v in per.values()])),
        "conditions": per,
    }
    if data is not None:  # the same scores, thresholds chosen on each original's sharpest copy only
        keep = sharpest_copies(data, tr["names"])
        sharp: dict[str, dict[str, float]] = {}
        for c, name in enumerate(NAMES):
            t = _best_threshold(ytr[keep, c], oof[keep, c])
            sharp[name] = {
                "threshold_oof": t,
                "f1": float(f1_score(yva[:, c], sva[:, c] >= t)),
                "oof_auc": float(roc_auc_score(ytr[keep, c], oof[keep, c])),
            }
        report["sharpest_copy_thresholds"] = {
            "frames": len(keep),
            "macro_f1": float(np.mean([v["f1"] for v in sharp.values()])),
            "conditions": sharp,
        }
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features")
    f.add_argument("--data", required=True, type=Path, help="scalp-microscope folder (train/, valid/)")
    f.add_argument("--cache", required=True, type=Path)
    f.add_argument("--size", default="512x384", help="W x H the frames are resized to")
    h = sub.add_parser("fit")
    h.add_argument("--cache", required=True, type=Path)
    h.add_argument("--size", default="512x384")
    h.add_argument("--steps", type=int, default=600)
    h.add_argument("--folds", type=int, default=5)
    h.add_argument("--out", required=True, type=Path)
    h.add_argument(
        "--data", type=Path, help="scalp-microscope folder: also choose thresholds on each original's sharpest copy"
    )
    c = sub.add_parser("crossfit", help="score valid by heads fitted on train plus the other part(s) of valid")
    c.add_argument("--cache", required=True, type=Path)
    c.add_argument("--size", default="512x384")
    c.add_argument("--steps", type=int, default=600)
    c.add_argument("--folds", type=int, default=5)
    c.add_argument("--halves", type=int, default=2)
    c.add_argument("--out", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.cmd == "features":
        w, hh = (int(v) for v in a.size.split("x"))
        extract(a.data, a.cache, w, hh)
    elif a.cmd == "crossfit":
        out = crossfit_valid(a.cache, a.size, a.steps, a.folds, a.halves)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out))
    else:
        report = fit(a.cache, a.size, a.steps, a.folds, a.data)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=2) + "\n")
        keys = ("macro_f1", "upper_bound_macro_f1", "prevalence_macro_f1", "sharpest_copy_thresholds")
        print(json.dumps({k: report[k] for k in keys if k in report}))


if __name__ == "__main__":
    main()
