"""The measuring step: geometry normalisation, unit scaling, centre filtering, quality gate,
and the count strategy a segmenter chose from its outputs."""

import cv2
import numpy as np
import pytest

from device.app.analysis import analyse_frame, analyse_segmentation, centres_on_hair, head_count
from device.contracts.constants import SEG_OUT_CENTRE, SEG_OUT_ENDS, SEG_OUT_LINES, SEG_OUT_MASK
from device.models.segmentation import CountStrategy, SegOutput
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
    overlay = large.overlay()  # the frame, with its label bar below it
    assert overlay.shape[1] == 640 and overlay.shape[0] > 480 and np.array_equal(overlay[:480].shape, (480, 640, 3))


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


class _FixedSegmenter:
    """A segmenter returning fixed maps (the counting logic under test is downstream); its count
    strategy is chosen from the outputs it has, as a model's is when it loads."""

    name = "fixed"

    def __init__(
        self, prob: np.ndarray, lines: np.ndarray | None, hairs: float | None = None, visible: float | None = None
    ) -> None:
        self.prob, self.lines, self.hairs, self.visible = prob, lines, hairs, visible
        outputs = [SEG_OUT_MASK] + ([SEG_OUT_LINES] if lines is not None else [])
        self.count_strategy = CountStrategy.for_outputs(outputs + ([SEG_OUT_ENDS] if hairs is not None else []))

    def segment(self, frame_bgr: np.ndarray) -> SegOutput:
        return SegOutput(self.prob, None, self.lines, self.hairs, self.visible, self.count_strategy)


def _two_stubs(lines_of_both: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two touching stubs: one blob in the HxW hair probabilities, each with its own centre line
    in the centre-line map (only the first with lines_of_both=False); and a usable frame."""
    prob = np.zeros((480, 640), np.float32)
    prob[100:120, 100:300] = 1.0
    lines = np.zeros_like(prob)
    lines[104:107, 105:295] = 1.0
    if lines_of_both:
        lines[113:116, 105:295] = 1.0
    return prob, lines, np.random.default_rng(0).integers(60, 200, (480, 640, 3), dtype=np.uint8)


def test_count_comes_from_centre_line_strands() -> None:
    # Two touching stubs form one blob in the mask, but their centre lines are separate.
    prob, lines, frame = _two_stubs()
    result = analyse_frame(_FixedSegmenter(prob, lines), frame)
    assert result.metrics.count == 2 and result.metrics.count_source == "centrelines"
    assert len(result.metrics.strands) == 1  # the mask's skeleton sees one blob


def test_count_comes_from_the_end_density_when_the_model_has_one() -> None:
    # The end head's estimate wins over centre lines; thickness still comes from the mask.
    prob, lines, frame = _two_stubs(lines_of_both=False)
    result = analyse_frame(_FixedSegmenter(prob, lines, hairs=2.6, visible=4.4), frame)
    assert result.metrics.count == 3 and result.metrics.count_source == "ends"
    assert result.metrics.visible_count == 4 and result.metrics.to_dict()["visible_count"] == 4
    assert len(result.metrics.strands) == 1 and result.metrics.median_thickness_um is not None
    none = analyse_frame(_FixedSegmenter(prob, None, hairs=0.2), frame)
    assert none.metrics.count == 0 and none.metrics.reason == "no hair ends found"


def test_count_strategy_follows_the_outputs_by_precedence() -> None:
    # end density > centre lines > centre heatmap > the mask's skeleton
    assert CountStrategy.for_outputs([SEG_OUT_MASK, SEG_OUT_CENTRE, SEG_OUT_LINES, SEG_OUT_ENDS]) is CountStrategy.ENDS
    assert CountStrategy.for_outputs([SEG_OUT_MASK, SEG_OUT_CENTRE, SEG_OUT_LINES]) is CountStrategy.CENTRELINES
    assert CountStrategy.for_outputs((SEG_OUT_MASK, SEG_OUT_CENTRE)) is CountStrategy.CENTRES
    assert CountStrategy.for_outputs((SEG_OUT_MASK,)) is CountStrategy.SKELETON


def test_a_segmentation_must_have_the_output_its_strategy_counts() -> None:
    prob = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="'ends' needs the 'hairs' output"):
        SegOutput(prob, count_strategy=CountStrategy.ENDS)
    with pytest.raises(ValueError, match="'centres' needs the 'centre' output"):
        SegOutput(prob, lines=prob, count_strategy=CountStrategy.CENTRES)


def test_the_strategy_not_the_outputs_present_decides_the_count() -> None:
    # A segmentation carrying both centre lines and a centre heatmap counts by its strategy:
    # two separate centre lines, but one centre peak on the hair.
    prob, lines, frame = _two_stubs()
    centre = np.zeros_like(prob)
    centre[110, 200] = 1.0
    centre[300, 50] = 1.0  # off the hair: not a hair centre
    counts = {}
    for strategy in (CountStrategy.CENTRELINES, CountStrategy.CENTRES, CountStrategy.SKELETON):
        seg = SegOutput(prob, centre, lines, count_strategy=strategy)
        metrics = analyse_segmentation(frame, seg, um_per_px=2.0).metrics
        counts[strategy.value] = (metrics.count, metrics.count_source)
    assert counts == {"centrelines": (2, "centrelines"), "centres": (1, "centres"), "skeleton": (1, "skeleton")}
    assert head_count(SegOutput(prob, centre, lines), prob >= 0.5) is None  # the skeleton is measure's to count
