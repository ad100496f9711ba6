"""The frame loop's seams: what ``ScannerRuntime`` needs from the camera, the result store and
the scanner, as Protocols (structural types: the real parts satisfy them without inheriting).

- ``FrameSource``: ``device.capture.sources.FrameSource`` (``open_source``);
- ``ResultSink``: ``device.sync.device_sync.DeviceSync`` (outbox + MQTT link);
- ``ScannerBridge``: ``firmware_bridge.link.SerialLink`` (the scanner MCU over serial).

The trigger queue (``TriggerQueue``) is made first and handed to the MQTT link and the runtime;
anything may put a trigger name on it ("mqtt", "key", "button press", ...) from any thread.
"""

from __future__ import annotations

import queue
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np

if TYPE_CHECKING:
    from firmware_bridge.events import LinkEvent
    from firmware_bridge.messages import LedSet

__all__ = ["CapturedFrame", "FrameSource", "StoredResult", "ResultSink", "ScannerBridge", "TriggerQueue"]

TriggerQueue: TypeAlias = queue.SimpleQueue[str]  # names of what asked for a diagnosis


class CapturedFrame(Protocol):
    """One camera frame: image HxWx3 uint8 BGR; seq: per-source counter from 1; t_capture: UTC
    wall time, epoch seconds; source: the camera URI; still: an independent photograph (no
    motion is measured against the previous frame); name: its image file ("" for cameras)."""

    @property
    def image(self) -> np.ndarray: ...

    @property
    def seq(self) -> int: ...

    @property
    def t_capture(self) -> float: ...

    @property
    def source(self) -> str: ...

    @property
    def still(self) -> bool: ...

    @property
    def name(self) -> str: ...


class FrameSource(Protocol):
    """The camera: the next frame within ``timeout_s`` seconds, or None (nothing yet, reconnecting,
    ended); never raises into the frame loop. ``ended``: a file or folder has played its last
    frame (the frame loop stops); a camera never ends, it is retried."""

    @property
    def ended(self) -> bool: ...

    def read(self, timeout_s: float) -> CapturedFrame | None: ...


class StoredResult(Protocol):
    """A result stored durably; ``seq`` is its per-device sequence number."""

    @property
    def seq(self) -> int: ...


class ResultSink(Protocol):
    """Where diagnoses go: ``submit`` stores one durably (raises when it refuses it, nothing stored
    is touched); ``update_telemetry`` gives the live FPS and the scanner's battery reading."""

    def submit(
        self,
        *,
        captured_at: datetime,
        metrics: dict[str, Any],
        conditions: dict[str, Any],
        quality: dict[str, Any],
        timings_ms: dict[str, float],
        frame: dict[str, Any],
    ) -> StoredResult: ...

    def update_telemetry(self, *, fps: float | None = None, battery: Mapping[str, Any] | None = None) -> None: ...


class ScannerBridge(Protocol):
    """The scanner: its events (button presses, battery, link up/down, MCU errors) and the LED ring."""

    def get_event(self, timeout_s: float | None = None) -> LinkEvent | None:
        """The next event, waiting at most ``timeout_s`` seconds; None when there is none."""
        ...

    def send_led(self, led: LedSet) -> object:
        """Queue an LED ring command (not waited for)."""
        ...
