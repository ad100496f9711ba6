"""Export a trained segmenter for release: ONNX + its model card (``segmenter.card.json``).

The card (see ``export.bundle``) says what produced the file (command, seeds, training configs of the model and of
its teacher, git commit) and what it scored, so anyone can reproduce and check it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from device.models.bundle import sha256_file

__all__ = ["release_segmenter", "git_commit", "sha256_file", "CARD_NAME"]

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


def release_segmenter(
    checkpoint: str | Path, out_dir: str | Path, metrics: dict[str, Any] | None = None, command: str | None = None
) -> Path:
    """Export ``checkpoint`` to ``out_dir/segmenter.onnx`` and write its model card there;
    returns the card's path. Pack cards into a bundle with ``scalpedge bundle build``."""
    import torch

    from device.contracts.constants import (
        END_DENSITY_SCALE,
        FRAME_HEIGHT,
        FRAME_WIDTH,
        INSTANCE_OUTPUTS,
        LINE_THRESHOLD,
        MASK_THRESHOLD,
        MIN_STRAND_PX,
        PIXEL_MEAN,
        PIXEL_STD,
        SEG_OUT_MASK,
    )
    from device.models.bundle import TARGETS
    from export.onnx_export import export_segmenter
    from server_train.models import count_gflop
    from server_train.training.train import load_checkpoint

    out_dir = Path(out_dir)
    model, ckpt = load_checkpoint(checkpoint)
    train_cfg = ckpt["train_config"]
    lineage = [{"checkpoint": str(checkpoint), "train_config": train_cfg, "steps": ckpt["step"]}]
    # Follow the teacher and init checkpoints so the manifest records the whole recipe.
    seen = {str(checkpoint)}
    queue = [train_cfg.get("teacher_checkpoint"), train_cfg.get("init_checkpoint")]
    while queue:
        parent = queue.pop(0)
        if not parent or parent in seen or not Path(parent).exists():
            continue
        seen.add(parent)
        pc = torch.load(parent, map_location="cpu", weights_only=False)
        lineage.append(
            {
                "checkpoint": parent,
                "train_config": pc["train_config"],
                "steps": pc["step"],
                "model_config": pc["model_config"],
            }
        )
        queue += [pc["train_config"].get("teacher_checkpoint"), pc["train_config"].get("init_checkpoint")]
    meta = {"model_config": ckpt["model_config"], "train_config": train_cfg, "git_commit": git_commit()}
    head = train_cfg.get("instance_target", "centres")
    onnx_path = export_segmenter(model, out_dir / "segmenter.onnx", metadata=meta, instance_head=head)
    card = {
        "name": "segmenter",
        "task": "hair-segmentation",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "instance_head": head,
        "preprocessing": {
            "colour": "RGB",
            "scale": 1 / 255,
            "mean": PIXEL_MEAN,
            "std": PIXEL_STD,
            "input": [1, 3, FRAME_HEIGHT, FRAME_WIDTH],
        },
        "thresholds": {"mask": MASK_THRESHOLD, "centreline": LINE_THRESHOLD, "min_strand_px": MIN_STRAND_PX}
        if head != "ends"
        else {"mask": MASK_THRESHOLD, "end_density_scale": END_DENSITY_SCALE},
        "class_names": None,
        "outputs": [SEG_OUT_MASK, INSTANCE_OUTPUTS[head]],
        "gflop": round(count_gflop(model, FRAME_HEIGHT, FRAME_WIDTH), 3),
        "model_config": ckpt["model_config"],
        "provenance": {
            "git_commit": git_commit(),
            "command": command or " ".join(sys.argv),
            "seed": train_cfg.get("seed"),
            "lineage": lineage,
        },
        "evaluation": metrics or {},
        "variants": [
            {"file": onnx_path.name, "precision": "fp32", "targets": list(TARGETS), "quantization": None},
        ],
        "preferred": {target: onnx_path.name for target in TARGETS},
    }
    card_path = out_dir / CARD_NAME
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path
