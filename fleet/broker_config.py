"""``scalpedge fleet broker-config``: a Mosquitto 2 configuration that ties every client to one identity.

It writes, under ``--out``:

- ``broker/mosquitto.conf``: one listener, ``allow_anonymous false``, persistence, and
  ``use_username_as_clientid true``: the broker replaces the client id a client sends with the
  identity it authenticated as, so a client holding valid credentials of its own cannot connect
  under another scanner's client id and take over (disconnect) that scanner's session;
- ``broker/acl``: each device (username = device id) may write only its own ``result``,
  ``status``, ``telemetry`` and ``event`` topics and read only its own ``cmd``; the fleet
  consumer reads those four kinds of every device and writes ``cmd``;
- credentials, files holding secrets with mode 0600: without ``--tls`` a random password per
  client, hashed for ``broker/passwd`` (Mosquitto's PBKDF2-SHA512 ``$7$`` format, what
  ``mosquitto_passwd`` writes); with ``--tls`` a CA (``ca/ca.key``: keep it offline), a server
  certificate for ``--host`` and a client certificate per client whose CN is its identity
  (``require_certificate`` + ``use_identity_as_username``);
- ``devices/<id>/mqtt.toml`` (the scanner's ``[mqtt]`` section, paths relative to it) and
  ``fleet/fleet.toml`` (``scalpedge fleet listen --config``), each beside its credentials.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import hashlib
import ipaddress
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.contracts.config import NAME_RE
from device.contracts.messages import KINDS, topic

__all__ = [
    "BrokerPlan",
    "acl_text",
    "add_parser",
    "make_pki",
    "mosquitto_conf_text",
    "mosquitto_password_hash",
    "run_broker_config",
    "write_broker_config",
]

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default; the passwords are 256-bit random tokens
CA_DAYS, LEAF_DAYS = 3650, 825
MAX_QUEUED_MESSAGES = 100_000  # the consumer's persistent session queues results while it restarts
DEVICE_WRITES = tuple(k for k in KINDS if k != "cmd")  # result, status, telemetry, event
_HOST_RE = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")


@dataclass(frozen=True)
class BrokerPlan:
    """What to generate. ``broker_dir``/``data_dir``: where the broker will find its files and keep
    its persistence database (absolute; ``None`` = ``<out>/broker`` and ``<out>/data``)."""

    fleet: str
    devices: tuple[str, ...]
    consumer: str = "scalpedge-fleet"
    host: str = "localhost"
    port: int | None = None  # None: 8883 with TLS, else 1883
    bind: str = ""  # "" = every interface
    tls: bool = False
    broker_dir: str | None = None
    data_dir: str | None = None

    def __post_init__(self) -> None:
        _require(bool(NAME_RE.match(self.fleet)), "--fleet", f"must match {NAME_RE.pattern}", self.fleet)
        _require(bool(self.devices), "--devices", "name at least one device", "")
        for name in self.devices:
            _require(bool(NAME_RE.match(name)), "--devices", f"every id must match {NAME_RE.pattern}", name)
        _require(bool(NAME_RE.match(self.consumer)), "--consumer", f"must match {NAME_RE.pattern}", self.consumer)
        _require(len(set(self.devices)) == len(self.devices), "--devices", "device ids must be unique", self.devices)
        _require(self.consumer not in self.devices, "--consumer", "must differ from every device id", self.consumer)
        _require(bool(_HOST_RE.match(self.host)), "--host", "must be a host name or IP address", self.host)
        _require(not self.bind or bool(_HOST_RE.match(self.bind)), "--bind", "must be an address", self.bind)
        _require(0 < self.listen_port < 65536, "--port", "must be 1-65535", self.listen_port)

    @property
    def listen_port(self) -> int:
        return self.port if self.port is not None else (8883 if self.tls else 1883)


def _require(ok: bool, option: str, rule: str, value: object) -> None:
    """ValueError ``<option> <rule> (got <value>)`` unless ``ok`` (the CLI exits 2 on it)."""
    if not ok:
        raise ValueError(f"{option} {rule} (got {value!r})")


def mosquitto_password_hash(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """``$7$<iterations>$<salt>$<hash>`` (base64): PBKDF2-HMAC-SHA512 as Mosquitto 2 verifies it
    (12-byte random salt, 64-byte hash)."""
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def acl_text(fleet: str, consumer: str) -> str:
    """The ACL file: the consumer reads every device's outbound kinds and writes commands; a
    ``pattern`` per kind binds each device's topics to its own username (%u)."""
    lines = [
        f"# ScalpEdge fleet {fleet!r}: topic rights per identity (username = password-file user or",
        "# certificate CN). Anything not granted here is denied.",
        "",
        f"user {consumer}",
        *(f"topic read {topic(fleet, '+', kind)}" for kind in DEVICE_WRITES),
        f"topic write {topic(fleet, '+', 'cmd')}",
        "",
        "# Every device, username = device id: its own topics only. The broker sets the client id to",
        "# the username (use_username_as_clientid), so %c would name the same identity.",
        *(f"pattern write {topic(fleet, '%u', kind)}" for kind in DEVICE_WRITES),
        f"pattern read {topic(fleet, '%u', 'cmd')}",
    ]
    return "\n".join(lines) + "\n"


