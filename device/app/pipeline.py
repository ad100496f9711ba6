"""The per-frame path on the device, with the models of one verified bundle.

Two paths share one segmentation: a frame is prepared, gated and segmented once.

- ``live(frame)``: quality gate -> segmenter -> hair count (the segmenter's ``CountStrategy``,
  chosen from the model's outputs when it loaded); cheap enough for every frame of the preview.
- ``diagnose(live)``: the full diagnosis of ``../shared/DESIGN.md`` on the frame the live path
  has just segmented, reusing that segmentation: the hair mask of the ``mask_stage`` (default:
  "fused", the student's map refined at full resolution by the bundle's pixel refiner; "paper":
  automatic prompts from the student's mask M^, the prompt refiner's M_AP and ScalpVision's
  M = M^ AND M_AP; "coarse": M^) -> hair metrics on that mask (count, thickness in micrometres
  from the optics profile, thin ratio, density) -> severity classifier (when the bundle has one)
  -> alopecia grade (when the bundle has one) -> the fields of a result record, which name the
  mask stage, with per-stage timings (quality and segment are the live path's).

On ONNX Runtime the work that needs only the frame and the student's output (the prompt
refiner's encoder, the located hairs and their classes, the severity classifier) runs on one
worker thread beside the work that needs the mask (pixel refiner or prompts, decoder and
fusion, hair metrics), so on two cores a diagnosis costs about its longer branch, not the sum;
the stage timings then overlap. When the caller will diagnose the frame (``live(diagnose=True)``)
the encoder and then the severity classifier (the costliest piece on a CPU) start beside the
live segmentation: the decoder needs the encoder right after the prompts, the grades are needed
only at the end, and that frame's segmentation runs on one thread (a second session of the
student), leaving the other core to the worker. Otherwise the classifier is queued first once it
measures costlier than the encoder. TensorRT runs them in the frame loop's thread (its contexts
are per thread).

Models missing from the bundle are skipped, and the diagnosis says so (its ``conditions``
are empty), so a segmenter-only bundle still gives hair metrics.
"""

from __future__ import annotations

import base64
import dataclasses
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.app.analysis import (
    FrameAnalysis,
    analyse_segmentation,
    head_count,
    mask_independent,
    rejected_analysis,
    scale_problem,
    scaled_um_per_px,
    segment_at_scale,
)
from device.app.model_loading import open_model, open_optional
from device.app.worker_tasks import WorkerTask, locate_beside
from device.contracts.constants import (
    DEFAULT_UM_PER_PX,
    FRAME_WIDTH,
    LEVEL_NAMES,
    MASK_STAGES,
    MASK_THRESHOLD,
    PIXEL_REFINER_MODEL,
    REFINER_DECODER_MODEL,
    REFINER_ENCODER_MODEL,
)
from device.contracts.preprocess import prepare_frame
from device.measure.hair_metrics import HeadCount
from device.measure.optics import OpticsProfile
from device.measure.quality import QualityReport, assess
from device.models.backends import OrtBackend
from device.models.bundle import Bundle, BundleError
from device.models.classifiers import AlopeciaGrader, SeverityClassifier
from device.models.hair_classes import HAIR_CLASSES_MODEL, HairClassifier
from device.models.onnx_segmenter import ModelSegmenter
from device.models.segmentation import CountStrategy, Segmenter, SegOutput
from device.refine.fusion import PROMPT_STAGES, refine
from device.refine.pixel import PixelRefiner
from device.refine.prompts import PromptConfig, auto_prompts
from device.refine.refiner import PromptRefiner

__all__ = ["ScanPipeline", "LiveResult", "Diagnosis", "MODEL_NAMES"]


THUMBNAIL_WIDTH = 320  # pixels; the overlay keeps its aspect (about 320x240 plus its label bar)
THUMBNAIL_QUALITY = 70  # JPEG quality: 10-13 kB a thumbnail of the sample frames (13-17 kB as base64)

