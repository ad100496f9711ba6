"""Release model cards: a trained model's ONNX plus its card (``segmenter.card.json``).

A card (see ``export.bundle``) says what produced the file (command, seed, training configs of the
model and of the checkpoints it descends from, git commit) and what it scored, so anyone can
reproduce and check it. These functions take the model (an ``nn.Module``) and the numbers; loading
checkpoints and counting FLOPs is ``server_train.release``'s job (export sits below training).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device.contracts.constants import (
    DENSITY_SCALE,
    END_DENSITY_SCALE,
    FRAME_HEIGHT,
    FRAME_WIDTH,
    LINE_THRESHOLD,
    MASK_THRESHOLD,
    MIN_STRAND_PX,
    MODEL_UM_PER_PX,
    PIXEL_MEAN,
    PIXEL_STD,
)
from device.models.bundle import TARGETS, sha256_file

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "Recipe",
    "release_segmenter",
    "model_card",
    "frame_preprocessing",
    "write_card",
    "git_commit",
    "command_line",
    "sha256_file",
    "CARD_NAME",
]

CARD_NAME = "segmenter.card.json"


def git_commit(repo: Path | None = None) -> str:
    """The current commit (with '+dirty' when the work tree has uncommitted changes to tracked
    files), or 'unknown' outside a git checkout."""
    cwd = str(repo or Path(__file__).resolve().parents[1])
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def command_line() -> str:
    """This process's ``scalpedge`` command, shell-quoted, for provenance."""
    return "scalpedge " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@dataclass(frozen=True)
class Recipe:
    """What produced a model: its constructor config, its training config, and the checkpoints
    it descends from (``lineage``: one dict per checkpoint, its own first, each with
    "checkpoint", "train_config", "steps"; ancestors also "model_config")."""

    model_config: dict[str, Any]
    train_config: dict[str, Any]
    lineage: list[dict[str, Any]]

    def onnx_metadata(self) -> dict[str, Any]:
        """The ONNX ``metadata_props`` of a released graph."""
        return {"model_config": self.model_config, "train_config": self.train_config, "git_commit": git_commit()}


def frame_preprocessing() -> dict[str, Any]:
    """A card's preprocessing for a graph fed one normalised RGB frame (1x3xHxW float32)."""
    return {
        "colour": "RGB",
        "scale": 1 / 255,
        "mean": PIXEL_MEAN,
        "std": PIXEL_STD,
        "input": [1, 3, FRAME_HEIGHT, FRAME_WIDTH],
    }


def model_card(
    name: str,
    onnx_file: str | Path,
    recipe: Recipe,
    fields: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """The card of one FP32 graph ``onnx_file`` (for every target): ``fields`` (task,
    preprocessing, thresholds, outputs, gflop...) plus what every card carries (creation time,
    model config, provenance, evaluation ``metrics``, variants, preferred file per target)."""
    file = Path(onnx_file).name
    return {
        "name": name,
        **fields,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "class_names": None,
        "model_config": recipe.model_config,
        "provenance": {
            "git_commit": git_commit(),
            "command": command or " ".join(sys.argv),
            "seed": recipe.train_config.get("seed"),
            "lineage": recipe.lineage,
        },
        "evaluation": metrics or {},
        "variants": [{"file": file, "precision": "fp32", "targets": list(TARGETS), "quantization": None}],
        "preferred": {target: file for target in TARGETS},
    }


def write_card(card: dict[str, Any], path: Path) -> Path:
    """Write ``card`` as indented JSON to ``path``; returns ``path``."""
    path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    return path


def release_segmenter(
    model: nn.Module,
    out_dir: str | Path,
    recipe: Recipe,
    gflop: float,
    metrics: dict[str, Any] | None = None,
    command: str | None = None,
) -> Path:
    """Export ``model`` (eval mode) to ``out_dir/segmenter.onnx`` (checked: onnx.checker, ORT
    parity, TensorRT rules) and write its card there; returns the card's path. ``gflop``: forward
    GFLOP of one 1x3x480x640 frame. Pack cards into a bundle with ``scalpedge bundle build``."""
    from export.onnx_export import export_segmenter, output_names

    out = Path(out_dir)
    head = recipe.train_config.get("instance_target", "centres")
    onnx_path = export_segmenter(model, out / "segmenter.onnx", metadata=recipe.onnx_metadata(), instance_head=head)
    if head == "density":
        thresholds = {"mask": MASK_THRESHOLD, "density_scale": DENSITY_SCALE, "model_um_per_px": MODEL_UM_PER_PX}
    elif head == "ends":
        thresholds = {"mask": MASK_THRESHOLD, "end_density_scale": END_DENSITY_SCALE}
    else:
        thresholds = {"mask": MASK_THRESHOLD, "centreline": LINE_THRESHOLD, "min_strand_px": MIN_STRAND_PX}
    fields = {
        "task": "hair-segmentation",
        "instance_head": head,
        "preprocessing": frame_preprocessing(),
        "thresholds": thresholds,
        "outputs": output_names(head),
        "gflop": round(gflop, 3),
    }
    return write_card(model_card("segmenter", onnx_path, recipe, fields, metrics, command), out / CARD_NAME)
