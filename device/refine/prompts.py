"""Automatic point prompts for the refiner, from a coarse hair mask (ScalpVision's Algorithm 1).

Positive points sit on hair *well inside* the coarse mask M^ (distance-transform maxima along
its skeleton, away from skeleton junctions where strands cross) and are spread out along every
strand; negative points sit on scalp *far from any hair* and are spread by farthest-point
sampling. Points are packed into prompt groups of a fixed size K, padded with SAM's "not a
point" label -1, so one static decoder graph (K points per group) serves any frame.

Pure numpy/OpenCV and deterministic: the same mask always gives the same prompts. Degenerate
masks give a defined result, never an exception: an empty mask gives zero groups; a mask
without scalp gives groups without negatives; fewer points than K are padded with -1.

Coordinates: integer (x, y) pixel indices of the mask as float32; the prompt encoder adds 0.5
(the pixel centre), as SAM's does.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.morphology import skeletonize

from device.contracts.constants import PROMPT_GROUP_SIZE, PROMPT_NEGATIVES

__all__ = ["PromptGroups", "PromptConfig", "auto_prompts", "random_prompts", "group_points", "PROMPT_KINDS"]

PROMPT_KINDS = ("auto", "random")
_NEIGHBOURS = np.ones((3, 3), np.float32)


@dataclass(frozen=True)
class PromptConfig:
    """Knobs of the automatic prompts (pixels at the mask's resolution, 640x480 by default)."""

    group_size: int = PROMPT_GROUP_SIZE  # K points per group
    negatives: int = PROMPT_NEGATIVES  # negative points in every group (the rest are positives)
    spacing_px: float = 80.0  # one more positive per this many pixels of a long skeleton branch
    min_component_px: int = 12  # coarse-mask components smaller than this get no point (specks)
    junction_radius_px: int = 4  # positives keep this far from skeleton junctions (crossings)
    min_branch_px: int = 6  # shorter branches (between crossings) get no point of their own
    min_scalp_px: float = 12.0  # negatives keep at least this far from any hair pixel
    max_groups: int = 8  # at most this many groups a frame


@dataclass(frozen=True)
class PromptGroups:
    """Prompt groups of one frame.

    points: GxKx2 float32 (x, y) pixel indices; labels: GxK float32, 1 = hair,
    0 = scalp, -1 = not a point (padding; its coordinates are 0). positives, negatives: Px2 and
    Nx2 float32, every chosen point once (for plots and tests). G may be 0 (nothing to refine).
    """

    points: np.ndarray
    labels: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray

    @property
    def count(self) -> int:
        """Number of groups G."""
        return int(self.points.shape[0])


def group_points(positives: np.ndarray, negatives: np.ndarray, config: PromptConfig) -> PromptGroups:
    """Pack Px2 positives and Nx2 negatives into groups of ``config.group_size`` points: every
    group holds up to K - negatives positives (in the given order) and the same first
    ``config.negatives`` negatives; empty slots are label -1 at (0, 0). No positives: G = 0."""
    k = int(config.group_size)
    n_neg = max(0, min(int(config.negatives), k - 1, len(negatives)))
    per = k - n_neg
    pos = np.asarray(positives, np.float32).reshape(-1, 2)
    neg = np.asarray(negatives, np.float32).reshape(-1, 2)[:n_neg]
    n_groups = min(int(np.ceil(len(pos) / per)), int(config.max_groups)) if len(pos) else 0
    pos = pos[: n_groups * per]
    points = np.zeros((n_groups, k, 2), np.float32)
    labels = np.full((n_groups, k), -1.0, np.float32)
    for g in range(n_groups):
        chunk = pos[g * per : (g + 1) * per]
        points[g, : len(chunk)] = chunk
        labels[g, : len(chunk)] = 1.0
        points[g, per : per + n_neg] = neg
        labels[g, per : per + n_neg] = 0.0
    return PromptGroups(points, labels, pos, neg)


def _components(mask: np.ndarray, min_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(HxW bool hair, HxW int32 8-connected labels, per-label bool: big enough to prompt)."""
    hair = np.asarray(mask) != 0
    _, lab, stats, _ = cv2.connectedComponentsWithStats(hair.view(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_px
    keep[0] = False
    return hair, lab, keep


def _best_per_label(label: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Index of the best-scoring element of each label value (ties: lowest index)."""
    order = np.lexsort((np.arange(len(score)), -score, label))
    _, first = np.unique(label[order], return_index=True)
    return order[first]


def _positive_points(
    hair: np.ndarray, lab: np.ndarray, keep: np.ndarray, config: PromptConfig, limit: int
) -> np.ndarray:
    """One point per skeleton branch (the skeleton cut at junctions, so every strand between
    crossings is prompted), at the branch's deepest pixel; long branches get one more point
    per ``spacing_px`` of length (farthest-point sampling along the branch); components with
    no branch get their deepest skeleton pixel. Best (deepest) first, at most ``limit``."""
    if not keep.any():
        return np.zeros((0, 2), np.float32)
    dist = cv2.distanceTransform(hair.view(np.uint8), cv2.DIST_L2, 5)
    skel = skeletonize(hair) & keep[lab]
    neigh = cv2.filter2D(skel.view(np.uint8), cv2.CV_16S, _NEIGHBOURS.astype(np.int16), borderType=cv2.BORDER_CONSTANT)
    junction = skel & (neigh >= 4)  # itself + 3 or more skeleton neighbours
    r = int(config.junction_radius_px)
    near_junction = cv2.dilate(junction.view(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
    n_br, br_lab, br_stats, _ = cv2.connectedComponentsWithStats((skel & ~near_junction).view(np.uint8), connectivity=8)
    ys, xs = np.nonzero(skel)
    score = dist[ys, xs] - 100.0 * near_junction[ys, xs]  # deep inside first, crossings last
    branch = br_lab[ys, xs]
    big = br_stats[:, cv2.CC_STAT_AREA] >= config.min_branch_px
    big[0] = False
    on_branch = big[branch]
    chosen = _best_per_label(branch[on_branch], score[on_branch])
    chosen = np.nonzero(on_branch)[0][chosen]
    # Components whose skeleton has no branch (short blobs, all near crossings): one point each.
    comp = lab[ys, xs]
    covered = np.zeros(len(keep), bool)
    covered[comp[chosen]] = True
    rest = ~covered[comp]
    if rest.any():
        chosen = np.concatenate([chosen, np.nonzero(rest)[0][_best_per_label(comp[rest], score[rest])]])
    extra: list[int] = []
    for b in np.nonzero(big & (br_stats[:, cv2.CC_STAT_AREA] > config.spacing_px))[0].tolist():
        idx = np.nonzero(branch == b)[0]
        n_more = int(len(idx) // config.spacing_px)
        pts = np.stack([xs[idx], ys[idx]], 1).astype(np.float32)
        start = int(np.argmax(score[idx]))
        d2 = np.sum((pts - pts[start]) ** 2, axis=1)
        for _ in range(n_more):
            j = int(np.argmax(d2))
            if d2[j] < config.spacing_px**2 / 4:
                break
            extra.append(int(idx[j]))
            d2 = np.minimum(d2, np.sum((pts - pts[j]) ** 2, axis=1))
    chosen = np.concatenate([chosen, np.asarray(extra, np.int64)]).astype(np.int64)
    chosen = chosen[np.lexsort((chosen, -score[chosen]))][:limit]
    return np.stack([xs[chosen], ys[chosen]], 1).astype(np.float32)


def _negative_points(hair: np.ndarray, config: PromptConfig) -> np.ndarray:
    if config.negatives <= 0:
        return np.zeros((0, 2), np.float32)
    far = cv2.distanceTransform((~hair).astype(np.uint8), cv2.DIST_L2, 5)
    step = 8
    grid = far[step // 2 :: step, step // 2 :: step]
    ys, xs = np.nonzero(grid >= config.min_scalp_px)
    if len(ys) == 0:
        return np.zeros((0, 2), np.float32)
    cands = np.stack([xs * step + step // 2, ys * step + step // 2], 1).astype(np.float32)
    # Farthest-point sampling seeded at the scalp point farthest from hair.
    first = int(np.lexsort((np.arange(len(ys)), -grid[ys, xs]))[0])
    chosen = [first]
    d2 = np.sum((cands - cands[first]) ** 2, axis=1)
    while len(chosen) < min(config.negatives, len(cands)):
        nxt = int(np.argmax(d2))
        if d2[nxt] <= 0:
            break
        chosen.append(nxt)
        d2 = np.minimum(d2, np.sum((cands - cands[nxt]) ** 2, axis=1))
    return cands[chosen]


def auto_prompts(mask: np.ndarray, config: PromptConfig | None = None) -> PromptGroups:
    """Automatic prompts from an HxW coarse hair mask (bool, or nonzero = hair); see the module
    docstring. At most ``max_groups * (K - negatives)`` positives are kept (best first)."""
    config = config or PromptConfig()
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"mask must be a non-empty HxW array, got shape {m.shape}")
    hair, lab, keep = _components(m, config.min_component_px)
    negatives = _negative_points(hair, config)
    n_neg = min(config.negatives, config.group_size - 1, len(negatives))
    limit = config.max_groups * (config.group_size - n_neg)
    positives = _positive_points(hair, lab, keep, config, limit)
    return group_points(positives, negatives, config)


def random_prompts(mask: np.ndarray, seed: int = 0, config: PromptConfig | None = None) -> PromptGroups:
    """The baseline the paper rejected: as many positives as ``auto_prompts`` would choose,
    drawn uniformly from the mask's pixels (edges included, clustered at random), and
    negatives drawn uniformly from the rest of the frame. Deterministic for a given seed."""
    config = config or PromptConfig()
    auto = auto_prompts(mask, config)
    hair = np.asarray(mask) != 0
    rng = np.random.default_rng(seed)

    def draw(region: np.ndarray, n: int) -> np.ndarray:
        ys, xs = np.nonzero(region)
        if n <= 0 or len(ys) == 0:
            return np.zeros((0, 2), np.float32)
        pick = rng.choice(len(ys), size=min(n, len(ys)), replace=False)
        return np.stack([xs[pick], ys[pick]], 1).astype(np.float32)

    n_neg = len(auto.negatives) or config.negatives
    return group_points(draw(hair, len(auto.positives)), draw(~hair, n_neg), config)
