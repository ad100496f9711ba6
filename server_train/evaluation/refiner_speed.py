"""Per-stage cost of the fused mask path at 640x480 on this CPU, against the naive edge pipeline.

Ours: student -> auto prompts -> refiner encoder (once) -> decoder (one call per group, K
points) -> union + one bilinear upscale -> M^ AND M_AP. Naive: U²-NetP at 640x480 -> the same
auto prompts -> TinyViT (MobileSAM layout) at 1024x1024 -> SAM's stock ONNX decoder
(``segment_anything.utils.onnx.SamOnnxModel``, masks upscaled to the frame inside the graph)
once per group. The naive graphs have random weights (cost only). Both run in one process,
frame by frame interleaved, on real frames, for each thread count; medians are reported.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from device.capture.imageio import read_frame
from device.contracts.constants import FRAME_HEIGHT, FRAME_WIDTH, MASK_THRESHOLD
from device.contracts.preprocess import prepare_frame, to_network_input
from device.models.backends import OrtBackend
from device.models.onnx_segmenter import ModelSegmenter
from device.refine.fusion import fuse_prob
from device.refine.prompts import PromptConfig, auto_prompts
from device.refine.refiner import PromptRefiner

if TYPE_CHECKING:
    from server_train.models.refiner import Refiner

__all__ = ["bench_refiner", "build_naive_graphs", "gflops", "refiner_gflops"]

SAM_SIZE = 1024


def _flops(module: torch.nn.Module, *args: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*args)
    return counter.get_total_flops() / 1e9


def refiner_gflops(model: Refiner, k: int) -> dict[str, float]:
    """GFLOP (2 x MACs) of the refiner ``model``'s encoder per 1x3x480x640 frame
    ("refiner_encoder") and of its exported decoder per group of ``k`` points
    ("refiner_decoder_per_group")."""
    from export.refiner_export import ExportedRefinerDecoder, decoder_example

    dec = ExportedRefinerDecoder(model, 1, k).eval()
    return {
        "refiner_encoder": _flops(model.encoder, torch.zeros(1, 3, FRAME_HEIGHT, FRAME_WIDTH)),
        "refiner_decoder_per_group": _flops(dec, *decoder_example(model, 1, k).values()),
    }


def gflops(model: Refiner, k: int) -> dict[str, float]:
    """``refiner_gflops`` plus, for comparison, the student and U²-NetP per frame and the naive
    pipeline's TinyViT at 1024 and SAM's stock decoder per call."""
    from segment_anything.utils.onnx import SamOnnxModel

    from server_train.models import create
    from server_train.models.tinyvit import build_tinyvit_sam

    onnx_model = SamOnnxModel(_stock_sam(), return_single_mask=True)
    return {
        **refiner_gflops(model, k),
        "student": _flops(create("student").eval(), torch.zeros(1, 3, FRAME_HEIGHT, FRAME_WIDTH)),
        "u2netp": _flops(create("u2netp").eval(), torch.zeros(1, 3, FRAME_HEIGHT, FRAME_WIDTH)),
        "tinyvit_1024": _flops(build_tinyvit_sam().eval(), torch.zeros(1, 3, SAM_SIZE, SAM_SIZE)),
        "sam_decoder_per_call": _flops(onnx_model, *_sam_inputs(k).values()),
    }


def _stock_sam() -> Any:
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    from server_train.models.tinyvit import build_tinyvit_sam

    torch.manual_seed(0)
    encoder = build_tinyvit_sam()
    encoder.img_size = SAM_SIZE  # type: ignore[assignment]
    return Sam(
        image_encoder=encoder,  # type: ignore[arg-type]
        prompt_encoder=PromptEncoder(256, (64, 64), (SAM_SIZE, SAM_SIZE), 16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
        ),
    ).eval()


def _sam_inputs(k: int) -> dict[str, torch.Tensor]:
    return {
        "image_embeddings": torch.randn(1, 256, 64, 64),
        "point_coords": torch.rand(1, k, 2) * SAM_SIZE,
        "point_labels": torch.ones(1, k),
        "mask_input": torch.zeros(1, 1, 256, 256),
        "has_mask_input": torch.ones(1),
        "orig_im_size": torch.tensor([FRAME_HEIGHT, FRAME_WIDTH], dtype=torch.float32),
    }


def build_naive_graphs(out_dir: str | Path, k: int) -> dict[str, Path]:
    """ONNX files of the naive pipeline (random weights): u2netp.onnx (1x3x480x640),
    tinyvit_1024.onnx (1x3x1024x1024), sam_decoder.onnx (SamOnnxModel, K points)."""
    from segment_anything.utils.onnx import SamOnnxModel

    from export.onnx_export import export_segmenter
    from server_train.models import create

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    paths = {"u2netp": export_segmenter(create("u2netp").eval(), out / "u2netp.onnx", check=False)}
    sam = _stock_sam()
    paths["tinyvit"] = out / "tinyvit_1024.onnx"
    torch.onnx.export(
        sam.image_encoder,
        (torch.zeros(1, 3, SAM_SIZE, SAM_SIZE),),
        str(paths["tinyvit"]),
        input_names=["image"],
        output_names=["image_embeddings"],
        opset_version=17,
        dynamo=False,
    )
    inputs = _sam_inputs(k)
    paths["sam_decoder"] = out / "sam_decoder.onnx"
    torch.onnx.export(
        SamOnnxModel(sam, return_single_mask=True),
        tuple(inputs.values()),
        str(paths["sam_decoder"]),
        input_names=list(inputs),
        output_names=["masks", "iou_predictions", "low_res_masks"],
        opset_version=17,
        dynamo=False,
    )
    return paths


def _sam_preprocess(frame: np.ndarray) -> np.ndarray:
    scale = SAM_SIZE / max(frame.shape[:2])
    h, w = int(round(frame.shape[0] * scale)), int(round(frame.shape[1] * scale))
    x = to_network_input(frame, h, w)
    return np.pad(x, ((0, 0), (0, 0), (0, SAM_SIZE - h), (0, SAM_SIZE - w)))


def bench_refiner(
    student_onnx: str | Path,
    encoder_onnx: str | Path,
    decoder_onnx: str | Path,
    frames: list[Path],
    threads: tuple[int, ...] = (1, 2),
    runs: int = 20,
    naive: bool = True,
) -> dict[str, Any]:
    """Median ms per stage (ours and naive) for each thread count over ``runs`` timed passes
    (after 2 warm-up passes) that cycle through ``frames``; see the module docstring.
    ValueError when ``frames`` is empty or ``runs`` < 1."""
    if not frames:
        raise ValueError("bench_refiner: no frames to time on")
    if runs < 1:
        raise ValueError(f"bench_refiner: runs must be at least 1, got {runs}")
    report: dict[str, Any] = {"frames": [str(f) for f in frames], "runs": runs, "results": []}
    imgs = [prepare_frame(read_frame(f)) for f in frames]
    tmp = Path(tempfile.mkdtemp(prefix="scalpedge-naive-"))
    for th in threads:
        student = ModelSegmenter.from_onnx(student_onnx, threads=th)
        refiner = PromptRefiner.from_onnx(encoder_onnx, decoder_onnx, threads=th)
        config = PromptConfig(group_size=refiner.k)
        naive_b = None
        if naive:
            paths = build_naive_graphs(tmp, refiner.k) if not (tmp / "sam_decoder.onnx").exists() else None
            paths = paths or {
                n: tmp / f
                for n, f in (
                    ("u2netp", "u2netp.onnx"),
                    ("tinyvit", "tinyvit_1024.onnx"),
                    ("sam_decoder", "sam_decoder.onnx"),
                )
            }
            naive_b = {n: OrtBackend(p, threads=th) for n, p in paths.items()}
        rows: dict[str, list[float]] = {}

        def add(key: str, value: float, rows: dict[str, list[float]] = rows) -> None:
            rows.setdefault(key, []).append(value)

        for r in range(runs + 2):
            frame = imgs[r % len(imgs)]
            t0 = time.perf_counter()
            coarse = student.segment(frame)
            t1 = time.perf_counter()
            groups = auto_prompts(coarse.prob >= MASK_THRESHOLD, config)
            t2 = time.perf_counter()
            refiner.set_image(frame, coarse.prob)
            out = refiner.predict(groups)
            t3 = time.perf_counter()
            fused = fuse_prob(coarse.prob, out.prob) >= MASK_THRESHOLD
            t4 = time.perf_counter()
            if r < 2:
                continue  # warm-up
            add("student_ms", (t1 - t0) * 1000)
            add("prompts_ms", (t2 - t1) * 1000)
            add("encoder_ms", refiner.encoder_ms)
            add("decoder_all_groups_ms", out.timings_ms["decoder_ms"])
            add("decoder_per_group_ms", out.timings_ms["decoder_ms"] / max(1, out.groups))
            add("upscale_ms", out.timings_ms["upscale_ms"])
            add("fusion_ms", (t4 - t3) * 1000)
            add("groups", float(out.groups))
            add("fused_hair_fraction", float(fused.mean()))
            add("refinement_total_ms", (t4 - t1) * 1000)
            add("fused_path_total_ms", (t4 - t0) * 1000)
            if naive_b is not None:
                n0 = time.perf_counter()
                naive_b["u2netp"].run({"image": to_network_input(frame)})
                n1 = time.perf_counter()
                emb = naive_b["tinyvit"].run({"image": _sam_preprocess(frame)})["image_embeddings"]
                n2 = time.perf_counter()
                feeds = {k: v.numpy() for k, v in _sam_inputs(refiner.k).items()}
                feeds["image_embeddings"] = emb
                for g in range(max(1, groups.count)):
                    if groups.count:
                        feeds["point_coords"] = groups.points[g : g + 1] * (SAM_SIZE / max(frame.shape[:2]))
                        feeds["point_labels"] = groups.labels[g : g + 1]
                    naive_b["sam_decoder"].run(feeds, ["masks"])
                n3 = time.perf_counter()
                add("naive_u2netp_ms", (n1 - n0) * 1000)
                add("naive_prompts_ms", (t2 - t1) * 1000)
                add("naive_tinyvit_1024_ms", (n2 - n1) * 1000)
                add("naive_sam_decoder_all_groups_ms", (n3 - n2) * 1000)
                add("naive_sam_decoder_per_call_ms", (n3 - n2) * 1000 / max(1, groups.count))
                add("naive_total_ms", (n3 - n0) * 1000 + (t2 - t1) * 1000)
        med = {k: round(float(np.median(v)), 2) for k, v in rows.items()}
        if naive_b is not None:
            med["naive_over_ours"] = round(med["naive_total_ms"] / med["fused_path_total_ms"], 2)
        report["results"].append({"threads": th, **med})
    cv2.setNumThreads(cv2.getNumThreads())
    return report
