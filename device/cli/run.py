"""``scalpedge device run``: the scanner runtime, from a TOML config or embedded defaults.

``--demo`` runs it on embedded defaults: the synthetic clip as the camera, the shipped bundle
on ONNX Runtime, the MCU simulator on a pty as the scanner (its button is pressed every
``--press-every`` seconds), a local outbox, and a results table at the end.

Exit codes: 0 done; 2 bad configuration or input; 3 a missing extra; 4 the bundle was refused;
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
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from device.app.runtime_config import RuntimeConfig, load_runtime_config

if TYPE_CHECKING:
    from device.app.runtime import RunSummary, ScannerRuntime
    from device.app.seams import TriggerQueue
    from firmware_bridge.simulator import McuSimulator

__all__ = ["register", "run_device"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("device", help="the scanner runtime: camera -> diagnosis -> outbox -> MQTT")
    dsub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    r = dsub.add_parser("run", help="run the frame loop (see docs for the TOML config)")
    r.add_argument("--config", help="TOML file ([camera] [models] [scanner] [run] [mqtt] [outbox])")
    r.add_argument("--demo", action="store_true", help="embedded defaults: synthetic camera, simulated scanner")
    r.add_argument("--source", help="camera URI, overrides [camera] source")
    r.add_argument("--out", help="folder for overlays (and the demo's outbox), overrides [run] out")
    r.add_argument("--scanner", help="serial port of the scanner MCU, or 'sim' for the simulator")
    r.add_argument("--backend", choices=["onnxruntime", "tensorrt"], help="overrides [models] backend")
    r.add_argument("--precision", choices=["auto", "fp32", "int8"], help="overrides [models] precision")
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
        camera={"source": args.source},
        models={"backend": args.backend, "precision": args.precision, "allow_downgrade": args.allow_downgrade},
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
    config = _config(args)
    summary = run_device(config, press_every_s=args.press_every if config.scanner.port == "sim" else 0.0)
    from device.app.run_report import print_summary

    print_summary(summary)
    return 1 if any(r.error for r in summary.results) else 0


def run_device(config: RuntimeConfig, press_every_s: float = 0.0) -> RunSummary:
    """Build everything from ``config``, run the loop, shut down cleanly; returns the summary."""
    from device.app.pipeline import ScanPipeline
    from device.app.preview import Preview
    from device.app.runtime import ScannerRuntime, stdin_trigger
    from device.assets import default_bundle_path
    from device.capture.sources import open_source
    from device.measure.optics import load_profile
    from device.models.bundle import Bundle, RollbackGuard
    from device.sync.device_sync import DeviceSync

    m, run = config.models, config.run
    state = Path(m.bundle_state) if m.bundle_state else Path(config.sync.outbox.path).parent / "bundle-state.json"
    bundle = Bundle.open(
        m.bundle or default_bundle_path(),
        trusted_keys=[m.trusted_keys] if m.trusted_keys else [],
        guard=RollbackGuard(state, m.allow_downgrade),
    )
    pipeline = ScanPipeline(
        bundle, m.backend, m.precision, m.threads, load_profile(m.calibration or None), m.engine_cache or None
    )
    log.info("bundle %s: %s", bundle.version, pipeline.variants)
    sync_cfg = config.sync
    Path(sync_cfg.outbox.path).parent.mkdir(parents=True, exist_ok=True)
    sim, bridge, source, sync = None, None, None, None
    triggers: TriggerQueue = queue.SimpleQueue()  # first: the MQTT link and the runtime both get it
    try:
        sync = DeviceSync.from_config(sync_cfg, bundle_version=bundle.version, triggers=triggers)
        port = config.scanner.port
        if port == "sim":
            from firmware_bridge.simulator import McuSimulator

            port = str(Path(tempfile.mkdtemp(prefix="scalpedge-sim-")) / "scanner")
            sim = McuSimulator(port).start()
        if port:
            from firmware_bridge.link import SerialLink

            bridge = SerialLink(port).start()
        source = open_source(config.camera.source, config.camera.width, config.camera.height, config.camera.fps)
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
        )
        if run.publish:
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
        return summary
    finally:
        for closer in (source, bridge, sim):
            if closer is not None:
                _quietly(closer.close if hasattr(closer, "close") else closer.stop)
        if sync is not None:
            sync.close()


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
