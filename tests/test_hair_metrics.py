"""Hair count and thickness on strands drawn with known geometry."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.measure.hair_metrics import HeadCount, find_centres, measure, split_strands
from device.measure.strand_measures import clean_mask

SHAPE = (200, 240)


def strand_mask(shape: tuple[int, int], poly: list, d: float) -> np.ndarray:
    """HxW bool: pixels whose centre lies within d/2 of the polyline ``poly`` ((x, y) pts).

    Unlike cv2.line (whose thickness t paints t+1 or t+2 px), this has diameter d exactly.
    """
    h, w = shape
    p = np.asarray(poly, float)
    yy, xx = np.mgrid[0:h, 0:w]
    q = np.stack([xx.ravel(), yy.ravel()], 1).astype(float)
    best = np.full(len(q), np.inf)
    for a, b in zip(p[:-1], p[1:], strict=True):
        ab = b - a
        t = np.clip(((q - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
        best = np.minimum(best, np.hypot(*(q - (a + t[:, None] * ab)).T))
    return (best <= d / 2).reshape(h, w)


def segment(centre: tuple[float, float], angle_deg: float, length: float) -> list:
    a = math.radians(angle_deg)
    v = np.array([math.cos(a), math.sin(a)]) * length / 2
    c = np.asarray(centre, float)
    return [c - v, c + v]


# ---------------------------------------------------------------- single strands


@pytest.mark.parametrize("d", range(2, 13))
@pytest.mark.parametrize("angle", [0.0, 17.0, 45.0, 101.0])
def test_one_line_counts_one_and_measures_its_diameter(d: int, angle: float) -> None:
    m = strand_mask(SHAPE, segment((120.3, 100.6), angle, 140), d)
    strands = split_strands(m)
    assert len(strands) == 1
    assert strands[0].thickness_px == pytest.approx(d, abs=1.0)
    # the skeleton spans the line between its round caps
    assert 140 - d - 4 <= strands[0].length_px <= 140 + 8


def test_thickness_is_unbiased_over_angles() -> None:
    errors = []
    for d in (3, 4, 6, 7):
        for angle in range(0, 180, 15):
            m = strand_mask(SHAPE, segment((120.2, 100.7), angle, 120), d)
            (s,) = split_strands(m)
            errors.append(s.thickness_px - d)
    assert abs(float(np.mean(errors))) < 0.3


def test_one_pixel_wide_strand() -> None:
    m = np.zeros(SHAPE, np.uint8)
    cv2.line(m, (10, 20), (200, 150), 1, 1)
    (s,) = split_strands(m > 0)
    assert s.thickness_px == pytest.approx(1.0, abs=0.5)
    assert s.length_px == pytest.approx(math.hypot(190, 130), rel=0.1)


def test_points_are_ordered_along_a_curve() -> None:
    t = np.linspace(0, 1, 60)
    curve = np.stack([20 + 200 * t, 100 + 60 * np.sin(3 * t)], 1)
    (s,) = split_strands(strand_mask(SHAPE, curve, 4))
    assert s.points.dtype == np.int32 and s.points.shape[1] == 2
    steps = np.abs(np.diff(s.points, axis=0)).max(axis=1)
    assert steps.max() == 1  # consecutive 8-neighbours: one walk, not a pixel soup
    assert len(np.unique(s.points, axis=0)) == len(s.points)
    assert s.length_px == pytest.approx(float(np.hypot(*np.diff(curve, axis=0).T).sum()), rel=0.1)


def test_isolated_loop_counts_one() -> None:
    m = np.zeros(SHAPE, np.uint8)
    cv2.circle(m, (120, 100), 60, 1, 3)
    (s,) = split_strands(m > 0)
    assert s.length_px == pytest.approx(2 * math.pi * 60, rel=0.1)


# ---------------------------------------------------------------- touching strands


@pytest.mark.parametrize("d", [1, 3, 6])
@pytest.mark.parametrize("crossing", [90, 45, 25])
def test_x_crossing_counts_two(d: int, crossing: float) -> None:
    m = strand_mask(SHAPE, segment((120, 100), 10, 160), d)
    m |= strand_mask(SHAPE, segment((120, 100), 10 + crossing, 160), d)
    strands = split_strands(m)
    assert len(strands) == 2
    assert all(s.length_px > 130 for s in strands)  # each runs through the crossing


def test_three_parallel_lines_count_three() -> None:
    m = np.zeros(SHAPE, bool)
    for k in range(3):
        m |= strand_mask(SHAPE, segment((120, 50 + 50 * k), 3, 180), 4)
    assert len(split_strands(m)) == 3


@pytest.mark.parametrize("d", [2, 4, 7])
def test_short_spur_does_not_count(d: int) -> None:
    m = strand_mask(SHAPE, segment((120, 100), 0, 160), d)
    m |= strand_mask(SHAPE, [(120, 100), (120, 100 + d / 2 + 5)], max(1.0, 0.6 * d))
    assert len(split_strands(m)) == 1


@pytest.mark.parametrize("d", [2, 5])
def test_y_of_two_strands_sharing_a_base_counts_two(d: int) -> None:
    # one hair runs up the stem into the left arm; a second one touches it at the fork
    m = strand_mask(SHAPE, [(120, 190), (120, 100)], d)
    for side in (1, -1):
        a = math.radians(-90 + side * 20)
        m |= strand_mask(SHAPE, [(120, 100), (120 + 80 * math.cos(a), 100 + 80 * math.sin(a))], d)
    assert len(split_strands(m)) == 2


def test_v_of_two_strands_from_one_point_counts_two() -> None:
    m = np.zeros(SHAPE, bool)
    for side in (1, -1):
        a = math.radians(-90 + side * 25)
        m |= strand_mask(SHAPE, [(120, 180), (120 + 150 * math.cos(a), 180 + 150 * math.sin(a))], 3)
    assert len(split_strands(m)) == 2


def test_min_length_drops_short_strands() -> None:
    m = strand_mask(SHAPE, segment((60, 60), 0, 40), 3)
    assert len(split_strands(m, min_length_px=10)) == 1
    assert split_strands(m, min_length_px=60) == []


@settings(max_examples=25, deadline=None)
@given(
    bars=st.lists(st.tuples(st.integers(25, 200), st.integers(1, 6)), min_size=0, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_separated_horizontal_bars_count_exactly(bars: list, seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = np.zeros((8 * 14, 240), bool)
    for row, (length, height) in enumerate(bars):
        x0 = int(rng.integers(0, 240 - length))
        y0 = row * 14 + 2
        m[y0 : y0 + height, x0 : x0 + length] = True
    strands = split_strands(m)
    assert len(strands) == len(bars)
    got = sorted(s.thickness_px for s in strands)
    want = sorted(h for _, h in bars)
    assert all(abs(a - b) <= 1.0 for a, b in zip(got, want, strict=True))


# ---------------------------------------------------------------- degenerate masks


def test_empty_mask_gives_no_strands_and_a_reason() -> None:
    empty = np.zeros(SHAPE, bool)
    assert split_strands(empty) == []
    hm = measure(empty)
    assert hm.count == 0 and hm.strands == ()
    assert hm.reason == "no hair detected"
    assert hm.mean_thickness_um is None and hm.thin_ratio is None
    assert hm.density_per_cm2 == 0.0 and hm.hair_fraction == 0.0


def test_all_hair_mask_is_handled() -> None:
    hm = measure(np.ones(SHAPE, bool))
    assert hm.hair_fraction == 1.0
    assert hm.reason is not None and "all hair" in hm.reason
    assert hm.count <= 5


def test_specks_are_not_hair() -> None:
    m = np.zeros(SHAPE, bool)
    m[10:12, 10:12] = True  # 4 px speck
    assert split_strands(m) == []
    assert measure(m).reason == "no strand long enough"


def _clean_reference(mask: np.ndarray, min_object_px: int, max_hole_px: int) -> np.ndarray:
    """clean_mask's rule written with scipy.ndimage: 8-connected objects under min_object_px
    dropped, then 4-connected background holes of at most max_hole_px that do not touch the
    frame's edge filled."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    out = mask & (sizes[lab] >= min_object_px)
    holes, n_holes = ndimage.label(~out)  # 4-connected
    if max_hole_px > 0 and out.any():
        area = np.bincount(holes.ravel(), minlength=n_holes + 1)
        edge = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
        small = area <= max_hole_px
        small[0] = False
        small[edge] = False
        out |= small[holes]
    return out


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    density=st.floats(0.02, 0.95),
    min_object_px=st.integers(1, 12),
    max_hole_px=st.integers(0, 12),
)
def test_clean_mask_drops_specks_and_fills_pinholes(
    seed: int, density: float, min_object_px: int, max_hole_px: int
) -> None:
    # random masks from sparse specks to nearly solid: few specks and holes (one box at a time)
    # and many (one pass over the frame) must both follow the rule
    rng = np.random.default_rng(seed)
    mask = rng.random((40, 56)) < density
    got = clean_mask(mask, min_object_px, max_hole_px)
    np.testing.assert_array_equal(got, _clean_reference(mask, min_object_px, max_hole_px))
    assert mask.dtype == bool and not np.shares_memory(got, mask)  # the input is left alone


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        measure(np.zeros((4, 4, 3), bool))
    with pytest.raises(ValueError):
        measure(np.zeros((4, 4), bool), um_per_px=0)
    with pytest.raises(ValueError):
        find_centres(np.zeros((4, 4, 1), np.float32))


