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
With it comes a share scale (``thin_share_scale``, at most 1): the frame's thin share is the
scale times the share of its hairs at or above the threshold. About half of all frames have no
thin hair at all, so the share that errs least on average sits below the unbiased one; both
figures are recorded.

``classes`` 3 learns the located hairs' three labels (in no box / in another box / in an
`undersize` box, with inverse-frequency class weights) instead of thin vs the rest.
``kind`` "pair" trains the two-field network (``HairFieldPair``: a near view of the shaft and a
wide view at half resolution, each with its own random shift) instead of one patch network.
``refit``: once the threshold and scale are chosen on the tuning subjects, a second network is
trained the same way on the training and tuning subjects together and keeps them (its
checkpoint is ``refit/final.pt``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
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
from server_train.models.hair_patch import DEFAULT_WIDTHS, HairFieldPair, HairPatchNet, hair_patch_net, wide_view
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
    kind: str = "patch"  # "patch" (HairPatchNet) or "pair" (HairFieldPair)
    classes: int = 1  # 1: thin vs the rest; 3: in no box / another box / undersize box
    refit: bool = False  # retrain on training + tuning subjects once the threshold is chosen


@dataclass(frozen=True)
class PatchSet:
    """Patches of labelled hairs: x Nx3xSxS float32 (S = HAIR_PATCH_PX + 2 margin), y (N,) bool
    `undersize`, frame (N,) int index of the frame each came from, boxed (N,) bool: the patch
    lies on a labelled hair (always, at box centres)."""

    x: np.ndarray
    y: np.ndarray
    frame: np.ndarray
    truth: np.ndarray | None = None  # (frames,) labelled undersize share per frame, when not y's
    boxed: np.ndarray | None = None  # None: all True

    def labels3(self) -> np.ndarray:
        """(N,) int64: 0 in no box, 1 another box, 2 `undersize`."""
        boxed = np.ones(len(self.y), bool) if self.boxed is None else self.boxed
        return np.where(self.y, 2, np.where(boxed, 1, 0)).astype(np.int64)


def cache_px(kind: str, margin: int) -> int:
    """Side (px at MODEL_UM_PER_PX) of the cached patches of a ``kind`` network: its input plus
    ``margin`` px of shift each way (for "pair", ``margin`` px of its half-resolution wide view)."""
    if kind == "pair":
        return HairFieldPair.input_px + 4 * margin
    if kind == "patch":
        return HAIR_PATCH_PX + 2 * margin
    raise ValueError(f"unknown hair class network kind {kind!r} (patch or pair)")


def patch_set(items: list[LabelledFrame], margin: int, size: int | None = None) -> PatchSet:
    """One patch per box of ``items``, centred on the box centre, at the models' pixel scale;
    ``size`` px a side (default HAIR_PATCH_PX + 2 ``margin``)."""
    size = cache_px("patch", margin) if size is None else size
    xs, ys, fs = [], [], []
    for k, item in enumerate(items):
        frame, points, thin = frame_and_points(item)
        xs.append(hair_patches(frame, points, MODEL_UM_PER_PX, size=size))
        ys.append(thin)
        fs.append(np.full(len(points), k))
    if not xs:
        raise ValueError("no labelled frames")
    return PatchSet(np.concatenate(xs), np.concatenate(ys), np.concatenate(fs))


def located_patch_set(
    items: list[LabelledFrame], segmenter: Segmenter, margin: int, size: int | None = None
) -> PatchSet:
    """One patch per hair ``segmenter`` locates on each of ``items`` (the device's measuring
    step at 70x), labelled by the box it falls in (``match_hairs``; none: negative), with each
    frame's labelled undersize share as ``truth``. Frames where it locates nothing are skipped
    (the device reports no thin share there). ``size`` as in ``patch_set``."""
    size = cache_px("patch", margin) if size is None else size
    from device.app.analysis import analyse_frame
    from server_train.evaluation.counts_eval import TRICHOSCOPY_UM_PER_PX, frame_boxes, match_hairs

    xs, ys, fs, truth, boxed = [], [], [], [], []
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
        label, inside = np.zeros(len(points), bool), np.zeros(len(points), bool)
        for i, j in match_hairs(points, boxes):
            label[i], inside[i] = thin_box[j], True
        xs.append(hair_patches(result.frame, points, result.metrics.um_per_px, size=size))
        ys.append(label)
        boxed.append(inside)
        fs.append(np.full(len(points), len(truth)))
        truth.append(float(thin_box.mean()))
    if not xs:
        raise ValueError("the segmenter located no hairs on the labelled frames")
    return PatchSet(
        np.concatenate(xs), np.concatenate(ys), np.concatenate(fs), np.asarray(truth), np.concatenate(boxed)
    )


def _cached(
    path: Path, items: list[LabelledFrame], margin: int, size: int, segmenter: str = "", threads: int = 1
) -> PatchSet:
    if path.exists():
        z = np.load(path)
        if z["x"].shape[-1] == size and (not segmenter or "boxed" in z.files):
            get = lambda k: z[k] if k in z.files else None  # noqa: E731
            return PatchSet(z["x"], z["y"], z["frame"], get("truth"), get("boxed"))
    if segmenter:
        from server_train.evaluation.loading import load_segmenter

        s = located_patch_set(items, load_segmenter(segmenter, threads), margin, size)
    else:
        s = patch_set(items, margin, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {k: v for k, v in (("truth", s.truth), ("boxed", s.boxed)) if v is not None}
    np.savez(path, x=s.x, y=s.y, frame=s.frame, **extra)
    return s


SHARE_SCALES = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


def choose_threshold(
    prob: np.ndarray,
    thin: np.ndarray,
    frame: np.ndarray,
    truth: np.ndarray | None = None,
    scales: tuple[float, ...] = SHARE_SCALES,
) -> dict[str, Any]:
    """The threshold t (0.05..0.95 by 0.05, then 0.96..0.99) and share scale a (of ``scales``)
    whose per-frame thin share, a x the share of hairs with P >= t, best matches the per-frame
    share of thin hairs (``truth[f]`` where given, else the share of ``thin`` among the frame's
    patches), by mean absolute error. Also records the best error at scale 1 (``ratio_mae_unscaled``,
    at ``thin_probability_unscaled``), the error at t = 0.5 and scale 1, and the mean bias."""
    frames = np.unique(frame)
    target = np.array([float(truth[f]) if truth is not None else float(thin[frame == f].mean()) for f in frames])
    index = np.searchsorted(frames, frame)

    def share(t: float) -> np.ndarray:
        return np.bincount(index, prob >= t, len(frames)) / np.bincount(index, minlength=len(frames))

    grid = np.concatenate([np.round(np.arange(0.05, 0.951, 0.05), 2), [0.96, 0.97, 0.98, 0.99]])
    shares = {float(t): share(float(t)) for t in grid}
    scores = {(t, a): float(np.abs(a * s - target).mean()) for t, s in shares.items() for a in scales}
    best_t, best_a = min(scores, key=lambda k: (scores[k], -k[1]))
    plain = {t: float(np.abs(s - target).mean()) for t, s in shares.items()}
    plain_t = min(plain, key=lambda t: plain[t])
    return {
        "thin_probability": best_t,
        "thin_share_scale": best_a,
        "ratio_mae": scores[(best_t, best_a)],
        "ratio_bias": float((best_a * shares[best_t] - target).mean()),
        "thin_probability_unscaled": plain_t,
        "ratio_mae_unscaled": plain[plain_t],
        "ratio_bias_unscaled": float((shares[plain_t] - target).mean()),
        "ratio_mae_at_0.5": plain[0.5],
        "frames": len(frames),
    }


def predict(model: HairPatchNet | HairFieldPair, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """(N,) P(miniaturised) of Nx3xSxS patches (centre-cropped to the network's input side when larger)."""
    side = model.input_px
    off = (x.shape[-1] - side) // 2
    if off < 0:
        raise ValueError(f"patches of {x.shape[-1]} px for a network that reads {side} px")
    x = x[:, :, off : off + side, off : off + side]
    model.eval()
    with torch.no_grad():
        out = [
            torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch], np.float32))))
            for i in range(0, len(x), batch)
        ]
    return torch.cat(out).numpy().reshape(-1).astype(np.float64) if out else np.zeros(0)


