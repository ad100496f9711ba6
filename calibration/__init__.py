"""Calibration: INT8 quantization of exported models and optical calibration.

- ``calibration.readers``: calibration data readers (ONNX Runtime's protocol) over frames.
- ``calibration.quantize``: static Q/DQ quantization recipes (TensorRT and ONNX Runtime CPU).
- ``calibration.gate``: the accuracy gate that refuses an INT8 model that falls short.
- ``calibration.optics``: micrometres per pixel from a frame of a ruler or calibration slide.

Dependencies point one way: calibration uses ``device`` (preprocessing, backends, metrics),
never ``server_train``.
"""
