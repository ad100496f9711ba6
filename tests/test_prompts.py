"""Automatic and random prompts: placement rules, fixed-size groups, degenerate masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.refine.prompts import PromptConfig, auto_prompts, group_points, random_prompts


def _three_strands() -> tuple[np.ndarray, np.ndarray]:
    """HxW bool mask of two crossing strands and one apart; HxW int32 strand ids."""
    inst = np.zeros((480, 640), np.int32)
    cv2.line(inst, (40, 60), (600, 420), 1, 5)
    cv2.line(inst, (40, 420), (600, 60), 2, 5)
    cv2.line(inst, (60, 30), (600, 30), 3, 3)
    return inst > 0, inst


def test_auto_prompts_hit_every_strand_inside_and_away_from_crossings() -> None:
    mask, inst = _three_strands()
    cfg = PromptConfig(group_size=16, negatives=4)
    g = auto_prompts(mask, cfg)
    assert g.points.shape == (g.count, 16, 2) and g.labels.shape == (g.count, 16)
    pos = g.positives.astype(int)
    hit = {int(inst[y, x]) for x, y in pos}
    assert hit == {1, 2, 3}  # one point per strand at least, all on hair
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    assert dist[pos[:, 1], pos[:, 0]].min() >= 1.0
    crossing = np.array([320, 240])
    assert np.min(np.linalg.norm(pos - crossing, axis=1)) > cfg.junction_radius_px
    # Long strands get more than one point, spread along them.
    assert sum(int(inst[y, x]) == 1 for x, y in pos) >= 3
    far = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    neg = g.negatives.astype(int)
    assert len(neg) == 4 and far[neg[:, 1], neg[:, 0]].min() >= cfg.min_scalp_px
    gaps = np.linalg.norm(neg[:, None] - neg[None], axis=-1)[np.triu_indices(4, 1)]
    assert gaps.min() > 100  # farthest-point sampling spreads them
    again = auto_prompts(mask, cfg)
    np.testing.assert_array_equal(again.points, g.points)
    np.testing.assert_array_equal(again.labels, g.labels)


def test_groups_are_padded_with_not_a_point() -> None:
    mask, _ = _three_strands()
    g = auto_prompts(mask, PromptConfig(group_size=64, negatives=4))
    assert g.count == 1
    n_pos = len(g.positives)
    labels = g.labels[0]
    assert (labels[:n_pos] == 1).all() and (labels[60:] == 0).all()
    assert (labels[n_pos:60] == -1).all() and (g.points[0, n_pos:60] == 0).all()


def test_degenerate_masks_give_defined_results() -> None:
    empty = auto_prompts(np.zeros((480, 640), bool))
    assert empty.count == 0 and empty.points.shape == (0, PromptConfig().group_size, 2)
    full = auto_prompts(np.ones((480, 640), bool))
    assert full.count == 1 and len(full.negatives) == 0 and not (full.labels == 0).any()
    assert (full.labels == 1).sum() >= 1
    specks = np.zeros((480, 640), bool)
    specks[10:12, 10:12] = True  # smaller than min_component_px: nothing to prompt
    assert auto_prompts(specks).count == 0
    # K smaller than the negatives asked for: at least one slot stays for positives.
    mask, _ = _three_strands()
    tiny = auto_prompts(mask, PromptConfig(group_size=2, negatives=4))
    assert tiny.points.shape[1:] == (2, 2) and (tiny.labels[:, 0] == 1).all() and (tiny.labels[:, 1] == 0).all()
    with pytest.raises(ValueError):
        auto_prompts(np.zeros((4,), bool))


def test_group_points_caps_groups() -> None:
    pos = np.arange(40, dtype=np.float32).reshape(20, 2)
    g = group_points(pos, np.zeros((1, 2), np.float32), PromptConfig(group_size=5, negatives=1, max_groups=3))
    assert g.count == 3 and len(g.positives) == 12
    assert (g.labels[:, 4] == 0).all() and (g.labels[:, :4] == 1).all()


def test_random_prompts_baseline() -> None:
    mask, _ = _three_strands()
    cfg = PromptConfig(group_size=16)
    auto = auto_prompts(mask, cfg)
    a, b, c = random_prompts(mask, 0, cfg), random_prompts(mask, 0, cfg), random_prompts(mask, 1, cfg)
    assert len(a.positives) == len(auto.positives)
    np.testing.assert_array_equal(a.points, b.points)
    assert not np.array_equal(a.points, c.points)
    p = a.positives.astype(int)
    assert mask[p[:, 1], p[:, 0]].all()
    n = a.negatives.astype(int)
    assert not mask[n[:, 1], n[:, 0]].any()
    assert random_prompts(np.zeros((480, 640), bool)).count == 0
