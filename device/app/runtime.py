"""The scanner's frame loop: one owner thread for capture, inference and output.

Every frame: read -> live path (prepare, quality gate, segmentation, count) -> preview. On a
trigger (the scanner's button over serial, a key on stdin or in the preview window, an MQTT
``cmd``, or a timer): the next frame that passes the quality gate gets a full diagnosis of the
live path's segmentation (the frame is not segmented again), which becomes a result record
stored durably in the outbox (then published by the MQTT link), an overlay image on disk, and
an LED acknowledgement on the scanner. A bad frame or a failing stage is logged and skipped,
never fatal. Other threads only *request* work (the trigger queue, ``stop``); all state changes
happen in the loop. The seams (camera, result sink, scanner) are Protocols in
``device.app.seams``.

The operator sees one INFO line per diagnosis on stderr (``run_report.diagnosis_line``), the
reason whenever the quality gate starts rejecting frames for a new reason (INFO), and the last
diagnosis in the preview's status bar. A file or folder source that has ended stops the loop
("source ended"). A still (an image of a folder) is an independent photograph: no motion is
measured against the frame before it, and each one is diagnosed once (``diagnose_stills``).
``swap_pipeline`` replaces the models between two frames (a model rollout switching bundles).
"""

from __future__ import annotations

import logging
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2

from device.app.pipeline import Diagnosis, LiveResult, ScanPipeline
from device.app.preview import Preview, diagnosis_view, live_view
from device.app.run_report import diagnosis_line, status_line
from device.app.seams import CapturedFrame, FrameSource, ResultSink, ScannerBridge, TriggerQueue
from device.app.sessions import current_session_tags

__all__ = ["ScannerRuntime", "RunSummary", "ResultRow", "MAX_REJECTED_FOR_DIAGNOSIS"]

log = logging.getLogger(__name__)

MAX_REJECTED_FOR_DIAGNOSIS = 15  # frames the quality gate may reject before a diagnosis is given up
TELEMETRY_EVERY_S = 2.0
LIVE_COUNT_EVERY_S = 0.5  # the live hair count is refreshed this often (it costs about a segmentation)
UNCALIBRATED_STATUS = "UNCALIBRATED scale: thickness approximate"
REJECTION_LOG_EVERY_S = 10.0  # a quality-gate reason that persists is repeated at INFO this often


@dataclass(frozen=True)
class ResultRow:
    """One diagnosis as the summary table shows it."""

    seq: int | None
    trigger: str
    captured_at: str
    accepted: bool
    fields: dict[str, Any]
    overlay: str | None
    error: str | None = None
    frame_name: str = ""  # the still's image file ("" for camera frames)


@dataclass
class RunSummary:
    """What a run did: frame counts, live FPS, diagnoses and per-stage timings (ms)."""

    frames: int = 0
    rejected_frames: int = 0
    failed_frames: int = 0
    live_fps: float = 0.0
    results: list[ResultRow] = field(default_factory=list)
    live_ms: dict[str, list[float]] = field(default_factory=dict)
    diagnosis_ms: dict[str, list[float]] = field(default_factory=dict)
    stop_reason: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # what played (``FrameSource.describe``), for the summary
    source_stats: dict[str, Any] = field(default_factory=dict)

    def medians(self, which: str = "diagnosis") -> dict[str, float]:
        data = self.diagnosis_ms if which == "diagnosis" else self.live_ms
        return {k: round(statistics.median(v), 1) for k, v in data.items() if v}


