"""torch -> ONNX export of the segmentation models (server side; imports torch)."""

from export.onnx_export import ExportedSegmenter, export_segmenter

__all__ = ["ExportedSegmenter", "export_segmenter"]
