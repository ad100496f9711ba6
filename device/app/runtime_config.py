"""Device runtime configuration: the same TOML file as sync, sections for camera, models,
scanner and run. Defaults live in the dataclasses; unknown keys and bad values are errors
naming the key (``device.sync.config.ConfigError``).

::

    [camera]   source = ""               URI (v4l2:///dev/video0, csi://0, rtsp://..., file, folder,
                                         synthetic:// for demos); "" = none: ``device run`` refuses
                                         to start rather than invent frames
    [models]   bundle = ""               signed bundle folder ("" = the shipped one)
    [scanner]  port = ""                 serial port of the scanner MCU ("" = none)
    [run]      out = "scans"             overlays and the run log
    [mqtt] [outbox]                      see device.sync.config (sync)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.contracts.config import ConfigError, check, load_toml_config, path_field, section
from device.contracts.constants import MASK_STAGES
from device.sync.config import SyncConfig

__all__ = ["CameraConfig", "ModelsConfig", "ScannerConfig", "RunConfig", "RuntimeConfig", "load_runtime_config"]

log = logging.getLogger(__name__)

PRECISIONS = ("fastest", "auto", "fp32", "int8")  # [models] precision (ScanPipeline's ``precision``)


@dataclass(frozen=True)
class CameraConfig:
    """source: a source URI ("" = none given: the runtime will not start; synthetic frames only
    when asked for, ``synthetic://``); width/height/fps: requested capture format (0 = the
    source's own); loop: play a video file or folder again after its end (false: it ends the run;
    the synthetic clip always loops unless its URI says ``?loop=0``)."""

    source: str = ""
    width: int = 640
    height: int = 480
    fps: float = 15.0
    loop: bool = False

    def __post_init__(self) -> None:
        check(self.width >= 0 and self.height >= 0, "camera.width", "must be >= 0", (self.width, self.height))
        check(self.fps >= 0, "camera.fps", "must be >= 0", self.fps)


@dataclass(frozen=True)
class ModelsConfig:
    """bundle: folder ("" = shipped); backend: onnxruntime|tensorrt; precision: fastest (on ONNX
    Runtime the gated variant that runs fastest on this CPU, timed as the models load; on TensorRT
    as auto)|auto (the bundle's preferred variant)|fp32|int8; mask_stage: the hair mask a
    diagnosis measures, auto (fused with the bundle's prompt refiner, else coarse)|fused|coarse|
    refined; trusted_keys: extra PEM key folder; calibration: optics profile ("" = the device default);
    bundle_state: the rollback record, the newest bundle version accepted ("" = bundle-state.json
    beside the outbox); allow_downgrade: accept a bundle older than that record."""

    bundle: str = path_field()
    backend: str = "onnxruntime"
    precision: str = "fastest"
    threads: int = 2
    mask_stage: str = "auto"
    engine_cache: str = path_field()
    trusted_keys: str = path_field()
    calibration: str = path_field()
    bundle_state: str = path_field()
    allow_downgrade: bool = False

    def __post_init__(self) -> None:
        check(
            self.backend in ("onnxruntime", "tensorrt"),
            "models.backend",
            "must be onnxruntime or tensorrt",
            self.backend,
        )
        check(
            self.precision in PRECISIONS, "models.precision", f"must be one of {', '.join(PRECISIONS)}", self.precision
        )
        check(
            self.mask_stage in ("auto", *MASK_STAGES),
            "models.mask_stage",
            f"must be auto or one of {', '.join(MASK_STAGES)}",
            self.mask_stage,
        )
        check(1 <= self.threads <= 64, "models.threads", "must be 1-64", self.threads)


@dataclass(frozen=True)
class ScannerConfig:
    """port: serial port or URL of the scanner MCU ("" = no scanner; "sim" = start the MCU
    simulator on a pty, for demos); led_ack: flash the LED ring after each diagnosis."""

    port: str = ""
    led_ack: bool = True


@dataclass(frozen=True)
class RunConfig:
    """out: folder for diagnosis overlays; preview: auto|window|headless; diagnose_every_s:
    also diagnose on a timer (0 = only on trigger); diagnose_stills: diagnose each still of a
    folder source once, without a trigger; max_frames / max_diagnoses / max_seconds: stop after
    so many (0 = run until stopped or the source ends); publish: start the MQTT link;
    publish_thumbnails: put the overlay as a small JPEG (320x240) into each result record, so it
    leaves the scanner with the record (false: no image ever leaves the scanner)."""

    out: str = path_field("scans")
    preview: str = "auto"
    save_overlays: bool = True
    diagnose_every_s: float = 0.0
    diagnose_stills: bool = True
    max_frames: int = 0
    max_diagnoses: int = 0
    max_seconds: float = 0.0
    publish: bool = False
    publish_thumbnails: bool = False
    stdin_trigger: bool = True

    def __post_init__(self) -> None:
        check(
            self.preview in ("auto", "window", "headless"),
            "run.preview",
            "must be auto, window or headless",
            self.preview,
        )
        for key in ("diagnose_every_s", "max_seconds"):
            check(getattr(self, key) >= 0, f"run.{key}", "must be >= 0", getattr(self, key))
        for key in ("max_frames", "max_diagnoses"):
            check(getattr(self, key) >= 0, f"run.{key}", "must be >= 0", getattr(self, key))


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything ``scalpedge device run`` needs."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    scanner: ScannerConfig = field(default_factory=ScannerConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> RuntimeConfig:
        known = {"camera", "models", "scanner", "run", "mqtt", "outbox"}
        if "fleet" in data:  # accepted for one release: configs once shared one file with the fleet
            log.warning("[fleet] belongs to the fleet consumer's config; the scanner ignores it")
        unknown = sorted(set(data) - known - {"fleet"})
        if unknown:
            raise ConfigError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(
            section(CameraConfig, data, "camera", base_dir),
            section(ModelsConfig, data, "models", base_dir),
            section(ScannerConfig, data, "scanner", base_dir),
            section(RunConfig, data, "run", base_dir),
            SyncConfig.from_mapping(data, base_dir),
        )

    def with_overrides(self, **sections: Mapping[str, Any]) -> RuntimeConfig:
        """A copy with fields replaced, e.g. ``with_overrides(camera={"source": uri})``; None
        values are ignored (CLI options that were not given)."""
        out = self
        for name, values in sections.items():
            values = {k: v for k, v in values.items() if v is not None}
            if values:
                out = dataclasses.replace(out, **{name: dataclasses.replace(getattr(out, name), **values)})
        return out


def load_runtime_config(path: str | Path | None) -> RuntimeConfig:
    """Read and validate a TOML file (None: all defaults). Raises ConfigError naming file and key."""
    if path is None:
        return RuntimeConfig()
    return load_toml_config(path, RuntimeConfig.from_mapping)
