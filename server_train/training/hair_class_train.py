"""Train the per-hair class network (``server_train.models.hair_patch``) on real trichoscopy boxes.

Every box of the training subjects (``subject_split``, the same split as the counting runs, so
the held-out subjects stay unseen) gives one patch centred on the box centre: positive when the
box is `undersize`. Patches are cut ``margin`` px larger than the network's input and randomly
cropped back (the device centres them on density peaks, a few px from the box centre), flipped,
transposed and dimmed or brightened. Positives are weighted by the inverse class frequency.

The decision threshold on P(miniaturised) is chosen on a further share of the training subjects
(``tune_percent``, never trained on): the one whose per-frame share of hairs at or above it best
matches the frame's `undersize` share (mean absolute error). It goes into the checkpoint and the
exported graph (metadata ``thin_probability``).

With ``segmenter`` (a segmenter graph), the patches are cut where the device cuts them instead:
at the hairs that segmenter *locates* on each frame (``device.app.analysis.analyse_frame``,
the device's measuring step). A located hair inside a box (``match_hairs``) takes that box's
label; one in no box (a scale, a pore, a second peak on one shaft) is a negative, because the
device counts it in the thin share's denominator and it is not a thin hair. The threshold is
then chosen against each tuning frame's labelled `undersize` share, as the device is scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from device.contracts.constants import HAIR_PATCH_PX, MODEL_UM_PER_PX
from device.contracts.preprocess import hair_patches
from device.models.segmentation import Segmenter
from server_train.models.hair_patch import DEFAULT_WIDTHS, HairPatchNet
from server_train.training import loop
from server_train.training.trichoscopy import (
    TEXT_BAR_PX,
    THIN_CLASS,
    LabelledFrame,
    frame_and_points,
    load_labelled,
    subject_split,
)

__all__ = [
    "HairClassConfig",
    "PatchSet",
    "patch_set",
    "located_patch_set",
    "choose_threshold",
    "train_hair_classes",
    "predict",
]


@dataclass(frozen=True)
class HairClassConfig:
    """Defaults for a per-hair class run (CLI options override only what they set)."""

    data: str = ""  # comma-separated roots with images/ and annotations/ (Pascal VOC)
    out: str = ""
    model: str = "hair_patch"
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    val_percent: int = 20  # subjects held out of everything (``subject_split``)
    tune_percent: int = 15  # of the training subjects: for the threshold, never trained on
    steps: int = 1500
    batch: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    margin: int = 4  # px of random shift each way
    seed: int = 0
    threads: int = 1
    ckpt_every: int = 250
    limit: int = 0  # frames per split, 0 = all (tests)
    segmenter: str = ""  # .onnx/.pt whose located hairs give the patches; "" = box centres


@dataclass(frozen=True)
class PatchSet:
    """Patches of labelled hairs: x Nx3xSxS float32 (S = HAIR_PATCH_PX + 2 margin), y (N,) bool
    `undersize`, frame (N,) int index of the frame each came from."""

    x: np.ndarray
    y: np.ndarray
    frame: np.ndarray
    truth: np.ndarray | None = None  # (frames,) labelled undersize share per frame, when not y's


def patch_set(items: list[LabelledFrame], margin: int) -> PatchSet:
    """One patch per box of ``items``, centred on the box centre, at the models' pixel scale."""
    xs, ys, fs = [], [], []
    for k, item in enumerate(items):
        frame, points, thin = frame_and_points(item)
        xs.append(hair_patches(frame, points, MODEL_UM_PER_PX, size=HAIR_PATCH_PX + 2 * margin))
        ys.append(thin)
        fs.append(np.full(len(points), k))
    if not xs:
        raise ValueError("no labelled frames")
    return PatchSet(np.concatenate(xs), np.concatenate(ys), np.concatenate(fs))


def located_patch_set(items: list[LabelledFrame], segmenter: Segmenter, margin: int) -> PatchSet:
    """One patch per hair ``segmenter`` locates on each of ``items`` (the device's measuring
    step at 70x), labelled by the box it falls in (``match_hairs``; none: negative), with each
    frame's labelled undersize share as ``truth``. Frames where it locates nothing are skipped
    (the device reports no thin share there)."""
    from device.app.analysis import analyse_frame
    from server_train.evaluation.counts_eval import TRICHOSCOPY_UM_PER_PX, frame_boxes, match_hairs

    xs, ys, fs, truth = [], [], [], []
    for item in items:
        raw = cv2.imread(str(item.image), cv2.IMREAD_COLOR)
        if raw is None:
            raise ValueError(f"cannot read {item.image}")
        raw = raw[TEXT_BAR_PX:]
        boxes, classes = frame_boxes(item, raw.shape)
        result = analyse_frame(segmenter, raw, um_per_px=TRICHOSCOPY_UM_PER_PX)
        points = np.array([xy for xy, _, _ in result.metrics.hairs], np.float32).reshape(-1, 2)
        if not len(points) or not classes:
            continue
        thin_box = np.array([c == THIN_CLASS for c in classes], bool)
        label = np.zeros(len(points), bool)
        for i, j in match_hairs(points, boxes):
            label[i] = thin_box[j]
        xs.append(hair_patches(result.frame, points, result.metrics.um_per_px, size=HAIR_PATCH_PX + 2 * margin))
        ys.append(label)
        fs.append(np.full(len(points), len(truth)))
        truth.append(float(thin_box.mean()))
    if not xs:
        raise ValueError("the segmenter located no hairs on the labelled frames")
    return PatchSet(np.concatenate(xs), np.concatenate(ys), np.concatenate(fs), np.asarray(truth))


