"""TensorRT backend: build an engine from the bundle's ONNX on the device, cache it, run it.

Written against TensorRT 10's Python API (JetPack 6) with pycuda for device memory; both are
imported only when this backend is constructed, so nothing else on the device needs them.

Engines are specific to the TensorRT version and the GPU they were built on, so each engine
is cached under a key of ONNX sha256 + precision + input shapes + TensorRT version + GPU name
(``engine_cache_key``) and rebuilt when any of them changes. Each engine's JSON sidecar records
its key, size and sha256; an engine whose bytes do not match its sidecar (swapped, truncated,
copied from another device or key) is deleted and rebuilt, never handed to TensorRT, and so is
one that fails to deserialise. The cache folder is created owner-only (0700): the sidecar
catches a swapped or damaged file, the folder's permissions keep out anyone who could rewrite
both.

Jetson steps: install JetPack 6 (TensorRT 10, CUDA 12), ``pip install pycuda`` (or the
`jetson` extra), then ``scalpedge segment --backend tensorrt``. The first run builds the
engine (minutes on an Orin Nano); later runs load it from the cache in about a second.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "EngineKey",
    "engine_cache_key",
    "engine_mismatch",
    "EngineCache",
    "TensorRTBackend",
    "default_cache_dir",
    "PRECISIONS",
]

log = logging.getLogger(__name__)

# Builder precisions: fp32 only; fp16 allows half kernels; int8 is explicit Q/DQ in the ONNX
# (TensorRT 10 has no implicit calibration path) with fp16 allowed for unquantised layers.
PRECISIONS = ("fp32", "fp16", "int8")


def default_cache_dir() -> Path:
    home = os.environ.get("SCALPEDGE_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "scalpedge") / "engines"


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. input_shapes: {name: shape} of the ONNX inputs."""

    onnx_sha256: str
    precision: str
    trt_version: str
    gpu_name: str
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]


def engine_cache_key(
    onnx_sha256: str,
    precision: str,
    trt_version: str,
    gpu_name: str,
    input_shapes: Mapping[str, Sequence[int]],
) -> str:
    """32 hex digits identifying an engine; any change in the inputs changes it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}; choose from {PRECISIONS}")
    if len(onnx_sha256) != 64:
        raise ValueError("onnx_sha256 must be a hex sha256 digest")
    key = EngineKey(
        onnx_sha256,
        precision,
        trt_version,
        gpu_name.strip(),
        tuple(sorted((n, tuple(int(d) for d in s)) for n, s in input_shapes.items())),
    )
    return hashlib.sha256(json.dumps(asdict(key), sort_keys=True).encode()).hexdigest()[:32]


def engine_mismatch(engine: bytes, record: Mapping[str, Any] | None, key: str) -> str | None:
    """Why ``engine`` may not be loaded under ``key`` given its sidecar ``record`` (None: no or
    unreadable sidecar), or None when the record vouches for it (same key, size and sha256)."""
    if record is None:
        return "no readable sidecar"
    if record.get("key") != key:
        return f"sidecar is for key {record.get('key')!r}"
    if record.get("engine_bytes") != len(engine):
        return f"{len(engine)} bytes, sidecar says {record.get('engine_bytes')}"
    digest = hashlib.sha256(engine).hexdigest()
    if record.get("engine_sha256") != digest:
        return f"sha256 {digest[:16]}… does not match the sidecar"
    return None


class EngineCache:
    """Serialized engines on disk: ``<dir>/<stem>-<key>.engine`` plus a JSON sidecar that
    records the key, the engine's size and sha256, and what the key was made of. Writes are
    atomic (temp file + rename); ``load`` returns only engines their sidecar vouches for."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else default_cache_dir()

    def path(self, stem: str, key: str) -> Path:
        return self.directory / f"{stem}-{key}.engine"

    def load(self, stem: str, key: str) -> bytes | None:
        """The cached engine, or None (a miss: build it) when absent or not matching its
        sidecar; a mismatching engine and its sidecar are deleted."""
        path = self.path(stem, key)
        if not path.is_file():
            return None
        engine = path.read_bytes()
        try:
            record = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            record = None
        problem = engine_mismatch(engine, record if isinstance(record, dict) else None, key)
        if problem is None:
            return engine
        log.warning("cached engine %s refused (%s); rebuilding", path, problem)
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
        return None

    def store(self, stem: str, key: str, engine: bytes, info: Mapping[str, Any]) -> Path:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.path(stem, key)
        record = {**info, "key": key, "engine_bytes": len(engine), "engine_sha256": hashlib.sha256(engine).hexdigest()}
        for target, data in (
            (path, engine),
            (path.with_suffix(".json"), json.dumps(record, indent=2, default=str).encode()),
        ):
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return path

    def evict(self, stem: str, keep: str) -> list[Path]:
        """Delete engines of ``stem`` other than ``keep`` (stale after an update)."""
        removed = []
        for path in self.directory.glob(f"{stem}-*.engine"):
            if path.stem != f"{stem}-{keep}":
                path.unlink(missing_ok=True)
                path.with_suffix(".json").unlink(missing_ok=True)
                removed.append(path)
        return removed