class ScannerRuntime:
    """Owns the loop over frames of ``source``. ``triggers``: the trigger queue, made first and
    also handed to whatever else requests diagnoses (the MQTT link); a new one when None.
    ``sync``: where results are stored and published (None: only saved locally); ``bridge``: the
    scanner (None: no button, battery or LED); ``diagnose_stills``: diagnose each still of a
    folder source once, without a trigger; ``publishing``: the MQTT link runs (the diagnosis
    lines say "sending" rather than "stored on the scanner"); ``publish_thumbnails``: records
    carry the overlay as a small JPEG (``[run] publish_thumbnails``; off: no image leaves)."""

    def __init__(
        self,
        pipeline: ScanPipeline,
        source: FrameSource,
        out_dir: str | Path,
        sync: ResultSink | None = None,
        bridge: ScannerBridge | None = None,
        preview: Preview | None = None,
        save_overlays: bool = True,
        diagnose_every_s: float = 0.0,
        led_ack: bool = True,
        on_result: Callable[[ResultRow], None] | None = None,
        triggers: TriggerQueue | None = None,
        diagnose_stills: bool = True,
        publishing: bool = False,
        publish_thumbnails: bool = False,
    ) -> None:
        self.pipeline = pipeline
        self.source = source
        self.out_dir = Path(out_dir)
        self.sync = sync
        self.bridge = bridge
        self.preview = preview or Preview("headless")
        self.save_overlays = save_overlays
        self.diagnose_every_s = diagnose_every_s
        self.led_ack = led_ack
        self.on_result = on_result
        self.triggers: TriggerQueue = triggers if triggers is not None else queue.SimpleQueue()
        self.diagnose_stills = diagnose_stills
        self.publishing = publishing
        self.publish_thumbnails = publish_thumbnails
        self.calibrated = pipeline.optics is not None
        self.status: list[str] = self._scale_status()  # the preview's status bar
        self._last_rejection = ("", -1e9)  # the reason last logged at INFO, and when
        self._stop = threading.Event()
        self._stop_reason = ""
        self.summary = RunSummary()
        self.battery: dict[str, Any] | None = None
        self._swaps: queue.SimpleQueue[tuple[Callable[[], ScanPipeline], Future[ScanPipeline]]] = queue.SimpleQueue()

    # -- called from any thread -------------------------------------------------------------
    def request_diagnosis(self, trigger: str) -> None:
        """Ask for a full diagnosis of the next usable frame (thread-safe)."""
        self.triggers.put(trigger)

    def swap_pipeline(self, make: Callable[[], ScanPipeline]) -> Future[ScanPipeline]:
        """Ask the loop to build a pipeline with ``make`` before its next frame, on its own thread
        (TensorRT contexts are per thread), and to use it from then on (thread-safe). The future
        holds the new pipeline, or what ``make`` raised (the old one stays); cancel it to withdraw
        the request. Requests still waiting when the loop ends fail with RuntimeError."""
        future: Future[ScanPipeline] = Future()
        self._swaps.put((make, future))
        return future

    def stop(self, reason: str = "stopped") -> None:
        """Ask the loop to finish after the current frame (thread-safe, signal-safe)."""
        self._stop_reason = self._stop_reason or reason
        self._stop.set()

    # -- the loop ---------------------------------------------------------------------------
    def run(self, max_frames: int = 0, max_diagnoses: int = 0, max_seconds: float = 0.0) -> RunSummary:
        """Run until stopped or a limit (0 = none) is reached; returns the summary."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        start = last_timer = last_telemetry = time.monotonic()
        last_count = -1e9
        pending: list[str] = []
        rejected_in_a_row = 0
        fps_ema: float | None = None
        last_frame_t: float | None = None
        while not self._stop.is_set():
            now = time.monotonic()
            if max_seconds and now - start >= max_seconds:
                self.stop("time limit")
                break
            if max_frames and self.summary.frames >= max_frames:
                self.stop("frame limit")
                break
            if max_diagnoses and len(self.summary.results) >= max_diagnoses:
                self.stop("diagnosis limit")
                break
            self._apply_swaps()
            self._poll_bridge()
            while True:
                try:
                    pending.append(self.triggers.get_nowait())
                except queue.Empty:
                    break
            if self.diagnose_every_s and now - last_timer >= self.diagnose_every_s:
                pending.append("timer")
                last_timer = now
            frame = self.source.read(0.5)
            if frame is None:
                if self.source.ended:  # a file or folder played its last frame: done, no spinning
                    self._source_ended(pending)
                continue
            self.summary.frames += 1
            if frame.still:
                self.pipeline.forget_motion()
            try:
                recount = frame.still or now - last_count >= LIVE_COUNT_EVERY_S
                will_diagnose = bool(pending) or (frame.still and self.diagnose_stills)
                live = self.pipeline.live(frame.image, count=recount, diagnose=will_diagnose)
                last_count = now if recount else last_count
            except Exception:  # a failing stage must not stop the scanner
                log.exception("live path failed on frame %s; skipped", frame.seq)
                self.summary.failed_frames += 1
                continue
            for k, v in live.timings_ms.items():
                self.summary.live_ms.setdefault(k, []).append(v)
            if last_frame_t is not None:
                dt = max(now - last_frame_t, 1e-6)
                fps_ema = 1 / dt if fps_ema is None else 0.9 * fps_ema + 0.1 / dt
            last_frame_t = now
            self._note_rejection(live.problem, frame, now)
            key = self.preview.show(live_view(live, fps_ema, self.status)) if self.preview.enabled else -1
            if key in (ord("d"), ord(" ")):
                pending.append("key")
            elif key in (ord("q"), 27):
                self.stop("quit key")
            if frame.still and self.diagnose_stills:  # each still once; a trigger waiting names it
                self._diagnose(frame, pending.pop(0) if pending else "still", live)
                rejected_in_a_row = 0
            elif pending:
                if live.problem is None or rejected_in_a_row >= MAX_REJECTED_FOR_DIAGNOSIS:
                    self._diagnose(frame, pending.pop(0), live)
                    rejected_in_a_row = 0
                else:
                    rejected_in_a_row += 1
            if self.sync is not None and now - last_telemetry >= TELEMETRY_EVERY_S:
                self.sync.update_telemetry(fps=fps_ema, battery=self.battery)
                last_telemetry = now
        self._apply_swaps(stopped=True)
        self.summary.live_fps = round(fps_ema or 0.0, 2)
        self.summary.stop_reason = self._stop_reason
        return self.summary

    def _apply_swaps(self, stopped: bool = False) -> None:
        """Build and install the pipelines ``swap_pipeline`` asked for (on this thread)."""
        while True:
            try:
                make, future = self._swaps.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            if stopped:
                future.set_exception(RuntimeError("the frame loop has stopped"))
                continue
            try:
                pipeline = make()
            except Exception as exc:  # the current pipeline keeps running; the caller is told
                log.error("new pipeline not loaded, keeping the current one: %s", exc)
                future.set_exception(exc)
            else:
                self.pipeline = pipeline
                future.set_result(pipeline)

    def _scale_status(self) -> list[str]:
        return [] if self.calibrated else [UNCALIBRATED_STATUS]

    def _source_ended(self, pending: list[str]) -> None:
        if pending:
            log.warning("%d diagnosis request(s) dropped: the source has no more frames", len(pending))
            pending.clear()
        log.info("source ended after %d frame(s)", self.summary.frames)
        self.stop("source ended")

    def _note_rejection(self, problem: str | None, frame: CapturedFrame, now: float) -> None:
        """Count a rejected frame and say why at INFO: for a still that is not diagnosed (a
        diagnosis line gives the reason itself), and for camera frames when the reason changes or
        REJECTION_LOG_EVERY_S has passed (not on every frame of a run of rejections)."""
        if problem is None:
            return
        self.summary.rejected_frames += 1
        kind = problem.split(" (")[0]
        if frame.still:
            level = logging.DEBUG if self.diagnose_stills else logging.INFO
        elif kind != self._last_rejection[0] or now - self._last_rejection[1] >= REJECTION_LOG_EVERY_S:
            level, self._last_rejection = logging.INFO, (kind, now)
        else:
            level = logging.DEBUG
        log.log(level, "frame %s rejected: %s", frame.name or frame.seq, problem)

    def _diagnose(self, frame: CapturedFrame, trigger: str, live: LiveResult) -> None:
        """Diagnose the frame the live path has just segmented (``live``), store and acknowledge it."""
        captured = datetime.fromtimestamp(float(frame.t_capture), tz=timezone.utc)
        try:
            diagnosis = self.pipeline.diagnose(live)
        except Exception as exc:
            log.exception("diagnosis failed")
            failed = f"diagnosis failed: {exc}"
            self._finish(ResultRow(None, trigger, captured.isoformat(), False, {}, None, failed, frame.name))
            return
        for k, v in diagnosis.timings_ms.items():
            self.summary.diagnosis_ms.setdefault(k.removesuffix("_ms"), []).append(v)
        fields = diagnosis.record_fields(session=current_session_tags())  # the client session, if any
        h, w = frame.image.shape[:2]
        # a still records its file (itself a source URI), a camera frame its URI (synthetic:// marks demos)
        fields["frame"] = {"width": int(w), "height": int(h), "source": str(frame.name or frame.source)[:512]}
        seq: int | None = None
        error: str | None = None
        if self.sync is not None:
            try:
                # the thumbnail goes into the record only (not the summary's fields), and only when configured
                thumb = {"thumbnail": diagnosis.thumbnail()} if self.publish_thumbnails else {}
                seq = int(self.sync.submit(captured_at=captured, **fields, **thumb).seq)
            except Exception as exc:  # OutboxFull / RecordError: reported (the line below), nothing stored is touched
                error = f"not stored: {exc}"
        overlay = self._save_overlay(diagnosis, seq, captured) if self.save_overlays else None
        row = ResultRow(seq, trigger, captured.isoformat(), diagnosis.accepted, fields, overlay, error, frame.name)
        self._finish(row)

    def _finish(self, row: ResultRow) -> None:
        self.summary.results.append(row)
        line = diagnosis_line(row, publishing=self.publishing, calibrated=self.calibrated)
        log.log(logging.ERROR if row.error else logging.INFO, "%s", line)
        self.status = [status_line(row, publishing=self.publishing), *self._scale_status()]
        self._ack(ok=row.error is None and row.accepted)
        if self.on_result is not None:
            self.on_result(row)

    def _save_overlay(self, diagnosis: Diagnosis, seq: int | None, captured: datetime) -> str | None:
        name = f"{captured.strftime('%Y%m%dT%H%M%S_%f')}_seq{seq if seq is not None else 'x'}.png"
        path = self.out_dir / name
        try:
            if not cv2.imwrite(str(path), diagnosis_view(diagnosis)):
                raise OSError("cv2.imwrite returned False")
        except (OSError, cv2.error) as exc:
            log.error("could not save overlay %s: %s", path, exc)
            return None
        return name

    # -- the scanner ------------------------------------------------------------------------
    def _poll_bridge(self) -> None:
        if self.bridge is None:
            return
        from firmware_bridge.events import BatteryEvent, ButtonEvent, LinkDownEvent, LinkUpEvent, McuErrorEvent

        while (event := self.bridge.get_event(0)) is not None:
            if isinstance(event, ButtonEvent):
                self.request_diagnosis(f"button {event.kind.name.lower()}")
            elif isinstance(event, BatteryEvent):
                b = event.battery
                self.battery = {"millivolts": b.millivolts, "percent": b.percent, "charging": b.charging}
            elif isinstance(event, LinkUpEvent):
                log.info("scanner link up (firmware %s)", ".".join(map(str, event.hello.firmware_version)))
            elif isinstance(event, LinkDownEvent):
                log.warning("scanner link down: %s", event.reason)
            elif isinstance(event, McuErrorEvent):
                log.error("scanner MCU error: %s", event.error)

    def _ack(self, ok: bool) -> None:
        """Flash the LED ring: green on a stored diagnosis, red otherwise (not waited for)."""
        if self.bridge is None or not self.led_ack:
            return
        from firmware_bridge.messages import LedPattern, LedSet

        colour = (0, 255, 0) if ok else (255, 0, 0)
        try:
            self.bridge.send_led(LedSet(200, *colour, pattern=LedPattern.BLINK, period_ms=250))
        except Exception as exc:  # the link may be down: the diagnosis itself is already stored
            log.warning("LED acknowledgement not sent: %s", exc)


def stdin_trigger(runtime: ScannerRuntime) -> threading.Thread:
    """A daemon thread turning stdin lines into requests: empty line or 'd' diagnoses, 'q' stops."""

    def loop() -> None:
        try:
            for line in sys.stdin:
                cmd = line.strip().lower()
                if cmd in ("", "d"):
                    runtime.request_diagnosis("key")
                elif cmd == "q":
                    runtime.stop("quit key")
                    return
        except (OSError, ValueError) as exc:  # no usable stdin (daemon, test runner): keys are off
            log.info("stdin trigger off: %s", exc)

    thread = threading.Thread(target=loop, name="stdin-trigger", daemon=True)
    thread.start()
    return thread
