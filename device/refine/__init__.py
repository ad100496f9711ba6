"""The prompt refiner (ScalpVision's SAM stage): automatic point prompts, the refiner, the fused mask."""
