"""Fault soak for the result sync: nothing lost while the broker and the device keep dying.

A device process (``tests/sync_device.py``) produces ``count`` results at ``rate`` per second
through its outbox and MQTT link to a real Mosquitto; the reference consumer
(``fleet.consumer.FleetConsumer``) stores them. Meanwhile the broker is SIGKILLed and restarted
at random times (>= ``broker_kills``) and the device process is SIGKILLed and restarted
(>= ``device_kills``). At the end we count, at the consumer: records lost, duplicate
deliveries, seq conflicts (one seq under two msg_ids; duplicates must all carry the same
msg_id, so this must be 0), seq gaps left, and restarts.

    .venv/bin/python benchmarks/soak_sync.py            # 2,000 results, 10 broker kills, 3 device kills
    .venv/bin/python benchmarks/soak_sync.py --count 300 --broker-kills 3 --device-kills 1 --out -

Writes ``benchmarks/reports/soak_sync.json`` by default.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from mosquitto import Mosquitto, terminate  # noqa: E402
from sync_device import fleet_config, sync_config, write_toml  # noqa: E402

from fleet.consumer import FleetConsumer  # noqa: E402

__all__ = ["run_soak"]

log = logging.getLogger("soak_sync")
DEVICE = "soak-device"
DEVICE_SCRIPT = REPO / "tests" / "sync_device.py"


class _DeviceProcess:
    """The device script as a child process; a reader thread tracks the last seq it committed."""

    def __init__(self, config: Path, count: int, rate: float, log_path: Path) -> None:
        self.args = [sys.executable, str(DEVICE_SCRIPT), str(config), "--count", str(count), "--rate", str(rate)]
        self.log_path = log_path
        self.last_seq = 0
        self.starts = 0
        self.kills = 0
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        with open(self.log_path, "a") as err:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=err, text=True)
        self.starts += 1
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("seq "):
                self.last_seq = max(self.last_seq, int(line.split()[1]))
        proc.stdout.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.kills += 1
        self._reap()

    def terminate(self) -> int | None:
        rc = None if self.proc is None else terminate(self.proc, 10.0)
        self._reap()
        return rc

    def _reap(self) -> None:
        if self.proc is not None:
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None


def run_soak(
    count: int = 2000,
    broker_kills: int = 10,
    device_kills: int = 3,
    rate: float = 60.0,
    seed: int = 0,
    workdir: Path | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Run the soak and return the report (see the module docstring)."""
    rng = random.Random(seed)
    tmp_holder = None
    if workdir is None:
        tmp_holder = tempfile.TemporaryDirectory(prefix="soak_sync_")
        workdir = Path(tmp_holder.name)
    try:
        return _soak(workdir, count, broker_kills, device_kills, rate, rng, timeout_s)
    finally:
        if tmp_holder is not None:
            tmp_holder.cleanup()


def _soak(
    work: Path, count: int, broker_kills: int, device_kills: int, rate: float, rng: random.Random, timeout_s: float
) -> dict[str, Any]:
    broker = Mosquitto(work / "broker", persistence=True)
    cfg = sync_config(work, broker.port, device_id=DEVICE, fleet="soak")
    config_path = write_toml(cfg, work / "sync.toml", fleet_config(work))
    device = _DeviceProcess(config_path, count, rate, work / "device.log")
    produce_s = count / rate
    # Fault schedule (seconds from the start): broker kills over the whole production, each down
    # 0.1-1.5 s; device kills while it still has records to produce, each down 0.2-1.0 s.
    plan = [(t, "broker", rng.uniform(0.1, 1.5)) for t in _spread(rng, broker_kills, 0.03, 0.97, produce_s)]
    plan += [(t, "device", rng.uniform(0.2, 1.0)) for t in _spread(rng, device_kills, 0.1, 0.8, produce_s)]
    plan.sort()
    broker.start()
    consumer = FleetConsumer(cfg.mqtt, fleet_config(work))
    consumer.start()
    if not _wait(lambda: consumer.connected, 10):
        raise RuntimeError("consumer did not connect")
    t0 = time.monotonic()
    device.start()
    restarts: list[tuple[float, str]] = []
    try:
        for at, what, down_s in plan:
            _sleep_until(t0 + at)
            if what == "broker":
                broker.kill()
                time.sleep(down_s)
                broker.start()
            else:
                device.kill()
                time.sleep(down_s)
                device.start()
            restarts.append((round(time.monotonic() - t0, 2), what))
        if not _wait(lambda: device.last_seq >= count, timeout_s):
            raise RuntimeError(f"device produced only {device.last_seq} of {count} results")
        produced_s = time.monotonic() - t0

        def done() -> bool:
            dev = consumer.report()["devices"].get(DEVICE, {})
            return dev.get("received", 0) >= count and not dev.get("missing")

        converged = _wait(done, timeout_s)
        converge_s = time.monotonic() - t0 - produced_s
        rc = device.terminate()
    finally:
        device.kill()
        consumer.stop()
        broker.stop()
    elapsed = time.monotonic() - t0
    final = FleetConsumer(cfg.mqtt, fleet_config(work))  # reopen the consumer database for the final count
    report_dev = final.report()["devices"].get(DEVICE, {})
    final.stop()
    received = report_dev.get("received", 0)
    return {
        "benchmark": "soak_sync",
        "results": count,
        "rate_per_s": rate,
        "received": received,
        "lost": count - received,
        "duplicate_deliveries": report_dev.get("duplicates", 0),
        "seq_conflicts": report_dev.get("conflicts", 0),
        "seq_gaps_at_end": len(report_dev.get("missing", [])),
        "resend_requests": report_dev.get("resend_requests", 0),
        "converged": converged,
        "broker_kills": broker.kills,
        "device_kills": device.kills,
        "device_boots": len(report_dev.get("boots", {})),
        "device_exit_code_on_sigterm": rc,
        "restarts_at_s": restarts,
        "production_s": round(produced_s, 2),
        "convergence_after_production_s": round(converge_s, 2),
        "seconds": round(elapsed, 2),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "config": {
            "max_inflight": cfg.mqtt.max_inflight,
            "gap_grace_s": fleet_config(work).gap_grace_s,
            "resend_interval_s": fleet_config(work).resend_interval_s,
            "broker_persistence": True,
        },
    }


def _spread(rng: random.Random, n: int, lo: float, hi: float, span_s: float) -> list[float]:
    """``n`` random times in ``[lo, hi] * span_s``, one per equal slice so they do not bunch up."""
    width = (hi - lo) / max(n, 1)
    return [span_s * (lo + width * (i + rng.uniform(0.1, 0.9))) for i in range(n)]


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


def _wait(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--broker-kills", type=int, default=10)
    p.add_argument("--device-kills", type=int, default=3)
    p.add_argument("--rate", type=float, default=60.0, help="results per second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "reports" / "soak_sync.json"), help="'-' for stdout")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = run_soak(args.count, args.broker_kills, args.device_kills, args.rate, args.seed)
    text = json.dumps(report, indent=2)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text + "\n")
        print(text)
    ok = report["lost"] == 0 and report["seq_conflicts"] == 0 and report["seq_gaps_at_end"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
