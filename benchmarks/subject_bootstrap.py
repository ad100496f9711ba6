"""Subject-level bootstrap of a counts report's errors: how much the held-out MAE figures would
move on another set of subjects of the same size.

    .venv/bin/python benchmarks/subject_bootstrap.py benchmarks/reports/follicle_counts_val.json \\
        --out benchmarks/reports/follicle_counts_val_bootstrap.json

Resamples the report's subjects with replacement (all frames of a drawn subject together),
``--draws`` times, and writes the 2.5 / 50 / 97.5 percentiles of the count MAE and the thin-ratio
MAE and of the count's Pearson r, and the share of draws within each floor (``--floor``: count
MAE, thin-ratio MAE; ``--r-floor``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", help="JSON of `scalpedge eval counts` (with per_frame)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--draws", type=int, default=5000)
    ap.add_argument("--floor", type=float, nargs=2, default=(1.6, 0.045), metavar=("COUNT_MAE", "THIN_MAE"))
    ap.add_argument("--r-floor", type=float, default=0.85, help="count Pearson r floor")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    frames = json.loads(Path(args.report).read_text())["per_frame"]
    subjects = sorted({f["subject"] for f in frames})
    rng = np.random.default_rng(args.seed)
    out: dict[str, object] = {"report": args.report, "subjects": len(subjects), "draws": args.draws, "seed": args.seed}
    for key, truth, pred, floor in (
        ("count_mae", "true_count", "pred_count", args.floor[0]),
        ("thin_ratio_mae", "true_thin_ratio", "pred_thin_ratio", args.floor[1]),
    ):
        rows = [f for f in frames if f[truth] is not None and f[pred] is not None]
        err = {s: np.array([abs(f[pred] - f[truth]) for f in rows if f["subject"] == s], float) for s in subjects}
        draws = []
        for _ in range(args.draws):
            pick = rng.choice(len(subjects), len(subjects))
            draws.append(float(np.concatenate([err[subjects[i]] for i in pick]).mean()))
        all_err = np.concatenate(list(err.values()))
        out[key] = {
            "value": float(all_err.mean()),
            "frames": int(len(all_err)),
            "percentiles_2.5_50_97.5": [float(v) for v in np.percentile(draws, [2.5, 50, 97.5])],
            "floor": floor,
            "share_of_draws_at_or_below_floor": float(np.mean(np.array(draws) <= floor)),
        }
    by_subject = {s: [(f["true_count"], f["pred_count"]) for f in frames if f["subject"] == s] for s in subjects}
    rs = []
    for _ in range(args.draws):
        pick = rng.choice(len(subjects), len(subjects))
        pairs = np.array([tp for i in pick for tp in by_subject[subjects[i]]], float)
        rs.append(float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]))
    out["pearson_r"] = {
        "percentiles_2.5_50_97.5": [float(v) for v in np.percentile(rs, [2.5, 50, 97.5])],
        "floor": args.r_floor,
        "share_of_draws_at_or_above_floor": float(np.mean(np.array(rs) >= args.r_floor)),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
