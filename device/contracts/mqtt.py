"""Shared paho client construction for the device link and the fleet consumer."""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device.contracts.config import MqttConfig

__all__ = ["make_client"]


def make_client(cfg: MqttConfig, client_id: str) -> mqtt.Client:
    """A paho client (MQTT 5, callback API v2) with credentials and TLS from ``cfg``."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.connect_timeout = cfg.connect_timeout_s
    password = cfg.resolved_password()
    if cfg.username:
        client.username_pw_set(cfg.username, password)
    if cfg.tls_ca:
        client.tls_set(
            ca_certs=cfg.tls_ca,
            certfile=cfg.tls_cert or None,
            keyfile=cfg.tls_key or None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        client.tls_insecure_set(cfg.tls_insecure)
    return client
