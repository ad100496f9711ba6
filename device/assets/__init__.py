"""Files shipped with the device package: the default segmenter and sample frames."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ASSETS", "default_model_path", "default_manifest_path", "sample_frames"]

ASSETS = Path(__file__).resolve().parent


def default_model_path() -> Path:
    """The shipped student segmenter (ONNX, FP32, 1x3x480x640)."""
    path = ASSETS / "default" / "segmenter.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"shipped model missing at {path}; reinstall the package or pass --model")
    return path


def default_manifest_path() -> Path:
    """manifest.json describing how the shipped model was produced."""
    return ASSETS / "default" / "manifest.json"


def sample_frames() -> list[Path]:
    """Synthetic sample frames (made by our generator, free to ship) for demos."""
    folder = ASSETS / "samples"
    found = sorted(p for p in folder.glob("*") if p.suffix in (".png", ".jpg")) if folder.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no sample frames in {folder}; pass images or folders to segment")
    return found
