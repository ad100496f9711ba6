"""A real Mosquitto broker for tests and the sync soak: free port, temp config, kill and restart.

Not a fixture module on purpose: ``benchmarks/soak_sync.py`` uses the same class. Tests get it
through the ``broker`` fixtures in their own files.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["Mosquitto", "ephemeral_ports", "free_port", "mosquitto_binary", "terminate"]


def mosquitto_binary() -> str | None:
    """Path of the ``mosquitto`` executable (also looked up in /usr/sbin), or None."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (Linux's default when unknown)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, from below the kernel's ephemeral
    range. A broker's port stays unbound while it is down (started late, killed, restarted);
    a port from the ephemeral range can meanwhile become the local end of a client's outgoing
    connection (a device retrying its link), and the broker's restart then fails with "Address
    already in use" (seen once in CI; the likely cause, not proven)."""
    low, _ = ephemeral_ports()
    if low - 1024 < 1000:  # no room below an unusually wide range: any port the kernel gives
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 below {low} after 200 tries")


def terminate(proc: subprocess.Popen[Any], timeout_s: float) -> int:
    """SIGTERM ``proc`` if it still runs, SIGKILL it after ``timeout_s`` seconds; reaps it and
    returns its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


class Mosquitto:
    """One broker process on 127.0.0.1:``port`` with its config, log and state under ``workdir``.

    ``extra`` lines go into the listener's config (TLS, password file, ACL). ``config``, instead,
    is a complete configuration used as it is (``fleet broker-config`` writes one): it names its
    own listener, so ``port`` must be that listener's. ``kill()`` sends SIGKILL (no chance to
    save anything); ``start()`` brings it back on the same port.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra: str = "",
        persistence: bool = False,
        config: str | None = None,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto; .ci/setup does it)")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_path = self.workdir / "mosquitto.log"
        self.conf_path = self.workdir / "mosquitto.conf"
        # As root, Mosquitto drops to user "mosquitto", which cannot read the test's temp files.
        run_as = "user root" if os.geteuid() == 0 else ""
        if config is not None:
            if port is None or extra or persistence:
                raise ValueError("a complete config names its listener and settings: pass only its port")
            self.conf_path.write_text(f"{run_as}\n{config}")
        else:
            self.conf_path.write_text(self._config(extra, persistence, run_as))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def _config(self, extra: str, persistence: bool, run_as: str) -> str:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true" if "password_file" not in extra and "require_certificate" not in extra else "",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "max_inflight_messages 0",
            "max_queued_messages 100000",
            run_as,
            extra,
        ]
        return "\n".join(line for line in lines if line) + "\n"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and wait until its port accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self._close_log()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf_path)], stdout=self._log, stderr=subprocess.STDOUT
        )
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._close_log()
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s} s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the broker (no persistence save, no clean disconnects) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.kills += 1
        self._close_log()

    def stop(self) -> None:
        """SIGTERM and reap (SIGKILL after 5 s)."""
        if self.proc is not None:
            terminate(self.proc, 5.0)
        self.proc = None
        self._close_log()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _close_log(self) -> None:
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
            self._log = None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
