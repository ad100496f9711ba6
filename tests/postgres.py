"""A real PostgreSQL server for tests and the load test: Debian's ``postgresql`` binaries, a
temp data directory, a free port on 127.0.0.1, trust authentication, stopped and removed after.

Not a fixture module on purpose (like ``mosquitto.py``): tests get it through fixtures in their
own files, and as a script it serves the fleet load test::

    python tests/postgres.py            # prints the URL, serves until Ctrl-C / SIGTERM

PostgreSQL refuses to run as root; as root the server runs as ``nobody`` (the data directory is
made theirs), so the helper works in CI containers as well as on a developer's machine.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["Postgres", "postgres_bindir"]

DATABASE = "fleet"
USER = "fleet"


def postgres_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` (newest version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """One server on 127.0.0.1:``port`` with database ``fleet`` owned by user ``fleet``.

    ``start()`` runs initdb (first time) and the server; ``stop()`` stops it; ``remove()``
    deletes the data directory too. ``url`` is what ``fleet.store.open_store`` takes.
    """

    def __init__(self, port: int | None = None, fsync: bool = True) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql; .ci/setup does it)")
        self.bindir = bindir
        self.port = port or _free_port()
        self.fsync = fsync
        # Not under pytest's tmp_path: its parents are private to root, and the server may run as nobody.
        self.root = Path(tempfile.mkdtemp(prefix="scalpedge-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "nobody", "nogroup")
            self._as = ["runuser", "-u", "nobody", "--"]
        self._initialised = False

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        cmd = [*self._as, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=self.root, timeout=120)
        if check and proc.returncode != 0:
            what = Path(args[0]).name
            raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr[-2000:]}{self.log_tail()}")
        return proc

    def start(self, timeout_s: float = 60.0) -> None:
        """initdb (once), start the server, create the database; returns when it accepts queries."""
        if not self._initialised:
            self._run(
                str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8",
                "--locale=C", "--no-instructions",
            )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200"
        )
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-o", options,
                  "-w", "-t", str(int(timeout_s)), "start")  # fmt: skip
        if not self._initialised:
            self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE)
            self._initialised = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions; ``immediate``: like a crash)."""
        if self.data.exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return "\n" + self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> Postgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def main() -> int:
    with Postgres() as pg:
        print(pg.url, flush=True)
        stop = [False]
        signal.signal(signal.SIGTERM, lambda s, f: stop.__setitem__(0, True))
        try:
            while not stop[0]:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
