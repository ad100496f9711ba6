"""Classical baselines on synthetic frames drawn with cv2 (beige scalp, dark hairs)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from scoring.classical import BASELINES, BlackHatOtsu, RidgeFilter, otsu_prob
from scoring.seg_metrics import confusion, dice


def synthetic_frame(seed: int, shape: tuple[int, int] = (240, 320)) -> tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8 BGR frame, HxW bool hair mask): noisy beige skin, 10 dark lines."""
    rng = np.random.default_rng(seed)
    h, w = shape
    frame = np.empty((h, w, 3), np.float32)
    frame[:] = (150, 185, 215)  # beige, BGR
    yy = np.linspace(-12, 12, h, dtype=np.float32)[:, None, None]
    frame += yy  # gentle illumination gradient
    frame += rng.normal(0, 5, frame.shape).astype(np.float32)
    img = np.clip(frame, 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(10):
        p0 = tuple(int(v) for v in rng.integers((0, 0), (w, h)))
        p1 = tuple(int(v) for v in rng.integers((0, 0), (w, h)))
        t = int(rng.integers(1, 5))
        colour = tuple(int(v) for v in rng.integers(30, 70, 3))
        cv2.line(img, p0, p1, colour, t)
        cv2.line(mask, p0, p1, 1, t)
    return img, mask > 0


@pytest.fixture(scope="module")
def frames() -> list[tuple[np.ndarray, np.ndarray]]:
    return [synthetic_frame(s) for s in range(3)]


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_segments_drawn_hair(name: str, frames: list) -> None:
    seg = BASELINES[name]()
    assert seg.name == name
    for img, truth in frames:
        out = seg.segment(img)
        assert out.prob.shape == truth.shape and out.prob.dtype == np.float32
        assert out.centre is None
        assert dice(confusion(out.mask(), truth)) > 0.6


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_blank_skin_gives_little_hair(name: str) -> None:
    rng = np.random.default_rng(1)
    img = np.clip(rng.normal((150, 185, 215), 2, (120, 160, 3)), 0, 255).astype(np.uint8)
    out = BASELINES[name]().segment(img)
    assert out.prob.shape == (120, 160)
    # Otsu alone always splits something; the contrast floor keeps blank skin hairless
    assert out.mask().mean() < 0.01


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((40, 50), np.uint8),
        np.zeros((40, 50, 1), np.uint8),
        np.zeros((40, 50, 3), np.float32),
        np.zeros((40, 50, 4), np.uint8),
    ],
)
def test_rejects_non_bgr_uint8(name: str, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="HxWx3|uint8"):
        BASELINES[name]().segment(bad)


def test_blackhat_mask_is_the_otsu_mask() -> None:
    img, _ = synthetic_frame(5)
    seg = BlackHatOtsu(blur_px=0)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    bh = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, k)
    # bh is already 8-bit; otsu_prob requantises it by 255 / max, so compare on that scale
    q = np.clip(bh.astype(np.float32) * (255.0 / bh.max()), 0, 255).astype(np.uint8)
    level, otsu = cv2.threshold(q, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    np.testing.assert_array_equal(seg.segment(img).mask(), otsu > 0)


def test_light_hair_needs_the_top_hat() -> None:
    img = np.full((120, 160, 3), (90, 110, 140), np.uint8)  # darker skin
    truth = np.zeros((120, 160), np.uint8)
    for y in (30, 60, 90):
        cv2.line(img, (10, y), (150, y + 10), (235, 235, 235), 3)  # white hair
        cv2.line(truth, (10, y), (150, y + 10), 1, 3)
    dark_only = BlackHatOtsu().segment(img).mask()
    both = BlackHatOtsu(light_hair=True).segment(img).mask()
    assert dice(confusion(both, truth > 0)) > 0.8
    assert dice(confusion(dark_only, truth > 0)) < 0.3


def test_otsu_prob_maps_threshold_to_half() -> None:
    r = np.concatenate([np.zeros(50), np.full(50, 10.0)]).reshape(10, 10).astype(np.float32)
    # Two levels quantise to 0 and 255; Otsu splits at level 0, so t = (0 + 1) x 10 / 255 and
    # 0.5 x 10 / t = 127.5 clips to 1. Below a floor of 20, t = 20: 0.5 x 10 / 20 = 0.25.
    p = otsu_prob(r)
    assert p.dtype == np.float32
    assert (p[r == 0] == 0).all() and (p[r == 10] == 1.0).all()
    assert (otsu_prob(r, floor=20.0)[r == 10] == 0.25).all()
    assert (otsu_prob(np.zeros((4, 4), np.float32)) == 0).all()


def test_ridge_returns_full_size_from_downscaled_work() -> None:
    img, truth = synthetic_frame(2, (97, 131))  # odd size survives the round trip
    half = RidgeFilter(work_scale=0.5).segment(img)
    assert half.prob.shape == (97, 131)
    # Filtering at half size and resizing back finds the hair nearly as well as full size.
    full = dice(confusion(RidgeFilter(work_scale=1.0).segment(img).mask(), truth))
    assert dice(confusion(half.mask(), truth)) > 0.75 and full > 0.75
