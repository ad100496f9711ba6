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
    "SEG_OUT_ENDS",
    "INSTANCE_OUTPUTS",
    "SEG_OUT_DENSITY",
    "SEG_OUT_THIN",
    "DENSITY_SCALE",
    "DENSITY_SIGMA_PX",
    "MODEL_UM_PER_PX",
    "SCALE_TOLERANCE",
    "END_DENSITY_SCALE",
    "END_SIGMA_PX",
    "END_EDGE_PX",
    "LINE_THRESHOLD",
    "MIN_STRAND_PX",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "MASK_THRESHOLD",
    "CENTRE_THRESHOLD",
    "THIN_HAIR_UM",
    "DEFAULT_UM_PER_PX",
    "HAIR_CLASS_UM",
    "HAIR_PATCH_PX",
    "HAIR_FIELD_PX",
    "HAIR_PATCH_BATCH",
    "HAIR_CLS_INPUT",
    "HAIR_CLS_OUT",
    "CLS_HEIGHT",
    "CLS_WIDTH",
    "CLS_PIXEL_MEAN",
    "CLS_PIXEL_STD",
    "CLS_INPUT",
    "CLS_OUT_LEVELS",
    "CLS_OUT_PRESENCE",
    "CLS_OUT_AREA",
    "CONDITION_NAMES",
    "LEVEL_NAMES",
    "ALOPECIA_INPUT",
    "ALOPECIA_OUT_LABEL",
    "ALOPECIA_OUT_PROBS",
    "ALOPECIA_FEATURES",
    "DISEASE_SIZE",
    "DISEASE_TILES",
    "DISEASE_INPUT",
    "DISEASE_OUT_LOGITS",
    "DISEASE_NAMES",
    "PROMPT_GROUP_SIZE",
    "PROMPT_NEGATIVES",
    "REFINER_DECODER_FILE",
    "REFINER_EMBED_DIM",
    "REFINER_ENCODER_FILE",
    "REFINER_EMBED_SIZE",
    "REFINER_GROUPS_PER_CALL",
    "REF_ENC_INPUT",
    "REF_ENC_OUT",
    "REF_DEC_EMBED",
    "REF_DEC_COORDS",
    "REF_DEC_LABELS",
    "REF_DEC_MASK_INPUT",
    "REF_DEC_OUT_MASKS",
    "REF_DEC_OUT_IOU",
    "REFINER_MASK_THRESHOLD",
    "FUSION_COARSE_THRESHOLD",
    "MASK_STAGES",
    "PIXEL_REFINER_MODEL",
    "PIX_IN_IMAGE",
    "PIX_IN_COARSE",
    "PIX_IN_PROMPT",
    "PIX_OUT",
    "REFINER_ENCODER_MODEL",
    "REFINER_DECODER_MODEL",
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
SEG_OUT_ENDS: Final = "end_density"  # 1x1xHxW float32, density of strand ends x END_DENSITY_SCALE (not a logit)
SEG_OUT_DENSITY: Final = "hair_density"  # 1x1xHxW float32, hair density x DENSITY_SCALE (not a logit)
SEG_OUT_THIN: Final = "thin_density"  # 1x1xHxW float32, density of thin (miniaturised) hairs, same units
INSTANCE_OUTPUTS: Final = {
    "centres": SEG_OUT_CENTRE,
    "lines": SEG_OUT_LINES,
    "ends": SEG_OUT_ENDS,
    "density": SEG_OUT_DENSITY,
}
# Hair density (learnt from real trichoscopy boxes): every labelled hair is a Gaussian of std
# DENSITY_SIGMA_PX px and mass DENSITY_SCALE (peak about 0.9) at its box centre; the hair count
# of a frame is the density's sum / DENSITY_SCALE, its thin-hair count the thin density's. The
# labels leave out most hairs the frame's edge cuts, and so does the learnt density.
DENSITY_SCALE: Final = 50.0
DENSITY_SIGMA_PX: Final = 3.0
# The pixel scale the density models learnt (micrometres per pixel of the 640x480 frame: 70x
# trichoscopy at 1280x1024, 2.8 um/px). A frame at another scale is resampled to it before
# counting; one that needs more than SCALE_TOLERANCE x either way is refused by the quality gate.
MODEL_UM_PER_PX: Final = 5.6
SCALE_TOLERANCE: Final = 2.0
# Strand-end density target: every end of a strand's in-frame centre line (tip, root, or where
# it leaves the frame) is a Gaussian of std END_SIGMA_PX px and mass END_DENSITY_SCALE (peak
# about 1). The count is a counting-frame estimate: ends more than END_EDGE_PX from the frame's
# edge, halved, scaled to the whole frame's area (``device.models.onnx_segmenter.hairs_from_ends``).
END_DENSITY_SCALE: Final = 25.0
END_SIGMA_PX: Final = 2.0
END_EDGE_PX: Final = 6  # 3 sigma: where the ends of strands cut by the frame's edge lie

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
# Per-hair classes by measured shaft diameter (um, as the mask's distance transform measures it
# at 5.6 um/px): vellus-like below the first bound (the trichological convention, 30 um),
# terminal from the second up, intermediate between; vellus-like and intermediate hairs are the
# thin (miniaturised) ones, and their share is the frame's thin-hair ratio. The second bound is
# the cut whose thin share best matches the `undersize` share per frame on 300 training-subject
# frames (mean error 0.049; cuts 36-40 um tie). The cut that best separates single hairs
# labelled `undersize` from the rest is 55 um (balanced accuracy 0.91, medians 39 vs 81 um), but
# it calls too many hairs thin for the ratio. `scalpedge eval counts --split train` + `thin_cut`.
HAIR_CLASS_UM: Final = (30.0, 40.0)
# Per-hair class model (``hair_classes`` in the bundle): a small CNN that reads a HAIR_PATCH_PX
# square of the frame at MODEL_UM_PER_PX, centred on a located hair, and gives the logit of
# P(miniaturised), learnt from the `undersize` boxes of real trichoscopy. A hair at or above the
# model's threshold (its graph metadata ``thin_probability``) is not terminal; its diameter then
# tells vellus-like from intermediate (HAIR_CLASS_UM[0]). The graph takes HAIR_PATCH_BATCH
# patches a call (static shape, as TensorRT likes it; a frame at 70x has about 12 located
# hairs, so most take one call); unused rows are zeros.
# A graph may instead read a wider HAIR_FIELD_PX square (the two-field model of
# ``server_train.models.hair_patch``); the device cuts patches of the side its graph declares.
HAIR_PATCH_PX: Final = 40
HAIR_FIELD_PX: Final = 112
HAIR_PATCH_BATCH: Final = 16  # 32 before 2026-12-05; the device reads each graph's own batch
HAIR_CLS_INPUT: Final = "hair_patches"  # Bx3xPxP float32, normalised RGB (PIXEL_MEAN/STD)
HAIR_CLS_OUT: Final = "thin_logit"  # Bx1 float32, logit of P(the hair is miniaturised)
# Micrometres per pixel at 640x480 when the scanner has no optics profile: the scale of the FDU
# trichoscopy frames (1 mm bar = 358 px at 1280 wide), a typical handheld scope's ~3.6 mm field.
# Calibrate each scanner with `scalpedge calibrate optics`.
DEFAULT_UM_PER_PX: Final = 5.6

