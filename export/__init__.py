"""Export: torch -> ONNX wrappers and checks (``export.onnx_export``, imports torch), the static
TensorRT op check (``calibration.trt_support``), release model cards (``export.release``) and the
signed bundle writer (``export.bundle``). Import submodules directly; this package imports
nothing so that the bundle commands stay torch-free."""
