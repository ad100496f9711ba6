"""Model cards for the classifiers, from the ``classifiers.json`` their export writes.

``scalpedge bundle build`` packs model cards; the classifier export keeps one manifest for all
three classifiers. This turns each of its entries into a card next to the ONNX files, naming
the models as the device pipeline looks them up (``device.app.pipeline.MODEL_NAMES``): severity ->
``conditions``, alopecia -> ``alopecia``, disease -> ``disease``. A variant is marked for
TensorRT only when it passes the static TensorRT check.

    python -m export.classifier_cards runs/cls_release/classifiers.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["BUNDLE_NAMES", "cards_from_manifest"]

BUNDLE_NAMES = {"severity": "conditions", "alopecia": "alopecia", "disease": "disease"}


def cards_from_manifest(manifest_path: str | Path) -> list[Path]:
    """Write ``<bundle name>.card.json`` beside ``manifest_path`` for every model it lists;
    returns the card paths."""
    from calibration.trt_support import check_tensorrt_support
    from device.contracts.constants import CONDITION_NAMES, DISEASE_NAMES, LEVEL_NAMES

    manifest_path = Path(manifest_path)
    folder = manifest_path.parent
    models: dict[str, Any] = json.loads(manifest_path.read_text())["models"]
    classes = {
        "severity": {"conditions": list(CONDITION_NAMES), "levels": list(LEVEL_NAMES)},
        "alopecia": {"levels": list(LEVEL_NAMES)},
        "disease": list(DISEASE_NAMES),
    }
    cards = []
    for kind, entry in models.items():
        name = BUNDLE_NAMES.get(kind, kind)
        variants = []
        for precision, file in entry["files"].items():
            trt_ok = not check_tensorrt_support(folder / file)
            targets = ["onnxruntime-cpu"] + (["tensorrt"] if trt_ok else [])
            variants.append({"file": file, "precision": precision, "targets": targets})
        by_precision = {v["precision"]: v for v in variants}
        default = by_precision.get(entry.get("default_precision", "fp32"), variants[0])
        trt = next((v for v in variants if "tensorrt" in v["targets"] and v["precision"] == "int8"), None)
        trt = trt or next((v for v in variants if "tensorrt" in v["targets"]), None)
        card = {
            "name": name,
            "task": entry.get("task", kind),
            "class_names": classes.get(kind),
            "preprocessing": entry.get("metadata", {}).get("preprocessing"),
            "thresholds": None,
            "provenance": entry.get("provenance", {}) | {"training": entry.get("metadata", {})},
            "evaluation": entry.get("metrics", {}),
            "variants": variants,
            "preferred": {"onnxruntime-cpu": default["file"]} | ({"tensorrt": trt["file"]} if trt else {}),
        }
        path = folder / f"{name}.card.json"
        path.write_text(json.dumps(card, indent=2) + "\n")
        cards.append(path)
    return cards


if __name__ == "__main__":
    for card in cards_from_manifest(sys.argv[1]):
        print(f"wrote {card}")
