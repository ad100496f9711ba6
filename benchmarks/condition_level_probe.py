"""Which inputs should the condition grader's level head read? Chosen on a split of the synthetic
training set; the shipped choice is then scored once on ``data/cls/heldout`` with
``scalpedge eval synth-conditions``.

Reads a ``scalpedge train grader`` run's feature cache (``RUN/features_<W>x<H>.npz``: per
synthetic frame and view the grid means of the stride-32 features, ``pooled``, C32, and of the
stride-16 features, ``pooled16``, C16) and fits the product's level head
(``fit_level_head``: linear, inverse-frequency class weights) on 80% of the synthetic frames
(split by a seeded permutation of the frames; each frame is its own render) for each candidate:

- ``f32``: the grid mean of the stride-32 features (what the shipped level head reads);
- ``f32+f16``: with the stride-16 grid mean beside it;
- ``f32+f16+colour``: also the mean and standard deviation of each normalised input channel.

Prints and writes per candidate the 4-level macro-F1 per condition and their mean on the other
20% (``--seeds`` splits):

    python benchmarks/condition_level_probe.py --run runs/grader --synth data/cls/train \\
        --out benchmarks/reports/condition_level_probe.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from device.capture.imageio import read_frame
from device.contracts.constants import CONDITION_NAMES
from device.models.classifiers import prepare_condition_input
from server_train.training.classifier_data import load_synthetic
from server_train.training.condition_grader_train import GraderConfig, fit_level_head


def colour_stats(paths: list[Path], size: tuple[int, int]) -> np.ndarray:
    """N x 2 x 6: per frame (both views alike) the mean and SD of each normalised channel."""
    out = []
    for p in paths:
        x = prepare_condition_input(read_frame(p), size)[0]
        s = np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))])
        out.append(np.stack([s, s]))
    return np.stack(out).astype(np.float32)


def macro_f1(head: torch.nn.Linear, x: np.ndarray, levels: np.ndarray) -> dict[str, float]:
    with torch.no_grad():
        z = head(torch.from_numpy(x[:, 0].astype(np.float32))).view(len(x), len(CONDITION_NAMES), -1)
    pred = z.argmax(-1).numpy()
    per = {
        c: float(np.mean(f1_score(levels[:, i], pred[:, i], labels=[0, 1, 2, 3], average=None, zero_division=0)))
        for i, c in enumerate(CONDITION_NAMES)
    }
    return {**{c: round(v, 4) for c, v in per.items()}, "mean": round(float(np.mean(list(per.values()))), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--synth", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    final = args.run / "final.pt"
    cfg = GraderConfig(**torch.load(final, map_location="cpu", weights_only=False)["train_config"])
    size = (cfg.width, cfg.height)
    with np.load(args.run / f"features_{cfg.width}x{cfg.height}.npz") as d:
        f32, f16 = d["pooled"].astype(np.float32), d["pooled16"].astype(np.float32)
    synthetic = load_synthetic(args.synth)
    colour = colour_stats(synthetic.paths, size)
    candidates = {
        "f32": f32,
        "f32+f16": np.concatenate([f32, f16], -1),
        "f32+f16+colour": np.concatenate([f32, f16, colour], -1),
    }
    results: dict[str, list[dict[str, float]]] = {k: [] for k in candidates}
    n = len(synthetic.paths)
    for seed in range(args.seeds):
        perm = np.random.default_rng(seed).permutation(n)
        fit, held = perm[: int(0.8 * n)], perm[int(0.8 * n) :]
        for name, x in candidates.items():
            head = fit_level_head(x[fit], synthetic.levels[fit], dataclasses.replace(cfg, seed=seed))
            results[name].append(macro_f1(head, x[held], synthetic.levels[held]))
            print(seed, name, results[name][-1], flush=True)
    summary = {
        name: {
            "mean_macro_f1": round(float(np.mean([r["mean"] for r in rs])), 4),
            "sd": round(float(np.std([r["mean"] for r in rs])), 4),
            "per_split": rs,
        }
        for name, rs in results.items()
    }
    report = {
        "run": str(args.run),
        "synth": args.synth,
        "size": list(size),
        "splits": args.seeds,
        "candidates": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v["mean_macro_f1"] for k, v in summary.items()}))


if __name__ == "__main__":
    main()
