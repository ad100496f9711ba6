"""The shipped default model: it loads, its manifest is honest, and it segments synthetic frames."""

import json

import numpy as np

from device.assets import default_manifest_path, default_model_path, sample_frames
from device.constants import SEG_INPUT
from device.onnx_segmenter import ModelSegmenter
from device.seg_metrics import confusion, summarise
from export.release import sha256_file
from server_train.synth import SynthConfig, render


def test_manifest_matches_the_file_and_records_provenance() -> None:
    manifest = json.loads(default_manifest_path().read_text())
    assert manifest["sha256"] == sha256_file(default_model_path())
    assert manifest["inputs"] == {SEG_INPUT: [1, 3, 480, 640]}
    prov = manifest["provenance"]
    for key in ("git_commit", "command", "seed", "lineage"):
        assert prov[key] not in (None, "", [])
    assert manifest["gflop"] <= 6.0


def test_shipped_student_segments_synthetic_frames() -> None:
    seg = ModelSegmenter.from_onnx(default_model_path(), threads=2)
    confs = []
    for seed in range(4):
        sample = render(90_000 + seed, SynthConfig(mode="scalp" if seed % 2 else "trimmed"))
        out = seg.segment(sample.image)
        confs.append(confusion(out.mask(), sample.mask.astype(bool)))
    assert summarise(confs)["dice"] >= 0.85


def test_sample_frames_ship_with_the_package() -> None:
    frames = sample_frames()
    assert len(frames) >= 2
    seg = ModelSegmenter.from_onnx(default_model_path(), threads=2)
    import cv2

    probs = [seg.segment(cv2.imread(str(f))).prob for f in frames]
    assert all(p.shape == (480, 640) and np.isfinite(p).all() for p in probs)
