"""The diagnosis floor benchmark (benchmarks/diagnosis_floor.py): the work of a real serial
diagnosis of the shipped bundle, split into model and host time, and the floors it sets."""

import importlib.util
from pathlib import Path

import pytest

from device.assets import default_bundle_path

_spec = importlib.util.spec_from_file_location(
    "diagnosis_floor", Path(__file__).parents[1] / "benchmarks" / "diagnosis_floor.py"
)
assert _spec is not None and _spec.loader is not None
diagnosis_floor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diagnosis_floor)


def test_floors_divide_the_work_by_the_cores() -> None:
    variants = {
        "segmenter": "s.onnx (fp32)",
        "conditions": "g.onnx (fp32)",
        "pixel_refiner": "p.int8.onnx (int8)",
        "refiner_encoder": "e.onnx (fp32)",
    }
    work = {"s.onnx": 50.0, "g.onnx": 40.0, "p.int8.onnx": 10.0, "e.onnx": 20.0, "host": 30.0}
    assert diagnosis_floor.floors(work, variants, cores=2) == {
        "all_work": 75.0,
        "grader_and_host": 35.0,
        "segmentation_models": 40.0,
    }
    assert diagnosis_floor.floors(work, variants, cores=1)["all_work"] == 150.0


def test_a_real_diagnosis_splits_into_each_model_and_the_host() -> None:
    result = diagnosis_floor.measure(default_bundle_path(), runs=2, precision="fp32")
    work = result["work_ms"]
    files = {role: desc.split(" ")[0] for role, desc in result["variants"].items()}
    for role in ("segmenter", "conditions", "refiner_encoder", "refiner_decoder", "pixel_refiner"):
        assert work[files[role]] > 0, role  # every model of the fused diagnosis ran
    assert work["host"] > 0
    assert sum(work.values()) == pytest.approx(result["wall_ms"], rel=0.5)
    assert diagnosis_floor.OrtBackend.run is not None and "timed_run" not in diagnosis_floor.OrtBackend.run.__name__