# Bundle model names the pipeline looks for.
MODEL_NAMES = {
    "segmenter": "segmenter",
    "conditions": "conditions",
    "alopecia": "alopecia",
    "hair_classes": HAIR_CLASSES_MODEL,
    "refiner_encoder": REFINER_ENCODER_MODEL,
    "refiner_decoder": REFINER_DECODER_MODEL,
    "pixel_refiner": PIXEL_REFINER_MODEL,
}


@dataclass(frozen=True)
class LiveResult:
    """One frame through the live path.

    frame: the 640x480 HxWx3 uint8 BGR frame measured (``prepare_frame`` of the camera's).
    source_shape: shape of the camera's frame (micrometres per pixel scale with the resize).
    seg: its segmentation; None when the quality gate rejected it (``problem`` says why).
    count: the hair count shown live (refreshed a few times a second; 0 on a rejected frame).
    head: the count taken on this frame's segmentation, or None (not counted on this frame, or
        a segmenter that counts skeleton strands, which only a diagnosis measures).
    quality: the gate's report; timings_ms: quality_ms, segment_ms, count_ms (when counted).
    encoded, graded: the prompt refiner's encoder and the condition grader on this frame, queued
        (in that order) beside the segmentation when the caller said it will diagnose the frame
        (``live(diagnose=True)``) and the bundle has them; ``diagnose`` takes them.
    """

    frame: np.ndarray
    source_shape: tuple[int, ...]
    seg: SegOutput | None
    count: int
    problem: str | None
    timings_ms: dict[str, float]
    quality: QualityReport
    head: HeadCount | None = None
    encoded: WorkerTask | None = None
    graded: WorkerTask | None = None


@dataclass(frozen=True)
class Diagnosis:
    """A full diagnosis: the analysis (mask, strands, metrics), condition results by name
    ({"level", "probabilities", ...}), the alopecia grade, record-ready fields, timings, and
    mask_stage: which hair mask measured it (``MASK_STAGES``; None on a rejected frame)."""

    analysis: FrameAnalysis
    conditions: dict[str, dict[str, Any]]
    alopecia: dict[str, Any] | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    quality: QualityReport | None = None
    mask_stage: str | None = None

    @property
    def accepted(self) -> bool:
        return self.analysis.problem is None

    def thumbnail(self, width: int = THUMBNAIL_WIDTH, quality: int = THUMBNAIL_QUALITY) -> dict[str, Any]:
        """The overlay (``analysis.overlay()``) scaled to ``width`` pixels wide, as a record's
        ``thumbnail``: ``{"jpeg_base64", "width", "height"}`` (a baseline JPEG, pixels)."""
        image = self.analysis.overlay()
        h, w = image.shape[:2]
        height = max(1, round(h * width / w))
        small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise ValueError("could not encode the thumbnail as JPEG")
        return {"jpeg_base64": base64.b64encode(jpeg.tobytes()).decode("ascii"), "width": width, "height": height}

    def record_fields(self, session: dict[str, str] | None = None) -> dict[str, Any]:
        """metrics / conditions / quality / timings_ms as ``device.contracts.records.build_record``
        takes them, and ``session`` (the active client session's tags, ``device.app.sessions``)
        when there is one. Never an image: the runtime adds ``thumbnail()`` only when its config
        says ``[run] publish_thumbnails``."""
        m = self.analysis.metrics
        metrics: dict[str, dict[str, Any]] = {
            "hair_count": {"value": int(m.count), "unit": "count"},
            **({"visible_hairs": {"value": m.visible_count, "unit": "count"}} if m.visible_count is not None else {}),
            "mean_thickness": {"value": _round(m.mean_thickness_um), "unit": "um"},
            "median_thickness": {"value": _round(m.median_thickness_um), "unit": "um"},
            "thin_ratio": {"value": _round(m.thin_ratio, 4), "unit": "ratio"},
            "density": {"value": _round(m.density_per_cm2, 1), "unit": "per_cm2"},
            "um_per_px": {"value": _round(m.um_per_px, 5), "unit": "um_per_px"},
        }
        conditions = {k: {"level": v["level"], "probabilities": v["probabilities"]} for k, v in self.conditions.items()}
        # presence / area share are classifier extras the record schema does not carry
        if self.alopecia is not None:
            conditions["alopecia"] = {"level": self.alopecia["level"], "probabilities": self.alopecia["probabilities"]}
        return {
            "metrics": metrics,
            "conditions": conditions,
            "quality": (self.quality.to_dict() if self.quality else {"accepted": self.accepted})
            | {"accepted": self.accepted, "reason": self.analysis.problem},
            "timings_ms": {k.removesuffix("_ms"): round(v, 2) for k, v in self.timings_ms.items()},
            **({"mask_stage": self.mask_stage} if self.mask_stage else {}),
        } | ({"session": dict(session)} if session else {})


