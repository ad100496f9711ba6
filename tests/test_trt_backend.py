"""What of the TensorRT backend runs without a GPU: engine cache keys and the cache itself.
(The engine build and execution need TensorRT and a GPU; see device/models/trt_backend.py.)"""

import importlib.util
from pathlib import Path

import pytest

from device.models.backends import open_backend
from device.models.trt_backend import EngineCache, engine_cache_key, engine_mismatch

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


def test_a_swapped_or_foreign_engine_is_a_cache_miss_and_is_deleted(tmp_path: Path) -> None:
    """TensorRTBackend builds whenever ``EngineCache.load`` returns None; a cached engine whose
    bytes its sidecar does not vouch for must come back as None, never as the bytes."""
    cache = EngineCache(tmp_path / "engines")
    key = engine_cache_key(**BASE)
    path = cache.store("segmenter", key, b"genuine-engine", {"trt": "10.3.0"})
    assert cache.load("segmenter", key) == b"genuine-engine"
    assert (tmp_path / "engines").stat().st_mode & 0o077 == 0  # owner-only folder
    # Same size, other bytes (a swapped engine): refused and removed, so the next start rebuilds.
    path.write_bytes(b"tampered-engin")
    assert cache.load("segmenter", key) is None
    assert not path.exists() and not path.with_suffix(".json").exists()
    # An engine and its sidecar copied under another key's name (another GPU or TensorRT version).
    other = engine_cache_key(**(BASE | {"gpu_name": "Xavier"}))
    cache.store("segmenter", other, b"xavier-engine", {})
    for suffix in (".engine", ".json"):
        cache.path("segmenter", other).with_suffix(suffix).rename(path.with_suffix(suffix))
    assert cache.load("segmenter", key) is None
    # No sidecar (an engine dropped into the folder by hand).
    path.write_bytes(b"dropped-in")
    assert cache.load("segmenter", key) is None
    # A rebuild stores again and loads.
    cache.store("segmenter", key, b"rebuilt-engine", {})
    assert cache.load("segmenter", key) == b"rebuilt-engine"


def test_engine_mismatch_names_the_reason() -> None:
    key = engine_cache_key(**BASE)
    record = {"key": key, "engine_bytes": 3, "engine_sha256": "0" * 64}
    assert engine_mismatch(b"abc", None, key) == "no readable sidecar"
    assert "sidecar is for key" in str(engine_mismatch(b"abc", record, "f" * 32))
    assert "4 bytes, sidecar says 3" == engine_mismatch(b"abcd", record, key)
    assert "does not match the sidecar" in str(engine_mismatch(b"abc", record, key))
    import hashlib

    assert engine_mismatch(b"abc", record | {"engine_sha256": hashlib.sha256(b"abc").hexdigest()}, key) is None


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_backend_without_tensorrt_says_what_is_missing(tmp_path: Path) -> None:
    from tests.onnx_graphs import conv_net, save

    path = save(conv_net(), tmp_path / "m.onnx")
    with pytest.raises(RuntimeError, match="needs tensorrt and pycuda"):
        open_backend(path, "tensorrt")
    with pytest.raises(ValueError, match="unknown backend"):
        open_backend(path, "openvino")
