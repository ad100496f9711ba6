"""Table 3 analogue (issue 16): gather benchmarks/table3.sh's reports into one table.

    python benchmarks/table3.py benchmarks/reports/table3 --out benchmarks/reports/table3/table3.json
    python benchmarks/table3.py benchmarks/reports/table3 benchmarks/reports/table3/seed1 ... --out T.json

Per method (none, noise, augmix, unmasked, masked; masked_severe: ``augment --balance
severe``; masked_accepted / unmasked_accepted: that with ``--accept``): per-level F1 per
condition and the severe F1 on the synthetic held-out set
(``M_heldout.json``), presence F1 and macro-F1 on real frames (``M_valid.json``); with one
folder per training seed, also the mean and SD across seeds.
Prints Markdown tables.

The severe F1 comes with a 95% bootstrap interval over the held-out frames: each condition's
4x4 confusion matrix holds every frame's (true, predicted) pair, so resampling frames is a
multinomial draw over its cells (``--boot`` draws, seeded). It measures test-set sampling noise
only (not training seed noise).

Seeds are paired: a folder named ``seedN`` holds seed N (any other: seed 0), and the graders of
one seed share everything but the added frames. ``--compare M`` (repeatable) reports, for method
M against every other method, the mean paired difference of the severe F1 over the seeds both
have, its 95% t interval and how many seeds M wins.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from device.contracts.constants import CONDITION_NAMES, LEVEL_NAMES

METHODS = ("none", "noise", "augmix", "unmasked", "masked", "masked_severe", "unmasked_accepted", "masked_accepted")
CONDITIONS = CONDITION_NAMES
SEVERE = LEVEL_NAMES.index("severe")  # row / column of the severe level in the reports' confusion matrices


def severe_f1_interval(confusion: list[list[int]], draws: int, seed: int) -> tuple[float, float]:
    """95% bootstrap interval of the severe-level F1 from a (4, 4) true x predicted count matrix."""
    counts = np.asarray(confusion, dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        raise ValueError("empty confusion matrix")
    rng = np.random.default_rng(seed)
    samples = rng.multinomial(n, counts.ravel() / n, size=draws).reshape(draws, *counts.shape)
    tp = samples[:, SEVERE, SEVERE]
    fn = samples[:, SEVERE, :].sum(axis=1) - tp
    fp = samples[:, :, SEVERE].sum(axis=1) - tp
    den = 2 * tp + fn + fp
    f1 = np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)
    lo, hi = np.percentile(f1, [2.5, 97.5])
    return round(float(lo), 4), round(float(hi), 4)


def folder_seed(root: Path) -> int:
    """Training seed of a report folder: N for ``seedN`` (table3.sh's layout), else 0."""
    m = re.fullmatch(r"seed(\d+)", root.name)
    return int(m.group(1)) if m else 0


def paired(rows: list[dict[str, Any]], method: str, other: str) -> dict[str, Any] | None:
    """Severe F1 of ``method`` minus ``other`` on the seeds both have: per condition and mean,
    each as mean difference, 95% t interval (None with one seed) and seeds won. None: no common seed.
    Two rows of one method with the same seed (folders of two runs mixed) are refused."""

    def by_seed(m: str) -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        for r in rows:
            if r["method"] == m:
                if r["seed"] in found:
                    raise ValueError(f"{m}: seed {r['seed']} in both {found[r['seed']]['reports']} and {r['reports']}")
                found[r["seed"]] = r
        return found

    mine, theirs = by_seed(method), by_seed(other)
    seeds = sorted(mine.keys() & theirs.keys())
    if not seeds:
        return None

    def diff(values: list[float]) -> dict[str, Any]:
        a = np.asarray(values, np.float64)
        ci = None
        if len(a) > 1:
            low, high = stats.ttest_1samp(a, 0.0).confidence_interval(0.95)
            ci = [round(float(low), 4), round(float(high), 4)]
        return {"mean": round(float(a.mean()), 4), "ci95": ci, "wins": int((a > 0).sum())}

    out = {c: diff([mine[s]["severe_f1"][c] - theirs[s]["severe_f1"][c] for s in seeds]) for c in CONDITIONS}
    out["mean"] = diff([mine[s]["severe_f1_mean"] - theirs[s]["severe_f1_mean"] for s in seeds])
    return {"method": method, "against": other, "seeds": seeds, "severe_f1_difference": out}


def difference_cell(x: dict[str, Any]) -> str:
    """One paired difference as Markdown: mean [t interval] (seeds won)."""
    ci = f" [{x['ci95'][0]:+.3f}, {x['ci95'][1]:+.3f}]" if x["ci95"] else ""
    return f"{x['mean']:+.3f}{ci} ({x['wins']})"


def method_row(root: Path, method: str, draws: int, seed: int) -> dict[str, Any] | None:
    """One method's scores from one report folder (None when its two reports are not there)."""
    held, valid = root / f"{method}_heldout.json", root / f"{method}_valid.json"
    if not (held.is_file() and valid.is_file()):
        return None
    h, v = json.loads(held.read_text()), json.loads(valid.read_text())
    severe = {c: h["severe_f1"][c] for c in CONDITIONS}
    return {
        "method": method,
        "reports": str(root),
        "seed": folder_seed(root),
        "synthetic_macro_f1": h["macro_f1"],
        "severe_f1": severe,
        "severe_f1_mean": round(sum(severe.values()) / len(severe), 4),
        "severe_f1_ci95": {c: severe_f1_interval(h["conditions"][c]["confusion"], draws, seed) for c in CONDITIONS},
        "level_f1": {c: h["conditions"][c]["f1"] for c in CONDITIONS},
        "real_presence_macro_f1": v["macro_f1"],
        "real_presence_f1": v["f1"],
    }


def across_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows of one method from several training seeds -> mean and sample SD of each score."""

    def stat(values: list[float]) -> dict[str, float]:
        a = np.asarray(values, np.float64)
        sd = float(a.std(ddof=1)) if len(a) > 1 else 0.0
        return {"mean": round(float(a.mean()), 4), "sd": round(sd, 4)}

    return {
        "method": runs[0]["method"],
        "seeds": len(runs),
        "synthetic_macro_f1": stat([r["synthetic_macro_f1"] for r in runs]),
        "severe_f1": {c: stat([r["severe_f1"][c] for r in runs]) for c in CONDITIONS},
        "severe_f1_mean": stat([r["severe_f1_mean"] for r in runs]),
        "real_presence_macro_f1": stat([r["real_presence_macro_f1"] for r in runs]),
        "real_presence_f1": {c: stat([r["real_presence_f1"][c] for r in runs]) for c in runs[0]["real_presence_f1"]},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", help="folders with M_heldout.json and M_valid.json per method (one per seed)")
    p.add_argument("--out", required=True)
    p.add_argument("--boot", type=int, default=2000, help="bootstrap draws for the severe-F1 interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", action="append", default=[], choices=METHODS, help="paired seed differences of M")
    args = p.parse_args()
    rows = [r for root in args.reports for m in METHODS if (r := method_row(Path(root), m, args.boot, args.seed))]
    if not rows:
        raise SystemExit(f"no method reports in {args.reports}")
    by_method = {m: [r for r in rows if r["method"] == m] for m in METHODS}
    summary = [across_seeds(runs) for runs in by_method.values() if runs]
    comparisons = [d for m in args.compare for o in METHODS if o != m and (d := paired(rows, m, o))]
    Path(args.out).write_text(json.dumps({"rows": rows, "across_seeds": summary, "paired": comparisons}, indent=2))
    print("| method | reports | severe F1 [95% CI] d / s / e (mean) | synthetic macro-F1 | real presence |")
    print("|---|---|---|---|---|")
    for r in rows:
        s = " / ".join(
            f"{r['severe_f1'][c]:.3f} [{r['severe_f1_ci95'][c][0]:.2f}, {r['severe_f1_ci95'][c][1]:.2f}]"
            for c in CONDITIONS
        )
        scores = f"{r['synthetic_macro_f1']:.3f} | {r['real_presence_macro_f1']:.3f}"
        print(f"| {r['method']} | {r['reports']} | {s} ({r['severe_f1_mean']:.3f}) | {scores} |")
    print("\n| method | seeds | severe F1 mean +- SD dandruff / sebum / erythema (mean) | real presence macro-F1 |")
    print("|---|---|---|---|")
    for a in summary:
        s = " / ".join(f"{a['severe_f1'][c]['mean']:.3f} +- {a['severe_f1'][c]['sd']:.3f}" for c in CONDITIONS)
        m, pr = a["severe_f1_mean"], a["real_presence_macro_f1"]
        means = f"({m['mean']:.3f} +- {m['sd']:.3f}) | {pr['mean']:.3f} +- {pr['sd']:.3f}"
        print(f"| {a['method']} | {a['seeds']} | {s} {means} |")
    if comparisons:
        print("\n| method | against | seeds | severe F1 difference [95% t] (seeds won) d / s / e | mean |")
        print("|---|---|---|---|---|")
    for d in comparisons:
        f = d["severe_f1_difference"]
        s = " / ".join(difference_cell(f[c]) for c in CONDITIONS)
        print(f"| {d['method']} | {d['against']} | {len(d['seeds'])} | {s} | {difference_cell(f['mean'])} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
