"""Release a trained checkpoint: load it, trace its lineage, count its FLOPs, and hand the model
and those numbers to ``export.release`` / ``export.refiner_release``, which write the ONNX and
the model cards (``scalpedge export release`` and ``scalpedge export refiner``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from device.contracts.constants import FRAME_HEIGHT, FRAME_WIDTH, PROMPT_GROUP_SIZE
from export.refiner_release import release_refiner
from export.release import Recipe, release_segmenter

__all__ = ["segmenter_lineage", "release_segmenter_checkpoint", "release_refiner_checkpoint"]


def _entry(checkpoint: str | Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    return {"checkpoint": str(checkpoint), "train_config": ckpt["train_config"], "steps": ckpt["step"]}


def _onnx_entry(path: Path) -> dict[str, Any]:
    """A lineage entry for a graph a run started from: its sha256 and the recipe its exporter
    recorded in the graph's metadata (model and training config, commit)."""
    import json

    import onnx

    from device.models.bundle import sha256_file

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    entry: dict[str, Any] = {"onnx": str(path), "sha256": sha256_file(path)}
    for key in ("model_config", "train_config", "git_commit"):
        if key in meta:
            entry[key] = json.loads(meta[key]) if meta[key][:1] in "{[" else meta[key]
    return entry


def segmenter_lineage(checkpoint: str | Path, ckpt: dict[str, Any]) -> list[dict[str, Any]]:
    """``checkpoint`` (loaded as ``ckpt``), the graph it started from (``init_onnx``, with the
    recipe recorded in it) and, breadth first, every teacher and init checkpoint its training
    config names that still exists, each once, so a card records the whole recipe."""
    lineage = [_entry(checkpoint, ckpt)]
    seen = {str(checkpoint)}
    train_cfg = ckpt["train_config"]
    if train_cfg.get("init_onnx") and Path(train_cfg["init_onnx"]).exists():
        lineage.append(_onnx_entry(Path(train_cfg["init_onnx"])))
    queue = [train_cfg.get("teacher_checkpoint"), train_cfg.get("init_checkpoint")]
    while queue:
        parent = queue.pop(0)
        if not parent or parent in seen or not Path(parent).exists():
            continue
        seen.add(parent)
        pc = torch.load(parent, map_location="cpu", weights_only=False)
        lineage.append({**_entry(parent, pc), "model_config": pc["model_config"]})
        queue += [pc["train_config"].get("teacher_checkpoint"), pc["train_config"].get("init_checkpoint")]
    return lineage


def release_segmenter_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    metrics: dict[str, Any] | None = None,
    command: str | None = None,
    count_scale: float = 1.0,
) -> Path:
    """Export a segmenter checkpoint to ``out_dir/segmenter.onnx`` with its model card; returns
    the card's path. count_scale: a hair-density model's densities (hair and thin) are
    multiplied by it in the graph (a count calibration, recorded in the card's lineage)."""
    from server_train.models import count_gflop
    from server_train.training.train import load_checkpoint

    model, ckpt = load_checkpoint(checkpoint)
    lineage = segmenter_lineage(checkpoint, ckpt)
    if count_scale != 1.0:
        if ckpt["train_config"].get("instance_target") != "density" or not hasattr(model, "out"):
            raise ValueError("--count-scale applies to a hair-density model (scalpedge train counts)")
        if not count_scale > 0:
            raise ValueError(f"count scale must be > 0, got {count_scale}")
        with torch.no_grad():  # channels 1, 2: hair and thin density (linear outputs)
            model.out.weight[1:3].mul_(count_scale)
            model.out.bias[1:3].mul_(count_scale)
        lineage[0]["count_scale"] = count_scale
    recipe = Recipe(ckpt["model_config"], ckpt["train_config"], lineage)
    gflop = count_gflop(model, FRAME_HEIGHT, FRAME_WIDTH)
    return release_segmenter(model, out_dir, recipe, gflop, metrics, command)


def release_refiner_checkpoint(
    checkpoint: str | Path, out_dir: str | Path, metrics: dict[str, Any] | None = None, command: str | None = None
) -> list[Path]:
    """Export a refiner checkpoint to ``out_dir`` (encoder + decoder ONNX, checked) with one
    card per graph; returns the card paths."""
    from server_train.evaluation.refiner_speed import refiner_gflops
    from server_train.training.refiner_train import load_refiner

    model, ckpt = load_refiner(checkpoint)
    recipe = Recipe(ckpt["model_config"], ckpt["train_config"], [_entry(checkpoint, ckpt)])
    flops = refiner_gflops(model, PROMPT_GROUP_SIZE)
    return release_refiner(
        model, out_dir, recipe, flops["refiner_encoder"], flops["refiner_decoder_per_group"], metrics, command
    )
