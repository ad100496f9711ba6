"""Inference backends behind one interface: named inputs in, named outputs out.

``OrtBackend`` (ONNX Runtime: CPU, or its CUDA/TensorRT execution providers when present) and
``device.models.trt_backend.TensorRTBackend`` (a native TensorRT engine) satisfy ``Backend``;
``open_backend`` picks one by name. Every backend reports its last run's time in ``last_ms``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = ["Backend", "OrtBackend", "BACKENDS", "open_backend"]

BACKENDS = ("onnxruntime", "tensorrt")
_ORT_DTYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(bool)": np.dtype(np.bool_),
}


class Backend(Protocol):
    """A loaded model. ``run`` binds inputs and outputs by name, never by position."""

    input_shapes: dict[str, tuple[int, ...]]
    output_names: tuple[str, ...]
    last_ms: float  # wall time of the last run, ms

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """inputs: name -> array of the declared shape; returns name -> array."""
        ...

    def warmup(self, runs: int = 2) -> float:
        """Run ``runs`` times on zeros; returns the last run's time in ms."""
        ...


class OrtBackend:
    """ONNX Runtime session (CPU by default; CUDA/TensorRT providers when asked and present).

    spin: let the session's worker threads busy-wait for work after a run (ONNX Runtime's
    default). Off by default: a diagnosis runs several sessions one after another on a 2-core
    CPU, and each session's spinning workers took the cores from the next one. Measured with
    ``scalpedge bench diagnosis`` (2 threads, 2-core Xeon, 2026-12-04): diagnosis on the
    student's mask 132 -> 94 ms, fused 193 -> 129 ms; the student alone in a loop 29.1 vs 29.6 ms.
    """

    def __init__(
        self, path: str | Path, threads: int = 2, providers: Sequence[str] | None = None, spin: bool = False
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        chosen = [p for p in (providers or ["CPUExecutionProvider"]) if p in available] or ["CPUExecutionProvider"]
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=chosen)
        self.input_shapes = {i.name: tuple(int(d) for d in i.shape) for i in self.session.get_inputs()}
        self.input_dtypes = {i.name: _ORT_DTYPES.get(i.type) for i in self.session.get_inputs()}
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, str] = dict(meta)
        self.last_ms = 0.0

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        missing = set(self.input_shapes) - set(inputs)
        if missing:
            raise KeyError(f"{self.path.name}: missing inputs {sorted(missing)}")
        for name, arr in inputs.items():
            if name in self.input_shapes and tuple(arr.shape) != self.input_shapes[name]:
                raise ValueError(
                    f"{self.path.name}: input {name!r} has shape {arr.shape}, expected {self.input_shapes[name]}"
                )
            want = self.input_dtypes.get(name)
            if want is not None and arr.dtype != want:
                raise ValueError(f"{self.path.name}: input {name!r} has dtype {arr.dtype}, expected {want}")
        names = list(outputs or self.output_names)
        start = time.perf_counter()
        values = self.session.run(names, dict(inputs))
        self.last_ms = (time.perf_counter() - start) * 1000
        return dict(zip(names, values, strict=True))

    def warmup(self, runs: int = 2) -> float:
        zeros = {n: np.zeros(s, np.float32) for n, s in self.input_shapes.items()}
        for _ in range(runs):
            self.run(zeros)
        return self.last_ms


def open_backend(
    path: str | Path,
    kind: str = "onnxruntime",
    threads: int = 2,
    precision: str = "fp16",
    onnx_sha256: str | None = None,
    engine_cache: str | Path | None = None,
) -> Backend:
    """Load ``path`` (ONNX) with backend ``kind`` ("onnxruntime" or "tensorrt").

    threads: ONNX Runtime intra-op threads; precision, onnx_sha256, engine_cache: TensorRT
    engine build precision ("fp32", "fp16", "int8"), the file's known digest (from a verified
    bundle), and the engine cache folder.
    """
    if kind == "onnxruntime":
        return OrtBackend(path, threads=threads)
    if kind == "tensorrt":
        from device.models.trt_backend import EngineCache, TensorRTBackend

        return TensorRTBackend(path, precision=precision, onnx_sha256=onnx_sha256, cache=EngineCache(engine_cache))
    raise ValueError(f"unknown backend {kind!r}; choose from {BACKENDS}")
