"""Export: torch -> ONNX wrappers and checks (``export.onnx_export``, imports torch), the static
TensorRT op check (``calibration.trt_support``), release model cards (``export.release``) and the
signed bundle writer (``export.bundle``). Export takes trained models and numbers as arguments and
imports nothing from ``server_train`` (which loads checkpoints: ``server_train.release``); see
pyproject's ``[tool.importlinter]``. Import submodules directly; this package imports nothing so
that the bundle commands stay torch-free."""