# ---------------------------------------------------------------- metrics


def test_micrometres_thin_ratio_and_density() -> None:
    m = strand_mask(SHAPE, segment((120, 50), 5, 180), 3)
    m |= strand_mask(SHAPE, segment((120, 150), -5, 180), 9)
    hm = measure(m, um_per_px=5.0, thin_um=30.0)
    assert hm.count == 2 and hm.count_source == "skeleton"
    assert sorted(hm.thickness_um) == [pytest.approx(15, abs=5), pytest.approx(45, abs=5)]
    assert hm.thin_ratio == 0.5
    assert hm.mean_thickness_um == pytest.approx(np.mean(hm.thickness_um))
    assert hm.median_thickness_um == pytest.approx(np.median(hm.thickness_um))
    area_cm2 = (200 * 5e-4) * (240 * 5e-4)
    assert hm.area_cm2 == pytest.approx(area_cm2)
    assert hm.density_per_cm2 == pytest.approx(2 / area_cm2)
    assert hm.hair_fraction == pytest.approx(m.mean())
    # the same mask at a coarser calibration: thicker in micrometres, lower density
    hm2 = measure(m, um_per_px=10.0, thin_um=30.0)
    assert hm2.thin_ratio == 0.0
    assert hm2.density_per_cm2 == pytest.approx(hm.density_per_cm2 / 4)