def _cached(path: Path, items: list[LabelledFrame], margin: int, segmenter: str = "", threads: int = 1) -> PatchSet:
    if path.exists():
        z = np.load(path)
        return PatchSet(z["x"], z["y"], z["frame"], z["truth"] if "truth" in z.files else None)
    if segmenter:
        from server_train.evaluation.loading import load_segmenter

        s = located_patch_set(items, load_segmenter(segmenter, threads), margin)
    else:
        s = patch_set(items, margin)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if s.truth is None else {"truth": s.truth}
    np.savez(path, x=s.x, y=s.y, frame=s.frame, **extra)
    return s


def choose_threshold(
    prob: np.ndarray, thin: np.ndarray, frame: np.ndarray, truth: np.ndarray | None = None
) -> dict[str, Any]:
    """The threshold t (0.05..0.95 by 0.05, then 0.96..0.99) whose per-frame share of hairs with
    P >= t best matches the per-frame share of thin hairs (``truth[f]`` where given, else the
    share of ``thin`` among the frame's patches); with its mean absolute error, and that of 0.5."""

    def target(f: int) -> float:
        return float(truth[f]) if truth is not None else float(thin[frame == f].mean())

    def mae(t: float) -> float:
        errors = [abs((prob[frame == f] >= t).mean() - target(f)) for f in np.unique(frame)]
        return float(np.mean(errors))

    grid = np.concatenate([np.round(np.arange(0.05, 0.951, 0.05), 2), [0.96, 0.97, 0.98, 0.99]])
    scores = {float(t): mae(float(t)) for t in grid}
    best = min(scores, key=lambda t: scores[t])
    return {
        "thin_probability": best,
        "ratio_mae": scores[best],
        "ratio_mae_at_0.5": scores[0.5],
        "frames": len(np.unique(frame)),
    }


def predict(model: HairPatchNet, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """(N,) P(miniaturised) of Nx3xPxP patches (centre-cropped to HAIR_PATCH_PX when larger)."""
    off = (x.shape[-1] - HAIR_PATCH_PX) // 2
    x = x[:, :, off : off + HAIR_PATCH_PX, off : off + HAIR_PATCH_PX]
    model.eval()
    with torch.no_grad():
        out = [
            torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch]))))
            for i in range(0, len(x), batch)
        ]
    return torch.cat(out).numpy().reshape(-1).astype(np.float64) if out else np.zeros(0)


def _augment(x: np.ndarray, rng: np.random.Generator, margin: int) -> np.ndarray:
    ox, oy = rng.integers(0, 2 * margin + 1, 2)
    x = x[:, :, oy : oy + HAIR_PATCH_PX, ox : ox + HAIR_PATCH_PX]
    if rng.random() < 0.5:
        x = x[:, :, :, ::-1]
    if rng.random() < 0.5:
        x = x[:, :, ::-1, :]
    if rng.random() < 0.5:
        x = x.transpose(0, 1, 3, 2)
    gain = rng.uniform(0.8, 1.2, (len(x), 1, 1, 1)).astype(np.float32)
    return np.ascontiguousarray(x * gain)


def train_hair_classes(cfg: HairClassConfig, progress: bool = True) -> Path:
    """Run (or resume) a per-hair class run; returns ``final.pt`` with its ``threshold`` record."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    items = load_labelled([r for r in cfg.data.split(",") if r])
    train_items, _ = subject_split(items, cfg.val_percent)
    fit_items, tune_items = subject_split(train_items, cfg.tune_percent, salt="scalpedge-hair-classes")
    if cfg.limit:
        fit_items, tune_items = fit_items[: cfg.limit], tune_items[: cfg.limit]
    if not fit_items or not tune_items:
        raise ValueError(
            f"{len(fit_items)} training and {len(tune_items)} tuning frames: both need subjects (see --tune-percent)"
        )
    out = Path(cfg.out)
    fit = _cached(out / "patches_fit.npz", fit_items, cfg.margin, cfg.segmenter, cfg.threads)
    tune = _cached(out / "patches_tune.npz", tune_items, cfg.margin, cfg.segmenter, cfg.threads)
    if not fit.y.any() or fit.y.all():
        raise ValueError("the training patches need both undersize and other hairs")
    model = HairPatchNet(cfg.widths)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = loop.TrainRun(cfg, model, {"widths": list(cfg.widths)}, opt)
    run.resume()
    pos_weight = torch.tensor(float((~fit.y).sum() / fit.y.sum()))
    labels = torch.from_numpy(fit.y.astype(np.float32))

    def step_loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rng = np.random.default_rng((cfg.seed, step))  # the same batch on resume
        idx = rng.integers(0, len(fit.y), cfg.batch)
        x = torch.from_numpy(_augment(fit.x[idx], rng, cfg.margin))
        loss = F.binary_cross_entropy_with_logits(model(x).squeeze(1), labels[idx], pos_weight=pos_weight)
        return loss, {}

    model.train()
    lr_at = lambda step: loop.warmup_cosine_lr(step, cfg.lr, cfg.warmup, cfg.steps)  # noqa: E731
    final = run.fit(step_loss, lr_at=lr_at, progress=progress)
    if final.name != "final.pt":
        return final
    threshold = choose_threshold(predict(model, tune.x), tune.y, tune.frame, tune.truth)
    ckpt = torch.load(str(final), map_location="cpu", weights_only=False)
    ckpt["threshold"] = threshold
    torch.save(ckpt, final)
    (out / "threshold.json").write_text(json.dumps(threshold, indent=2) + "\n")
    return final


def load_hair_classes(path: str | Path) -> tuple[HairPatchNet, dict[str, Any]]:
    """(network in eval mode, checkpoint) of a ``final.pt``."""
    from server_train.models.hair_patch import hair_patch_net

    model, ckpt = loop.load_checkpoint(path, hair_patch_net)
    return model, ckpt  # type: ignore[return-value]