# Condition (severity) classifier: EfficientNet-Lite0 on the frame resized to CLS_HEIGHT x CLS_WIDTH
# (4:3 like the camera). Preprocessing: BGR uint8 -> RGB float in [0, 1] -> (x - mean) / std with
# the Lite models' own normalisation ((x - 127) / 128 in 0..255 units).
CLS_HEIGHT: Final = 192
CLS_WIDTH: Final = 256
CLS_PIXEL_MEAN: Final = (127.0 / 255.0, 127.0 / 255.0, 127.0 / 255.0)
CLS_PIXEL_STD: Final = (128.0 / 255.0, 128.0 / 255.0, 128.0 / 255.0)
CLS_INPUT: Final = "cls_image"  # 1x3xCLS_HEIGHTxCLS_WIDTH float32
CLS_OUT_LEVELS: Final = "level_logits"  # 1x3x4 float32: per condition, logits of good/mild/moderate/severe
CLS_OUT_PRESENCE: Final = "presence_logits"  # 1x3 float32: per condition, logit of P(present)
CLS_OUT_AREA: Final = "area_share"  # 1x3 float32: per condition, predicted share of the frame covered, [0, 1]
CONDITION_NAMES: Final = ("dandruff", "sebum", "erythema")  # order of the condition axis
LEVEL_NAMES: Final = ("good", "mild", "moderate", "severe")

# Hair-photo segmenter (``hair_photo`` in the bundle): hair in ordinary photos of a head (an
# overview before the microscope close-ups), trained on Figaro-1k. The photo is resized (not
# cropped: every pixel gets a label) to HAIR_PHOTO_SIDE x HAIR_PHOTO_SIDE, normalised like the
# Lite classifiers (CLS_PIXEL_MEAN/STD: (x - 127) / 128 in 0..255 units, about [-1, 1], which is
# also the diffusion model's range); the logit map is resized back to the photo.
HAIR_PHOTO_SIDE: Final = 256
HAIR_PHOTO_INPUT: Final = "photo"  # 1x3xSxS float32, S = HAIR_PHOTO_SIDE
HAIR_PHOTO_OUT: Final = "hair_logit"  # 1x1xSxS float32, logit of P(hair) per pixel

# Alopecia severity from hair features (gradient boosting exported by skl2onnx).
ALOPECIA_INPUT: Final = "hair_features"  # 1xF float32, features in ALOPECIA_FEATURES order
ALOPECIA_OUT_LABEL: Final = "alopecia_level"  # (1,) int64, level 0..3 (LEVEL_NAMES)
ALOPECIA_OUT_PROBS: Final = "alopecia_probs"  # 1x4 float32
ALOPECIA_FEATURES: Final = (
    "count",
    "mean_thickness_um",
    "median_thickness_um",
    "thickness_iqr_um",
    "thin_ratio",
    "density_per_cm2",
    "hair_fraction",
)

