"""Do the INT8 variants count like FP32? Frame by frame, from `scalpedge eval counts` reports.

The first report is the reference (FP32); for each other report on the same frames: the mean and
largest absolute difference of the hair count and of the thin ratio, per frame. The acceptance:
mean count difference <= 0.3 hair and mean thin-ratio difference <= 0.01.

    .venv/bin/python benchmarks/count_agreement.py FP32.json INT8_A.json [INT8_B.json ...] --out R.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def agreement(reference: dict, other: dict) -> dict:
    """Per-frame differences of ``other`` to ``reference`` (both ``evaluate_counts`` reports)."""
    ref = {r["stem"]: r for r in reference["per_frame"]}
    rows = [r for r in other["per_frame"] if r["stem"] in ref]
    if len(rows) != len(ref):
        raise ValueError(f"{other['model']}: {len(rows)} of the reference's {len(ref)} frames")
    count = np.array([abs(r["pred_count"] - ref[r["stem"]]["pred_count"]) for r in rows], float)
    thin = np.array(
        [
            abs(r["pred_thin_ratio"] - ref[r["stem"]]["pred_thin_ratio"])
            for r in rows
            if r["pred_thin_ratio"] is not None and ref[r["stem"]]["pred_thin_ratio"] is not None
        ],
        float,
    )
    return {
        "model": other["model"],
        "frames": len(rows),
        "count_mean_abs_diff": float(count.mean()),
        "count_max_abs_diff": float(count.max()),
        "thin_ratio_mean_abs_diff": float(thin.mean()) if len(thin) else None,
        "thin_ratio_max_abs_diff": float(thin.max()) if len(thin) else None,
        "count_mae": other["count_mae"],
        "pearson_r": other["pearson_r"],
        "thin_ratio_mae": other["thin_ratio_mae"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reference", help="FP32 eval counts report")
    p.add_argument("others", nargs="+", help="eval counts reports of the variants")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    reference = json.loads(Path(args.reference).read_text())
    report = {
        "reference": reference["model"],
        "reference_count_mae": reference["count_mae"],
        "variants": [agreement(reference, json.loads(Path(o).read_text())) for o in args.others],
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
