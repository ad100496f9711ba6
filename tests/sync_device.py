"""Sync test helpers, and a stand-in device process for kill tests and the soak.

As a script: ``python tests/sync_device.py CONFIG --count N --rate R`` produces results until
the outbox has allocated seq N (so a restarted process carries on where the killed one
stopped), printing ``seq <n>`` once each record is committed, and keeps the link running (to
answer resend requests) until SIGTERM, which closes it cleanly.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device.contracts.config import MqttConfig
from device.contracts.records import condition, metric
from device.sync.config import OutboxConfig, SyncConfig
from fleet.config import FleetConfig

__all__ = ["fleet_config", "sample_fields", "sync_config", "write_toml", "wait_for"]


def sample_fields(i: int = 0) -> dict[str, Any]:
    """Measurement fields of a plausible result (the pipeline's part of a record)."""
    return {
        "metrics": {
            "hair_count": metric(40 + i % 17, "count"),
            "thickness_median": metric(62.5 + (i % 7), "um"),
            "thin_ratio": metric(0.12, "ratio"),
            "density": metric(180.0, "per_cm2"),
        },
        "conditions": {
            "dandruff": condition([0.7, 0.2, 0.07, 0.03]),
            "sebum": condition([0.1, 0.6, 0.2, 0.1]),
            "erythema": condition([0.25, 0.25, 0.25, 0.25], level="good"),
        },
        "quality": {"accepted": True, "reason": None, "focus": 210.0, "exposure": 0.46, "motion": 1.2},
        "timings_ms": {
            "capture": 3.1,
            "quality": 1.2,
            "segment": 41.0,
            "metrics": 6.5,
            "classify": 12.0,
            "total": 64.0,
        },
        "frame": {"width": 640, "height": 480, "source": "synthetic://"},
    }


def sync_config(tmp: Path, port: int, device_id: str = "scanner-a", fleet: str = "test", **mqtt: Any) -> SyncConfig:
    """A config for tests: fast reconnects and gap checks, everything under ``tmp``."""
    outbox_over = mqtt.pop("outbox", {})
    base = {
        "host": "127.0.0.1",
        "port": port,
        "fleet": fleet,
        "device_id": device_id,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "telemetry_interval_s": 0.5,
        "max_inflight": 10,
    }
    base.update(mqtt)
    return SyncConfig(
        mqtt=MqttConfig(**base),
        outbox=OutboxConfig(path=str(tmp / f"outbox-{device_id}.sqlite"), **outbox_over),
    )


def fleet_config(tmp: Path) -> FleetConfig:
    """The consumer's settings for tests: its database under ``tmp``, fast gap checks and resends."""
    return FleetConfig(db=str(tmp / "fleet.sqlite"), gap_grace_s=0.4, resend_interval_s=1.0)


def write_toml(cfg: SyncConfig, path: Path, fleet: FleetConfig | None = None) -> Path:
    """Write ``cfg`` (and ``fleet`` as ``[fleet]``) as the TOML file the CLI and the device script read."""
    lines: list[str] = []
    sections = cfg.to_dict()
    if fleet is not None:
        sections["fleet"] = dataclasses.asdict(fleet)
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, (int, float)):
                lines.append(f"{key} = {value}")
            else:
                lines.append(f'{key} = "{value}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for(predicate: Callable[[], bool], timeout_s: float, step: Callable[[], None] | None = None) -> bool:
    """Poll ``predicate`` (calling ``step`` between polls, else sleeping 20 ms) until true or timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if step is not None:
            step()
        else:
            time.sleep(0.02)
    return predicate()


def main(argv: list[str] | None = None) -> int:
    from device.sync.config import load_sync_config
    from device.sync.device_sync import DeviceSync

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("config")
    p.add_argument("--count", type=int, required=True, help="produce until this seq is allocated")
    p.add_argument("--rate", type=float, default=50.0, help="results per second")
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda s, f: stop.set())
    sync = DeviceSync.from_config(load_sync_config(args.config), bundle_version="test-bundle")
    period = 1.0 / args.rate
    next_at = time.monotonic()
    done = False
    try:
        while not stop.is_set():
            if not done and time.monotonic() >= next_at:
                if sync.outbox.stats().last_seq >= args.count:
                    done = True
                else:
                    row = sync.submit(**sample_fields())
                    print(f"seq {row.seq} {row.msg_id}", flush=True)
                    next_at += period
            sync.link.step(0.01)
    finally:
        sync.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
