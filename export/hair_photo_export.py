"""Export of the hair-photo segmenter and its model card (bundle model ``hair_photo``).

FP32 graph: ``HAIR_PHOTO_INPUT`` 1x3xSxS -> ``HAIR_PHOTO_OUT`` 1x1xSxS logits, metadata with the
training config, network, seed, step and the validation scores of the chosen step. INT8 (when
asked): Q/DQ through ``calibration`` (the ``hair_photo`` rules: ONNX Runtime CPU recipe, at most
0.5 pt of held-out mIoU lost), calibrated on training photos and gated on the validation
photos; the card prefers INT8 only when it passed its gate and runs faster than FP32 here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from device.contracts.constants import HAIR_PHOTO_INPUT, HAIR_PHOTO_OUT

__all__ = ["export_hair_photo", "quantize_hair_photo", "MirrorAverage", "HAIR_PHOTO_TASK"]

HAIR_PHOTO_TASK = "hair segmentation in ordinary photos of a head (overview before the close-ups)"
MIN_INT8_SPEEDUP = 1.1  # INT8 must be at least this much faster than FP32 to be preferred


class MirrorAverage(nn.Module):
    """Test-time augmentation inside the graph: the mean of the network's logits on the photo and
    on its mirror image (mirrored back), so the mask of a mirrored photo is the mirrored mask."""

    def __init__(self, model: nn.Module, side: int) -> None:
        super().__init__()
        self.model = model
        # a Gather with reversed indices: torch.flip exports a Slice with an INT64_MIN end TensorRT refuses
        self.register_buffer("reverse", torch.arange(side - 1, -1, -1, dtype=torch.int64), persistent=False)

    def _mirror(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(3, self.reverse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.model(x) + self._mirror(self.model(self._mirror(x))))


def quantize_hair_photo(
    fp32: Path, out: Path, calib: Sequence[Path], gate_pairs: Sequence[tuple[Path, Path]], threads: int = 2
) -> tuple[Path | None, dict[str, Any]]:
    """INT8 Q/DQ of ``fp32`` calibrated on the photos ``calib`` and gated on (photo, mask)
    ``gate_pairs``; (``out`` or None when refused, the record with the gate's verdict)."""
    from calibration.card import quantize_gated
    from calibration.gate import MiouGate
    from calibration.readers import model_reader
    from calibration.rules import recipes_for, rules_for
    from export.onnx_export import write_metadata

    rules = rules_for({}, fp32)
    recipe = next(r for r in recipes_for(rules, fp32) if not r.emulated)
    record, verdict = quantize_gated(
        fp32, out, model_reader(list(calib), fp32), recipe, MiouGate(gate_pairs, rules.max_drop, threads)
    )
    record = record | {"gate": verdict.to_dict()}
    if not verdict.passed:
        return None, record
    write_metadata(out, {"quantization": record})
    return out, record


def export_hair_photo(
    model: nn.Module,
    ckpt: dict[str, Any],
    folder: str | Path,
    commands: Sequence[str],
    metrics: dict[str, Any] | None = None,
    calib: Sequence[Path] = (),
    gate_pairs: Sequence[tuple[Path, Path]] = (),
    mirror: bool = False,
    int8_only: bool = False,
) -> Path:
    """``folder``/hair_photo.onnx (onnx full check, ONNX Runtime vs torch parity), with
    ``calib`` and ``gate_pairs`` also hair_photo.int8.onnx when its gate passes, and the card
    ``hair_photo.card.json``; ``mirror``: the graph averages the logits of the photo and its
    mirror image (``MirrorAverage``, twice the cost); ``int8_only``: the card lists the INT8 file
    alone (the bundle then carries a quarter of the bytes; ValueError when the gate refused it).
    Returns the card path."""
    from calibration.card import interleaved_latency
    from device.models.hair_photo import HAIR_PHOTO_MODEL
    from export.classifier_cards import write_card
    from export.classifier_export import _export

    folder = Path(folder)
    side = int(ckpt["train_config"]["side"])
    onnx_path = folder / f"{HAIR_PHOTO_MODEL}.onnx"
    metadata = {
        "train_config": ckpt["train_config"],
        "model_config": ckpt["model_config"],
        "seed": ckpt["train_config"].get("seed"),
        "step": ckpt["step"],
        "val_scores": (ckpt.get("best") or {}).get("scores"),
        "test_time": "mirror-averaged logits" if mirror else "none",
    }
    if mirror:
        model = MirrorAverage(model, side).eval()
    _export(model, (1, 3, side, side), onnx_path, HAIR_PHOTO_INPUT, [HAIR_PHOTO_OUT], metadata, atol=1e-3)
    files: dict[str, Path] = {"fp32": onnx_path}
    int8_record: dict[str, Any] | None = None
    if calib and gate_pairs:
        int8, int8_record = quantize_hair_photo(onnx_path, folder / f"{HAIR_PHOTO_MODEL}.int8.onnx", calib, gate_pairs)
        if int8 is not None:
            files["int8"] = int8
    if int8_only:
        if "int8" not in files:
            raise ValueError("--int8-only: there is no INT8 file (not asked for, or refused by its gate)")
        del files["fp32"]  # stays in the folder as the reference; not listed, so not bundled
    speed: dict[str, float] = {}
    if "int8" in files:
        fp32_ms, int8_ms = interleaved_latency([onnx_path, files["int8"]], runs=20, threads=2)
        speed = {"fp32_ms": round(fp32_ms, 2), "int8_ms": round(int8_ms, 2), "speedup": round(fp32_ms / int8_ms, 3)}
    default = "int8" if int8_only or (speed and speed["speedup"] >= MIN_INT8_SPEEDUP) else "fp32"
    card_path = write_card(folder, HAIR_PHOTO_MODEL, files, commands, metrics, default_precision=default)
    card = json.loads(card_path.read_text())
    card |= {
        "task": HAIR_PHOTO_TASK,
        "class_names": ["background", "hair"],
        "preprocessing": {
            "input": [1, 3, side, side],
            "resize": "whole photo to a square (aspect not kept); logits resized back to the photo",
            "colour": "RGB",
            "normalise": "(x - 127) / 128, x in 0..255",
            "test_time": "mean of the logits of the photo and its mirror image" if mirror else "none",
        },
        "thresholds": {"logit": 0.0},
    }
    card["evaluation"] = {
        "validation": (ckpt.get("best") or {})
        | {"photos": ckpt.get("val_photos"), "train_photos": ckpt.get("train_photos")},
        "int8": int8_record,
        "int8_speed": speed or None,
    } | card.get("evaluation", {})
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path
