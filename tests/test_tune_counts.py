"""Count tuning on synthetic data: with perfect centre lines, counting strands is near exact."""

from pathlib import Path

import cv2
import numpy as np

from device.models.segmentation import SegOutput
from server_train.evaluation.tune_counts import tune_line_counts
from server_train.synth import SynthConfig, write_dataset


class _OracleLines:
    """Returns the data set's own mask and centre-line map for each frame (found by pixels)."""

    name = "oracle"

    def __init__(self, root: Path) -> None:
        self.frames = {}
        for p in sorted((root / "images").glob("*.png")):
            image = cv2.imread(str(p))
            mask = cv2.imread(str(root / "masks" / p.name), 0) / 255.0
            lines = cv2.imread(str(root / "centrelines" / p.name), 0) / 255.0
            self.frames[image.tobytes()] = (mask.astype(np.float32), lines.astype(np.float32))

    def segment(self, frame_bgr: np.ndarray) -> SegOutput:
        prob, lines = self.frames[frame_bgr.tobytes()]
        return SegOutput(prob=prob, lines=lines)


def test_perfect_centre_lines_count_trimmed_hair(tmp_path: Path) -> None:
    write_dataset(tmp_path, n=4, seed=8, config=SynthConfig(mode="trimmed"), progress=False)
    report = tune_line_counts(
        _OracleLines(tmp_path), tmp_path, thresholds=(0.5,), min_lengths=(6.0, 200.0), progress=False
    )
    assert report["frames"] == 4 and len(report["settings"]) == 2
    best = report["best"]
    assert best["min_strand_px"] == 6.0
    # Touching stubs keep separate centre lines; only a few overlapping ones merge.
    assert best["count_mae"] <= 4.0
    worst = max(report["settings"], key=lambda s: s["count_mae"])
    assert worst["min_strand_px"] == 200.0 and worst["count_mae"] > 10
