"""The measuring step: geometry normalisation, unit scaling, centre filtering, quality gate."""

import cv2
import numpy as np
import pytest

from device.app.analysis import analyse_frame, centres_on_hair
from scoring.classical import BlackHatOtsu
from server_train.synth import render


def test_frames_are_measured_in_camera_geometry_with_scaled_units() -> None:
    frame = render(2).image
    big = cv2.resize(frame, (1280, 960), interpolation=cv2.INTER_LINEAR)
    seg = BlackHatOtsu()
    small = analyse_frame(seg, frame, um_per_px=2.0)
    large = analyse_frame(seg, big, um_per_px=1.0)
    assert large.frame.shape == (480, 640, 3)
    assert large.metrics.um_per_px == pytest.approx(2.0)
    assert small.metrics.um_per_px == pytest.approx(2.0)
    assert large.overlay().shape == (480, 640, 3)


def test_rejected_frame_counts_zero_with_reason() -> None:
    result = analyse_frame(BlackHatOtsu(), np.zeros((480, 640, 3), np.uint8))
    assert result.seg is None and result.metrics.count == 0
    assert "underexposed" in result.problem and result.metrics.reason == result.problem


def test_centres_off_the_hair_are_dropped() -> None:
    mask = np.zeros((50, 50), bool)
    mask[20:23, 5:45] = True
    centres = np.array([[25.0, 21.0], [25.0, 24.0], [25.0, 40.0]], np.float32)
    kept = centres_on_hair(centres, mask, radius_px=2)
    assert kept.tolist() == [[25.0, 21.0], [25.0, 24.0]]
    assert centres_on_hair(np.zeros((0, 2), np.float32), mask).shape == (0, 2)


class _LineSegmenter:
    """A segmenter returning fixed maps (the counting logic under test is downstream)."""

    name = "fixed"

    def __init__(
        self, prob: np.ndarray, lines: np.ndarray | None, hairs: float | None = None, visible: float | None = None
    ) -> None:
        self.prob, self.lines, self.hairs, self.visible = prob, lines, hairs, visible

    def segment(self, frame_bgr: np.ndarray):
        from device.models.segmentation import SegOutput

        return SegOutput(prob=self.prob, lines=self.lines, hairs=self.hairs, hairs_visible=self.visible)


def test_count_comes_from_centre_line_strands() -> None:
    # Two touching stubs form one blob in the mask, but their centre lines are separate.
    prob = np.zeros((480, 640), np.float32)
    prob[100:120, 100:300] = 1.0
    lines = np.zeros_like(prob)
    lines[104:107, 105:295] = 1.0
    lines[113:116, 105:295] = 1.0
    frame = np.random.default_rng(0).integers(60, 200, (480, 640, 3), dtype=np.uint8)
    result = analyse_frame(_LineSegmenter(prob, lines), frame)
    assert result.metrics.count == 2 and result.metrics.count_source == "centrelines"
    assert len(result.metrics.strands) == 1  # the mask's skeleton sees one blob


def test_count_comes_from_the_end_density_when_the_model_has_one() -> None:
    # The end head's estimate wins over centre lines; thickness still comes from the mask.
    prob = np.zeros((480, 640), np.float32)
    prob[100:120, 100:300] = 1.0
    lines = np.zeros_like(prob)
    lines[104:107, 105:295] = 1.0
    frame = np.random.default_rng(0).integers(60, 200, (480, 640, 3), dtype=np.uint8)
    result = analyse_frame(_LineSegmenter(prob, lines, hairs=2.6, visible=4.4), frame)
    assert result.metrics.count == 3 and result.metrics.count_source == "ends"
    assert result.metrics.visible_count == 4 and result.metrics.to_dict()["visible_count"] == 4
    assert len(result.metrics.strands) == 1 and result.metrics.median_thickness_um is not None
    none = analyse_frame(_LineSegmenter(prob, None, hairs=0.2), frame)
    assert none.metrics.count == 0 and none.metrics.reason == "no hair ends found"