# Disease-type classifier (clinical photos, square input after the paper's preprocessing).
DISEASE_SIZE: Final = 224  # side of one backbone tile, px
DISEASE_TILES: Final = 3  # grid of the tiled option: the photo resized to (3 * 224)^2, cut into 3 x 3 tiles
DISEASE_INPUT: Final = "disease_image"  # 1x3xSxS float32 (S = tiles * DISEASE_SIZE), CLS_PIXEL_MEAN/STD normalised
DISEASE_OUT_LOGITS: Final = "disease_logits"  # 1x3 float32 over DISEASE_NAMES
DISEASE_NAMES: Final = ("alopecia", "psoriasis", "folliculitis")

# Prompt refiner (SAM-style: image encoder once per frame, prompt encoder + mask decoder per group).
PROMPT_GROUP_SIZE: Final = 64  # K points per prompt group (static in the decoder graph); -1 labels pad
PROMPT_NEGATIVES: Final = 4  # negative (scalp) points in every group; the other K - 4 are positives
REFINER_EMBED_DIM: Final = 256  # SAM's embedding width
REFINER_EMBED_SIZE: Final = (30, 40)  # image embedding grid (stride 16 at FRAME_HEIGHT x FRAME_WIDTH)
REFINER_GROUPS_PER_CALL: Final = 1  # prompt groups per decoder call (static batch; on CPU cost is linear in it)
REFINER_ENCODER_FILE: Final = "refiner_encoder.onnx"  # the exported refiner, as a folder or bundle holds it
REFINER_DECODER_FILE: Final = "refiner_decoder.onnx"
REFINER_ENCODER_MODEL: Final = "refiner_encoder"  # the two graphs' model names in a bundle's manifest
REFINER_DECODER_MODEL: Final = "refiner_decoder"
REF_ENC_INPUT: Final = "refiner_image"  # 1x3xFRAME_HEIGHTxFRAME_WIDTH float32, PIXEL_MEAN/STD normalised RGB
REF_ENC_OUT: Final = "image_embeddings"  # 1xREFINER_EMBED_DIMx30x40 float32
REF_DEC_EMBED: Final = "image_embeddings"  # decoder input: the encoder's output
REF_DEC_COORDS: Final = "point_coords"  # BxKx2 float32 (x, y) pixels of the 640x480 frame
REF_DEC_LABELS: Final = "point_labels"  # BxK float32: 1 hair, 0 scalp, -1 not a point
REF_DEC_MASK_INPUT: Final = "mask_input"  # 1x1x120x160 float32: coarse mask as logits (8 * (P(hair) - 0.5))
REF_DEC_OUT_MASKS: Final = "low_res_masks"  # Bx1x240x320 float32 logits (8x the embedding grid; SAM: 4x)
REF_DEC_OUT_IOU: Final = "iou_predictions"  # Bx1 float32, predicted IoU of each group's mask
# M_AP = decoder P(hair) >= this, chosen with FUSION_COARSE_THRESHOLD on the hard validation set
# data/val3_hard (`scalpedge eval refiner --tune data/val3_hard`: M's Dice 0.8073 at 0.02, 0.8075
# at 0.01; the held-out set is hard too, and a choice made on the easy data/val3 did not carry over).
REFINER_MASK_THRESHOLD: Final = 0.02
# M^ as it enters the AND: student P(hair) >= this (prompts always come from M^ at
# MASK_THRESHOLD). On the easy val3 a lower value (0.2) let the AND trade recall for precision
# (+0.7 pt there), on hard frames it cost 0.6 pt, so it stays at 0.5.
FUSION_COARSE_THRESHOLD: Final = 0.5
# Pixel refiner (``device.refine.pixel``): the student's P(hair) refined at full resolution.
PIXEL_REFINER_MODEL: Final = "pixel_refiner"  # model name in a bundle; the graph is <name>.onnx
PIX_IN_IMAGE: Final = "pixel_image"  # 1x3xFRAME_HEIGHTxFRAME_WIDTH float32, PIXEL_MEAN/STD normalised RGB
PIX_IN_COARSE: Final = "coarse_prob"  # 1x1xFRAME_HEIGHTxFRAME_WIDTH float32, the student's P(hair)
PIX_IN_PROMPT: Final = "prompt_prob"  # 1x1xFRAME_HEIGHTxFRAME_WIDTH float32, M_AP's P(hair) (optional input)
PIX_OUT: Final = "refined_logits"  # 1x1xFRAME_HEIGHTxFRAME_WIDTH float32 logits of the refined mask
# Which hair mask measured a diagnosis (a result record's ``mask_stage``): the student's M^
# ("coarse"); the prompt refiner's union M_AP alone ("refined"); ScalpVision's M^ AND M_AP
# ("paper"); or the fused mask the device measures on by default ("fused"): M^ and M_AP fused
# at full resolution by the pixel refiner, which sees the frame beside them.
MASK_STAGES: Final = ("coarse", "refined", "paper", "fused")
