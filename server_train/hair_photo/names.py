"""Names of the hair-photo networks (torch-free, so the CLI parser can list them without
importing torch)."""

from __future__ import annotations

__all__ = ["PHOTO_MODELS"]

PHOTO_MODELS = ("lite0_unet", "scratch_unet", "diffusion_features", "tiny_unet")
