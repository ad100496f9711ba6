"""Small, dependency-free building blocks for links that fail and come back (the lowest layer:
the serial bridge, the camera sources and the MQTT link all use it)."""

from resilience.backoff import Backoff

__all__ = ["Backoff"]
