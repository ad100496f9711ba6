"""The shipped default bundle: it verifies with the shipped key, its manifest is honest, every
variant meant for TensorRT passes the TensorRT check, and every variant segments synthetic frames."""

import cv2
import numpy as np
import pytest

from calibration.trt_support import check_tensorrt_support
from device.assets import default_bundle_path, sample_frames
from device.contracts.constants import SEG_INPUT
from device.models.backends import OrtBackend
from device.models.bundle import Bundle, sha256_file
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
        assert sha256_file(v.path) == v.sha256
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


def test_every_variant_counts_hairs_from_strand_ends() -> None:
    # The shipped count: half the summed strand-end density. It follows the generator's truth
    # on trimmed (phototrichogram) frames, and INT8 variants count like FP32 (their end-density
    # conv stays FP32 because a frame sums it).
    samples = [render(91_000 + s, SynthConfig(mode="trimmed")) for s in range(6)]
    truth = np.array([s.count for s in samples], float)
    counts = {}
    for v in SEGMENTERS:
        seg = ModelSegmenter(OrtBackend(v.path, threads=2))
        counts[v.precision + v.path.name] = np.array([seg.segment(s.image).hairs for s in samples], float)
    fp32 = next(c for name, c in counts.items() if name.startswith("fp32"))
    assert abs(fp32.sum() - truth.sum()) <= 0.3 * truth.sum()
    assert np.corrcoef(fp32, truth)[0, 1] >= 0.8
    for name, c in counts.items():  # within 5% (or one hair) of FP32 on every frame
        assert (np.abs(c - fp32) <= np.maximum(1.0, 0.05 * fp32)).all(), name


def test_sample_frames_ship_with_the_package() -> None:
    frames = sample_frames()
    assert len(frames) >= 2
    seg = ModelSegmenter(OrtBackend(BUNDLE.select("segmenter").path, threads=2))
    probs = [seg.segment(cv2.imread(str(f))).prob for f in frames]
    assert all(p.shape == (480, 640) and np.isfinite(p).all() for p in probs)