def test_a_head_count_sets_the_count_but_not_the_thickness() -> None:
    # One drawn strand; a model's instance output said three hairs (e.g. three centre peaks).
    m = strand_mask(SHAPE, segment((120, 100), 0, 180), 4)
    hm = measure(m, um_per_px=5.0, count=HeadCount(3, "centres"))
    assert hm.count == 3 and hm.count_source == "centres" and hm.visible_count is None
    assert len(hm.strands) == 1
    assert hm.thickness_um[0] / hm.um_per_px == pytest.approx(4, abs=1.01)  # px
    assert hm.density_per_cm2 == pytest.approx(3 / hm.area_cm2)  # density follows the head's count
    ends = measure(m, count=HeadCount(2, "ends", visible=3))
    assert (ends.count, ends.visible_count, ends.to_dict()["visible_count"]) == (2, 3, 3)
    reasons = {s: measure(m, count=HeadCount(0, s)).reason for s in ("ends", "centrelines", "centres")}
    assert reasons == {
        "ends": "no hair ends found",
        "centrelines": "no hair centre lines found",
        "centres": "no hair centres found",
    }


def test_head_counts_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown count source 'peaks'"):
        HeadCount(1, "peaks")
    with pytest.raises(ValueError, match=">= 0"):
        HeadCount(-1, "ends")


def test_to_dict_is_json_ready_with_units() -> None:
    m = strand_mask(SHAPE, segment((120, 100), 30, 150), 4)
    d = measure(m).to_dict()
    json.dumps(d)
    for key in (
        "count",
        "mean_thickness_um",
        "median_thickness_um",
        "thin_ratio",
        "density_per_cm2",
        "area_cm2",
        "um_per_px",
        "count_source",
        "reason",
    ):
        assert key in d
    assert d["count"] == 1
    assert set(d["strands"][0]) >= {"length_px", "thickness_um", "start_xy_px", "end_xy_px"}
    assert "points" not in d["strands"][0]


# ---------------------------------------------------------------- centres


def test_find_centres_on_three_gaussians() -> None:
    h, w = 120, 160
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    peaks = [(30.0, 40.0, 1.0), (100.0, 30.0, 0.8), (120.0, 90.0, 0.6)]  # x, y, amplitude
    heat = np.zeros((h, w), np.float32)
    for x, y, a in peaks:
        heat = np.maximum(heat, a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2)))
    heat += np.random.default_rng(0).uniform(0, 0.05, heat.shape).astype(np.float32)
    c = find_centres(heat, threshold=0.3, min_distance_px=4)
    assert c.dtype == np.float32 and c.shape == (3, 2)
    # strongest first, each within a pixel of its true centre
    for got, (x, y, _) in zip(c, peaks, strict=True):
        assert got == pytest.approx((x, y), abs=1.0)


def test_find_centres_threshold_and_suppression() -> None:
    heat = np.zeros((50, 50), np.float32)
    heat[10, 10] = 0.9
    heat[10, 12] = 0.8  # closer than min_distance: suppressed
    heat[40, 40] = 0.2  # below threshold
    heat[30, 5:8] = 0.7  # plateau: one peak at its centre
    c = find_centres(heat, threshold=0.3, min_distance_px=4)
    assert c.tolist() == [[10.0, 10.0], [6.0, 30.0]]
    assert find_centres(np.zeros((20, 20), np.float32)).shape == (0, 2)
