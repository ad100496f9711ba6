"""How often could a translation drawn at the diffusion model's resolution reach "severe"?

DiffuseIT-M here draws the frame at the model's square resolution s (``cpu`` preset: 64, ``gpu``:
120) and ``Translator._full_size`` upsamples it and adds back the source's detail above s. This
script grades the best such output there can be: a real severe rendering of the target condition
below s, plus a non-severe source's detail above s,

    composite = up(down(severe, s)) + (source - up(down(source, s)))

for pairs of synthetic held-out frames (the target condition severe in one, good or mild in the
other), with a grader (default: the fine-tuned severity grader of bundle 2026.12.04.1426, which
judged the Table 3 runs; severe F1 0.94 / 0.59 / 0.65 on these frames). The share graded severe
is an upper bound on the target hit rate of any model at that resolution with this upsampling;
``full`` (the severe frame itself) is the grader's own recall.

    git show 068fdf7^:device/assets/default/severity.onnx > runs/severity_finetuned.onnx
    python benchmarks/translation_scale_bound.py --data data/cls/heldout \\
        --grader runs/severity_finetuned.onnx --out benchmarks/reports/translation_scale_bound.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from device.capture.imageio import read_frame
from device.contracts.constants import CONDITION_NAMES, LEVEL_NAMES
from device.models.classifiers import SeverityClassifier
from server_train.diffusion.translate import down_up
from server_train.training.classifier_data import load_synthetic

SEVERE = len(LEVEL_NAMES) - 1


def composite(severe: np.ndarray, source: np.ndarray, s: int | None) -> np.ndarray:
    """The severe frame below s plus the source's detail above s (``None``: the severe frame)."""
    if s is None:
        return severe
    out = down_up(severe, s) + source.astype(np.float32) - down_up(source, s)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a `scalpedge synth --conditions` set (held out)")
    ap.add_argument("--grader", required=True, help="severity ONNX that judges the level")
    ap.add_argument("--pairs", type=int, default=40, help="pairs per condition")
    ap.add_argument("--sizes", default="48,64,96,120,240", help="model resolutions to bound")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    labels = load_synthetic(a.data)
    grade = SeverityClassifier.from_onnx(a.grader)
    sizes: list[int | None] = [int(s) for s in a.sizes.split(",")] + [None]
    rng = np.random.default_rng(a.seed)
    report: dict[str, object] = {"data": a.data, "grader": a.grader, "pairs": a.pairs, "hit_rate": {}}
    for c, name in enumerate(CONDITION_NAMES):
        severe = np.flatnonzero(labels.levels[:, c] == SEVERE)
        mild = np.flatnonzero(labels.levels[:, c] <= 1)
        n = min(a.pairs, len(severe))
        pairs = zip(rng.choice(severe, n, replace=False), rng.choice(mild, n, replace=False), strict=True)
        hits = {str(s or "full"): 0 for s in sizes}
        source_hits = 0
        for i, j in pairs:
            sev, src = read_frame(labels.paths[i]), read_frame(labels.paths[j])
            src = cv2.resize(src, (sev.shape[1], sev.shape[0]), interpolation=cv2.INTER_AREA)
            source_hits += grade.predict(src).levels[name] == LEVEL_NAMES[SEVERE]
            for s in sizes:
                hits[str(s or "full")] += grade.predict(composite(sev, src, s)).levels[name] == LEVEL_NAMES[SEVERE]
        rates = {k: round(v / n, 3) for k, v in hits.items()}
        report["hit_rate"][name] = {**rates, "source": round(source_hits / n, 3), "pairs": n}  # type: ignore[index]
        print(name, report["hit_rate"][name], flush=True)  # type: ignore[index]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
