"""The runtime's TOML config: defaults, overrides, path resolution and errors naming the key."""

import re
from pathlib import Path

import pytest

from device.app.runtime_config import RuntimeConfig, load_runtime_config
from device.sync.config import ConfigError


def test_defaults_and_file_values(tmp_path: Path) -> None:
    assert load_runtime_config(None) == RuntimeConfig()
    # no camera unless one is named: the runtime refuses to start rather than use synthetic frames
    defaults = RuntimeConfig()
    assert defaults.camera.source == "" and not defaults.camera.loop and defaults.run.diagnose_stills
    # the gated variant fastest on this CPU; the fused mask when the bundle has the refiner
    assert (defaults.models.precision, defaults.models.mask_stage) == ("fastest", "auto")
    path = tmp_path / "scanner.toml"
    path.write_text(
        """
[camera]
source = "v4l2:///dev/video0"
fps = 30
loop = true
[models]
bundle = "bundles/current"
precision = "int8"
[scanner]
port = "/dev/serial/by-id/usb-ScalpEdge_Scanner-if00"
[run]
out = "scans"
diagnose_every_s = 5
[mqtt]
device_id = "scanner-0042"
[outbox]
path = "state/outbox.sqlite"
"""
    )
    cfg = load_runtime_config(path)
    assert cfg.camera.source == "v4l2:///dev/video0" and cfg.camera.fps == 30.0 and cfg.camera.loop
    assert cfg.models.bundle == str((tmp_path / "bundles" / "current").resolve())
    assert cfg.models.precision == "int8" and cfg.run.diagnose_every_s == 5.0
    assert cfg.run.out == str((tmp_path / "scans").resolve())
    assert cfg.sync.mqtt.device_id == "scanner-0042"
    assert cfg.sync.outbox.path == str((tmp_path / "state" / "outbox.sqlite").resolve())
    over = cfg.with_overrides(camera={"source": "synthetic://", "fps": None}, run={"max_diagnoses": 2})
    assert over.camera.source == "synthetic://" and over.camera.fps == 30.0 and over.run.max_diagnoses == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[camera]\nsorce = 'x'\n", "[camera] unknown key(s) sorce"),
        ("[models]\nbackend = 'openvino'\n", "[models] backend must be onnxruntime or tensorrt"),
        ("[models]\nprecision = 'fp16'\n", "[models] precision must be one of fastest, auto, fp32, int8"),
        (
            "[models]\nmask_stage = 'sharp'\n",
            "[models] mask_stage must be auto or one of coarse, refined, paper, fused",
        ),
        (None, "config file not found"),
        ("[run]\npreview = 'tv'\n", "[run] preview must be auto, window or headless"),
        ("[run]\nmax_frames = -1\n", "[run] max_frames must be >= 0"),
        ("[camera]\nfps = 'fast'\n", "[camera] fps must be float"),
        ("[camera]\nloop = 'yes'\n", "[camera] loop must be bool"),
        ("[cameras]\nsource = 'x'\n", "unknown section(s) cameras"),
        ("[camera\n", "invalid TOML"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "scanner.toml"
    if text is not None:  # None: no file at all
        path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(str(path))) as exc:
        load_runtime_config(path)
    assert message in str(exc.value)
