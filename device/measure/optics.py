"""The device's optical calibration profile: how many micrometres one frame pixel spans.

Written by ``scalpedge calibrate optics`` from a frame of a ruler or calibration slide and read
by the runtime to turn pixel thickness into micrometres. One JSON file per scanner; the
default location is ``$SCALPEDGE_HOME/calibration.json`` (``~/.config/scalpedge`` when unset).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from device.contracts.validation import validate

__all__ = ["OpticsProfile", "default_profile_path", "load_profile", "save_profile"]

SCHEMA = "scalpedge.optics/1"


def default_profile_path() -> Path:
    home = os.environ.get("SCALPEDGE_HOME")
    return (Path(home) if home else Path.home() / ".config" / "scalpedge") / "calibration.json"


@dataclass(frozen=True)
class OpticsProfile:
    """um_per_px: micrometres per pixel of a frame of frame_width x frame_height pixels;
    spacing_um / spacing_px: the ruler period it came from; created_utc, source: provenance."""

    um_per_px: float
    frame_width: int
    frame_height: int
    spacing_um: float
    spacing_px: float
    orientation_deg: float
    created_utc: str
    source: str

    def __post_init__(self) -> None:
        if not (self.um_per_px > 0 and self.frame_width > 0 and self.frame_height > 0):
            raise ValueError(f"invalid optics profile: {self}")

    def um_per_px_at(self, width: int) -> float:
        """Micrometres per pixel for a frame resized to ``width`` pixels wide."""
        return self.um_per_px * self.frame_width / width

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}


def save_profile(profile: OpticsProfile, path: str | Path | None = None) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves half a profile."""
    path = Path(path) if path else default_profile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(profile.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def load_profile(path: str | Path | None = None) -> OpticsProfile | None:
    """The profile at ``path`` (default location when None); None when no file exists there.
    Raises ValueError (``ContractError`` naming the field) for a file that exists but is not a
    valid profile (schema ``optics-1.schema.json``)."""
    path = Path(path) if path else default_profile_path()
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a valid optics profile: {exc}") from exc
    validate("optics", data, source=str(path))  # ContractError (a ValueError) naming the field
    data.pop("schema")
    return OpticsProfile(**data)
