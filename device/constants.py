"""Single source of truth for frame geometry, tensor names and preprocessing.

Training (``server_train``), export (``export``) and the device runtime all import these
values; nothing else may hard-code them.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "FRAME_HEIGHT",
    "FRAME_WIDTH",
    "SEG_INPUT",
    "SEG_OUT_MASK",
    "SEG_OUT_CENTRE",
    "SEG_OUT_LINES",
    "INSTANCE_OUTPUTS",
    "LINE_THRESHOLD",
    "MIN_STRAND_PX",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "MASK_THRESHOLD",
    "CENTRE_THRESHOLD",
    "THIN_HAIR_UM",
    "DEFAULT_UM_PER_PX",
]

# Device camera frame, pixels (HxW). Every model input is this size.
FRAME_HEIGHT: Final = 480
FRAME_WIDTH: Final = 640

# Segmenter graph I/O names (ONNX and TensorRT bind by these names, never by position).
SEG_INPUT: Final = "image"  # 1x3xHxW float32, normalised RGB (see PIXEL_MEAN/STD)
SEG_OUT_MASK: Final = "hair_logits"  # 1x1xHxW float32, logit of P(hair)
# The second output locates hair instances, one of:
SEG_OUT_CENTRE: Final = "centre_logits"  # 1x1xHxW float32, logit of the per-hair centre heatmap
SEG_OUT_LINES: Final = "centreline_logits"  # 1x1xHxW float32, logit of P(on a hair's centre line)
INSTANCE_OUTPUTS: Final = {"centres": SEG_OUT_CENTRE, "lines": SEG_OUT_LINES}

# Preprocessing: BGR uint8 -> RGB float in [0, 1] -> (x - mean) / std, per channel (R, G, B).
PIXEL_MEAN: Final = (0.485, 0.456, 0.406)
PIXEL_STD: Final = (0.229, 0.224, 0.225)

# Decision thresholds on probabilities.
MASK_THRESHOLD: Final = 0.5
CENTRE_THRESHOLD: Final = 0.3
LINE_THRESHOLD: Final = 0.3  # chosen on synthetic data: `scalpedge eval tune-counts --data data/val3`
MIN_STRAND_PX: Final = 30.0  # centre-line strands shorter than this (px at 640x480) are not hairs (same tuning)

# Hair metrics defaults.
THIN_HAIR_UM: Final = 40.0  # shaft diameter below which a hair counts as thin (vellus/miniaturised)
DEFAULT_UM_PER_PX: Final = 2.0  # micrometres per pixel at 640x480 when no optical calibration exists
