"""Training and distillation of the segmentation models on synthetic pseudo-labels."""
