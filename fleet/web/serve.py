"""Run the dashboard on uvicorn over the store a fleet config names (``[fleet] store`` or ``db``)."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from fleet.store import describe_url, open_store
from fleet.web.app import create_app

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "serve"]

DEFAULT_HOST = "127.0.0.1"  # this machine only: put an authenticating proxy in front to share it
DEFAULT_PORT = 8080

log = logging.getLogger("fleet.web")


def serve(store_url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, title: str = "ScalpEdge fleet") -> None:
    """Serve the dashboard over the store at ``store_url`` until SIGINT/SIGTERM. A SQLite file
    that does not exist is refused (FileNotFoundError): the consumer creates it."""
    if not store_url.startswith(("postgresql://", "postgres://")):
        path = Path(store_url.removeprefix("sqlite://"))
        if not path.is_file():
            raise FileNotFoundError(
                f"no fleet store at {path}: run `scalpedge fleet listen --config ...` first, or set [fleet] db / store"
            )
    store = open_store(store_url)
    try:
        log.info("dashboard over %s on http://%s:%d/", describe_url(store_url), host, port)
        uvicorn.run(create_app(store, title), host=host, port=port, log_level="info", server_header=False)
    finally:
        store.close()
