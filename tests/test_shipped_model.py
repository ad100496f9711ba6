"""The shipped default bundle: it verifies with the shipped key, its manifest is honest, every
variant meant for TensorRT passes the TensorRT check, and every variant segments synthetic frames
and counts hairs like FP32 (on the hardware it was quantized for: see ``_saturates_here``)."""

import cv2
import numpy as np
import pytest

from calibration.gate import qdq_reference_backend
from calibration.quantize import u8s8_saturates
from calibration.trt_support import check_tensorrt_support
from device.assets import default_bundle_path, sample_frames
from device.contracts.constants import SEG_INPUT
from device.models.backends import OrtBackend
from device.models.bundle import Bundle
from device.models.onnx_segmenter import ModelSegmenter
from scoring.seg_metrics import confusion, summarise
from server_train.synth import SynthConfig, render

BUNDLE = Bundle.open(default_bundle_path())
SEGMENTERS = BUNDLE.variants("segmenter")


def test_manifest_matches_the_files_and_records_provenance() -> None:
    entry = BUNDLE.model("segmenter")
    prov = entry["provenance"]
    for key in ("git_commit", "command", "seed", "lineage"):
        assert prov[key] not in (None, "", [])
    assert entry["gflop"] <= 6.0
    assert BUNDLE.manifest["provenance"]["command"].startswith("scalpedge bundle build")
    for v in SEGMENTERS:
        assert v.inputs == {SEG_INPUT: {"shape": [1, 3, 480, 640], "dtype": "float32"}}
    assert {v.precision for v in SEGMENTERS} >= {"fp32"}


@pytest.mark.parametrize("variant", SEGMENTERS, ids=lambda v: v.path.name)
def test_variants_for_tensorrt_pass_the_tensorrt_check(variant) -> None:
    findings = check_tensorrt_support(variant.path)
    assert (findings == []) or "tensorrt" not in variant.targets, findings[:3]


@pytest.mark.parametrize("variant", SEGMENTERS, ids=lambda v: v.path.name)
def test_every_variant_segments_synthetic_frames(variant) -> None:
    seg = ModelSegmenter(OrtBackend(variant.path, threads=2))
    confs = []
    for seed in range(4):
        sample = render(90_000 + seed, SynthConfig(mode="scalp" if seed % 2 else "trimmed"))
        confs.append(confusion(seg.segment(sample.image).mask(), sample.mask.astype(bool)))
    assert summarise(confs)["dice"] >= 0.85


@pytest.fixture(scope="module")
def counting_frames() -> tuple[list, np.ndarray]:
    """Six trimmed (phototrichogram) frames and the FP32 variant's hair counts on them."""
    samples = [render(91_000 + s, SynthConfig(mode="trimmed")) for s in range(6)]
    fp32 = next(v for v in SEGMENTERS if v.precision == "fp32")
    seg = ModelSegmenter(OrtBackend(fp32.path, threads=2))
    return samples, np.array([seg.segment(s.image).hairs for s in samples], float)


def test_fp32_counts_follow_the_generators_truth(counting_frames) -> None:
    # The shipped count: the summed hair density, learnt from real boxes that leave out most hairs
    # the frame's edge cuts, so on synthetic frames (whose truth counts every strand) it counts
    # fewer, and follows the truth frame by frame (0.69x and r 0.86 when the bundle was made).
    samples, fp32 = counting_frames
    truth = np.array([s.count for s in samples], float)
    assert 0.5 * truth.sum() <= fp32.sum() <= 1.05 * truth.sum()
    assert np.corrcoef(fp32, truth)[0, 1] >= 0.8


def _saturates_here(variant) -> bool:
    """A CPU variant quantized with full-range (8-bit) u8 x s8 weights, on a CPU whose ONNX
    Runtime kernels saturate them (x86 without VNNI): it computes something else there."""
    recipe = (variant.quantization or {}).get("recipe", {})
    cpu_u8s8 = "onnxruntime-cpu" in variant.targets and recipe.get("activations") == "uint8"
    return cpu_u8s8 and not recipe.get("reduce_range") and u8s8_saturates()


@pytest.mark.parametrize("variant", SEGMENTERS, ids=lambda v: v.path.name)
def test_every_variant_counts_like_fp32(variant, counting_frames, request) -> None:
    # INT8 variants count like FP32 (their density conv stays FP32 because a frame sums it). A
    # TensorRT-only variant is run as TensorRT computes it (its Q/DQ graph as written).
    if _saturates_here(variant):
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="8-bit u8 x s8 weights saturate ONNX Runtime's kernels on this CPU (x86 without VNNI); "
                "re-quantize with the ort-cpu recipe (7-bit weights) and re-sign the bundle",
            )
        )
    samples, fp32 = counting_frames
    emulate = variant.precision == "int8" and "onnxruntime-cpu" not in variant.targets
    backend = qdq_reference_backend(variant.path, threads=2) if emulate else OrtBackend(variant.path, threads=2)
    seg = ModelSegmenter(backend)
    counts = np.array([seg.segment(s.image).hairs for s in samples], float)
    assert (np.abs(counts - fp32) <= np.maximum(1.0, 0.05 * fp32)).all(), counts - fp32  # 5% or one hair


def test_sample_frames_ship_with_the_package() -> None:
    frames = sample_frames()
    assert len(frames) >= 2
    seg = ModelSegmenter(OrtBackend(BUNDLE.select("segmenter").path, threads=2))
    probs = [seg.segment(cv2.imread(str(f))).prob for f in frames]
    assert all(p.shape == (480, 640) and np.isfinite(p).all() for p in probs)


def test_cpu_sessions_do_not_spin_unless_asked() -> None:
    """Several sessions share two cores in one diagnosis: idle workers must not busy-wait (the
    measured cost of spinning is in ``OrtBackend``'s docstring)."""
    path = default_bundle_path() / "segmenter.onnx"
    quiet = OrtBackend(path, threads=1).session.get_session_options()
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = OrtBackend(path, threads=1, spin=True).session.get_session_options()
    with pytest.raises(Exception, match="allow_spinning"):  # not set: ONNX Runtime's default (spin)
        spinning.get_session_config_entry("session.intra_op.allow_spinning")
