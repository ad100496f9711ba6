"""The device's diagnosis on the fused mask (shipped bundle, real ONNX Runtime sessions): fused
(the pixel refiner) by default, ScalpVision's AND ("paper") as a stage, each the same mask the
evaluation's ``RefinedSegmenter`` makes and named in the result record; the worker thread
changes no figure; the variant a scanner runs may be chosen by its own speed."""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pytest

import device.assets
from device.app.analysis import analyse_frame
from device.app.model_loading import fastest_variant, open_model
from device.app.pipeline import ScanPipeline
from device.app.worker_tasks import WorkerTask
from device.capture.imageio import read_frame
from device.contracts.constants import MASK_STAGES
from device.contracts.records import RecordError, RecordFactory, build_record, validate_record
from device.contracts.validation import load_schema
from device.models.bundle import Bundle, BundleError
from device.refine.fusion import RefinedSegmenter

CLIP = sorted((Path(device.assets.__file__).parent / "samples" / "clip").glob("*.jpg"))


@functools.cache
def shipped() -> Bundle:
    return Bundle.open(device.assets.default_bundle_path())


def test_the_shipped_bundle_measures_on_the_fused_mask_by_default_and_the_record_says_so() -> None:
    pipeline = ScanPipeline(shipped(), threads=1)
    assert pipeline.mask_stage == "fused" and pipeline.pixel is not None
    assert pipeline.pixel.takes_prompt and pipeline.refiner is not None  # it fuses M^ and M_AP
    frame = read_frame(CLIP[0])
    live = pipeline.live(frame)
    assert live.seg is not None
    diagnosis = pipeline.diagnose(live)
    assert diagnosis.mask_stage == "fused"
    # the evaluation's fused segmenter makes the same mask and metrics in one thread; it is not M^
    fused = RefinedSegmenter(pipeline.segmenter, pipeline.refiner, stage="fused", pixel=pipeline.pixel)
    alone = analyse_frame(fused, frame, pipeline.um_per_px(frame.shape[1]), hair_classes=pipeline.hair_classes)
    assert np.array_equal(alone.seg.mask(), diagnosis.analysis.seg.mask())
    assert alone.metrics.to_dict() == diagnosis.analysis.metrics.to_dict()
    assert (diagnosis.analysis.seg.mask() != live.seg.mask()).any()
    # the count comes from the density head, so refining leaves it alone; thickness is measured on M
    assert diagnosis.analysis.metrics.count == live.count
    fields = diagnosis.record_fields()
    assert fields["mask_stage"] == "fused"
    assert {"prompts", "refiner_encoder", "refiner_decoder", "pixel_refiner", "hairs"} <= set(fields["timings_ms"])
    record = RecordFactory("scanner-t", shipped().version).build(1, **fields)
    assert record["mask_stage"] == "fused"
    validate_record(record)


def test_the_papers_and_of_the_prompt_refiner_is_a_stage_too() -> None:
    pipeline = ScanPipeline(shipped(), threads=1, mask_stage="paper")
    assert pipeline.refiner is not None and pipeline.pixel is None and "pixel_refiner" not in pipeline.variants
    frame = read_frame(CLIP[0])
    live = pipeline.live(frame)
    diagnosis = pipeline.diagnose(live)
    assert diagnosis.mask_stage == "paper"
    paper, coarse = diagnosis.analysis.seg.mask(), live.seg.mask()
    # M = M^ AND M_AP: never a pixel the student did not call hair, and the refiner trims some
    assert not (paper & ~coarse).any() and 0 < paper.sum() < coarse.sum()
    # the same mask and metrics as the evaluation's segmenter at that stage, made in one thread
    refined = RefinedSegmenter(pipeline.segmenter, pipeline.refiner, stage="paper")
    alone = analyse_frame(refined, frame, pipeline.um_per_px(frame.shape[1]), hair_classes=pipeline.hair_classes)
    assert alone.seg is not None and np.array_equal(alone.seg.mask(), paper)
    assert alone.metrics.to_dict() == diagnosis.analysis.metrics.to_dict()
    fields = diagnosis.record_fields()
    assert fields["mask_stage"] == "paper"
    assert {"prompts", "refiner_encoder", "refiner_decoder", "fusion", "hairs"} <= set(fields["timings_ms"])


def test_the_coarse_stage_measures_the_students_own_mask() -> None:
    pipeline = ScanPipeline(shipped(), threads=1, mask_stage="coarse")
    assert pipeline.refiner is None and pipeline.pixel is None and "refiner_encoder" not in pipeline.variants
    live = pipeline.live(read_frame(CLIP[0]))
    diagnosis = pipeline.diagnose(live)
    assert diagnosis.analysis.seg is live.seg and diagnosis.mask_stage == "coarse"
    assert diagnosis.record_fields()["mask_stage"] == "coarse"
    assert not {"prompts", "refiner_encoder", "fusion", "pixel_refiner"} & {k[:-3] for k in diagnosis.timings_ms}


def test_a_rejected_frame_names_no_mask_stage() -> None:
    pipeline = ScanPipeline(shipped(), threads=1)
    diagnosis = pipeline.diagnose(pipeline.live(np.zeros((480, 640, 3), np.uint8)))
    assert not diagnosis.accepted and diagnosis.mask_stage is None
    assert "mask_stage" not in diagnosis.record_fields()


