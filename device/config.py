"""Sync configuration: one TOML file, defaults in the dataclasses below, validated with clear errors.

Sections read here (others, such as a future ``[device]`` or ``[camera]``, are left to their
owners and ignored)::

    [mqtt]      broker connection and device identity (MqttConfig)
    [outbox]    the on-disk SQLite outbox: path, limits, retention (OutboxConfig)
    [fleet]     the reference consumer ``scalpedge fleet listen`` (FleetConfig)

A key that is not a field of its section is an error (typos must not silently fall back to a
default). Relative paths are resolved against the TOML file's folder.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 on older Jetson images
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "MqttConfig",
    "OutboxConfig",
    "FleetConfig",
    "SyncConfig",
    "load_sync_config",
    "read_toml",
    "NAME_RE",
]

#: Device ids and fleet names become MQTT topic levels: no wildcards, no slashes.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """The configuration file is unreadable or a value is invalid; the message names the key."""


@dataclass(frozen=True)
class MqttConfig:
    """Broker connection and device identity. Times in seconds."""

    host: str = "localhost"
    port: int = 1883
    fleet: str = "default"
    device_id: str = "scanner-0001"
    client_id: str = ""  # empty: "scalpedge-<device_id>"
    username: str = ""
    password: str = ""
    password_file: str = ""  # a file holding the password (kept out of the TOML)
    tls_ca: str = ""  # CA bundle; setting it turns TLS on
    tls_cert: str = ""  # client certificate (PEM), with tls_key
    tls_key: str = ""
    tls_insecure: bool = False  # skip host name check (tests with IP-only certificates)
    qos: int = 1
    max_inflight: int = 20  # results published and not yet PUBACKed, at most
    keepalive_s: int = 30
    connect_timeout_s: float = 5.0
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 30.0
    telemetry_interval_s: float = 10.0

    def __post_init__(self) -> None:
        _check(0 < self.port < 65536, "mqtt.port", "must be 1-65535", self.port)
        _check(bool(NAME_RE.match(self.fleet)), "mqtt.fleet", f"must match {NAME_RE.pattern}", self.fleet)
        _check(bool(NAME_RE.match(self.device_id)), "mqtt.device_id", f"must match {NAME_RE.pattern}", self.device_id)
        _check(self.qos in (1, 2), "mqtt.qos", "must be 1 or 2 (QoS 0 has no PUBACK: records could be lost)", self.qos)
        _check(1 <= self.max_inflight <= 1000, "mqtt.max_inflight", "must be 1-1000", self.max_inflight)
        _check(self.keepalive_s >= 5, "mqtt.keepalive_s", "must be >= 5", self.keepalive_s)
        _check(self.connect_timeout_s > 0, "mqtt.connect_timeout_s", "must be > 0", self.connect_timeout_s)
        _check(
            0 < self.reconnect_min_s <= self.reconnect_max_s,
            "mqtt.reconnect_min_s",
            "must be > 0 and <= reconnect_max_s",
            self.reconnect_min_s,
        )
        _check(self.telemetry_interval_s > 0, "mqtt.telemetry_interval_s", "must be > 0", self.telemetry_interval_s)
        _check(bool(self.tls_cert) == bool(self.tls_key), "mqtt.tls_cert", "tls_cert and tls_key go together", "")
        _check(not (self.tls_cert and not self.tls_ca), "mqtt.tls_ca", "a client certificate needs tls_ca", "")
        _check(not (self.password and self.password_file), "mqtt.password", "give password or password_file", "")

    @property
    def resolved_client_id(self) -> str:
        return self.client_id or f"scalpedge-{self.device_id}"

    def resolved_password(self) -> str | None:
        """The password (read from ``password_file`` when set), or None for no password."""
        if self.password_file:
            try:
                return Path(self.password_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"mqtt.password_file: cannot read {self.password_file}: {exc}") from exc
        return self.password or None


@dataclass(frozen=True)
class OutboxConfig:
    """The SQLite outbox. Sizes in bytes, times in seconds; 0 disables a limit."""

    path: str = "outbox.sqlite"
    max_pending: int = 50_000  # undelivered records; beyond it new records are refused
    max_pending_bytes: int = 200_000_000  # undelivered payload bytes; same policy
    max_db_bytes: int = 0  # hard cap on the database file (SQLite max_page_count)
    high_water: float = 0.8  # fraction of a limit that raises an "outbox_high" alarm
    alarm_age_s: float = 6 * 3600.0  # oldest undelivered record older than this: "outbox_stale" alarm
    retention_s: float = 7 * 24 * 3600.0  # delivered records kept this long for end-to-end resend
    retention_rows: int = 100_000  # and at most this many delivered rows

    def __post_init__(self) -> None:
        _check(bool(self.path), "outbox.path", "must not be empty", self.path)
        _check(self.max_pending >= 0, "outbox.max_pending", "must be >= 0", self.max_pending)
        _check(self.max_pending_bytes >= 0, "outbox.max_pending_bytes", "must be >= 0", self.max_pending_bytes)
        _check(
            self.max_db_bytes == 0 or self.max_db_bytes >= 65536,
            "outbox.max_db_bytes",
            "must be 0 or >= 65536",
            self.max_db_bytes,
        )
        _check(0 < self.high_water <= 1, "outbox.high_water", "must be in (0, 1]", self.high_water)
        _check(self.alarm_age_s >= 0, "outbox.alarm_age_s", "must be >= 0", self.alarm_age_s)
        _check(self.retention_s >= 0, "outbox.retention_s", "must be >= 0", self.retention_s)
        _check(self.retention_rows >= 0, "outbox.retention_rows", "must be >= 0", self.retention_rows)


@dataclass(frozen=True)
class FleetConfig:
    """The reference consumer. Times in seconds."""

    db: str = "fleet.sqlite"
    client_id: str = "scalpedge-fleet"
    session_expiry_s: int = 3600  # broker keeps our subscription while we restart
    gap_grace_s: float = 2.0  # a seq gap must persist this long before a resend is asked
    resend_interval_s: float = 5.0  # at most one resend request per device per interval

    def __post_init__(self) -> None:
        _check(bool(self.db), "fleet.db", "must not be empty", self.db)
        _check(bool(self.client_id), "fleet.client_id", "must not be empty", self.client_id)
        _check(self.session_expiry_s >= 0, "fleet.session_expiry_s", "must be >= 0", self.session_expiry_s)
        _check(self.gap_grace_s >= 0, "fleet.gap_grace_s", "must be >= 0", self.gap_grace_s)
        _check(self.resend_interval_s > 0, "fleet.resend_interval_s", "must be > 0", self.resend_interval_s)


@dataclass(frozen=True)
class SyncConfig:
    """Everything sync needs, read from one TOML file."""

    mqtt: MqttConfig = field(default_factory=MqttConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> SyncConfig:
        """Build from parsed TOML; relative file paths are resolved against ``base_dir``."""
        mqtt = _section(MqttConfig, data, "mqtt")
        outbox = _section(OutboxConfig, data, "outbox")
        fleet = _section(FleetConfig, data, "fleet")
        if base_dir is not None:
            mqtt = dataclasses.replace(
                mqtt,
                password_file=_resolve(mqtt.password_file, base_dir),
                tls_ca=_resolve(mqtt.tls_ca, base_dir),
                tls_cert=_resolve(mqtt.tls_cert, base_dir),
                tls_key=_resolve(mqtt.tls_key, base_dir),
            )
            outbox = dataclasses.replace(outbox, path=_resolve(outbox.path, base_dir))
            fleet = dataclasses.replace(fleet, db=_resolve(fleet.db, base_dir))
        return cls(mqtt=mqtt, outbox=outbox, fleet=fleet)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration (password redacted), for logs and reports."""
        out = dataclasses.asdict(self)
        if out["mqtt"]["password"]:
            out["mqtt"]["password"] = "***"
        return out


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML file; ConfigError naming the file when it is missing, unreadable or invalid."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def load_sync_config(path: str | Path) -> SyncConfig:
    """Read and validate a TOML file. Raises ConfigError naming the file and the key."""
    path = Path(path)
    data = read_toml(path)
    try:
        return SyncConfig.from_mapping(data, base_dir=path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


_T = TypeVar("_T")


def _check(ok: bool, key: str, rule: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"[{key.split('.')[0]}] {key.split('.')[1]} {rule} (got {value!r})")


def _resolve(value: str, base_dir: Path) -> str:
    if not value or Path(value).is_absolute():
        return value
    return str((base_dir / value).resolve())


def _section(cls: type[_T], data: Mapping[str, Any], name: str) -> _T:
    table = data.get(name, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{name}] must be a table, got {type(table).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - fields)
    if unknown:
        raise ConfigError(f"[{name}] unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        kwargs[key] = _coerce(value, hints[key], f"[{name}] {key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field type this loader does not know
        raise ConfigError(f"{where}: unsupported field type {hint!r}")
    raise ConfigError(f"{where} must be {getattr(hint, '__name__', hint)}, got {type(value).__name__} {value!r}")