def _round(value: float | None, nd: int = 2) -> float | None:
    return None if value is None else round(float(value), nd)


class ScanPipeline:
    """Holds the loaded backends (state) and runs the live and diagnosis paths on frames.

    Construct it in the thread that runs the frame loop (TensorRT contexts are per thread).

    mask_stage: the hair mask a diagnosis measures (``MASK_STAGES``), or "auto": "fused" when
    the bundle has the pixel refiner, else "paper" when it has the prompt refiner, else
    "coarse". A stage whose refiner the bundle lacks is a BundleError. parallel: run the
    frame-only models on a worker thread (default: on ONNX Runtime only; see the module
    docstring).
    """

    def __init__(
        self,
        bundle: Bundle,
        backend: str = "onnxruntime",
        precision: str = "auto",
        threads: int = 2,
        optics: OpticsProfile | None = None,
        engine_cache: str | Path | None = None,
        mask_stage: str = "auto",
        parallel: bool | None = None,
    ) -> None:
        if mask_stage != "auto" and mask_stage not in MASK_STAGES:
            raise ValueError(f"mask_stage must be auto or one of {', '.join(MASK_STAGES)}, not {mask_stage!r}")
        self.bundle = bundle
        self.backend_kind = backend
        self.optics = optics
        self.parallel = backend == "onnxruntime" if parallel is None else parallel
        # Beside one another the diagnosis's models run one thread each: an op split over both
        # cores while the other thread holds one waits for its slower half (measured: the
        # encoder 10 -> 19 ms). The student, alone in the live path, keeps ``threads``.
        model_threads = 1 if self.parallel else threads
        self.variants: dict[str, str] = {}
        self._classify_ms = 0.0  # the grader's last time: decides the worker's order (diagnose)
        self._previous_grey: np.ndarray | None = None
        self._live_count = 0
        seg_backend, self.variants["segmenter"] = open_model(
            bundle, MODEL_NAMES["segmenter"], backend, precision, threads, engine_cache
        )
        segmenter = ModelSegmenter(seg_backend, name="segmenter")
        self.count_strategy: CountStrategy = segmenter.count_strategy  # decided as the model loaded
        self.segmenter: Segmenter = segmenter
        # A frame to be diagnosed is segmented on one thread: the worker holds the other core
        # then (the encoder and the grader), and the student at two threads beside it took longer
        # than at one (``docs/results/refiner.md``). The same file, a second session.
        self._segmenter_beside: Segmenter | None = None
        if self.parallel and threads > 1 and isinstance(seg_backend, OrtBackend):
            self._segmenter_beside = ModelSegmenter(OrtBackend(seg_backend.path, threads=1), name="segmenter")
        self.severity: SeverityClassifier | None = None
        self.alopecia: AlopeciaGrader | None = None
        if (
            severity := open_optional(bundle, MODEL_NAMES["conditions"], backend, model_threads, engine_cache)
        ) is not None:
            self.severity = SeverityClassifier(severity[0], card=bundle.model(MODEL_NAMES["conditions"]))
            self.variants["conditions"] = severity[1]
        if (
            alopecia := open_optional(bundle, MODEL_NAMES["alopecia"], backend, model_threads, engine_cache)
        ) is not None:
            self.alopecia = AlopeciaGrader(alopecia[0])
            self.variants["alopecia"] = alopecia[1]
        self.hair_classes: HairClassifier | None = None
        if (
            hairs := open_optional(bundle, MODEL_NAMES["hair_classes"], backend, model_threads, engine_cache)
        ) is not None:
            self.hair_classes = HairClassifier.from_card(hairs[0], bundle.model(MODEL_NAMES["hair_classes"]))
            self.variants["hair_classes"] = hairs[1]
        refiner_models = {MODEL_NAMES["refiner_encoder"], MODEL_NAMES["refiner_decoder"]}
        has_refiner = refiner_models <= set(bundle.models)
        has_pixel = MODEL_NAMES["pixel_refiner"] in bundle.models
        if mask_stage == "auto":
            mask_stage = "fused" if has_pixel else "paper" if has_refiner else "coarse"
        elif mask_stage in PROMPT_STAGES and not has_refiner:
            raise BundleError(f"mask stage {mask_stage!r} needs the prompt refiner; bundle {bundle.version} has none")
        elif mask_stage == "fused" and not has_pixel:
            raise BundleError(f"mask stage 'fused' needs the pixel refiner; bundle {bundle.version} has none")
        self.mask_stage = mask_stage
        self.pixel: PixelRefiner | None = None
        if mask_stage == "fused":
            loaded = open_optional(bundle, MODEL_NAMES["pixel_refiner"], backend, model_threads, engine_cache)
            if loaded is None:
                raise BundleError(f"bundle {bundle.version}: the pixel refiner has no variant for {backend}")
            card = bundle.model(MODEL_NAMES["pixel_refiner"])
            self.pixel = PixelRefiner(loaded[0], PixelRefiner.card_threshold(card))
            self.variants["pixel_refiner"] = loaded[1]
        self.refiner: PromptRefiner | None = None
        needs_prompts = mask_stage in PROMPT_STAGES or (self.pixel is not None and self.pixel.takes_prompt)
        if needs_prompts and not has_refiner:
            raise BundleError(
                f"bundle {bundle.version}: the pixel refiner fuses M_AP, but the prompt refiner is missing"
            )
        if needs_prompts:
            encoder = open_optional(bundle, MODEL_NAMES["refiner_encoder"], backend, model_threads, engine_cache)
            decoder = open_optional(bundle, MODEL_NAMES["refiner_decoder"], backend, model_threads, engine_cache)
            if encoder is None or decoder is None:
                raise BundleError(f"bundle {bundle.version}: the prompt refiner has no variant for {backend}")
            self.refiner = PromptRefiner(encoder[0], decoder[0])
            self.prompt_config = PromptConfig(group_size=self.refiner.k)
            self.variants["refiner_encoder"], self.variants["refiner_decoder"] = encoder[1], decoder[1]
        self._worker: ThreadPoolExecutor | None = None
        if self.parallel:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="scalpedge-diagnosis")
            weakref.finalize(self, self._worker.shutdown, wait=False)

    def close(self) -> None:
        """Stop the worker thread (idempotent); a closed pipeline still diagnoses, serially."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

    def _beside(self, fn: Callable[..., Any], *args: Any) -> WorkerTask:
        """``fn(*args)`` queued on the worker thread (``WorkerTask.result`` runs it in the calling
        thread instead when the worker has not started it by then), or, without a worker, run
        when its result is asked for."""
        return WorkerTask(fn, args, self._worker.submit(fn, *args) if self._worker is not None else None)

    def um_per_px(self, frame_width: int) -> float:
        """Micrometres per pixel of a frame ``frame_width`` wide (optics profile, else default)."""
        if self.optics is not None:
            return self.optics.um_per_px_at(frame_width)
        return DEFAULT_UM_PER_PX * FRAME_WIDTH / frame_width

    def forget_motion(self) -> None:
        """Drop the motion gate's reference frame: the next frame is not compared with the last
        (independent stills, or a camera that restarted)."""
        self._previous_grey = None

    def live(self, frame_bgr: np.ndarray, count: bool = True, diagnose: bool = False) -> LiveResult:
        """Prepare (640x480), quality gate, segmentation and a hair count (no thickness
        measurement) by the segmenter's count strategy. count=False skips the count (with
        centre lines about as costly as segmentation on a CPU) and reports the last one: the
        frame loop refreshes it a few times a second. diagnose=True: the caller will diagnose
        this frame if the gate passes it, so the prompt refiner's encoder and the condition
        grader (frame-only; the grader the costliest piece of a diagnosis on a CPU) start on the
        worker beside the segmentation, in that order."""
        t0 = time.perf_counter()
        frame = prepare_frame(frame_bgr)
        quality, self._previous_grey = assess(frame, self._previous_grey)
        um_per_px = scaled_um_per_px(self.um_per_px(frame_bgr.shape[1]), frame_bgr.shape, frame.shape)
        problem = scale_problem(um_per_px) or quality.reason
        t1 = time.perf_counter()
        if problem is not None:
            return LiveResult(frame, frame_bgr.shape, None, 0, problem, {"quality_ms": (t1 - t0) * 1000}, quality)
        # The encoder first: the diagnosis's decoder waits for it right after the prompts, while
        # the grader's result is wanted only at the end of the diagnosis.
        encoded = self._beside(self.refiner.encode, frame) if diagnose and self.refiner is not None else None
        graded = self._beside(self._classify, frame) if diagnose and self.severity is not None else None
        beside = self._segmenter_beside
        segmenter = beside if beside is not None and (encoded or graded) is not None else self.segmenter
        seg = segment_at_scale(segmenter, frame, um_per_px)
        t2 = time.perf_counter()
        timings = {"quality_ms": (t1 - t0) * 1000, "segment_ms": (t2 - t1) * 1000}
        head = None
        if count:
            head = head_count(seg, seg.mask())
            self._live_count = head.value if head is not None else self._live_count
            timings["count_ms"] = (time.perf_counter() - t2) * 1000
        return LiveResult(frame, frame_bgr.shape, seg, self._live_count, None, timings, quality, head, encoded, graded)

    def diagnose(self, live: LiveResult) -> Diagnosis:
        """The full diagnosis (see the module docstring) of the frame ``live`` is the live path's
        result for: its segmentation, quality report and count are reused, not made again. A
        frame the gate rejected gives a rejected diagnosis (count 0, the reason, no classifiers)."""
        t0 = time.perf_counter()
        um_per_px = scaled_um_per_px(self.um_per_px(live.source_shape[1]), live.source_shape, live.frame.shape)
        timings = {k: v for k, v in live.timings_ms.items() if k in ("quality_ms", "segment_ms")}
        conditions: dict[str, dict[str, Any]] = {}
        stage = None
        if live.seg is None:
            analysis = rejected_analysis(live.frame, live.problem or "rejected", um_per_px, timings=timings)
        else:
            frame, coarse = live.frame, live.seg
            # Frame-only work is queued on the worker (the encoder first: the decoder waits for
            # it); what the worker has not started when this thread needs it, this thread takes
            # back and runs (WorkerTask), so the two share the work whatever each piece costs.
            # The worker takes them in the order queued, so the grader goes first once it has
            # measured costlier than the encoder (the 512x384 grader: ~10x): the frame loop then
            # takes back the encoder and the located hairs instead of waiting for the grader.
            encoder_ms = self.refiner.encoder_ms if self.refiner is not None else 0.0
            grader_first = self.severity is not None and self._classify_ms > encoder_ms
            classified = live.graded or (self._beside(self._classify, frame) if grader_first else None)
            encoded = live.encoded or (self._beside(self.refiner.encode, frame) if self.refiner is not None else None)
            early = mask_independent(coarse)
            located = locate_beside(self._beside, frame, coarse, um_per_px, self.hair_classes) if early else None
            if self.severity is not None and classified is None:
                classified = self._beside(self._classify, frame)
            seg, prompt_map = coarse, None
            if self.refiner is not None and encoded is not None:
                t = time.perf_counter()
                groups = auto_prompts(coarse.prob >= MASK_THRESHOLD, self.prompt_config)
                timings["prompts_ms"] = (time.perf_counter() - t) * 1000
                embedding = encoded.result()
                timings["refiner_encoder_ms"] = self.refiner.encoder_ms
                # fused: M_AP alone, for the pixel refiner to fuse; paper or refined: that stage
                prompt_stage = "refined" if self.mask_stage == "fused" else self.mask_stage
                refined = refine(coarse, frame, self.refiner, groups, prompt_stage, embedding=embedding)
                rt = refined.timings_ms
                timings["refiner_decoder_ms"] = rt.get("decoder_ms", 0.0) + rt.get("upscale_ms", 0.0)
                if self.mask_stage == "fused":
                    prompt_map = refined.seg.prob
                else:
                    timings["fusion_ms"] = rt["fusion_ms"]
                    seg = refined.seg
            if self.pixel is not None:
                seg = dataclasses.replace(coarse, prob=self.pixel.refine(frame, coarse.prob, prompt_map))
                timings["pixel_refiner_ms"] = self.pixel.last_ms
            analysis = analyse_segmentation(
                frame,
                seg,
                um_per_px,
                count=live.head if early or seg is coarse else None,
                timings=timings,
                hair_classes=self.hair_classes,
                located=located,
            )
            extra: dict[str, float] = {}
            if located is not None:
                extra["hairs_ms"] = located().ms  # partly beside the rest: not in metrics_ms
            if classified is not None:
                conditions, classify_ms = classified.result()
                extra |= classify_ms
            analysis = dataclasses.replace(analysis, timings_ms={**analysis.timings_ms, **extra})
            stage = self.mask_stage
        timings = dict(analysis.timings_ms)
        if analysis.problem is not None:
            conditions = {}  # a frame without hair metrics gets no grades either
        alopecia = None
        if analysis.problem is None and self.alopecia is not None:
            t = time.perf_counter()
            level, probs = self.alopecia.predict(analysis.metrics)
            alopecia = {"level": level, "probabilities": dict(zip(LEVEL_NAMES, probs, strict=True))}
            timings["alopecia_ms"] = (time.perf_counter() - t) * 1000
        live_ms = sum(live.timings_ms.get(k, 0.0) for k in ("quality_ms", "segment_ms"))
        timings["total_ms"] = live_ms + (time.perf_counter() - t0) * 1000
        return Diagnosis(analysis, conditions, alopecia, timings, live.quality, stage)

    def _classify(self, frame: np.ndarray) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
        """The severity classifier's conditions of ``frame`` (by name: level, probabilities,
        presence, present, area_share) and ``{"classify_ms": ...}``."""
        assert self.severity is not None
        t = time.perf_counter()
        result = self.severity.predict(frame)
        conditions = {
            name: {
                "level": result.levels[name],
                "probabilities": dict(zip(LEVEL_NAMES, result.level_probs[name], strict=True)),
                "presence": result.presence[name],
                "present": result.present[name],
                "area_share": result.area_share[name],
            }
            for name in result.levels
        }
        self._classify_ms = (time.perf_counter() - t) * 1000
        return conditions, {"classify_ms": self._classify_ms}