@pytest.mark.parametrize("stage", ["fused", "paper"])
def test_the_worker_thread_changes_no_figure(stage: str) -> None:
    parallel = ScanPipeline(shipped(), threads=1, parallel=True, mask_stage=stage)
    serial = ScanPipeline(shipped(), threads=1, parallel=False, mask_stage=stage)
    assert parallel.parallel and not serial.parallel
    for path in CLIP[:3]:
        frame = read_frame(path)
        a, b = parallel.diagnose(parallel.live(frame)), serial.diagnose(serial.live(frame))
        assert a.analysis.metrics.to_dict() == b.analysis.metrics.to_dict()
        assert a.conditions == b.conditions and a.alopecia == b.alopecia
        assert np.array_equal(a.analysis.seg.mask(), b.analysis.seg.mask())
    parallel.close()
    parallel.close()  # idempotent; a closed pipeline still diagnoses, in its own thread
    frame = read_frame(CLIP[0])
    closed, alone = parallel.diagnose(parallel.live(frame)), serial.diagnose(serial.live(frame))
    assert closed.analysis.metrics.to_dict() == alone.analysis.metrics.to_dict()


def test_a_stage_other_than_coarse_needs_the_refiner(tmp_path: Path) -> None:
    from tests.release_support import make_keys, slim_release

    private, trusted = make_keys(tmp_path)
    slim = Bundle.open(slim_release(tmp_path, private), [trusted])  # the segmenter alone
    assert ScanPipeline(slim, threads=1).mask_stage == "coarse"  # auto: nothing to fuse with
    for stage in ("paper", "refined"):
        with pytest.raises(BundleError, match="needs the prompt refiner"):
            ScanPipeline(slim, threads=1, mask_stage=stage)
    with pytest.raises(BundleError, match="needs the pixel refiner"):
        ScanPipeline(slim, threads=1, mask_stage="fused")
    with pytest.raises(ValueError, match="mask_stage must be auto or one of coarse, refined, paper, fused"):
        ScanPipeline(shipped(), threads=1, mask_stage="sharpest")


def test_a_task_the_worker_has_not_started_is_run_by_the_thread_that_needs_it() -> None:
    gate, seen = threading.Event(), []

    def where(tag: str) -> str:
        seen.append(tag)
        return threading.current_thread().name

    with ThreadPoolExecutor(1, thread_name_prefix="worker") as pool:
        busy = pool.submit(gate.wait, 10)  # the worker is busy
        queued = WorkerTask(where, ("queued",), pool.submit(where, "queued"))
        assert queued.result() == threading.current_thread().name  # taken back, run here
        assert queued.result() == threading.current_thread().name and seen == ["queued"]  # once
        gate.set()
        busy.result()
        ran = pool.submit(where, "started")
        wait([ran])
        started = WorkerTask(where, ("started",), ran)
        assert started.result().startswith("worker")  # the worker ran it: not run again here
        assert seen == ["queued", "started"]

    def fails() -> None:
        raise RuntimeError("model failed")

    task = WorkerTask(fails, (), None)  # without a worker: run when asked, its error raised each time
    for _ in range(2):
        with pytest.raises(RuntimeError, match="model failed"):
            task.result()


def test_the_fastest_variant_replaces_the_preferred_one_only_by_a_clear_margin() -> None:
    bundle = shipped()
    preferred = bundle.select("segmenter", "onnxruntime-cpu", "auto")
    cpu_variants = [v for v in bundle.variants("segmenter") if "onnxruntime-cpu" in v.targets]
    assert len(cpu_variants) == 2, "the shipped student has an FP32 and an INT8 ONNX Runtime variant"
    _, never = fastest_variant(bundle, "segmenter", threads=1, runs=1, margin=float("inf"))
    assert never.path == preferred.path
    _, always = fastest_variant(bundle, "segmenter", threads=1, runs=1, margin=0.0)
    assert always.path != preferred.path and always in cpu_variants
    backend, description = open_model(bundle, "segmenter", precision="fastest", threads=1)
    assert description.endswith("fastest here)") and description.split()[0] in {v.path.name for v in cpu_variants}
    assert "image" in backend.input_shapes
    # a model with one variant: that one, timed or not
    _, only = fastest_variant(bundle, "alopecia", threads=1, runs=1, margin=0.0)
    assert only.path == bundle.select("alopecia").path


def test_the_record_schema_knows_exactly_the_mask_stages() -> None:
    schema = load_schema("result")
    assert tuple(schema["properties"]["mask_stage"]["enum"]) == MASK_STAGES
    base = {
        "device_id": "scanner-t",
        "boot_id": "00000000-0000-4000-8000-000000000000",
        "seq": 1,
        "bundle_version": "v",
        "metrics": {},
        "conditions": {},
        "quality": {"accepted": True},
        "timings_ms": {},
    }
    assert build_record(**base, mask_stage="fused")["mask_stage"] == "fused"
    assert "mask_stage" not in build_record(**base)
    with pytest.raises(RecordError, match="mask_stage"):
        build_record(**base, mask_stage="sharpest")
    old = build_record(**base, mask_stage="coarse") | {"schema": "scalpedge.result/1"}
    with pytest.raises(RecordError):
        validate_record(old)  # a version 1 record never carries it
