"""Sync configuration: ``[mqtt]`` (broker and identity) and ``[outbox]`` of the scanner's TOML file.

Other sections (``[camera]``, ``[models]``, ...) belong to their owners and are ignored here.
Loading rules (unknown keys are errors, relative paths) are those of ``device.contracts.config``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.contracts.config import ConfigError, MqttConfig, check, load_toml_config, path_field, section

__all__ = ["ConfigError", "MqttConfig", "OutboxConfig", "SyncConfig", "load_sync_config"]


@dataclass(frozen=True)
class OutboxConfig:
    """The SQLite outbox. Sizes in bytes, times in seconds; 0 disables a limit."""

    path: str = path_field("outbox.sqlite")
    max_pending: int = 50_000  # undelivered records; beyond it new records are refused
    max_pending_bytes: int = 200_000_000  # undelivered payload bytes; same policy
    max_db_bytes: int = 0  # hard cap on the database file (SQLite max_page_count)
    high_water: float = 0.8  # fraction of a limit that raises an "outbox_high" alarm
    alarm_age_s: float = 6 * 3600.0  # oldest undelivered record older than this: "outbox_stale" alarm
    retention_s: float = 7 * 24 * 3600.0  # delivered records kept this long for end-to-end resend
    retention_rows: int = 100_000  # and at most this many delivered rows

    def __post_init__(self) -> None:
        check(bool(self.path), "outbox.path", "must not be empty", self.path)
        check(self.max_pending >= 0, "outbox.max_pending", "must be >= 0", self.max_pending)
        check(self.max_pending_bytes >= 0, "outbox.max_pending_bytes", "must be >= 0", self.max_pending_bytes)
        check(
            self.max_db_bytes == 0 or self.max_db_bytes >= 65536,
            "outbox.max_db_bytes",
            "must be 0 or >= 65536",
            self.max_db_bytes,
        )
        check(0 < self.high_water <= 1, "outbox.high_water", "must be in (0, 1]", self.high_water)
        check(self.alarm_age_s >= 0, "outbox.alarm_age_s", "must be >= 0", self.alarm_age_s)
        check(self.retention_s >= 0, "outbox.retention_s", "must be >= 0", self.retention_s)
        check(self.retention_rows >= 0, "outbox.retention_rows", "must be >= 0", self.retention_rows)


@dataclass(frozen=True)
class SyncConfig:
    """Everything the scanner's sync needs, read from one TOML file."""

    mqtt: MqttConfig = field(default_factory=MqttConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> SyncConfig:
        """Build from parsed TOML; relative file paths are resolved against ``base_dir``."""
        return cls(
            mqtt=section(MqttConfig, data, "mqtt", base_dir), outbox=section(OutboxConfig, data, "outbox", base_dir)
        )

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration (password redacted), for logs and reports."""
        out = dataclasses.asdict(self)
        if out["mqtt"]["password"]:
            out["mqtt"]["password"] = "***"
        return out


def load_sync_config(path: str | Path) -> SyncConfig:
    """Read and validate a TOML file. Raises ConfigError naming the file and the key."""
    return load_toml_config(path, SyncConfig.from_mapping)
