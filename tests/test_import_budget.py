"""Importing the device runtime must not pull torch or any server-side package."""

import json
import subprocess
import sys

import pytest

DEVICE_MODULES = [
    "device",
    "device.cli",
    "device.app.analysis",
    "device.cli.segment",
    "device.models.onnx_segmenter",
    "device.measure.hair_metrics",
    "device.measure.strand_measures",
    "scoring.classical",
    "device.models.classifiers",
    "device.cli.classify",
    "device.models.bundle",
    "device.models.backends",
    "device.models.trt_backend",
    "device.measure.optics",
    "device.app.pipeline",
    "device.app.runtime",
    "device.cli.run",
    "device.app.runtime_config",
    "device.capture.sources",
    "device.capture.source_uri",
    "device.measure.quality",
    "device.app.preview",
    "device.sync.device_sync",
    "device.sync.mqtt_link",
    "device.sync.outbox",
    "device.contracts.records",
    "fleet.consumer",
    "device.refine.prompts",
    "device.refine.refiner",
    "device.refine.fusion",
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
