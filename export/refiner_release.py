"""Stage the prompt refiner for a bundle: its two ONNX graphs and one model card per graph.

Cards follow ``export.bundle``'s format (name, task, preprocessing, variants [{file, precision,
targets}], preferred, provenance, evaluation), so ``scalpedge bundle build --card ...`` packs
them next to the segmenter. The encoder runs once per frame, the decoder once per prompt group.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["release_refiner", "ENCODER_CARD", "DECODER_CARD"]

ENCODER_CARD = "refiner_encoder.card.json"
DECODER_CARD = "refiner_decoder.card.json"


def release_refiner(
    checkpoint: str | Path, out_dir: str | Path, metrics: dict[str, Any] | None = None, command: str | None = None
) -> list[Path]:
    """Export ``checkpoint`` (checked: onnx.checker, ORT parity, TensorRT rules) into
    ``out_dir`` and write the two cards there; returns the card paths."""
    import json

    from device.contracts.constants import (
        FRAME_HEIGHT,
        FRAME_WIDTH,
        FUSION_COARSE_THRESHOLD,
        MASK_THRESHOLD,
        PIXEL_MEAN,
        PIXEL_STD,
        PROMPT_GROUP_SIZE,
        PROMPT_NEGATIVES,
        REF_DEC_OUT_IOU,
        REF_DEC_OUT_MASKS,
        REF_ENC_OUT,
        REFINER_GROUPS_PER_CALL,
        REFINER_MASK_THRESHOLD,
    )
    from device.models.bundle import TARGETS
    from export.refiner_export import ATOL, export_refiner
    from export.release import git_commit
    from server_train.evaluation.refiner_speed import gflops
    from server_train.training.refiner_train import load_refiner

    out = Path(out_dir)
    model, ckpt = load_refiner(checkpoint)
    train_cfg = ckpt["train_config"]
    meta = {"model_config": ckpt["model_config"], "train_config": train_cfg, "git_commit": git_commit()}
    result = export_refiner(model, out, REFINER_GROUPS_PER_CALL, PROMPT_GROUP_SIZE, metadata=meta)
    flops = gflops(checkpoint, PROMPT_GROUP_SIZE)
    common = {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "class_names": None,
        "model_config": ckpt["model_config"],
        "provenance": {
            "git_commit": git_commit(),
            "command": command or " ".join(sys.argv),
            "seed": train_cfg.get("seed"),
            "lineage": [{"checkpoint": str(checkpoint), "train_config": train_cfg, "steps": ckpt["step"]}],
        },
        "evaluation": {**(metrics or {}), "onnx_parity_max_abs": result["parity"], "parity_tolerance": ATOL},
    }
    cards = []
    for name, path, extra in (
        (
            "refiner_encoder",
            result["encoder"],
            {
                "task": "prompt-refiner-image-encoder",
                "preprocessing": {
                    "colour": "RGB",
                    "scale": 1 / 255,
                    "mean": PIXEL_MEAN,
                    "std": PIXEL_STD,
                    "input": [1, 3, FRAME_HEIGHT, FRAME_WIDTH],
                },
                "outputs": [REF_ENC_OUT],
                "gflop": round(flops["refiner_encoder"], 3),
            },
        ),
        (
            "refiner_decoder",
            result["decoder"],
            {
                "task": "prompt-refiner-mask-decoder",
                "preprocessing": {
                    "points_per_group": PROMPT_GROUP_SIZE,
                    "negatives_per_group": PROMPT_NEGATIVES,
                    "groups_per_call": REFINER_GROUPS_PER_CALL,
                    "prompts": "device.refine.prompts.auto_prompts",
                    "mask_input": "device.refine.refiner.mask_prompt of the student's P(hair)",
                },
                "thresholds": {
                    "refined_mask": REFINER_MASK_THRESHOLD,
                    "coarse_mask": MASK_THRESHOLD,
                    "fusion_coarse_mask": FUSION_COARSE_THRESHOLD,
                },
                "outputs": [REF_DEC_OUT_MASKS, REF_DEC_OUT_IOU],
                "gflop_per_group": round(flops["refiner_decoder_per_group"], 3),
            },
        ),
    ):
        card = {
            "name": name,
            **extra,
            **common,
            "variants": [
                {"file": Path(path).name, "precision": "fp32", "targets": list(TARGETS), "quantization": None}
            ],
            "preferred": {target: Path(path).name for target in TARGETS},
        }
        card_path = out / (ENCODER_CARD if name == "refiner_encoder" else DECODER_CARD)
        card_path.write_text(json.dumps(card, indent=2, default=str) + "\n")
        cards.append(card_path)
    return cards
