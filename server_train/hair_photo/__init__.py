"""Hair segmentation in ordinary photos (Figaro-1k): data, the three candidate networks
(EfficientNet-Lite0 U-Net from ImageNet weights, the same from scratch, a head on our own
diffusion model's features), training with one budget for all, and evaluation (torch)."""
