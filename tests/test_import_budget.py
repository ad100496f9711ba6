"""Importing the device runtime must not pull torch or any server-side package."""

import json
import subprocess
import sys

import pytest

DEVICE_MODULES = [
    "device",
    "device.cli",
    "device.analysis",
    "device.segment_command",
    "device.onnx_segmenter",
    "device.hair_metrics",
    "device._strand_measures",
    "device.classical",
    "device.classifiers",
    "device.classify_command",
    "device.bundle",
    "device.backends",
    "device.trt_backend",
    "device.calibration_profile",
    "device.pipeline",
    "device.runtime",
    "device.run_command",
    "device.runtime_config",
    "device.sources",
    "device._source_uri",
    "device.quality",
    "device.preview",
    "device.sync",
    "device.mqtt_link",
    "device.outbox",
    "device.records",
    "device.fleet",
    "device.prompts",
    "device.refiner",
    "device.fusion",
    "firmware_bridge",
]


@pytest.mark.parametrize("module", DEVICE_MODULES)
def test_device_imports_no_torch_or_server(module: str) -> None:
    code = (
        f"import sys, json, {module}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'torchvision', 'server_train', 'export', 'calibration', 'segment_anything', 'tensorrt'})\n"
        "print(json.dumps(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_cli_parser_builds_without_importing_torch() -> None:
    """Building the full parser (server subcommands included) stays torch-free."""
    code = (
        "import sys, json\n"
        "from device.cli import build_parser\n"
        "build_parser()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
