"""Both ends of a serial port: opening the scanner's port on the host, and the pty the simulator plays on.

Host side: :func:`open_port` opens a path or any pyserial URL exclusively (``flock``, so a second
process gets an error instead of stealing bytes). Stable names are ``/dev/serial/by-id/...`` symlinks
(:func:`list_by_id`) or ``hwgrep://VID:PID`` (:func:`hwgrep_url`), which pyserial resolves again on
every open, so a replugged scanner that came back as another ``ttyACM`` is still found.

Simulator side: :class:`PtyPort` is a pty pair from ``os.openpty`` in raw mode, published at a stable
path through a symlink that is re-pointed atomically on "replug", as udev does for ``by-id``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tty
from pathlib import Path
from typing import Any

import serial

__all__ = ["BY_ID_DIR", "PortUnavailable", "PtyPort", "hwgrep_url", "list_by_id", "open_port"]

BY_ID_DIR = "/dev/serial/by-id"


def hwgrep_url(vid: int, pid: int) -> str:
    """pyserial URL that finds the first port whose hardware id has USB ``vid``:``pid`` (hex)."""
    return f"hwgrep://{vid:04X}:{pid:04X}"


def list_by_id() -> list[str]:
    """Stable ``/dev/serial/by-id`` paths of the USB serial ports present (empty when there are none)."""
    try:
        return sorted(os.path.join(BY_ID_DIR, name) for name in os.listdir(BY_ID_DIR))
    except OSError:
        return []


def open_port(url: str, baudrate: int = 115200, timeout_s: float = 0.02, write_timeout_s: float = 0.5) -> Any:
    """Open ``url`` (a path or a pyserial URL) exclusively and return the ``serial.Serial``.

    ``timeout_s`` is the longest a read blocks, ``write_timeout_s`` the longest a write blocks.
    Raises ``serial.SerialException`` (an ``OSError``) when the port is missing or already held.
    """
    port = serial.serial_for_url(
        url, baudrate=baudrate, timeout=timeout_s, write_timeout=write_timeout_s, exclusive=True, do_not_open=True
    )
    port.open()
    return port


class PortUnavailable(OSError):
    """The scanner's port could not be opened at start; ``missing``: no such port (not found), else
    it exists but cannot be opened (held by another process, permissions). The message names it."""

    def __init__(self, url: str, reason: BaseException) -> None:
        self.url = url
        self.missing = _is_missing(url, reason)
        if self.missing:
            super().__init__(f"scanner port {url} not found (no such device: check the cable and the port name)")
        else:
            super().__init__(f"scanner port {url} cannot be opened: {reason}")


def _is_missing(url: str, reason: BaseException) -> bool:
    if getattr(reason, "errno", None) == errno.ENOENT or "no ports found" in str(reason):
        return True
    return "://" not in url and not os.path.exists(url)


class PtyPort:
    """A pty pair standing in for a USB serial cable, reachable at ``link_path`` (a symlink).

    The simulator reads and writes the master side (non-blocking); the host opens ``link_path``,
    which points at the slave (``/dev/pts/N``). :meth:`unplug` closes both ends and removes the link;
    :meth:`plug` makes a fresh pair and re-points the link at it, so the host sees the device vanish
    and come back at the same stable path.
    """

    def __init__(self, link_path: str | os.PathLike[str]) -> None:
        self.link_path = Path(link_path)
        self.master_fd: int | None = None
        self._slave_fd: int | None = None
        self.slave_name = ""
        """Current ``/dev/pts/N`` the link points at (empty while unplugged)."""

    @property
    def plugged(self) -> bool:
        return self.master_fd is not None

    def plug(self) -> None:
        """Create a new pty pair in raw mode and point ``link_path`` at its slave."""
        if self.plugged:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: bytes pass through unchanged
        os.set_blocking(master, False)
        self.master_fd, self._slave_fd = master, slave  # keep the slave open: no hangup when the host closes
        self.slave_name = os.ttyname(slave)
        self.link_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link_path.with_name(f".{self.link_path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(self.slave_name)
        os.replace(tmp, self.link_path)  # atomic re-point

    def unplug(self) -> None:
        """Remove the link and close both ends: the host's next read fails as on a real unplug."""
        with contextlib.suppress(FileNotFoundError):
            self.link_path.unlink()
        for fd in (self.master_fd, self._slave_fd):
            if fd is not None:
                os.close(fd)
        self.master_fd = self._slave_fd = None
        self.slave_name = ""

    def read(self, size: int = 4096) -> bytes:
        """Bytes the host wrote (possibly empty); b"" while unplugged."""
        if self.master_fd is None:
            return b""
        try:
            return os.read(self.master_fd, size)
        except (BlockingIOError, InterruptedError):
            return b""

    def write(self, data: bytes) -> int:
        """Write towards the host; bytes that do not fit (nobody reading) are lost, as on a UART."""
        if self.master_fd is None or not data:
            return 0
        try:
            return os.write(self.master_fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
