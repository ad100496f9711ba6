"""``scalpedge device run``: the scanner runtime, from a TOML config or embedded defaults.

``--demo`` runs it on embedded defaults: the synthetic clip as the camera, the shipped bundle
on ONNX Runtime, the MCU simulator on a pty as the scanner (its button is pressed every
``--press-every`` seconds), a local outbox, and a results table at the end. Without ``--demo``
a camera must be named (``--source`` or ``[camera] source``): synthetic frames are used only when
asked for (``synthetic://``), never in place of a missing camera. A video file or a folder ends
the run after its last frame (``--loop`` plays it again); each still of a folder is diagnosed.

Exit codes: 0 done; 2 bad configuration or input (no camera source, a missing file or folder, a
scanner port that is missing or cannot be opened); 3 a missing extra; 4 the bundle was refused;
1 when any diagnosis could not be stored; 5 the outbox cannot be opened (unwritable, another
device's file, no WAL; a damaged file is quarantined and replaced instead, see docs/runtime.md).
Log lines go to stderr as ``LEVEL logger: message``; SIGTERM and SIGINT stop the loop after the current frame, then the
outbox is closed cleanly (records are durable on submit, so nothing is lost either way).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import queue
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from device.app.runtime_config import PRECISIONS, RuntimeConfig, load_runtime_config
from device.contracts.constants import MASK_STAGES
from device.contracts.errors import ExitCode

if TYPE_CHECKING:
    from collections.abc import Callable

    from device.app.pipeline import ScanPipeline
    from device.app.runtime import RunSummary, ScannerRuntime
    from device.app.seams import TriggerQueue
    from device.measure.optics import OpticsProfile
    from firmware_bridge.simulator import McuSimulator

__all__ = ["register", "run_device", "NO_SOURCE"]

log = logging.getLogger(__name__)

NO_SOURCE = (
    "no camera source: name one with --source URI (v4l2:///dev/video0, a video file, a folder of "
    "images) or [camera] source in a --config file; --demo runs on the synthetic camera, and "
    "--source synthetic:// asks for synthetic frames explicitly"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("device", help="the scanner runtime: camera -> diagnosis -> outbox -> MQTT")
    dsub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    r = dsub.add_parser("run", help="run the frame loop (see docs for the TOML config)")
    r.add_argument("--config", help="TOML file ([camera] [models] [scanner] [run] [mqtt] [outbox])")
    r.add_argument("--demo", action="store_true", help="embedded defaults: synthetic camera, simulated scanner")
    r.add_argument("--source", help="camera URI, overrides [camera] source (required without --config or --demo)")
    r.add_argument(
        "--loop",
        action="store_true",
        default=None,
        help="play a video file or folder again after its end ([camera] loop); otherwise the run ends with it",
    )
    r.add_argument("--out", help="folder for overlays (and the demo's outbox), overrides [run] out")
    r.add_argument("--scanner", help="serial port of the scanner MCU, or 'sim' for the simulator")
    r.add_argument("--backend", choices=["onnxruntime", "tensorrt"], help="overrides [models] backend")
    r.add_argument("--precision", choices=list(PRECISIONS), help="overrides [models] precision")
    r.add_argument(
        "--mask-stage",
        choices=["auto", *MASK_STAGES],
        help="overrides [models] mask_stage (auto: fused with the refiner)",
    )
    r.add_argument(
        "--allow-downgrade",
        action="store_true",
        default=None,
        help="accept a signed bundle older than the newest one this scanner accepted ([models] allow_downgrade)",
    )
    r.add_argument("--preview", choices=["auto", "window", "headless"], help="overrides [run] preview")
    r.add_argument("--diagnose-every", type=float, help="also diagnose every S seconds")
    r.add_argument("--max-diagnoses", type=int, help="stop after N diagnoses")
    r.add_argument("--max-seconds", type=float, help="stop after S seconds")
    r.add_argument("--publish", action="store_true", default=None, help="start the MQTT link ([mqtt] section)")
    r.add_argument("--press-every", type=float, default=2.0, help="demo: simulator button period, seconds")
    r.set_defaults(func=_run)


def _config(args: argparse.Namespace) -> RuntimeConfig:
    config = load_runtime_config(args.config)
    if args.demo:
        out = Path(args.out or "out/demo")
        config = config.with_overrides(
            camera={"source": "synthetic://"},
            scanner={"port": "sim"},
            run={"out": str(out), "preview": "headless", "max_diagnoses": 3, "stdin_trigger": False},
        )
    config = config.with_overrides(
        camera={"source": args.source, "loop": args.loop},
        models={
            "backend": args.backend,
            "precision": args.precision,
            "mask_stage": args.mask_stage,
            "allow_downgrade": args.allow_downgrade,
        },
        scanner={"port": args.scanner},
        run={
            "out": args.out,
            "preview": args.preview,
            "diagnose_every_s": args.diagnose_every,
            "max_diagnoses": args.max_diagnoses,
            "max_seconds": args.max_seconds,
            "publish": args.publish,
        },
    )
    if args.demo or not args.config:  # no config file: keep the outbox with the run's output
        outbox = dataclasses.replace(config.sync.outbox, path=str(Path(config.run.out) / "outbox.sqlite"))
        config = dataclasses.replace(config, sync=dataclasses.replace(config.sync, outbox=outbox))
    return config


def _run(args: argparse.Namespace) -> int:
    from firmware_bridge.link import PortUnavailable

    config = _config(args)
    try:
        summary = run_device(config, press_every_s=args.press_every if config.scanner.port == "sim" else 0.0)
    except PortUnavailable as exc:  # a wrong --scanner port is bad input, said once, not retried forever
        print(f"scalpedge device run: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    from device.app.run_report import print_summary

    print_summary(summary)
    return ExitCode.FAILED if any(r.error for r in summary.results) else ExitCode.OK


def run_device(config: RuntimeConfig, press_every_s: float = 0.0) -> RunSummary:
    """Build everything from ``config``, run the loop, shut down cleanly; returns the summary.
    Raises ValueError for a missing camera source or optics profile, ``PortUnavailable`` for a
    scanner port that cannot be opened (both before any model is loaded), BundleError for a
    refused bundle."""
    from device.app.pipeline import ScanPipeline
    from device.app.preview import Preview
    from device.app.runtime import ScannerRuntime, stdin_trigger
    from device.assets import default_bundle_path
    from device.capture.sources import open_source
    from device.models.bundle import Bundle
    from device.sync.bundle_pointer import open_active_bundle
    from device.sync.bundle_update import BundleUpdater
    from device.sync.device_sync import DeviceSync

    if not config.camera.source:
        raise ValueError(NO_SOURCE)
    m, run, cam = config.models, config.run, config.camera
    sim, bridge, source, sync = None, None, None, None
    triggers: TriggerQueue = queue.SimpleQueue()  # first: the MQTT link and the runtime both get it
    try:
        # the operator's inputs first (camera, scanner port): a wrong one fails before models load
        source = open_source(cam.source, cam.width, cam.height, cam.fps, loop=True if cam.loop else None)
        log.info("source: %s", source.describe())
        port = config.scanner.port
        if port == "sim":
            from firmware_bridge.simulator import McuSimulator

            port = str(Path(tempfile.mkdtemp(prefix="scalpedge-sim-")) / "scanner")
            sim = McuSimulator(port).start()
        if port:
            from firmware_bridge.link import SerialLink

            bridge = SerialLink(port).start(require_port=True)
            log.info("scanner: %s", "MCU simulator on a pty" if sim else port)
        optics = _optics(m.calibration)
        state = Path(m.bundle_state) if m.bundle_state else Path(config.sync.outbox.path).parent / "bundle-state.json"
        trusted = [m.trusted_keys] if m.trusted_keys else []
        # the bundle a fleet rollout switched to (its pointer) wins over the configured one
        bundle = open_active_bundle(m.bundle or default_bundle_path(), trusted, state, m.allow_downgrade)
        pipeline = ScanPipeline(
            bundle, m.backend, m.precision, m.threads, optics, m.engine_cache or None, mask_stage=m.mask_stage
        )
        models = ", ".join(f"{k} {v}" for k, v in pipeline.variants.items())
        log.info("bundle %s (%s) on %s: %s", bundle.version, bundle.root, m.backend, models)
        Path(config.sync.outbox.path).parent.mkdir(parents=True, exist_ok=True)
        sync = DeviceSync.from_config(config.sync, bundle_version=bundle.version, triggers=triggers)
        runtime = ScannerRuntime(
            pipeline,
            source,
            run.out,
            sync=sync,
            bridge=bridge,
            preview=Preview(run.preview),
            save_overlays=run.save_overlays,
            diagnose_every_s=run.diagnose_every_s,
            led_ack=config.scanner.led_ack,
            triggers=triggers,
            diagnose_stills=run.diagnose_stills,
            publishing=run.publish,
            publish_thumbnails=run.publish_thumbnails,
        )
        if run.publish:

            def make_pipeline(new: Bundle) -> ScanPipeline:
                made = ScanPipeline(
                    new, m.backend, m.precision, m.threads, optics, m.engine_cache or None, mask_stage=m.mask_stage
                )
                sync.set_bundle_version(new.version)  # records say which bundle measured them
                return made

            sync.attach_bundles(
                BundleUpdater(
                    config.sync.mqtt.device_id,
                    bundle,
                    trusted_keys=trusted,
                    guard_path=state,
                    activate=lambda new: _swap(runtime, lambda: make_pipeline(new)),
                )
            )
            sync.start()
        if run.stdin_trigger and not (sim and press_every_s):
            stdin_trigger(runtime)
        presser = _press_periodically(sim, press_every_s) if sim and press_every_s else None
        previous = _install_signal_handlers(runtime)
        try:
            summary = runtime.run(run.max_frames, run.max_diagnoses, run.max_seconds)
        finally:
            _restore_signal_handlers(previous)
            if presser is not None:
                presser.set()
        summary.config = {**dataclasses.asdict(config), "sync": config.sync.to_dict()}
        summary.source, summary.source_stats = source.describe(), source.stats.to_dict()
        return summary
    finally:
        for closer in (source, bridge, sim):
            if closer is not None:
                _quietly(closer.close if hasattr(closer, "close") else closer.stop)
        if sync is not None:
            sync.close()


def _swap(runtime: ScannerRuntime, make: Callable[[], ScanPipeline]) -> None:
    """Install the pipeline ``make`` builds, between two frames of the running loop; wait for it
    (up to 5 minutes: TensorRT engines may be built). Raises what building it raised."""
    runtime.swap_pipeline(make).result(timeout=300)


def _optics(path: str) -> OpticsProfile | None:
    """The optics profile (``path``, or the default location when ""), logged; None, with a
    warning that thickness uses an uncalibrated scale, when there is none. A profile named in the
    config that does not exist is an error (ValueError)."""
    from device.contracts.constants import DEFAULT_UM_PER_PX, FRAME_WIDTH
    from device.measure.optics import default_profile_path, load_profile

    where = Path(path) if path else default_profile_path()
    if path and not where.is_file():
        raise ValueError(f"[models] calibration: optics profile {where} not found (scalpedge calibrate optics)")
    optics = load_profile(where)
    if optics is None:
        log.warning(
            "UNCALIBRATED scale: no optics profile at %s; thickness (um) uses the default %.1f um per pixel at "
            "%d px wide, not this scanner's optics; measure it with `scalpedge calibrate optics`",
            where,
            DEFAULT_UM_PER_PX,
            FRAME_WIDTH,
        )
    else:
        log.info(
            "calibration: %s (%.3f um per pixel at %d px wide, measured %s)",
            where,
            optics.um_per_px,
            optics.frame_width,
            optics.created_utc,
        )
    return optics


def _press_periodically(sim: McuSimulator, period_s: float) -> threading.Event:
    """Press the simulator's button every ``period_s`` seconds until the returned event is set."""
    done = threading.Event()

    def loop() -> None:
        while not done.wait(period_s):
            sim.press()

    threading.Thread(target=loop, name="demo-button", daemon=True).start()
    return done


def _install_signal_handlers(runtime: ScannerRuntime) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, _frame: FrameType | None) -> None:
        runtime.stop(signal.Signals(signum).name)

    return {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for s, h in previous.items():
        signal.signal(s, h)


def _quietly(fn: Any) -> None:
    try:
        fn()
    except Exception as exc:  # shutdown must go on
        log.warning("shutdown: %s", exc)
