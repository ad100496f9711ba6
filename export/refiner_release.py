"""Stage the prompt refiner for a bundle: its two ONNX graphs and one model card per graph.

Cards follow ``export.bundle``'s format (name, task, preprocessing, variants [{file, precision,
targets}], preferred, provenance, evaluation), so ``scalpedge bundle build --card ...`` packs
them next to the segmenter. The encoder runs once per frame, the decoder once per prompt group.
Like ``export.release``, this takes the model and the numbers; ``server_train.release`` loads the
checkpoint and counts the FLOPs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from device.contracts.constants import (
    FUSION_COARSE_THRESHOLD,
    MASK_THRESHOLD,
    PROMPT_GROUP_SIZE,
    PROMPT_NEGATIVES,
    REF_DEC_OUT_IOU,
    REF_DEC_OUT_MASKS,
    REF_ENC_OUT,
    REFINER_DECODER_MODEL,
    REFINER_ENCODER_MODEL,
    REFINER_GROUPS_PER_CALL,
    REFINER_MASK_THRESHOLD,
)
from export.release import Recipe, frame_preprocessing, model_card, write_card

if TYPE_CHECKING:
    from export.refiner_export import RefinerModel

__all__ = ["release_refiner", "ENCODER_CARD", "DECODER_CARD"]

ENCODER_CARD = "refiner_encoder.card.json"
DECODER_CARD = "refiner_decoder.card.json"


def release_refiner(
    model: RefinerModel,
    out_dir: str | Path,
    recipe: Recipe,
    encoder_gflop: float,
    decoder_gflop_per_group: float,
    metrics: dict[str, Any] | None = None,
    command: str | None = None,
) -> list[Path]:
    """Export the refiner ``model`` (checked: onnx.checker, ORT parity, TensorRT rules) into
    ``out_dir`` and write the two cards there; returns the card paths. GFLOP: the encoder per
    1x3x480x640 frame, the decoder per group of ``PROMPT_GROUP_SIZE`` points."""
    from export.refiner_export import ATOL, export_refiner

    out = Path(out_dir)
    result = export_refiner(model, out, REFINER_GROUPS_PER_CALL, PROMPT_GROUP_SIZE, metadata=recipe.onnx_metadata())
    evaluation = {**(metrics or {}), "onnx_parity_max_abs": result["parity"], "parity_tolerance": ATOL}
    encoder = {
        "task": "prompt-refiner-image-encoder",
        "preprocessing": frame_preprocessing(),
        "outputs": [REF_ENC_OUT],
        "gflop": round(encoder_gflop, 3),
    }
    decoder = {
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
        "gflop_per_group": round(decoder_gflop_per_group, 3),
    }
    return [
        write_card(model_card(name, result[graph], recipe, fields, evaluation, command), out / card)
        for name, graph, fields, card in (
            (REFINER_ENCODER_MODEL, "encoder", encoder, ENCODER_CARD),
            (REFINER_DECODER_MODEL, "decoder", decoder, DECODER_CARD),
        )
    ]
