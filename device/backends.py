"""Inference backends behind one interface: named inputs in, named outputs out.

Only ONNX Runtime lives here for now; a TensorRT backend joins it behind the same protocol.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = ["Backend", "OrtBackend"]


class Backend(Protocol):
    """A loaded model. ``run`` binds inputs and outputs by name, never by position."""

    input_shapes: dict[str, tuple[int, ...]]
    output_names: tuple[str, ...]

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """inputs: name -> array of the declared shape; returns name -> array."""
        ...

    def warmup(self, runs: int = 2) -> float:
        """Run ``runs`` times on zeros; returns the last run's time in ms."""
        ...


class OrtBackend:
    """ONNX Runtime session (CPU by default; CUDA/TensorRT providers when asked and present)."""

    def __init__(self, path: str | Path, threads: int = 2, providers: Sequence[str] | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        available = ort.get_available_providers()
        chosen = [p for p in (providers or ["CPUExecutionProvider"]) if p in available] or ["CPUExecutionProvider"]
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=chosen)
        self.input_shapes = {i.name: tuple(int(d) for d in i.shape) for i in self.session.get_inputs()}
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, str] = dict(meta)

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        missing = set(self.input_shapes) - set(inputs)
        if missing:
            raise KeyError(f"{self.path.name}: missing inputs {sorted(missing)}")
        for name, arr in inputs.items():
            if name in self.input_shapes and tuple(arr.shape) != self.input_shapes[name]:
                raise ValueError(
                    f"{self.path.name}: input {name!r} has shape {arr.shape}, expected {self.input_shapes[name]}"
                )
        names = list(outputs or self.output_names)
        values = self.session.run(names, dict(inputs))
        return dict(zip(names, values, strict=True))

    def warmup(self, runs: int = 2) -> float:
        zeros = {n: np.zeros(s, np.float32) for n, s in self.input_shapes.items()}
        ms = 0.0
        for _ in range(runs):
            t = time.perf_counter()
            self.run(zeros)
            ms = (time.perf_counter() - t) * 1000
        return ms
