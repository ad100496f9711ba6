"""The fleet consumer's configuration: ``[mqtt]`` (broker, fleet name) and ``[fleet]`` of a TOML file."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.contracts.config import MqttConfig, check, load_toml_config, resolve_path, section

__all__ = ["FleetConfig", "FleetServiceConfig", "load_fleet_config"]


@dataclass(frozen=True)
class FleetConfig:
    """The reference consumer. Times in seconds."""

    db: str = "fleet.sqlite"
    client_id: str = "scalpedge-fleet"
    session_expiry_s: int = 3600  # broker keeps our subscription while we restart
    gap_grace_s: float = 2.0  # a seq gap must persist this long before a resend is asked
    resend_interval_s: float = 5.0  # at most one resend request per device per interval

    def __post_init__(self) -> None:
        check(bool(self.db), "fleet.db", "must not be empty", self.db)
        check(bool(self.client_id), "fleet.client_id", "must not be empty", self.client_id)
        check(self.session_expiry_s >= 0, "fleet.session_expiry_s", "must be >= 0", self.session_expiry_s)
        check(self.gap_grace_s >= 0, "fleet.gap_grace_s", "must be >= 0", self.gap_grace_s)
        check(self.resend_interval_s > 0, "fleet.resend_interval_s", "must be > 0", self.resend_interval_s)


@dataclass(frozen=True)
class FleetServiceConfig:
    """What ``scalpedge fleet listen`` reads: the broker connection and the consumer settings."""

    mqtt: MqttConfig = field(default_factory=MqttConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> FleetServiceConfig:
        """Build from parsed TOML (other sections ignored); relative paths against ``base_dir``."""
        mqtt = section(MqttConfig, data, "mqtt")
        fleet = section(FleetConfig, data, "fleet")
        if base_dir is not None:
            mqtt = mqtt.with_paths_resolved(base_dir)
            fleet = dataclasses.replace(fleet, db=resolve_path(fleet.db, base_dir))
        return cls(mqtt=mqtt, fleet=fleet)


def load_fleet_config(path: str | Path) -> FleetServiceConfig:
    """Read and validate a TOML file. Raises ConfigError naming the file and the key."""
    return load_toml_config(path, FleetServiceConfig.from_mapping)
