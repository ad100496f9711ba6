"""The fleet consumer's configuration: ``[mqtt]`` (broker, fleet name) and ``[fleet]`` of a TOML file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.contracts.config import MqttConfig, check, load_toml_config, path_field, section

__all__ = ["FleetConfig", "FleetServiceConfig", "load_fleet_config"]


@dataclass(frozen=True)
class FleetConfig:
    """The reference consumer. Times in seconds."""

    db: str = path_field("fleet.sqlite")
    client_id: str = "scalpedge-fleet"
    session_expiry_s: int = 3600  # broker keeps our subscription while we restart
    gap_grace_s: float = 2.0  # a seq gap must persist this long before a resend is asked
    resend_interval_s: float = 5.0  # at most one resend request per device per interval
    resend_chunk_seqs: int = 1000  # seqs per resend command, at most
    resend_max_commands: int = 16  # resend commands per device and interval, at most
    max_gap: int = 100_000  # a requestable gap of more seqs is flagged as a seq jump, never requested
    max_payload_bytes: int = 256 * 1024  # larger payloads are rejected before they are parsed
    max_json_depth: int = 32  # payloads whose arrays/objects nest deeper are rejected

    def __post_init__(self) -> None:
        check(bool(self.db), "fleet.db", "must not be empty", self.db)
        check(bool(self.client_id), "fleet.client_id", "must not be empty", self.client_id)
        check(self.session_expiry_s >= 0, "fleet.session_expiry_s", "must be >= 0", self.session_expiry_s)
        check(self.gap_grace_s >= 0, "fleet.gap_grace_s", "must be >= 0", self.gap_grace_s)
        check(self.resend_interval_s > 0, "fleet.resend_interval_s", "must be > 0", self.resend_interval_s)
        for key in ("resend_chunk_seqs", "resend_max_commands", "max_gap", "max_json_depth"):
            check(getattr(self, key) >= 1, f"fleet.{key}", "must be >= 1", getattr(self, key))
        check(self.max_payload_bytes >= 1024, "fleet.max_payload_bytes", "must be >= 1024", self.max_payload_bytes)


@dataclass(frozen=True)
class FleetServiceConfig:
    """What ``scalpedge fleet listen`` reads: the broker connection and the consumer settings."""

    mqtt: MqttConfig = field(default_factory=MqttConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> FleetServiceConfig:
        """Build from parsed TOML (other sections ignored); relative paths against ``base_dir``."""
        return cls(
            mqtt=section(MqttConfig, data, "mqtt", base_dir), fleet=section(FleetConfig, data, "fleet", base_dir)
        )


def load_fleet_config(path: str | Path) -> FleetServiceConfig:
    """Read and validate a TOML file. Raises ConfigError naming the file and the key."""
    return load_toml_config(path, FleetServiceConfig.from_mapping)