class TensorRTBackend:
    """A TensorRT engine bound by tensor name. Construct and run it in one thread (the frame
    loop's owner thread): the CUDA context belongs to the thread that created it."""

    def __init__(
        self,
        onnx_path: str | Path,
        precision: str = "fp16",
        onnx_sha256: str | None = None,
        cache: EngineCache | None = None,
        workspace_mb: int = 1024,
    ) -> None:
        try:
            trt = importlib.import_module("tensorrt")
            cuda = importlib.import_module("pycuda.driver")
            importlib.import_module("pycuda.autoinit")
        except ImportError as exc:
            raise RuntimeError(
                f"the TensorRT backend needs tensorrt and pycuda (JetPack 6; `pip install pycuda`): {exc}"
            ) from exc
        from device.models.bundle import sha256_file

        self.path = Path(onnx_path)
        self.precision = precision
        self._trt, self._cuda = trt, cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        digest = onnx_sha256 or sha256_file(self.path)
        shapes = _onnx_input_shapes(self.path)
        gpu = cuda.Device(0).name()
        self.key = engine_cache_key(digest, precision, trt.__version__, gpu, shapes)
        self.cache = cache or EngineCache()
        stem = self.path.stem
        blob = self.cache.load(stem, self.key)
        engine = self._deserialize(blob) if blob else None
        if engine is None:
            log.info(
                "building TensorRT %s engine for %s on %s (cache miss %s)", precision, self.path.name, gpu, self.key
            )
            blob = self._build(workspace_mb)
            self.cache.store(
                stem,
                self.key,
                blob,
                {
                    "onnx": str(self.path),
                    "sha256": digest,
                    "precision": precision,
                    "tensorrt": trt.__version__,
                    "gpu": gpu,
                    "shapes": shapes,
                },
            )
            self.cache.evict(stem, keep=self.key)
            engine = self._deserialize(blob)
            if engine is None:
                raise RuntimeError(f"TensorRT could not deserialize the engine it just built for {self.path}")
        self.engine = engine
        self.context = engine.create_execution_context()
        self.stream = cuda.Stream()
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        names: list[str] = []
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, Any] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            self._host[name] = cuda.pagelocked_empty(shape, dtype)
            self._device[name] = cuda.mem_alloc(self._host[name].nbytes)
            self.context.set_tensor_address(name, int(self._device[name]))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.input_shapes[name] = shape
            else:
                names.append(name)
        self.output_names = tuple(names)
        self.last_ms = 0.0

    def _build(self, workspace_mb: int) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(self.path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {self.path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
        if self.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if self.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        blob = builder.build_serialized_network(network, config)
        if blob is None:
            raise RuntimeError(f"TensorRT failed to build an engine for {self.path} ({self.precision})")
        return bytes(blob)

    def _deserialize(self, blob: bytes) -> Any:
        engine = self._trt.Runtime(self._logger).deserialize_cuda_engine(blob)
        if engine is None:
            log.warning("cached engine for %s did not deserialize; rebuilding", self.path.name)
        return engine

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """inputs: name -> array of the engine's shape; returns name -> array (copies)."""
        start = time.perf_counter()
        missing = set(self.input_shapes) - set(inputs)
        if missing:
            raise KeyError(f"{self.path.name}: missing inputs {sorted(missing)}")
        for name, shape in self.input_shapes.items():
            arr = inputs[name]
            if tuple(arr.shape) != shape:
                raise ValueError(f"{self.path.name}: input {name!r} has shape {arr.shape}, expected {shape}")
            np.copyto(self._host[name], arr, casting="same_kind")
            self._cuda.memcpy_htod_async(self._device[name], self._host[name], self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError(f"TensorRT execution failed for {self.path.name}")
        wanted = list(outputs or self.output_names)
        for name in wanted:
            self._cuda.memcpy_dtoh_async(self._host[name], self._device[name], self.stream)
        self.stream.synchronize()
        self.last_ms = (time.perf_counter() - start) * 1000
        return {name: self._host[name].copy() for name in wanted}

    def warmup(self, runs: int = 2) -> float:
        zeros = {n: np.zeros(s, self._host[n].dtype) for n, s in self.input_shapes.items()}
        for _ in range(runs):
            self.run(zeros)
        return self.last_ms


def _onnx_input_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Static input shapes of an ONNX file, read with ONNX Runtime (no onnx package on the device)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shapes = {}
    for i in sess.get_inputs():
        if not all(isinstance(d, int) for d in i.shape):
            raise ValueError(f"{path}: input {i.name} has a dynamic shape {i.shape}; export static shapes")
        shapes[i.name] = tuple(int(d) for d in i.shape)
    return shapes
