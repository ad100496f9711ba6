"""Export of the pixel refiner and its model card (bundle model ``pixel_refiner``).

The graph takes the normalised frame (``PIX_IN_IMAGE``, 1x3xFRAME_HEIGHTxFRAME_WIDTH), the
student's P(hair) (``PIX_IN_COARSE``, 1x1xFRAME_HEIGHTxFRAME_WIDTH) and, when the network was
trained with it, the prompt refiner's M_AP probabilities (``PIX_IN_PROMPT``), and gives refined
logits (``PIX_OUT``). Checks: onnx.checker (full), ONNX Runtime vs torch on a random frame and map, and
the static TensorRT rules. The card carries the refined mask's threshold (``thresholds``:
``refined_mask``, read by ``device.refine.pixel``) and how it was chosen. FP32 only: at about
1.3 GMAC it is a quarter of the student's cost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from device.contracts.constants import (
    FRAME_HEIGHT,
    FRAME_WIDTH,
    PIX_IN_COARSE,
    PIX_IN_IMAGE,
    PIX_IN_PROMPT,
    PIX_OUT,
    PIXEL_REFINER_MODEL,
)

__all__ = ["export_pixel_refiner", "PIXEL_REFINER_TASK", "ATOL"]

PIXEL_REFINER_TASK = (
    "fused hair mask: the student's P(hair) and the prompt refiner's M_AP fused at full resolution with the frame"
)
ATOL = 1e-3  # logits, torch vs ONNX Runtime
PROMPT_MAP = "device.refine.fusion.refine(stage='refined') of device.refine.prompts.auto_prompts on the student's mask"
OPSET = 17


def export_pixel_refiner(
    model: nn.Module,
    ckpt: dict[str, Any],
    folder: str | Path,
    threshold: dict[str, Any],
    commands: Sequence[str],
    metrics: dict[str, Any] | None = None,
) -> Path:
    """``folder``/pixel_refiner.onnx (checked) and its card ``pixel_refiner.card.json`` from the
    network and checkpoint of a finished ``scalpedge train pixel-refiner`` run; ``threshold``:
    ``server_train.training.pixel_refiner_train.choose_threshold``'s record. Returns the card."""
    import onnx
    import onnxruntime as ort

    from calibration.trt_support import assert_tensorrt_compatible
    from export.classifier_cards import write_card
    from export.onnx_export import write_metadata
    from export.release import frame_preprocessing

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{PIXEL_REFINER_MODEL}.onnx"
    model = model.eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, FRAME_HEIGHT, FRAME_WIDTH, generator=gen)
    maps = [torch.rand(1, 1, FRAME_HEIGHT, FRAME_WIDTH, generator=gen)]
    names = [PIX_IN_IMAGE, PIX_IN_COARSE]
    if getattr(model, "prompt_input", False):
        maps.append(torch.rand(1, 1, FRAME_HEIGHT, FRAME_WIDTH, generator=gen))
        names.append(PIX_IN_PROMPT)
    with torch.no_grad():
        torch.onnx.export(
            model, (x, *maps), str(path), input_names=names, output_names=[PIX_OUT], opset_version=OPSET, dynamo=False
        )
        ref = model(x, *maps).numpy()
    write_metadata(
        path,
        {
            "refined_mask_threshold": str(threshold["threshold"]),
            "train_config": ckpt["train_config"],
            "model_config": ckpt["model_config"],
            "seed": ckpt["train_config"].get("seed"),
            "step": ckpt["step"],
        },
    )
    onnx.checker.check_model(str(path), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run([PIX_OUT], dict(zip(names, [x.numpy(), *(m.numpy() for m in maps)], strict=True)))[0]
    diff = float(np.max(np.abs(got - ref)))
    if diff > ATOL:
        raise RuntimeError(f"ONNX Runtime differs from torch by {diff:.2e} (> {ATOL:.0e}) for {path}")
    assert_tensorrt_compatible(path, label=str(path))
    card_path = write_card(folder, PIXEL_REFINER_MODEL, {"fp32": path}, commands, metrics)
    card = json.loads(card_path.read_text())
    card |= {
        "task": PIXEL_REFINER_TASK,
        "preprocessing": frame_preprocessing()
        | {"maps": {n: [1, 1, FRAME_HEIGHT, FRAME_WIDTH] for n in names[1:]}, "prompt_probabilities": PROMPT_MAP},
        "inputs": names,
        "outputs": [PIX_OUT],
        "thresholds": {"refined_mask": threshold["threshold"]},
        "model_config": ckpt["model_config"],
    }
    card["evaluation"] = {"threshold_choice": threshold, "onnx_parity_max_abs": diff} | card.get("evaluation", {})
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path
