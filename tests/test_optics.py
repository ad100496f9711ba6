"""Optical calibration recovers a ruler's line period to well under 1 % and refuses non-rulers."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.optics import line_period, profile_from_frame
from device.cli import main
from device.measure.optics import load_profile, save_profile


def ruler(period_px: float, angle_deg: float, h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    """Dark 3 px lines every ``period_px`` on a bright slide, blurred and noisy (BGR uint8)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    theta = np.radians(angle_deg)
    t = xs * np.cos(theta) + ys * np.sin(theta)
    dist = np.abs(((t / period_px) + 0.5) % 1.0 - 0.5) * period_px
    img = np.where(dist < 1.5, 40.0, 200.0)
    img = cv2.GaussianBlur(img, (0, 0), 1.5) + np.random.default_rng(seed).normal(0, 8, img.shape)
    gray = np.clip(img, 0, 255).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


@pytest.mark.parametrize(("period", "angle"), [(35.7, 0.0), (35.7, 7.0), (12.3, 93.0), (61.0, 45.0)])
def test_period_and_orientation_are_recovered(period: float, angle: float) -> None:
    found = line_period(ruler(period, angle))
    assert found.period_px == pytest.approx(period, rel=0.002)
    assert min(abs(found.orientation_deg - angle), 180 - abs(found.orientation_deg - angle)) < 1.0


def test_noise_and_tiny_frames_are_refused() -> None:
    noise = np.random.default_rng(0).integers(0, 255, (480, 640), dtype=np.uint8)
    with pytest.raises(ValueError, match="no clear periodic line pattern"):
        line_period(noise)
    with pytest.raises(ValueError, match="at least 32x32"):
        line_period(np.zeros((10, 10), np.uint8))


def test_profile_round_trip_and_cli(tmp_path: Path) -> None:
    # A 100 um stage-micrometer tick every 35.7 px at 1280x960 -> 2.801 um/px (5.602 at 640 wide).
    frame = cv2.resize(ruler(35.7, 2.0), (1280, 960), interpolation=cv2.INTER_LINEAR)
    frame_path = tmp_path / "ruler.png"
    cv2.imwrite(str(frame_path), frame)
    profile_path = tmp_path / "calibration.json"
    assert main(["calibrate", "optics", str(frame_path), "--spacing-um", "50", "--profile", str(profile_path)]) == 0
    profile = load_profile(profile_path)
    assert profile is not None and profile.frame_width == 1280 and profile.spacing_px == pytest.approx(71.4, rel=0.002)
    assert profile.um_per_px == pytest.approx(50 / 71.4, rel=0.002)
    assert profile.um_per_px_at(640) == pytest.approx(2 * 50 / 71.4, rel=0.002)
    assert load_profile(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text('{"schema": "other"}')
    with pytest.raises(ValueError, match=r"optics .*bad.json: 'um_per_px' is a required property"):
        load_profile(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="spacing_um must be positive"):
        profile_from_frame(frame, spacing_um=0)
    again = save_profile(profile, tmp_path / "sub" / "c.json")
    assert load_profile(again) == profile
