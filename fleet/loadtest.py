"""``scalpedge fleet loadtest``: N simulated scanners, a real Mosquitto, R consumer replicas
sharing the load (MQTT 5 shared subscription) and one store; one replica SIGKILLed and the
broker SIGKILLed and restarted mid-run; then what arrived, counted from the store.

The run (all on 127.0.0.1, in a work folder of its own):

1. start Mosquitto (no persistence: its restart loses whatever it held) and R replicas, each a
   ``python -m fleet listen`` process with ``share_group`` set, writing to the store given
   (default: a SQLite file in the work folder);
2. start N ``fleet.simdevice.SimDevice`` (own MQTT connection each); each produces M results,
   one every ``interval_s`` (staggered across devices; 0: as fast as the in-flight window allows);
3. when a third of the results is stored, SIGKILL replica 0 (with one replica: restart it 2 s
   later, else the survivors carry on); at two thirds, SIGKILL the broker and start it again;
4. wait until every result is stored (or ``drain_timeout_s``), stop everything, and read the
   store: ``lost`` (produced msg_ids not stored), ``duplicates_stored`` (rows beyond one per
   msg_id or per (device, seq)), throughput and latency (produced -> stored, same clock).

The devices and fleet name carry a run id, so runs can share a database; only this run's
devices are counted. Use a scratch database all the same: the run writes into it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet.config import FleetConfig
from fleet.store import Store, describe_url, open_store

if TYPE_CHECKING:  # paho (the device extra) is imported when a run starts, not with the CLI
    from fleet.simdevice import SimDevice

__all__ = ["LoadTest", "LoadTestConfig", "run_loadtest"]

log = logging.getLogger(__name__)

KILL_REPLICA_AT = 1 / 3  # of the results stored
RESTART_BROKER_AT = 2 / 3
SHARE_GROUP = "loadtest"
POLL_S = 0.1


@dataclass(frozen=True)
class LoadTestConfig:
    """One run. Times in seconds."""

    devices: int = 200
    results: int = 20  # per device
    replicas: int = 2
    store: str = ""  # a postgresql:// URL or a SQLite path; "": fleet.sqlite in the work folder
    interval_s: float = 1.0  # between two results of one device (0: as fast as the window allows)
    max_inflight: int = 20  # per device, as MqttConfig's default
    kill_replica: bool = True
    restart_broker: bool = True
    gap_grace_s: float = FleetConfig.gap_grace_s
    resend_interval_s: float = FleetConfig.resend_interval_s
    drain_timeout_s: float = 180.0
    workdir: str = ""  # "": a temp folder, removed afterwards

    def __post_init__(self) -> None:
        for name in ("devices", "results", "replicas", "max_inflight"):
            if getattr(self, name) < 1:
                raise ValueError(f"loadtest: --{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if self.interval_s < 0 or self.drain_timeout_s <= 0:
            raise ValueError("loadtest: --interval-s must be >= 0 and --drain-timeout-s > 0")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Broker:
    """A Mosquitto process on 127.0.0.1:``port`` (no persistence), SIGKILLed and restarted on demand."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
        if binary is None:
            raise FileNotFoundError("the load test needs Mosquitto: apt-get install mosquitto")
        self.binary, self.port = binary, _free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        run_as = "user root\n" if os.geteuid() == 0 else ""  # as root it would drop to a user that cannot read here
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"max_queued_messages 100000\nlog_dest stderr\n{run_as}"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}; see {self.log_path}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def version(self) -> str:
        out = subprocess.run([self.binary, "-h"], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].strip() if out else "unknown"