def mosquitto_conf_text(plan: BrokerPlan, broker_dir: str, data_dir: str) -> str:
    """The broker's configuration; its files are looked up under ``broker_dir`` (absolute)."""
    if plan.tls:
        auth = [f"cafile {broker_dir}/ca.pem", f"certfile {broker_dir}/server.pem", f"keyfile {broker_dir}/server.key"]
        auth += ["tls_version tlsv1.2", "require_certificate true", "use_identity_as_username true"]
    else:
        auth = [f"password_file {broker_dir}/passwd"]
    lines = [
        f"# ScalpEdge broker for fleet {plan.fleet!r}, written by `scalpedge fleet broker-config`.",
        "# Start: mosquitto -c <this file>. Files holding secrets must be readable by the broker's user only.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {broker_dir}/acl",
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 60",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        "log_dest stderr",
        *(f"log_type {t}" for t in ("error", "warning", "notice", "information")),
        "connection_messages true",
        "",
        f"listener {plan.listen_port}" + (f" {plan.bind}" if plan.bind else ""),
        "protocol mqtt",
        "# The client id becomes the authenticated identity: nobody can take over another's session.",
        "use_username_as_clientid true",
        *auth,
    ]
    return "\n".join(lines) + "\n"


def _write(path: Path, data: str | bytes, secret: bool = False) -> Path:
    """Create ``path`` (never overwrite); mode 0600 for secrets, else 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = 0o600 if secret else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data.encode() if isinstance(data, str) else data)
    return path


def _toml(sections: dict[str, dict[str, Any]]) -> str:
    out: list[str] = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k} = {v}" if isinstance(v, int) else f'{k} = "{v}"' for k, v in values.items())
        out.append("")
    return "\n".join(out)


def make_pki(fleet: str, server_host: str, clients: Sequence[str]) -> dict[str, bytes]:
    """A CA (EC P-256, ``CA_DAYS``), a server certificate naming ``server_host`` (DNS name or IP
    address) and a client certificate per name in ``clients`` (CN = the name), ``LEAF_DAYS`` each.
    PEM by name: ``ca.pem``, ``ca.key``, ``server.pem``, ``server.key``, ``clients/<cn>.pem`` and ``.key``."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:
        from device.contracts.errors import MissingExtra

        raise MissingExtra(f"--tls needs the device extra ({exc.name}): pip install 'scalpedge[device]'") from exc

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ScalpEdge {fleet} MQTT CA")])
    no_usage = dict.fromkeys(
        ("content_commitment", "data_encipherment", "key_agreement", "encipher_only", "decipher_only"), False
    )

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def sign(cn: str | None, key: ec.EllipticCurvePrivateKey, extensions: list[x509.ExtensionType]) -> bytes:
        subject = ca_name if cn is None else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        ca = cn is None
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS if ca else LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=not ca, key_encipherment=False, key_cert_sign=ca, crl_sign=ca, **no_usage
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        for ext in extensions:
            b = b.add_extension(ext, critical=False)
        return b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(server_host))
    except ValueError:
        san = x509.DNSName(server_host)
    out = {"ca.pem": sign(None, ca_key, []), "ca.key": pem_key(ca_key)}
    server = [x509.SubjectAlternativeName([san]), x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])]
    leaves = [("server", "mqtt-server", server)]
    leaves += [(f"clients/{cn}", cn, [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])]) for cn in clients]
    for stem, cn, extensions in leaves:
        key = ec.generate_private_key(ec.SECP256R1())
        out[f"{stem}.pem"], out[f"{stem}.key"] = sign(cn, key, extensions), pem_key(key)
    return out


def _credentials(pki: dict[str, bytes] | None, cn: str, where: Path, mqtt: dict[str, Any]) -> str | None:
    """Write one client's credentials into ``where`` and add their keys to its ``[mqtt]``; the
    password (for the broker's password file) or None with TLS."""
    if pki is None:
        password = secrets.token_urlsafe(32)
        _write(where / "password", password + "\n", secret=True)
        mqtt.update(username=cn, password_file="password")
        return password
    _write(where / "ca.pem", pki["ca.pem"])
    _write(where / "client.pem", pki[f"clients/{cn}.pem"])
    _write(where / "client.key", pki[f"clients/{cn}.key"], secret=True)
    mqtt.update(tls_ca="ca.pem", tls_cert="client.pem", tls_key="client.key")
    return None


