"""Configuration files: TOML read into frozen dataclasses, validated with errors that name the key.

One loader for every config (scanner sync, scanner runtime, fleet): each section is a frozen
dataclass whose defaults are the documented defaults; a key that is not a field is an error (a
typo must not silently fall back to a default); relative paths resolve against the file's folder.
``MqttConfig`` lives here because both ends of MQTT (scanner and fleet) read it.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 on older Jetson images
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "MqttConfig",
    "NAME_RE",
    "check",
    "load_toml_config",
    "path_field",
    "read_toml",
    "resolve_path",
    "section",
]

#: Device ids and fleet names become MQTT topic levels: no wildcards, no slashes.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """The configuration file is unreadable or a value is invalid; the message names the key."""


def path_field(default: str = "") -> Any:
    """A config field holding a file or folder path: ``section`` resolves it (given or default)
    against the TOML file's folder."""
    return dataclasses.field(default=default, metadata={"path": True})


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
    password_file: str = path_field()  # a file holding the password (kept out of the TOML)
    tls_ca: str = path_field()  # CA bundle; setting it turns TLS on
    tls_cert: str = path_field()  # client certificate (PEM), with tls_key
    tls_key: str = path_field()
    tls_insecure: bool = False  # skip host name check (tests with IP-only certificates)
    qos: int = 1
    max_inflight: int = 20  # results published and not yet PUBACKed, at most
    keepalive_s: int = 30
    connect_timeout_s: float = 5.0
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 30.0
    telemetry_interval_s: float = 10.0

    def __post_init__(self) -> None:
        check(0 < self.port < 65536, "mqtt.port", "must be 1-65535", self.port)
        check(bool(NAME_RE.match(self.fleet)), "mqtt.fleet", f"must match {NAME_RE.pattern}", self.fleet)
        check(bool(NAME_RE.match(self.device_id)), "mqtt.device_id", f"must match {NAME_RE.pattern}", self.device_id)
        check(self.qos in (1, 2), "mqtt.qos", "must be 1 or 2 (QoS 0 has no PUBACK: records could be lost)", self.qos)
        check(1 <= self.max_inflight <= 1000, "mqtt.max_inflight", "must be 1-1000", self.max_inflight)
        check(self.keepalive_s >= 5, "mqtt.keepalive_s", "must be >= 5", self.keepalive_s)
        check(self.connect_timeout_s > 0, "mqtt.connect_timeout_s", "must be > 0", self.connect_timeout_s)
        check(
            0 < self.reconnect_min_s <= self.reconnect_max_s,
            "mqtt.reconnect_min_s",
            "must be > 0 and <= reconnect_max_s",
            self.reconnect_min_s,
        )
        check(self.telemetry_interval_s > 0, "mqtt.telemetry_interval_s", "must be > 0", self.telemetry_interval_s)
        check(bool(self.tls_cert) == bool(self.tls_key), "mqtt.tls_cert", "tls_cert and tls_key go together", "")
        check(not (self.tls_cert and not self.tls_ca), "mqtt.tls_ca", "a client certificate needs tls_ca", "")
        check(not (self.password and self.password_file), "mqtt.password", "give password or password_file", "")

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


_C = TypeVar("_C")


def load_toml_config(path: str | Path, build: Callable[[Mapping[str, Any], Path], _C]) -> _C:
    """Read a TOML file and build a config with ``build(data, base_dir)``; ConfigError naming the
    file (and, from the sections, the key) on any problem."""
    path = Path(path)
    data = read_toml(path)
    try:
        return build(data, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


_T = TypeVar("_T")


def check(ok: bool, key: str, rule: str, value: object) -> None:
    """Raise ConfigError ``[section] key <rule> (got value)`` unless ``ok``; ``key`` is "section.key"."""
    if not ok:
        raise ConfigError(f"[{key.split('.')[0]}] {key.split('.')[1]} {rule} (got {value!r})")


def resolve_path(value: str, base_dir: Path) -> str:
    """``value`` resolved against ``base_dir`` when it is a relative path ("" stays "")."""
    if not value or Path(value).is_absolute():
        return value
    return str((base_dir / value).resolve())


def section(cls: type[_T], data: Mapping[str, Any], name: str, base_dir: Path | None = None) -> _T:
    """The dataclass ``cls`` built from table ``[name]`` of ``data`` (defaults where absent);
    with ``base_dir``, its ``path_field``s are resolved against it."""
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
    if base_dir is not None:
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.metadata.get("path"):
                kwargs[f.name] = resolve_path(kwargs.get(f.name, f.default), base_dir)
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