@dataclass
class _Replica:
    index: int
    config: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    killed_at: float | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fleet", "listen", "--config", str(self.config), "--report", os.devnull],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.killed_at = time.time()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class LoadTest:
    """One run of ``cfg``; ``run()`` returns the report (a JSON-ready dict)."""

    cfg: LoadTestConfig
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    events: list[dict[str, Any]] = field(default_factory=list)

    def run(self) -> dict[str, Any]:
        from fleet.simdevice import SimDevice

        cfg = self.cfg
        tmp = None if cfg.workdir else tempfile.mkdtemp(prefix="scalpedge-loadtest-")
        work = Path(cfg.workdir or tmp or ".")
        work.mkdir(parents=True, exist_ok=True)
        store_url = cfg.store or str(work / "fleet.sqlite")
        if "://" not in store_url or store_url.startswith("sqlite://"):  # one absolute path for every process
            store_url = str(Path(store_url.removeprefix("sqlite://")).resolve())
        broker = _Broker(work)
        replicas: list[_Replica] = []
        devices: list[SimDevice] = []
        store: Store | None = None
        try:
            store = open_store(store_url)  # migrates once, before the replicas race to
            broker.start()
            fleet = f"loadtest-{self.run_id}"
            replicas = [self._replica(i, work, broker.port, fleet, store_url) for i in range(cfg.replicas)]
            for r in replicas:
                r.start()
            time.sleep(1.0)  # replicas connect and subscribe before the first result
            devices = [
                SimDevice(f"lt-{self.run_id}-{i:05d}", fleet, broker.port, cfg.results, max_inflight=cfg.max_inflight)
                for i in range(cfg.devices)
            ]
            for d in devices:
                d.start()
            started, produced_until = self._drive(devices, replicas, broker, store)
            rows = self._collect(store, devices)
            return self._report(rows, devices, store, store_url, broker, started, produced_until, replicas)
        finally:
            for d in devices:
                d.stop()
            for r in replicas:
                r.stop()
            broker.stop()
            if store is not None:
                store.close()
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def _replica(self, i: int, work: Path, port: int, fleet: str, store_url: str) -> _Replica:
        cfg = self.cfg
        where = f"store = {json.dumps(store_url)}" if "://" in store_url else f"db = {json.dumps(store_url)}"
        path = work / f"replica-{i}.toml"
        path.write_text(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nfleet = "{fleet}"\n'
            "reconnect_min_s = 0.1\nreconnect_max_s = 1.0\n"
            f'[fleet]\n{where}\nclient_id = "{fleet}-replica-{i}"\nshare_group = "{SHARE_GROUP}"\n'
            f"gap_grace_s = {cfg.gap_grace_s}\nresend_interval_s = {cfg.resend_interval_s}\n"
        )
        return _Replica(i, path, work / f"replica-{i}.log")

    def _drive(
        self, devices: list[SimDevice], replicas: list[_Replica], broker: _Broker, store: Store
    ) -> tuple[float, float]:
        """Produce on schedule, fire the faults, wait for the store to hold everything.
        Returns (first produce, last produce) epoch times."""
        cfg = self.cfg
        total = cfg.devices * cfg.results
        t0 = time.time()
        # Device i produces its k-th result at t0 + (k + i / N) * interval: an even stream.
        due = [t0 + cfg.interval_s * i / cfg.devices for i in range(cfg.devices)]
        produced_until = t0
        next_poll, stored = 0.0, 0
        kill_done, restart_done, replica_back_at = not cfg.kill_replica, not cfg.restart_broker, None
        deadline = None
        while True:
            now = time.time()
            for i, d in enumerate(devices):
                while d.produced < cfg.results and now >= due[i]:
                    d.produce()
                    produced_until = time.time()
                    due[i] += cfg.interval_s
                d.step(now)
            if now >= next_poll:
                next_poll = now + POLL_S
                stored = self._stored(store, devices)
                if not kill_done and stored >= total * KILL_REPLICA_AT:
                    kill_done = True
                    replicas[0].kill()
                    self._note("replica_sigkill", t0, replica=0, stored=stored)
                    if len(replicas) == 1:
                        replica_back_at = now + 2.0
                if replica_back_at is not None and now >= replica_back_at:
                    replica_back_at = None
                    replicas[0].start()
                    self._note("replica_restart", t0, replica=0)
                if kill_done and not restart_done and stored >= total * RESTART_BROKER_AT:
                    restart_done = True
                    broker.kill()
                    broker.start()
                    self._note("broker_sigkill_restart", t0, stored=stored)
                if stored >= total:
                    return t0, produced_until
                if deadline is None and all(d.produced == cfg.results for d in devices):
                    deadline = now + cfg.drain_timeout_s
                if deadline is not None and now >= deadline:
                    log.warning("loadtest: drain timeout: %d of %d stored", stored, total)
                    return t0, produced_until
            time.sleep(0.005)

    def _note(self, event: str, t0: float, **fields: Any) -> None:
        """Record a fault: its name, seconds since the run started, and ``fields``."""
        self.events.append({"event": event, "t_s": round(time.time() - t0, 2), **fields})

    @staticmethod
    def _stored(store: Store, devices: list[SimDevice]) -> int:
        prefix = devices[0].device_id.rsplit("-", 1)[0] + "-"
        return sum(d.results for d in store.devices() if d.device_id.startswith(prefix))

    @staticmethod
    def _collect(store: Store, devices: list[SimDevice]) -> list[tuple[str, str, int, float]]:
        """(device_id, msg_id, seq, received_at) of every stored row of this run's devices."""
        return [
            (r.device_id, r.msg_id, r.seq, r.received_at)
            for d in devices
            for r in store.device_results(d.device_id, limit=None)
        ]

    def _report(
        self,
        rows: list[tuple[str, str, int, float]],
        devices: list[SimDevice],
        store: Store,
        store_url: str,
        broker: _Broker,
        t0: float,
        produced_until: float,
        replicas: list[_Replica],
    ) -> dict[str, Any]:
        cfg = self.cfg
        produced_at = {m: t for d in devices for m, t in d.produced_at.items()}
        stored_ids = {m for _, m, _, _ in rows}
        seq_keys = {(d, seq) for d, _, seq, _ in rows}
        latencies = sorted(1000.0 * (at - produced_at[m]) for _, m, _, at in rows if m in produced_at)
        last_stored = max((at for _, _, _, at in rows), default=t0)
        reports = [store.device_report(d.device_id) for d in devices]
        return {
            "devices": cfg.devices,
            "results_per_device": cfg.results,
            "replicas": cfg.replicas,
            "store": store.backend,
            "store_url": describe_url(store_url) if cfg.store else "fleet.sqlite (work folder)",
            "interval_s": cfg.interval_s,
            "offered_per_s": round(cfg.devices / cfg.interval_s, 1) if cfg.interval_s else None,
            "produced": len(produced_at),
            "stored": len(stored_ids & produced_at.keys()),
            "lost": len(produced_at.keys() - stored_ids),
            "duplicates_stored": max(len(rows) - len(stored_ids), len(rows) - len(seq_keys)),
            "unknown_stored": len(stored_ids - produced_at.keys()),
            "conflicts": sum(r["conflicts"] for r in reports),
            "duplicate_deliveries_absorbed": sum(r["duplicates"] for r in reports),
            "resend_requests": sum(r["resend_requests"] for r in reports),
            "records_resent": sum(d.resent for d in devices),
            "rejected": store.rejected_count(),
            "throughput_per_s": round(len(rows) / max(last_stored - t0, 1e-9), 1),
            "p50_latency_ms": _percentile(latencies, 50),
            "p95_latency_ms": _percentile(latencies, 95),
            "p99_latency_ms": _percentile(latencies, 99),
            "max_latency_ms": round(latencies[-1], 1) if latencies else None,
            "produce_s": round(produced_until - t0, 2),
            "elapsed_s": round(last_stored - t0, 2),
            "faults": self.events,
            "replica_exit_codes": [None if r.proc is None else r.proc.poll() for r in replicas],
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "broker": broker.version(),
            },
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
        }


def _percentile(sorted_values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (nearest rank) of ascending ``sorted_values``, rounded to 0.1."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))
    return round(sorted_values[int(rank) - 1], 1)


def run_loadtest(cfg: LoadTestConfig, out: str | None = None) -> dict[str, Any]:
    """Run ``cfg`` and write the report as JSON to ``out`` (when given)."""
    report = LoadTest(cfg).run()
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
    return report
