"""Model cards for the classifiers: what ``scalpedge bundle build`` packs.

``write_card`` writes ``<bundle name>.card.json`` beside the classifier's ONNX files, naming the
model as the device pipeline looks it up (``device.app.pipeline.MODEL_NAMES``): severity ->
``conditions``, alopecia -> ``alopecia``, disease -> ``disease``. An INT8 variant made by
``export.classifier_export.quantize_int8`` carries its quantization record and gate verdict in
its graph metadata; they go into the card as for every model calibrated by ``calibration``
(``scalpedge calibrate int8 --card`` adds INT8 variants to an FP32 card the same way). A variant
is marked for TensorRT only when it passes the static TensorRT check.

``cards_from_manifest`` converts a ``classifiers.json`` of earlier releases (one manifest for
all three classifiers) into cards; it goes after one release:

    python -m export.classifier_cards runs/cls_release/classifiers.json
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["BUNDLE_NAMES", "TASKS", "write_card", "cards_from_manifest"]

BUNDLE_NAMES = {"severity": "conditions", "alopecia": "alopecia", "disease": "disease"}
TASKS = {
    "severity": "scalp condition levels (dandruff, sebum, erythema) x (good, mild, moderate, severe) + presence",
    "alopecia": "alopecia level (good, mild, moderate, severe) from hair features",
    "disease": "disease type of a clinical scalp photo (alopecia, psoriasis, folliculitis)",
}


def _graph_metadata(path: Path) -> dict[str, Any]:
    """The ONNX graph's ``metadata_props``, JSON values decoded."""
    import onnx

    props = onnx.load(str(path), load_external_data=False).metadata_props
    return {p.key: (json.loads(p.value) if p.value[:1] in "[{" else p.value) for p in props}


def _card(kind: str, folder: Path, files: Mapping[str, str], default_precision: str, **fields: Any) -> dict[str, Any]:
    """A card for classifier ``kind`` whose ``files`` (precision -> name) lie in ``folder``;
    ``fields``: task, provenance, evaluation, training (graph metadata of the FP32 file)."""
    from calibration.trt_support import check_tensorrt_support
    from device.contracts.constants import CONDITION_NAMES, DISEASE_NAMES, LEVEL_NAMES

    classes = {
        "severity": {"conditions": list(CONDITION_NAMES), "levels": list(LEVEL_NAMES)},
        "alopecia": {"levels": list(LEVEL_NAMES)},
        "disease": list(DISEASE_NAMES),
    }
    variants = []
    for precision, file in files.items():
        trt_ok = not check_tensorrt_support(folder / file)
        variant: dict[str, Any] = {
            "file": file,
            "precision": precision,
            "targets": ["onnxruntime-cpu"] + (["tensorrt"] if trt_ok else []),
        }
        record = _graph_metadata(folder / file).get("quantization") if precision == "int8" else None
        if isinstance(record, dict) and "gate" in record:  # made through calibration
            variant |= {"quantization": {k: v for k, v in record.items() if k != "gate"}, "gate": record["gate"]}
        variants.append(variant)
    by_precision = {v["precision"]: v for v in variants}
    default = by_precision.get(default_precision, variants[0])
    trt = next((v for v in variants if "tensorrt" in v["targets"] and v["precision"] == "int8"), None)
    trt = trt or next((v for v in variants if "tensorrt" in v["targets"]), None)
    training = fields.get("training", {})
    return {
        "name": BUNDLE_NAMES.get(kind, kind),
        "task": fields.get("task") or TASKS.get(kind, kind),
        "class_names": classes.get(kind),
        "preprocessing": training.get("preprocessing"),
        "thresholds": None,
        "provenance": fields.get("provenance", {}) | {"training": training},
        "evaluation": fields.get("evaluation", {}),
        "variants": variants,
        "preferred": {"onnxruntime-cpu": default["file"]} | ({"tensorrt": trt["file"]} if trt else {}),
    }


def _save(card: dict[str, Any], folder: Path) -> Path:
    path = folder / f"{card['name']}.card.json"
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def write_card(
    folder: str | Path,
    kind: str,
    files: Mapping[str, str | Path],
    commands: Sequence[str],
    metrics: dict[str, Any] | None = None,
    default_precision: str = "fp32",
) -> Path:
    """Write the card of classifier ``kind`` ("severity", "alopecia", "disease") into ``folder``:
    ``files`` by precision (copied into ``folder`` when elsewhere), the training config and
    seed read from the first file's graph metadata, the commands that produced it, git commit
    and ``metrics``. Returns the card path."""
    from export.release import git_commit

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for precision, src in files.items():
        src = Path(src)
        if src.resolve() != (folder / src.name).resolve():
            shutil.copyfile(src, folder / src.name)
        names[precision] = src.name
    provenance = {
        "commands": list(commands),
        "git_commit": git_commit(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    training = _graph_metadata(folder / next(iter(names.values())))
    training.pop("quantization", None)
    card = _card(
        kind, folder, names, default_precision, provenance=provenance, evaluation=metrics or {}, training=training
    )
    return _save(card, folder)


def cards_from_manifest(manifest_path: str | Path) -> list[Path]:
    """Write ``<bundle name>.card.json`` beside a ``classifiers.json`` of an earlier release for
    every model it lists; returns the card paths."""
    manifest_path = Path(manifest_path)
    folder = manifest_path.parent
    models: dict[str, Any] = json.loads(manifest_path.read_text())["models"]
    cards = []
    for kind, entry in models.items():
        fields = {
            "task": entry.get("task"),
            "provenance": entry.get("provenance", {}),
            "evaluation": entry.get("metrics", {}),
            "training": entry.get("metadata", {}),
        }
        card = _card(kind, folder, entry["files"], entry.get("default_precision", "fp32"), **fields)
        cards.append(_save(card, folder))
    return cards


if __name__ == "__main__":
    for written in cards_from_manifest(sys.argv[1]):
        print(f"wrote {written}")
