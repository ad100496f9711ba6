"""Files shipped with the device package: the default model bundle, trusted keys, sample frames."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ASSETS", "default_bundle_path", "default_model_path", "default_manifest_path", "sample_frames"]

ASSETS = Path(__file__).resolve().parent


def default_bundle_path() -> Path:
    """The shipped signed model bundle (open it with ``device.models.bundle.Bundle.open``)."""
    return ASSETS / "default"


def default_model_path() -> Path:
    """The shipped student segmenter's FP32 file inside the default bundle (ONNX, 1x3x480x640).
    Not verified: runtime code should go through ``Bundle.open(default_bundle_path())``."""
    path = ASSETS / "default" / "segmenter.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"shipped model missing at {path}; reinstall the package or pass --model")
    return path


def default_manifest_path() -> Path:
    """The default bundle's manifest.json (models, hashes, evaluation, provenance)."""
    return ASSETS / "default" / "manifest.json"


def sample_frames() -> list[Path]:
    """Synthetic sample frames (made by our generator, free to ship) for demos."""
    folder = ASSETS / "samples"
    found = sorted(p for p in folder.glob("*") if p.suffix in (".png", ".jpg")) if folder.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no sample frames in {folder}; pass images or folders to segment")
    return found
