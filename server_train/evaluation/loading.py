"""Turn a model spec from the command line into a Segmenter.

spec: None (the shipped student), a classical baseline name, an ``.onnx`` file, or a training
checkpoint ``.pt`` (exported to a temporary ONNX file first, so evaluation always measures
what the device runs).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from device.assets import default_bundle_path, default_model_path
from device.contracts.constants import HAIR_PHOTO_INPUT
from device.models.backends import OrtBackend
from device.models.bundle import Bundle
from device.models.hair_photo import HAIR_PHOTO_MODEL, HairPhotoSegmenter
from device.models.onnx_segmenter import ModelSegmenter
from device.models.segmentation import Segmenter
from scoring.classical import BASELINES

__all__ = ["load_segmenter", "load_hair_photo_segmenter"]


def load_segmenter(spec: str | None, threads: int = 2) -> Segmenter:
    if spec is None:
        return ModelSegmenter.from_onnx(default_model_path(), threads=threads, name="student")
    if spec in BASELINES:
        return BASELINES[spec]()
    path = Path(spec)
    if path.suffix == ".onnx":
        return ModelSegmenter.from_onnx(path, threads=threads)
    if path.suffix == ".pt":
        from export.onnx_export import export_segmenter
        from server_train.training.train import load_checkpoint

        model, ckpt = load_checkpoint(path)
        onnx_path = Path(tempfile.mkdtemp(prefix="scalpedge-")) / f"{path.stem}.onnx"
        head = ckpt["train_config"].get("instance_target", "centres")
        export_segmenter(model, onnx_path, check=False, instance_head=head)
        return ModelSegmenter.from_onnx(onnx_path, threads=threads, name=path.parent.name or path.stem)
    raise ValueError(f"unknown model {spec!r}: give a .onnx or .pt file or one of {sorted(BASELINES)}")


def load_hair_photo_segmenter(spec: str | None, threads: int = 2) -> HairPhotoSegmenter | None:
    """The hair-photo segmenter ``spec`` names: ``hair_photo`` (the default bundle's) or an
    .onnx file whose input is HAIR_PHOTO_INPUT; None for any other spec (a scalp segmenter)."""
    if spec == HAIR_PHOTO_MODEL:
        return HairPhotoSegmenter.from_bundle(Bundle.open(default_bundle_path()), threads=threads)
    if spec is not None and spec.endswith(".onnx") and Path(spec).is_file():
        backend = OrtBackend(spec, threads=threads)
        if HAIR_PHOTO_INPUT in backend.input_shapes:
            return HairPhotoSegmenter(backend)
    return None
