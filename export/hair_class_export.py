"""Export of the per-hair class network and its model card (bundle model ``hair_classes``).

The graph takes a static batch of HAIR_PATCH_BATCH patches (``HAIR_CLS_INPUT``, HAIR_PATCH_PX a
side for one patch network, HAIR_FIELD_PX for the two-field pair) and gives their logits
(``HAIR_CLS_OUT``); its metadata carries the decision threshold ``thin_probability`` and the
share scale ``thin_share_scale`` chosen on training subjects, the training config and the seed.
FP32 only: at about 2 MFLOP a 40 px patch (about 12 for the pair's four passes), INT8 would save
nothing worth a second accuracy gate. The card names both in ``thresholds`` too (a TensorRT
engine keeps no graph metadata; ``device.app.pipeline`` reads the card's).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from device.contracts.constants import HAIR_CLS_INPUT, HAIR_CLS_OUT, HAIR_PATCH_BATCH, HAIR_PATCH_PX

__all__ = ["export_hair_classes", "HAIR_CLASSES_TASK"]

HAIR_CLASSES_TASK = "per-hair class: miniaturised (thin) or terminal, from a patch around each located hair"


def export_hair_classes(
    model: nn.Module,
    ckpt: dict[str, Any],
    folder: str | Path,
    commands: Sequence[str],
    metrics: dict[str, Any] | None = None,
) -> Path:
    """``folder``/hair_classes.onnx (checked: onnx full check, ONNX Runtime vs torch parity) and
    its card ``hair_classes.card.json`` from the network and checkpoint of a finished
    ``scalpedge train hair-classes`` run (its ``threshold`` record). Returns the card path."""
    from device.models.hair_classes import HAIR_CLASSES_MODEL
    from export.classifier_cards import write_card
    from export.classifier_export import _export

    threshold = ckpt.get("threshold")
    if not threshold:
        raise ValueError("the checkpoint has no chosen threshold: is it the final.pt of a finished run?")
    folder = Path(folder)
    onnx_path = folder / f"{HAIR_CLASSES_MODEL}.onnx"
    metadata = {
        "thin_probability": str(threshold["thin_probability"]),
        "thin_share_scale": str(threshold.get("thin_share_scale", 1.0)),
        "train_config": ckpt["train_config"],
        "model_config": ckpt["model_config"],
        "seed": ckpt["train_config"].get("seed"),
        "step": ckpt["step"],
    }
    side = int(getattr(model, "input_px", HAIR_PATCH_PX))
    shape = (HAIR_PATCH_BATCH, 3, side, side)
    _export(model, shape, onnx_path, HAIR_CLS_INPUT, [HAIR_CLS_OUT], metadata, atol=1e-4)
    card_path = write_card(folder, HAIR_CLASSES_MODEL, {"fp32": onnx_path}, commands, metrics)
    card = json.loads(card_path.read_text())
    card |= {
        "task": HAIR_CLASSES_TASK,
        "class_names": ["terminal", "miniaturised"],
        "thresholds": {
            "thin_probability": threshold["thin_probability"],
            "thin_share_scale": threshold.get("thin_share_scale", 1.0),
        },
    }
    card["evaluation"] = {"threshold_choice": threshold} | card.get("evaluation", {})
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path
