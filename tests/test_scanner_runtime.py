"""ScannerRuntime with real parts: the shipped bundle on ONNX Runtime (its segmenter wrapped to
count calls: ``test_pipeline.counting_pipeline``), frames from a folder source, the SQLite outbox
behind DeviceSync, and the MCU simulator on a pty driven through the real SerialLink, as
``scalpedge device run --demo`` does."""

from __future__ import annotations

import queue
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from sync_device import sync_config, wait_for
from test_pipeline import CLIP, counting_pipeline

from device.app.pipeline import ScanPipeline
from device.app.runtime import MAX_REJECTED_FOR_DIAGNOSIS, ScannerRuntime
from device.capture.sources import open_source
from device.sync.device_sync import DeviceSync
from firmware_bridge.link import SerialLink
from firmware_bridge.messages import LedPattern, LedSet
from firmware_bridge.simulator import McuSimulator

RED, GREEN = (255, 0, 0), (0, 255, 0)


@dataclass
class Scanner:
    """The simulated MCU and the serial link to it (up)."""

    mcu: McuSimulator
    link: SerialLink

    def leds(self) -> list[tuple[int, int, int]]:
        return [(led.red, led.green, led.blue) for led in self.mcu.stats.led_history]


@pytest.fixture
def scanner() -> Iterator[Scanner]:
    port = Path(tempfile.mkdtemp(prefix="scalpedge-sim-")) / "scanner"
    mcu = McuSimulator(str(port)).start()
    link = SerialLink(str(port)).start()
    try:
        assert link.wait_up(10)
        yield Scanner(mcu, link)
    finally:
        link.stop()
        mcu.stop()
        shutil.rmtree(port.parent, ignore_errors=True)


@pytest.fixture
def pipeline() -> ScanPipeline:
    return counting_pipeline()


@pytest.fixture
def sync(tmp_path: Path) -> Iterator[DeviceSync]:
    """A real outbox behind DeviceSync; its MQTT link is never started (no broker needed)."""
    s = DeviceSync.from_config(sync_config(tmp_path, port=1), bundle_version="test")
    yield s
    s.close(timeout_s=0.5)


def _folder(tmp_path: Path, frames: list[np.ndarray]) -> str:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    return str(folder)


def test_repeated_rejections_force_a_rejected_diagnosis_with_a_red_led(
    tmp_path: Path, pipeline: ScanPipeline, sync: DeviceSync, scanner: Scanner
) -> None:
    # A diagnosis is asked for while the lens is covered: every frame is underexposed. The loop
    # waits for a usable frame through MAX_REJECTED_FOR_DIAGNOSIS rejections, then gives the
    # diagnosis on the next one anyway: stored as rejected with the reason, LED red.
    black = np.zeros((480, 640, 3), np.uint8)
    # a sequence of frames (stills=False), as a camera gives them: not stills diagnosed one by one
    source = open_source(_folder(tmp_path, [black] * (MAX_REJECTED_FOR_DIAGNOSIS + 5)), stills=False)
    triggers: queue.SimpleQueue[str] = queue.SimpleQueue()
    triggers.put("test")
    runtime = ScannerRuntime(pipeline, source, tmp_path / "out", sync=sync, bridge=scanner.link, triggers=triggers)
    summary = runtime.run(max_diagnoses=1, max_seconds=60)
    assert summary.stop_reason == "diagnosis limit"
    assert summary.frames == summary.rejected_frames == MAX_REJECTED_FOR_DIAGNOSIS + 1
    (row,) = summary.results
    assert (row.seq, row.trigger, row.accepted, row.error) == (1, "test", False, None)
    quality = row.fields["quality"]
    assert quality["accepted"] is False and quality["reason"].startswith("underexposed frame")
    assert row.fields["metrics"]["hair_count"]["value"] == 0 and row.fields["conditions"] == {}
    assert pipeline.segmenter.calls == 0  # a rejected frame is never segmented
    stored = sync.outbox.claim(5)
    assert [r.seq for r in stored] == [1] and b'"accepted":false' in stored[0].payload
    assert wait_for(lambda: scanner.leds() == [RED], 10), scanner.leds()
    assert scanner.mcu.stats.led_history[0] == LedSet(200, *RED, pattern=LedPattern.BLINK, period_ms=250)


def test_a_button_press_diagnoses_the_live_frame_once_with_a_green_led(
    tmp_path: Path, pipeline: ScanPipeline, sync: DeviceSync, scanner: Scanner
) -> None:
    # The scanner's button asks for a diagnosis while the clip plays: the next usable frame is
    # diagnosed from the live path's segmentation (one segmenter call per frame, the diagnosis
    # adds none), stored, saved as an overlay, and acknowledged green.
    source = open_source(_folder(tmp_path, [cv2.imread(str(p)) for p in CLIP]), fps=20, loop=True, stills=False)
    runtime = ScannerRuntime(pipeline, source, tmp_path / "out", sync=sync, bridge=scanner.link)
    scanner.mcu.press()
    summary = runtime.run(max_diagnoses=1, max_seconds=60)
    assert summary.stop_reason == "diagnosis limit"
    (row,) = summary.results
    assert (row.seq, row.trigger, row.accepted, row.error) == (1, "button press", True, None)
    assert row.fields["metrics"]["hair_count"]["value"] > 0 and row.overlay is not None
    assert (tmp_path / "out" / row.overlay).is_file()
    assert pipeline.segmenter.calls == summary.frames - summary.rejected_frames
    assert set(summary.diagnosis_ms) >= {"quality", "segment", "metrics", "classify", "total"}
    assert [r.seq for r in sync.outbox.claim(5)] == [1]
    assert wait_for(lambda: scanner.leds() == [GREEN], 10), scanner.leds()


def test_triggers_from_another_thread_share_the_queue_and_a_failed_store_is_red(
    tmp_path: Path, pipeline: ScanPipeline, scanner: Scanner
) -> None:
    # The trigger queue is made first and handed to the runtime (as it is to the MQTT link): a
    # trigger put on it by anyone is served. With an outbox that holds one record, the second
    # diagnosis is refused: reported as not stored, LED red, and the loop goes on.
    cfg = sync_config(tmp_path, port=1, outbox={"max_pending": 1})
    full = DeviceSync.from_config(cfg, bundle_version="test")
    triggers: queue.SimpleQueue[str] = queue.SimpleQueue()
    for name in ("mqtt", "mqtt"):
        triggers.put(name)
    source = open_source(_folder(tmp_path, [cv2.imread(str(p)) for p in CLIP[:6]]), fps=20, loop=True, stills=False)
    runtime = ScannerRuntime(pipeline, source, tmp_path / "out", sync=full, bridge=scanner.link, triggers=triggers)
    try:
        summary = runtime.run(max_diagnoses=2, max_seconds=60)
    finally:
        full.close(timeout_s=0.5)
    first, second = summary.results
    assert (first.seq, first.trigger, first.error) == (1, "mqtt", None)
    assert second.seq is None and second.error is not None and second.error.startswith("not stored: outbox full")
    assert wait_for(lambda: scanner.leds() == [GREEN, RED], 10), scanner.leds()
