"""ScanPipeline on the shipped bundle with ONNX Runtime: one segmentation per frame, shared by the
live view and a diagnosis; the count strategy chosen once, when the model loads; the mapping of a
diagnosis to result-record fields; and the TensorRT -> ONNX Runtime fallback of the classifiers."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import device.assets
from device.app.analysis import analyse_frame
from device.app.model_loading import open_model, open_optional
from device.app.pipeline import ScanPipeline
from device.capture.imageio import read_frame
from device.contracts.constants import LEVEL_NAMES
from device.contracts.records import RecordFactory, validate_record
from device.models.backends import OrtBackend
from device.models.bundle import Bundle
from device.models.segmentation import CountStrategy, Segmenter, SegOutput

CLIP = sorted((Path(device.assets.__file__).parent / "samples" / "clip").glob("*.jpg"))


class CountingSegmenter:
    """A Segmenter that counts the frames it is given and segments them with a real one."""

    def __init__(self, inner: Segmenter) -> None:
        self.inner, self.name, self.calls = inner, inner.name, 0

    def segment(self, frame_bgr: np.ndarray) -> SegOutput:
        self.calls += 1
        return self.inner.segment(frame_bgr)


@functools.cache
def shipped_bundle() -> Bundle:
    return Bundle.open(device.assets.default_bundle_path())


def counting_pipeline(mask_stage: str = "auto") -> ScanPipeline:
    """The shipped bundle on ONNX Runtime, its segmenter wrapped in a CountingSegmenter."""
    p = ScanPipeline(shipped_bundle(), threads=1, mask_stage=mask_stage)
    p.segmenter = CountingSegmenter(p.segmenter)
    return p


@pytest.fixture
def bundle() -> Bundle:
    return shipped_bundle()


@pytest.fixture
def pipeline() -> ScanPipeline:
    return counting_pipeline()


def _calls(pipeline: ScanPipeline) -> int:
    assert isinstance(pipeline.segmenter, CountingSegmenter)
    return pipeline.segmenter.calls


def test_a_diagnosis_reuses_the_segmentation_the_live_path_made(pipeline: ScanPipeline) -> None:
    frame = read_frame(CLIP[0])
    assert pipeline.mask_stage == "fused"  # the default: prompts and fusion start from that segmentation
    fused = pipeline.diagnose(pipeline.live(frame))
    assert _calls(pipeline) == 1 and fused.mask_stage == "fused"
    pipeline = counting_pipeline(mask_stage="coarse")  # measured on the student's own mask
    live = pipeline.live(frame)
    assert _calls(pipeline) == 1 and live.seg is not None and live.problem is None
    diagnosis = pipeline.diagnose(live)
    assert _calls(pipeline) == 1  # the frame the live path just segmented is not segmented again
    assert diagnosis.accepted and diagnosis.analysis.seg is live.seg and diagnosis.quality is live.quality
    # ... and it measures what a standalone analysis of the frame (segmenting it itself) measures.
    alone = analyse_frame(
        pipeline.segmenter, frame, um_per_px=pipeline.um_per_px(frame.shape[1]), hair_classes=pipeline.hair_classes
    )
    assert _calls(pipeline) == 2
    assert diagnosis.analysis.metrics.to_dict() == alone.metrics.to_dict()


def test_the_count_strategy_is_chosen_once_from_the_models_outputs(pipeline: ScanPipeline) -> None:
    # The shipped segmenter has a hair-density output: hairs are counted from it, by the live path
    # and the diagnosis alike; a frame counted live is not counted again.
    assert pipeline.count_strategy is CountStrategy.DENSITY
    live = pipeline.live(read_frame(CLIP[0]))
    assert live.seg is not None and live.seg.count_strategy is CountStrategy.DENSITY
    assert live.head is not None and (live.head.source, live.head.value) == ("density", live.count)
    metrics = pipeline.diagnose(live).analysis.metrics
    assert (metrics.count_source, metrics.count, metrics.visible_count) == ("density", live.count, None)
    assert metrics.thickness_source == "hairs" and len(metrics.hairs) > 0  # thickness per located hair
    # A frame the live path does not count (count=False) shows the last count; its diagnosis counts it.
    later = pipeline.live(read_frame(CLIP[1]), count=False)
    assert later.head is None and later.count == live.count and "count_ms" not in later.timings_ms
    counted = pipeline.diagnose(later).analysis.metrics
    again = pipeline.live(read_frame(CLIP[1]))
    assert counted.count_source == "density" and counted.count == again.count != live.count


def test_a_rejected_frame_is_not_segmented_and_its_diagnosis_says_why(pipeline: ScanPipeline) -> None:
    live = pipeline.live(np.zeros((480, 640, 3), np.uint8))
    assert live.seg is None and live.count == 0 and live.problem is not None and "underexposed" in live.problem
    diagnosis = pipeline.diagnose(live)
    assert _calls(pipeline) == 0 and not diagnosis.accepted
    assert diagnosis.conditions == {} and diagnosis.alopecia is None  # classifiers skip a rejected frame
    fields = diagnosis.record_fields()
    assert fields["quality"]["accepted"] is False and fields["quality"]["reason"] == live.problem
    assert fields["metrics"]["hair_count"] == {"value": 0, "unit": "count"} and fields["conditions"] == {}


def test_record_fields_map_the_diagnosis(pipeline: ScanPipeline, bundle: Bundle) -> None:
    live = pipeline.live(read_frame(CLIP[3]))
    d = pipeline.diagnose(live)
    f, m = d.record_fields(), d.analysis.metrics
    assert m.visible_count is None  # a hair-density model counts hairs, not visible strands
    assert f["metrics"] == {
        "hair_count": {"value": m.count, "unit": "count"},
        "mean_thickness": {"value": round(m.mean_thickness_um, 2), "unit": "um"},
        "median_thickness": {"value": round(m.median_thickness_um, 2), "unit": "um"},
        "thin_ratio": {"value": round(m.thin_ratio, 4), "unit": "ratio"},
        "density": {"value": round(m.density_per_cm2, 1), "unit": "per_cm2"},
        "um_per_px": {"value": round(m.um_per_px, 5), "unit": "um_per_px"},
    }
    # Conditions: the severity classifier's levels and probabilities (its presence and area share
    # stay out of the record), then the alopecia grade.
    assert list(f["conditions"]) == [*d.conditions, "alopecia"]
    for name, c in d.conditions.items():
        assert f["conditions"][name] == {"level": c["level"], "probabilities": c["probabilities"]}
        assert list(c["probabilities"]) == list(LEVEL_NAMES) and {"presence", "area_share"} <= set(c)
    assert f["conditions"]["alopecia"] == {"level": d.alopecia["level"], "probabilities": d.alopecia["probabilities"]}
    assert f["quality"] == live.quality.to_dict() | {"accepted": True, "reason": None}
    # Timings: ms per stage without the suffix; quality and segment are the live path's, the total
    # covers the stages of the frame loop's thread; the encoder, the located hairs ("hairs") and
    # the classifier may run beside them on the pipeline's worker thread.
    t = f["timings_ms"]
    fused = {"prompts", "refiner_encoder", "refiner_decoder", "pixel_refiner"}
    assert set(t) == {"quality", "segment", *fused, "hairs", "metrics", "classify", "alopecia", "total"}
    assert t["quality"] == round(live.timings_ms["quality_ms"], 2)
    assert t["segment"] == round(live.timings_ms["segment_ms"], 2)
    in_loop = ("quality", "segment", "prompts", "refiner_decoder", "pixel_refiner", "metrics", "alopecia")
    assert t["total"] >= sum(t[k] for k in in_loop) - 0.05
    assert max(t["refiner_encoder"], t["hairs"], t["classify"]) <= t["total"]
    assert f["mask_stage"] == "fused"
    record = RecordFactory("scanner-t", bundle.version).build(1, **f)
    validate_record(record)
    assert record["metrics"] == f["metrics"] and record["conditions"] == f["conditions"]


def test_tensorrt_runs_classifiers_without_a_tensorrt_variant_on_onnxruntime(bundle: Bundle, tmp_path: Path) -> None:
    # The shipped bundle has no TensorRT variant of the alopecia grader: asked for TensorRT, it
    # falls back to its ONNX Runtime variant on the CPU. The severity classifier's FP32 file
    # targets both runtimes (a Jetson builds its engine from it).
    loaded = open_optional(bundle, "alopecia", "tensorrt", threads=1, engine_cache=tmp_path)
    assert loaded is not None and type(loaded[0]) is OrtBackend
    assert loaded[1] == "alopecia.onnx (fp32, onnxruntime)"
    assert bundle.select("conditions", "tensorrt", "auto").path.name == "severity.onnx"
    assert open_optional(bundle, "no-such-model", "tensorrt") is None
    assert not list(tmp_path.iterdir())  # no engine was built or cached


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_without_tensorrt_the_segmenter_is_not_swapped_silently(bundle: Bundle, tmp_path: Path) -> None:
    # The segmenter has a TensorRT variant; on a machine without TensorRT, asking for it fails
    # and names what is missing, rather than quietly measuring with another model file.
    with pytest.raises(RuntimeError, match="tensorrt and pycuda"):
        open_model(bundle, "segmenter", "tensorrt", engine_cache=tmp_path)
    with pytest.raises(RuntimeError, match="tensorrt and pycuda"):
        ScanPipeline(bundle, backend="tensorrt", engine_cache=tmp_path)


def test_a_diagnosis_classes_each_located_hair_with_the_shipped_hair_class_model(pipeline: ScanPipeline) -> None:
    """The shipped bundle carries the per-hair class model; a diagnosis's thin share is the card's
    share scale times the share of located hairs that model calls miniaturised at the card's
    threshold, not their diameters."""
    assert pipeline.hair_classes is not None and pipeline.variants["hair_classes"].startswith("hair_classes.onnx")
    card = pipeline.bundle.model("hair_classes")
    assert pipeline.hair_classes.thin_probability == card["thresholds"]["thin_probability"]
    assert pipeline.hair_classes.thin_share_scale == card["thresholds"].get("thin_share_scale", 1.0)
    diagnosis = pipeline.diagnose(pipeline.live(read_frame(CLIP[0])))
    m = diagnosis.analysis.metrics
    assert m.hairs, "the demo frame has located hairs"
    points = np.array([xy for xy, _, _ in m.hairs], float)
    prob = pipeline.hair_classes.probabilities(diagnosis.analysis.frame, points, m.um_per_px)
    share = float((prob >= pipeline.hair_classes.thin_probability).mean())
    assert m.thin_ratio == pytest.approx(pipeline.hair_classes.thin_share_scale * share)
    assert sum(k != "terminal" for _, _, k in m.hairs) == int((prob >= pipeline.hair_classes.thin_probability).sum())


def test_condition_levels_follow_the_presence_decision(pipeline: ScanPipeline) -> None:
    """A condition the presence head (at the card's threshold, chosen on real frames) calls
    present is never graded "good", and one it calls absent always is."""
    assert pipeline.severity is not None
    card = pipeline.bundle.model("conditions")
    assert pipeline.severity.thresholds == {
        c: card["thresholds"][f"presence_{c}"] for c in ("dandruff", "sebum", "erythema")
    }
    seen = set()
    for path in CLIP[:4]:
        result = pipeline.severity.predict(read_frame(path))
        for name, level in result.levels.items():
            present = result.presence[name] >= pipeline.severity.thresholds[name]
            assert result.present[name] is present and (level != LEVEL_NAMES[0]) is present
            seen.add(present)
    assert seen == {True, False}, "the demo frames show conditions both present and absent"


def test_a_frame_to_diagnose_starts_its_frame_only_models_beside_the_segmentation(pipeline: ScanPipeline) -> None:
    # live(diagnose=True) queues the prompt refiner's encoder, then the condition grader, on the
    # worker before segmenting; the diagnosis takes those tasks instead of running them again,
    # and measures and grades as a plain diagnosis does.
    assert pipeline.refiner is not None and pipeline.severity is not None
    frame = read_frame(CLIP[0])
    plain = pipeline.diagnose(pipeline.live(frame))
    calls: list[str] = []
    grade, encode = pipeline._classify, pipeline.refiner.encode
    pipeline._classify = lambda f: (calls.append("grade"), grade(f))[1]  # type: ignore[method-assign]
    pipeline.refiner.encode = lambda f: (calls.append("encode"), encode(f))[1]  # type: ignore[method-assign]
    try:
        pipeline.forget_motion()
        live = pipeline.live(frame, diagnose=True)
        assert live.graded is not None and live.encoded is not None
        early = pipeline.diagnose(live)
    finally:
        del pipeline._classify, pipeline.refiner.encode
    assert calls == ["encode", "grade"]  # each once, by the tasks the live path queued, encoder first
    assert early.mask_stage == plain.mask_stage
    assert early.record_fields()["metrics"] == plain.record_fields()["metrics"]
    for name, result in plain.conditions.items():
        assert early.conditions[name]["level"] == result["level"]
        assert early.conditions[name]["presence"] == pytest.approx(result["presence"], abs=1e-5)
    rejected = pipeline.live(np.zeros_like(frame), diagnose=True)
    assert rejected.problem is not None and rejected.graded is None and rejected.encoded is None


def test_a_frame_to_diagnose_is_segmented_on_one_thread_while_the_worker_holds_the_other() -> None:
    # With two threads and the worker, the live path segments a frame it will diagnose with a
    # one-thread session of the same student (the worker runs the encoder and the grader beside
    # it), and every other frame with the two-thread session; both give the same segmentation.
    pipe = ScanPipeline(shipped_bundle(), threads=2)
    try:
        assert pipe.parallel and pipe._segmenter_beside is not None
        both, one = CountingSegmenter(pipe.segmenter), CountingSegmenter(pipe._segmenter_beside)
        pipe.segmenter, pipe._segmenter_beside = both, one
        frame = read_frame(CLIP[0])
        preview = pipe.live(frame)
        assert (both.calls, one.calls) == (1, 0)
        pipe.forget_motion()
        diagnosed = pipe.live(frame, diagnose=True)
        assert (both.calls, one.calls) == (1, 1)
        assert preview.seg is not None and diagnosed.seg is not None
        np.testing.assert_allclose(diagnosed.seg.prob, preview.seg.prob, atol=1e-5)
        assert pipe.diagnose(diagnosed).accepted
    finally:
        pipe.close()
    single = ScanPipeline(shipped_bundle(), threads=1)  # one thread already: no second session
    assert single._segmenter_beside is None
    single.close()
