"""Segmentation models: U²-Net family (teacher) and the on-device student."""

from server_train.models.registry import MODELS, build_from_config, count_gflop, create, model_config

__all__ = ["MODELS", "build_from_config", "count_gflop", "create", "model_config"]