def write_broker_config(plan: BrokerPlan, out: Path) -> dict[str, Path]:
    """Write the broker's files and every client's credentials under ``out`` (which must be new
    or empty: credentials are never overwritten). Returns the main paths: ``conf``, ``acl``,
    ``fleet`` (the consumer's TOML), ``device:<id>`` (each scanner's ``[mqtt]`` TOML)."""
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} is not empty; give a new directory (credentials are never overwritten)")
    broker = out / "broker"
    broker_dir = plan.broker_dir or str(broker)
    data_dir = (plan.data_dir or str(out / "data")).rstrip("/")
    for name, d in (("--broker-dir", broker_dir), ("--data-dir", data_dir)):
        _require(os.path.isabs(d) and not re.search(r"\s", d), name, "must be an absolute path without spaces", d)
    pki = make_pki(plan.fleet, plan.host, (*plan.devices, plan.consumer)) if plan.tls else None
    base: dict[str, Any] = {"host": plan.host, "port": plan.listen_port, "fleet": plan.fleet}
    hashes: list[str] = []
    paths: dict[str, Path] = {}
    for device in plan.devices:
        mqtt = {**base, "device_id": device}
        password = _credentials(pki, device, out / "devices" / device, mqtt)
        hashes += [] if password is None else [f"{device}:{mosquitto_password_hash(password)}"]
        paths[f"device:{device}"] = _write(out / "devices" / device / "mqtt.toml", _toml({"mqtt": mqtt}))
    mqtt = dict(base)
    password = _credentials(pki, plan.consumer, out / "fleet", mqtt)
    hashes += [] if password is None else [f"{plan.consumer}:{mosquitto_password_hash(password)}"]
    paths["fleet"] = _write(out / "fleet" / "fleet.toml", _toml({"mqtt": mqtt, "fleet": {"client_id": plan.consumer}}))
    if pki is None:
        _write(broker / "passwd", "\n".join(hashes) + "\n", secret=True)
    else:
        _write(out / "ca" / "ca.key", pki["ca.key"], secret=True)  # signs new devices; keep it offline
        _write(out / "ca" / "ca.pem", pki["ca.pem"])
        _write(broker / "ca.pem", pki["ca.pem"])
        _write(broker / "server.pem", pki["server.pem"])
        _write(broker / "server.key", pki["server.key"], secret=True)
    paths["acl"] = _write(broker / "acl", acl_text(plan.fleet, plan.consumer))
    paths["conf"] = _write(broker / "mosquitto.conf", mosquitto_conf_text(plan, broker_dir, data_dir))
    if plan.data_dir is None:
        Path(data_dir).mkdir(mode=0o700)
    return paths


def add_parser(fsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``fleet broker-config``."""
    p = fsub.add_parser(
        "broker-config",
        help="write a Mosquitto config, ACL and per-device credentials that bind each client id to its identity",
    )
    p.add_argument("--fleet", required=True, help="fleet name (the topic level after scalpedge/v1/)")
    p.add_argument("--devices", required=True, help="comma-separated device ids (each device's username or CN)")
    p.add_argument("--out", required=True, help="directory to create (must be new or empty)")
    p.add_argument("--tls", action="store_true", help="a CA and client certificates instead of passwords")
    p.add_argument("--consumer", default="scalpedge-fleet", help="the fleet consumer's identity")
    p.add_argument("--host", default="localhost", help="the broker's name for clients (and its TLS certificate)")
    p.add_argument("--port", type=int, default=None, help="listener port (default: 8883 with --tls, else 1883)")
    p.add_argument("--bind", default="", help="listen on this address only (default: every interface)")
    p.add_argument("--broker-dir", default=None, help="where the broker files will be installed (default: OUT/broker)")
    p.add_argument("--data-dir", default=None, help="the broker's persistence directory (default: OUT/data)")
    p.set_defaults(func=run_broker_config)


def run_broker_config(args: argparse.Namespace) -> int:
    """The options are named as ``BrokerPlan``'s fields; ``--devices`` is split at commas."""
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(BrokerPlan)}
    options["devices"] = tuple(d.strip() for d in args.devices.split(",") if d.strip())
    plan = BrokerPlan(**options)
    paths = write_broker_config(plan, Path(args.out))
    print(f"broker: mosquitto -c {paths['conf']}")
    print(f"fleet consumer: scalpedge fleet listen --config {paths['fleet']}")
    print(
        f"devices: {len(plan.devices)} x devices/<id>/ (mqtt.toml = the scanner's [mqtt] section, with its credentials)"
    )
    return 0
