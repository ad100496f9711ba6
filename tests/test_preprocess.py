"""The one definition of a network input (``device.contracts.preprocess``): per-channel
normalised RGB, the same for whole frames and per-hair patches, whatever way it is computed."""

from __future__ import annotations

import numpy as np
import pytest

from device.contracts.constants import CLS_PIXEL_MEAN, CLS_PIXEL_STD, MODEL_UM_PER_PX, PIXEL_MEAN, PIXEL_STD
from device.contracts.preprocess import (
    hair_patches,
    photo_input,
    to_classifier_layout,
    to_network_input,
    to_tensor_layout,
)
from device.models.classifiers import prepare_condition_input


def reference(bgr: np.ndarray, mean: tuple[float, ...] = PIXEL_MEAN, std: tuple[float, ...] = PIXEL_STD) -> np.ndarray:
    """(x / 255 - mean) / std of the RGB channels, in float64, channels first."""
    rgb = bgr[..., ::-1].astype(np.float64) / 255.0
    out = (rgb - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)
    return np.moveaxis(out, -1, -3)


def test_a_frame_becomes_normalised_rgb_channels_first() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    x = to_tensor_layout(frame)
    assert x.shape == (3, 48, 64) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x, reference(frame), atol=2e-6)
    # a view (a crop of a larger frame, reversed strides) is read as the pixels it shows
    big = np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    view = big[5:53, 80:16:-1]
    np.testing.assert_allclose(to_tensor_layout(view), reference(np.ascontiguousarray(view)), atol=2e-6)
    assert to_network_input(frame, 48, 64).shape == (1, 3, 48, 64)


def test_classifier_inputs_take_the_classifiers_normalisation() -> None:
    # the ImageNet-trunk classifiers (condition grader, disease, hair photo) share one
    # normalisation, not the segmenters'
    frame = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    x = to_classifier_layout(frame[:, ::-1])  # a view with reversed strides
    assert x.shape == (1, 3, 48, 64) and x.dtype == np.float32 and x.flags.c_contiguous
    expected = reference(np.ascontiguousarray(frame[:, ::-1]), CLS_PIXEL_MEAN, CLS_PIXEL_STD)[None]
    np.testing.assert_allclose(x, expected, atol=2e-6)
    assert not np.allclose(x, reference(np.ascontiguousarray(frame[:, ::-1]))[None], atol=1e-2)
    np.testing.assert_allclose(prepare_condition_input(frame, (64, 48)), to_classifier_layout(frame), atol=0)
    square = frame[:48, :48]  # a photo already at the side asked for is only normalised
    np.testing.assert_allclose(
        photo_input(square, side=48), reference(square, CLS_PIXEL_MEAN, CLS_PIXEL_STD)[None], atol=2e-6
    )
    with pytest.raises(ValueError, match="HxWx3"):
        to_classifier_layout(np.zeros((48, 64), np.uint8))


def test_hair_patches_are_normalised_like_frames() -> None:
    frame = np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    points = np.array([[40.0, 50.0], [100.0, 70.0]])
    patches = hair_patches(frame, points, MODEL_UM_PER_PX, size=16)  # the model's own scale: plain crops
    assert patches.shape == (2, 3, 16, 16) and patches.dtype == np.float32
    crop = frame[42:58, 32:48]  # 16 px centred on (40, 50)
    np.testing.assert_allclose(patches[0], reference(crop), atol=2e-6)


def test_not_a_colour_image_is_refused() -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        to_tensor_layout(np.zeros((48, 64), np.uint8))
    with pytest.raises(ValueError, match="HxWx3"):
        to_tensor_layout(np.zeros((48, 64, 4), np.uint8))
