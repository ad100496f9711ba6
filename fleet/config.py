"""The fleet consumer's configuration: ``[mqtt]`` (broker, fleet name) and ``[fleet]`` of a TOML file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.contracts.config import NAME_RE, MqttConfig, check, load_toml_config, path_field, section

__all__ = ["FleetConfig", "FleetServiceConfig", "load_fleet_config"]

SESSION_EXPIRY_ALONE_S = 3600  # the default for a lone consumer: the broker queues for it while it restarts


@dataclass(frozen=True)
class FleetConfig:
    """The reference consumer. Times in seconds."""

    db: str = path_field("fleet.sqlite")  # the embedded store (SQLite file), used unless ``store`` is set
    store: str = ""  # a PostgreSQL URL, postgresql://user@host:5432/fleet ("": the SQLite file ``db``)
    client_id: str = "scalpedge-fleet"  # unique per replica
    share_group: str = ""  # MQTT 5 shared subscription group of the replicas ("": one consumer, plain subscription)
    # The broker keeps our session (and queues for us) this long while we are away. -1: 3600 for a
    # lone consumer, 0 in a share group (a dead replica must not keep receiving its share).
    session_expiry_s: int = -1
    gap_grace_s: float = 2.0  # a seq gap must persist this long before a resend is asked
    resend_interval_s: float = 5.0  # at most one resend request per device per interval
    resend_chunk_seqs: int = 1000  # seqs per resend command, at most
    resend_max_commands: int = 16  # resend commands per device and interval, at most
    max_gap: int = 100_000  # a requestable gap of more seqs is flagged as a seq jump, never requested
    max_payload_bytes: int = 256 * 1024  # larger payloads are rejected before they are parsed
    max_json_depth: int = 32  # payloads whose arrays/objects nest deeper are rejected
    telemetry_keep_s: float = 7 * 24 * 3600.0  # telemetry rows older than this are pruned (0: keep all)

    def __post_init__(self) -> None:
        check(bool(self.db), "fleet.db", "must not be empty", self.db)
        check(
            not self.store or self.store.startswith(("postgresql://", "postgres://")),
            "fleet.store",
            "must be a postgresql:// URL (the SQLite file is fleet.db)",
            self.store.split("@")[-1],
        )
        check(bool(self.client_id), "fleet.client_id", "must not be empty", self.client_id)
        check(
            not self.share_group or bool(NAME_RE.match(self.share_group)),
            "fleet.share_group",
            f"must match {NAME_RE.pattern} (no '/', '+' or '#')",
            self.share_group,
        )
        expiry = self.session_expiry_s
        check(expiry >= -1, "fleet.session_expiry_s", "must be >= 0, or -1 (auto)", expiry)
        check(self.telemetry_keep_s >= 0, "fleet.telemetry_keep_s", "must be >= 0", self.telemetry_keep_s)
        check(self.gap_grace_s >= 0, "fleet.gap_grace_s", "must be >= 0", self.gap_grace_s)
        check(self.resend_interval_s > 0, "fleet.resend_interval_s", "must be > 0", self.resend_interval_s)
        for key in ("resend_chunk_seqs", "resend_max_commands", "max_gap", "max_json_depth"):
            check(getattr(self, key) >= 1, f"fleet.{key}", "must be >= 1", getattr(self, key))
        check(self.max_payload_bytes >= 1024, "fleet.max_payload_bytes", "must be >= 1024", self.max_payload_bytes)

    @property
    def store_url(self) -> str:
        """What ``fleet.store.open_store`` opens: ``store`` when set, else the SQLite file ``db``."""
        return self.store or self.db

    @property
    def resolved_session_expiry_s(self) -> int:
        if self.session_expiry_s >= 0:
            return self.session_expiry_s
        return 0 if self.share_group else SESSION_EXPIRY_ALONE_S


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
