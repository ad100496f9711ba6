"""benchmarks/augment_label_agreement.py: the share of generated frames a real ONNX condition
grader grades at their labelled level, per condition a translation raised."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from device.models.classifiers import SeverityClassifier  # noqa: E402
from export.classifier_export import export_condition_classifier  # noqa: E402
from server_train.models.classifier import create_classifier  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "augment_label_agreement", Path(__file__).parents[1] / "benchmarks" / "augment_label_agreement.py"
)
assert _spec is not None and _spec.loader is not None
agreement = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(agreement)


def _grader(path: Path) -> SeverityClassifier:
    """Every condition present; whatever the frame, dandruff mild, sebum severe, erythema moderate."""
    torch.manual_seed(0)
    net = create_classifier("severity_tiny", pretrained=False).eval()
    with torch.no_grad():
        net.presence.bias.fill_(20.0)
        for row in (1, 4 + 3, 8 + 2):  # condition-major rows of 4 levels
            net.levels.bias[row] = 20.0
    return SeverityClassifier.from_onnx(export_condition_classifier(net, path))


def test_agreement_counts_raised_conditions_only(tmp_path) -> None:
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    rows = [
        {"stem": "src", "dandruff": 0, "sebum": 0, "erythema": 1},
        {"stem": "a0", "dandruff": 0, "sebum": 3, "erythema": 1, "source": "src", "generated": True},  # agrees
        {"stem": "a1", "dandruff": 3, "sebum": 0, "erythema": 1, "source": "src", "generated": True},  # mild, no
        {"stem": "a2", "dandruff": 0, "sebum": 0, "erythema": 2, "source": "src", "generated": True},  # agrees
        {"stem": "a3", "dandruff": 0, "sebum": 0, "erythema": 1, "source": "src", "generated": True},  # nothing raised
    ]
    rng = np.random.default_rng(0)
    for r in rows:
        cv2.imwrite(str(root / "images" / f"{r['stem']}.jpg"), rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    (root / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = agreement.set_agreement(root, _grader(tmp_path / "g.onnx"))
    assert got["raised"] == {"dandruff": 1, "sebum": 1, "erythema": 1}
    assert got["agreement"] == round(2 / 3, 4)
    assert got["agreement_by_condition"] == {"dandruff": 0.0, "sebum": 1.0, "erythema": 1.0}
    (root / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[1:]))  # the source gone
    with pytest.raises(ValueError, match="not in the set"):
        agreement.set_agreement(root, _grader(tmp_path / "g2.onnx"))
