"""What of the TensorRT backend runs without a GPU: engine cache keys and the cache itself.
(The engine build and execution need TensorRT and a GPU; see device/models/trt_backend.py.)"""

import importlib.util
from pathlib import Path

import pytest

from device.models.backends import open_backend
from device.models.trt_backend import EngineCache, engine_cache_key

SHA = "ab" * 32
BASE = dict(
    onnx_sha256=SHA, precision="int8", trt_version="10.3.0", gpu_name="Orin", input_shapes={"image": (1, 3, 480, 640)}
)


def test_key_changes_with_every_component() -> None:
    key = engine_cache_key(**BASE)
    assert len(key) == 32 and key == engine_cache_key(**BASE)
    changes = {
        "onnx_sha256": "cd" * 32,
        "precision": "fp16",
        "trt_version": "10.3.1",
        "gpu_name": "NVIDIA Jetson AGX Orin",
        "input_shapes": {"image": (1, 3, 240, 320)},
    }
    keys = {name: engine_cache_key(**(BASE | {name: value})) for name, value in changes.items()}
    assert len(set(keys.values()) | {key}) == len(changes) + 1
    # Whitespace in the GPU name and the order of inputs do not matter.
    assert engine_cache_key(**(BASE | {"gpu_name": " Orin\n"})) == key
    two = {"a": (1, 2), "b": (3,)}
    assert engine_cache_key(**(BASE | {"input_shapes": two})) == engine_cache_key(
        **(BASE | {"input_shapes": dict(reversed(list(two.items())))})
    )


def test_key_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="precision"):
        engine_cache_key(**(BASE | {"precision": "int4"}))
    with pytest.raises(ValueError, match="sha256"):
        engine_cache_key(**(BASE | {"onnx_sha256": "abc"}))


def test_cache_stores_loads_and_evicts_stale_engines(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "engines")
    old = engine_cache_key(**BASE)
    new = engine_cache_key(**(BASE | {"trt_version": "10.4.0"}))
    assert cache.load("segmenter", old) is None
    cache.store("segmenter", old, b"old-engine", {"trt": "10.3.0"})
    assert cache.load("segmenter", old) == b"old-engine"
    assert cache.load("segmenter", new) is None  # a TensorRT upgrade misses the cache: rebuild
    cache.store("segmenter", new, b"new-engine", {"trt": "10.4.0"})
    cache.store("classifier", old, b"other-model", {})
    removed = cache.evict("segmenter", keep=new)
    assert [p.name for p in removed] == [f"segmenter-{old}.engine"]
    assert cache.load("segmenter", new) == b"new-engine" and cache.load("classifier", old) == b"other-model"
    assert not list((tmp_path / "engines").glob("*.tmp"))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_backend_without_tensorrt_says_what_is_missing(tmp_path: Path) -> None:
    from tests.onnx_graphs import conv_net, save

    path = save(conv_net(), tmp_path / "m.onnx")
    with pytest.raises(RuntimeError, match="needs tensorrt and pycuda"):
        open_backend(path, "tensorrt")
    with pytest.raises(ValueError, match="unknown backend"):
        open_backend(path, "openvino")
