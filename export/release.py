"""Pack a trained segmenter as the shipped default model: ONNX + manifest.json.

The manifest says what produced the file (command, seeds, training configs of the model and of
its teacher, git commit) and what it scored, so anyone can reproduce and check it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["release_segmenter", "git_commit", "sha256_file"]

MANIFEST_SCHEMA = "scalpedge.default-model/1"


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def release_segmenter(
    checkpoint: str | Path, out_dir: str | Path, metrics: dict[str, Any] | None = None, command: str | None = None
) -> Path:
    """Export ``checkpoint`` to ``out_dir/segmenter.onnx`` and write ``out_dir/manifest.json``."""
    import torch

    from device.constants import (
        FRAME_HEIGHT,
        FRAME_WIDTH,
        INSTANCE_OUTPUTS,
        PIXEL_MEAN,
        PIXEL_STD,
        SEG_INPUT,
        SEG_OUT_MASK,
    )
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
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "file": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "inputs": {SEG_INPUT: [1, 3, FRAME_HEIGHT, FRAME_WIDTH]},
        "outputs": [SEG_OUT_MASK, INSTANCE_OUTPUTS[head]],
        "instance_head": head,
        "precision": "fp32",
        "preprocessing": {"colour": "RGB", "scale": 1 / 255, "mean": PIXEL_MEAN, "std": PIXEL_STD},
        "gflop": round(count_gflop(model, FRAME_HEIGHT, FRAME_WIDTH), 3),
        "model_config": ckpt["model_config"],
        "provenance": {
            "git_commit": git_commit(),
            "command": command or " ".join(sys.argv),
            "seed": train_cfg.get("seed"),
            "lineage": lineage,
        },
        "metrics": metrics or {},
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out_dir / "manifest.json"