def _augment(x: np.ndarray, rng: np.random.Generator, margin: int, side: int = HAIR_PATCH_PX) -> np.ndarray:
    """A random ``side`` px crop within ``margin`` px of the centre of the Nx3xSxS ``x``, random
    flips and transpose, and a random gain per patch."""
    o = (x.shape[-1] - side) // 2 - margin
    ox, oy = o + rng.integers(0, 2 * margin + 1, 2)
    x = x[:, :, oy : oy + side, ox : ox + side]
    if rng.random() < 0.5:
        x = x[:, :, :, ::-1]
    if rng.random() < 0.5:
        x = x[:, :, ::-1, :]
    if rng.random() < 0.5:
        x = x.transpose(0, 1, 3, 2)
    gain = rng.uniform(0.8, 1.2, (len(x), 1, 1, 1)).astype(np.float32)
    return np.ascontiguousarray(x * gain, np.float32)


def _fit(cfg: HairClassConfig, patches: PatchSet, progress: bool) -> tuple[HairPatchNet | HairFieldPair, Path]:
    """Train (or resume) one network of ``cfg.kind`` on ``patches`` in ``cfg.out``."""
    if not patches.y.any() or patches.y.all():
        raise ValueError("the training patches need both undersize and other hairs")
    model_config = {"kind": cfg.kind, "widths": list(cfg.widths), "classes": cfg.classes}
    model = hair_patch_net(model_config)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = loop.TrainRun(cfg, model, model_config, opt)
    run.resume()
    pos_weight = torch.tensor(float((~patches.y).sum() / patches.y.sum()))
    labels = torch.from_numpy(patches.y.astype(np.float32))
    labels3 = patches.labels3()
    share3 = np.maximum(np.bincount(labels3, minlength=3), 1) / len(labels3)
    weights3 = torch.from_numpy((1.0 / (3.0 * share3)).astype(np.float32))  # inverse frequency
    labels3_t = torch.from_numpy(labels3)

    def bce(net: HairPatchNet, x: np.ndarray, idx: np.ndarray) -> torch.Tensor:
        logits = net.logits(torch.from_numpy(x))
        if cfg.classes == 3:
            return F.cross_entropy(logits, labels3_t[idx], weight=weights3)
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), labels[idx], pos_weight=pos_weight)

    def step_loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rng = np.random.default_rng((cfg.seed, step))  # the same batch on resume
        idx = rng.integers(0, len(patches.y), cfg.batch)
        x = patches.x[idx]
        if isinstance(model, HairFieldPair):  # each member on its own view and shift
            near = bce(model.near, _augment(x, rng, cfg.margin), idx)
            field = wide_view(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
            wide = bce(model.wide, _augment(field, rng, cfg.margin, HairFieldPair.input_px // 2), idx)
            return near + wide, {"near": near.item(), "wide": wide.item()}
        assert isinstance(model, HairPatchNet)
        return bce(model, _augment(x, rng, cfg.margin), idx), {}

    model.train()
    lr_at = lambda step: loop.warmup_cosine_lr(step, cfg.lr, cfg.warmup, cfg.steps)  # noqa: E731
    return model, run.fit(step_loss, lr_at=lr_at, progress=progress)


def _record_threshold(final: Path, threshold: dict[str, Any]) -> None:
    ckpt = torch.load(str(final), map_location="cpu", weights_only=False)
    ckpt["threshold"] = threshold
    torch.save(ckpt, final)
    (final.parent / "threshold.json").write_text(json.dumps(threshold, indent=2) + "\n")


def train_hair_classes(cfg: HairClassConfig, progress: bool = True) -> Path:
    """Run (or resume) a per-hair class run; returns ``final.pt`` (``refit/final.pt`` with
    ``cfg.refit``) with its ``threshold`` record."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    size = cache_px(cfg.kind, cfg.margin)
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
    fit = _cached(out / "patches_fit.npz", fit_items, cfg.margin, size, cfg.segmenter, cfg.threads)
    tune = _cached(out / "patches_tune.npz", tune_items, cfg.margin, size, cfg.segmenter, cfg.threads)
    model, final = _fit(cfg, fit, progress)
    if final.name != "final.pt":
        return final
    threshold = choose_threshold(predict(model, tune.x), tune.y, tune.frame, tune.truth)
    _record_threshold(final, threshold)
    if not cfg.refit:
        return final
    both = PatchSet(
        np.concatenate([fit.x, tune.x]),
        np.concatenate([fit.y, tune.y]),
        np.concatenate([fit.frame, tune.frame]),
        boxed=np.concatenate([fit.labels3() > 0, tune.labels3() > 0]),
    )
    refit_cfg = dataclasses.replace(cfg, out=str(out / "refit"))
    _, refit_final = _fit(refit_cfg, both, progress)
    if refit_final.name == "final.pt":
        chosen = {"chosen_with": str(final), "trained_on": "training + tuning subjects"}
        _record_threshold(refit_final, threshold | chosen)
    return refit_final


def load_hair_classes(path: str | Path) -> tuple[HairPatchNet | HairFieldPair, dict[str, Any]]:
    """(network in eval mode, checkpoint) of a ``final.pt``, or of a ``hair_classes.onnx``
    exported from one (``graph_checkpoint``: for a release whose checkpoint is gone)."""
    if Path(path).suffix == ".onnx":
        return graph_checkpoint(path)
    model, ckpt = loop.load_checkpoint(path, hair_patch_net)
    return model, ckpt  # type: ignore[return-value]


def graph_checkpoint(path: str | Path) -> tuple[HairPatchNet | HairFieldPair, dict[str, Any]]:
    """(network in eval mode, checkpoint-like dict) recovered from an exported ``hair_classes``
    graph: the configs, step and threshold from its metadata; each conv's weights from the graph,
    where the export folded its batch norm in (so each BN becomes the identity plus the folded
    bias: running mean 0, variance 1 - eps, scale 1). The graph's conv and head nodes are found by
    the names torch's exporter gives them (``/near/features/features.4/Conv``, ``/head/Gemm``).
    Raises ValueError for a graph that is not one of ours."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path))
    meta = {p.key: p.value for p in graph.metadata_props}
    missing = {"model_config", "train_config", "thin_probability"} - set(meta)
    if missing:
        raise ValueError(f"{path}: not an exported hair_classes graph (metadata lacks {sorted(missing)})")
    config = json.loads(meta["model_config"])
    model = hair_patch_net(config)
    weights = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    filled: set[str] = set()
    for node in graph.graph.node:
        # "_1" scopes are a module's second call (the mirrored view): the same weights.
        found = re.fullmatch(r"/(?:(near|wide)/)?(?:features/features\.(\d+)/Conv|head/Gemm)", node.name)
        if found is None:
            continue
        member = f"{found[1]}." if found[1] else ""
        w, b = (torch.from_numpy(weights[i].copy()) for i in node.input[1:3])
        if found[2] is None:
            state[f"{member}head.weight"], state[f"{member}head.bias"] = w, b
            filled |= {f"{member}head.weight", f"{member}head.bias"}
            continue
        prefix, bn = f"{member}features.{found[2]}", f"{member}features.{int(found[2]) + 1}"
        eps = next(m.eps for n, m in model.named_modules() if n == bn)  # type: ignore[union-attr]
        state[f"{prefix}.weight"] = w
        state[f"{bn}.weight"], state[f"{bn}.bias"] = torch.ones_like(b), b
        state[f"{bn}.running_mean"], state[f"{bn}.running_var"] = torch.zeros_like(b), torch.full_like(b, 1 - eps)
        filled |= {f"{prefix}.weight", f"{bn}.weight", f"{bn}.bias", f"{bn}.running_mean", f"{bn}.running_var"}
    unfilled = {k for k in state if not k.endswith("num_batches_tracked")} - filled
    if unfilled:
        raise ValueError(f"{path}: the graph has no weights for {sorted(unfilled)[:4]}")
    model.load_state_dict(state)
    threshold = {
        "thin_probability": float(meta["thin_probability"]),
        "thin_share_scale": float(meta.get("thin_share_scale", 1.0)),
        "recovered_from": str(path),
        "recovered_from_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
    }
    ckpt = {
        "model_config": config,
        "train_config": json.loads(meta["train_config"]),
        "step": int(meta.get("step", 0)),
        "threshold": threshold,
    }
    return model.eval(), ckpt  # type: ignore[return-value]
