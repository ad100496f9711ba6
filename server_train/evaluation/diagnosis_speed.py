"""``scalpedge bench diagnosis``: what one diagnosis costs on this CPU, per stage, beside the
live path and the two reference pipelines, timed in one process on the same frames.

- **Device diagnosis** (the bundle's models, ``device.app.pipeline.ScanPipeline``, as the
  scanner runs it): quality gate, segmentation, count (the live path's work for a triggered
  frame) -> ``ScanPipeline.diagnose`` at the device's default mask stage (``fused=False``:
  ``coarse``): the pixel refiner ("fused"), or with a bundle that has only the prompt refiner
  auto prompts, refiner encoder, decoder (all groups), AND ("paper") -> located hairs and their
  classes ("hairs"), hair metrics on that mask, severity classifier, alopecia grade -> the
  result record (``build_record``, validated). ``total_ms`` is the wall time of all of it for
  one frame. With ``parallel`` (the device's default on ONNX Runtime) the encoder, the located
  hairs and the classifier run on the pipeline's worker thread beside the prompts, decoder and
  metrics, so the stages overlap and their sum exceeds ``total_ms`` (``stages_overlap``).
- **Live path**: ``ScanPipeline.live(frame, count=False)``, what the preview pays per frame.
- **Paper-style** (cost only, random weights): U²-Net at 640x480, the student's auto prompts,
  SAM ViT-B's image encoder at 1024x1024 and SAM's decoder once per prompt group.
- **Naive edge** (cost only, random weights): U²-NetP at 640x480, the same prompts, TinyViT
  (MobileSAM layout) at 1024x1024 and SAM's decoder once per group
  (``server_train.evaluation.refiner_speed.build_naive_graphs``).

Medians over the timed passes (after 2 warm-up passes per pipeline); the slow reference
pipelines run ``slow_runs`` passes each. Frames are independent stills: the motion gate's
reference is dropped before each one.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from device.app.pipeline import ScanPipeline
from device.capture.imageio import read_frame
from device.contracts.constants import (
    MASK_THRESHOLD,
    PIXEL_REFINER_MODEL,
    REFINER_DECODER_MODEL,
    REFINER_ENCODER_MODEL,
)
from device.contracts.preprocess import prepare_frame, to_network_input
from device.contracts.records import build_record
from device.models.backends import Backend, OrtBackend
from device.models.bundle import Bundle
from device.refine.prompts import PromptConfig, PromptGroups, auto_prompts, group_points
from server_train.evaluation.refiner_speed import SAM_SIZE, _sam_inputs, _sam_preprocess, build_naive_graphs
from server_train.evaluation.speed import cpu_name

__all__ = ["bench_diagnosis", "build_paper_graphs", "STAGES", "BESIDE_STAGES"]

# Stage names of the device diagnosis, in the order they run (stages_ms keys).
STAGES = (
    "quality",
    "segment",
    "count",
    "pixel_refiner",
    "prompts",
    "refiner_encoder",
    "refiner_decoder",
    "fusion",
    "hairs",
    "metrics",
    "classify",
    "alopecia",
    "record",
)
# Stages the pipeline's worker thread may run beside the others (``stages_overlap``): the rest
# run one after another in the frame loop's thread, within ``total_ms``.
BESIDE_STAGES = ("refiner_encoder", "hairs", "classify")
WARMUP = 2  # untimed passes per pipeline


def build_paper_graphs(out_dir: str | Path) -> dict[str, Path]:
    """ONNX files of the paper-style pipeline (random weights, cost only): u2net.onnx
    (1x3x480x640) and sam_vit_b_1024.onnx (SAM ViT-B image encoder, 1x3x1024x1024 ->
    1x256x64x64). SAM's decoder is the same graph for every SAM encoder: the naive pipeline's."""
    from segment_anything import sam_model_registry

    from export.onnx_export import export_segmenter
    from server_train.models import create

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    paths = {"u2net": out / "u2net.onnx", "vit_b": out / "sam_vit_b_1024.onnx"}
    if not paths["u2net"].exists():
        export_segmenter(create("u2net").eval(), paths["u2net"], check=False)
    if not paths["vit_b"].exists():
        sam = sam_model_registry["vit_b"](checkpoint=None).eval()
        with torch.no_grad():
            torch.onnx.export(
                sam.image_encoder,
                (torch.zeros(1, 3, SAM_SIZE, SAM_SIZE),),
                str(paths["vit_b"]),
                input_names=["image"],
                output_names=["image_embeddings"],
                opset_version=17,
                dynamo=False,
            )
    return paths


def _naive_paths(out: Path, k: int) -> dict[str, Path]:
    names = {"u2netp": "u2netp.onnx", "tinyvit": "tinyvit_1024.onnx", "sam_decoder": "sam_decoder.onnx"}
    if not all((out / f).exists() for f in names.values()):
        return build_naive_graphs(out, k)
    return {n: out / f for n, f in names.items()}


def _sam_pipeline(
    seg: Backend, encoder: Backend, decoder: Backend, frame: np.ndarray, groups: PromptGroups, k: int
) -> float:
    """ms of one frame through segmenter -> SAM-style encoder at 1024 -> decoder per group
    (the prompts are the device's, already made; their cost is added by the caller)."""
    t = time.perf_counter()
    seg.run({"image": to_network_input(frame)})
    emb = encoder.run({"image": _sam_preprocess(frame)})["image_embeddings"]
    feeds = {name: v.numpy() for name, v in _sam_inputs(k).items()}
    feeds["image_embeddings"] = emb
    for g in range(max(1, groups.count)):
        if groups.count:
            feeds["point_coords"] = groups.points[g : g + 1] * np.float32(SAM_SIZE / max(frame.shape[:2]))
            feeds["point_labels"] = groups.labels[g : g + 1]
        decoder.run(feeds, ["masks"])
    return (time.perf_counter() - t) * 1000


def _median(values: list[float]) -> float:
    return round(float(np.median(values)), 2)


def bench_diagnosis(
    bundle_dir: str | Path,
    frames: list[Path],
    threads: int = 2,
    runs: int = 20,
    fused: bool = True,
    paper: bool = True,
    naive: bool = True,
    slow_runs: int = 3,
    graphs: str | Path | None = None,
    trusted_keys: tuple[str | Path, ...] = (),
    parallel: bool | None = None,
    precision: str = "fastest",
) -> dict[str, Any]:
    """The report described in the module docstring: ``stages_ms`` (stage -> median ms, the
    stages of STAGES that ran), ``total_ms``, ``live_ms``, ``paper_style_ms`` / ``naive_edge_ms``
    (when timed) and their ratios to ``total_ms``, ``threads``, ``cpu``. graphs: folder that
    keeps the reference pipelines' ONNX files between runs (default: a new temp folder).
    parallel: the pipeline's worker thread (None: the device's default); precision: as the
    device's ``[models] precision`` (default: its default, fastest here). ValueError when
    ``frames`` is empty, ``runs`` or ``slow_runs`` < 1, or ``fused`` is asked of a bundle without
    the refiner."""
    if not frames:
        raise ValueError("bench diagnosis: no frames to time on")
    if runs < 1 or slow_runs < 1:
        raise ValueError(f"bench diagnosis: runs and slow_runs must be at least 1, got {runs}, {slow_runs}")
    bundle = Bundle.open(bundle_dir, trusted_keys)
    refiners = {PIXEL_REFINER_MODEL} | {REFINER_ENCODER_MODEL, REFINER_DECODER_MODEL}
    if fused and not refiners & set(bundle.models):
        raise ValueError(f"bench diagnosis: bundle {bundle_dir} has no refiner (use --no-fused)")
    pipe = ScanPipeline(
        bundle, precision=precision, threads=threads, mask_stage="auto" if fused else "coarse", parallel=parallel
    )
    k = pipe.refiner.k if pipe.refiner is not None else PromptConfig().group_size
    config = PromptConfig(group_size=k)
    raw = [read_frame(f) for f in frames]
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    groups_of: list[PromptGroups] = []
    mask_stages: set[str] = set()
    boot_id = str(uuid.uuid4())
    for r in range(runs + WARMUP):
        frame_bgr = raw[r % len(raw)]
        pipe.forget_motion()
        t0 = time.perf_counter()
        live = pipe.live(frame_bgr, count=True, diagnose=True)
        diagnosis = pipe.diagnose(live)
        stage = {k.removesuffix("_ms"): v for k, v in live.timings_ms.items()}  # with the live count
        stage.update({k.removesuffix("_ms"): v for k, v in diagnosis.timings_ms.items() if k != "total_ms"})
        t = time.perf_counter()
        record = build_record(
            device_id="bench", boot_id=boot_id, seq=r + 1, bundle_version=bundle.version, **diagnosis.record_fields()
        )
        stage["record"] = (time.perf_counter() - t) * 1000
        total = (time.perf_counter() - t0) * 1000
        if live.seg is not None and r < len(raw):
            t = time.perf_counter()  # the reference pipelines' prompts (not part of this diagnosis's time)
            groups_of.append(auto_prompts(live.seg.prob >= MASK_THRESHOLD, config))
            add("prompts_for_reference", (time.perf_counter() - t) * 1000)
        if r < WARMUP:
            continue
        for name in STAGES:
            if name in stage:
                add(name, stage[name])
        add("total", total)
        add("accepted", float(live.seg is not None))
        mask_stages.add(str(record.get("mask_stage")))
    for r in range(runs + WARMUP):
        frame_bgr = raw[r % len(raw)]
        pipe.forget_motion()
        t0 = time.perf_counter()
        pipe.live(frame_bgr, count=False)
        if r >= WARMUP:
            add("live", (time.perf_counter() - t0) * 1000)
    report: dict[str, Any] = {
        "cpu": cpu_name(),
        "threads": threads,
        "bundle_version": bundle.version,
        "frames": [str(f) for f in frames],
        "runs": runs,
        "fused": pipe.mask_stage != "coarse",
        "precision": precision,
        "variants": dict(pipe.variants),
        "parallel": pipe.parallel,
        "mask_stage": sorted(mask_stages),
        "stages_overlap": pipe.parallel,
        "accepted_share": round(float(np.mean(rows.pop("accepted"))), 3),
        "stages_ms": {name: _median(rows[name]) for name in STAGES if name in rows},
        "total_ms": _median(rows["total"]),
        "live_ms": _median(rows["live"]),
        "live_fps": round(1000.0 / max(_median(rows["live"]), 1e-6), 1),
    }
    if paper or naive:
        folder = Path(graphs) if graphs else Path(tempfile.mkdtemp(prefix="scalpedge-bench-graphs-"))
        prompts_ms = report["stages_ms"].get("prompts") or _median(rows.get("prompts_for_reference", [0.0]))
        frames_640 = [prepare_frame(f) for f in raw]
        groups_of = groups_of or [group_points(np.zeros((0, 2)), np.zeros((0, 2)), config)]
        naive_paths = _naive_paths(folder, k)  # the SAM decoder both pipelines share
        decoder = OrtBackend(naive_paths["sam_decoder"], threads=threads)
        pipelines: dict[str, Callable[[], tuple[Backend, Backend]]] = {}
        if paper:
            paper_paths = build_paper_graphs(folder)
            pipelines["paper_style"] = lambda: (
                OrtBackend(paper_paths["u2net"], threads=threads),
                OrtBackend(paper_paths["vit_b"], threads=threads),
            )
        if naive:
            pipelines["naive_edge"] = lambda: (
                OrtBackend(naive_paths["u2netp"], threads=threads),
                OrtBackend(naive_paths["tinyvit"], threads=threads),
            )
        for name, load in pipelines.items():
            seg, encoder = load()
            times = []
            for r in range(slow_runs + 1):  # one warm-up pass: these are slow
                i = r % len(frames_640)
                ms = _sam_pipeline(seg, encoder, decoder, frames_640[i], groups_of[i % len(groups_of)], k)
                if r:
                    times.append(ms + prompts_ms)
            report[f"{name}_ms"] = _median(times)
            report[f"{name}_over_total"] = round(report[f"{name}_ms"] / report["total_ms"], 1)
            del seg, encoder
    return report
