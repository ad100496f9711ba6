"""Torch-free scores used by evaluation and the INT8 accuracy gate: pixel segmentation scores
and the classical (non-learned) baseline segmenters."""
