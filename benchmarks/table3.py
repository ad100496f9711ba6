"""Table 3 analogue (issue 16): gather benchmarks/table3.sh's reports into one table.

    python benchmarks/table3.py benchmarks/reports/table3 --out benchmarks/reports/table3/table3.json

Per method (none, noise, augmix, unmasked, masked): per-level F1 per condition and the severe
F1 on the synthetic held-out set (``M_heldout.json``), presence F1 and macro-F1 on real frames
(``M_valid.json``). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METHODS = ("none", "noise", "augmix", "unmasked", "masked")
CONDITIONS = ("dandruff", "sebum", "erythema")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", help="folder with M_heldout.json and M_valid.json per method")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    root = Path(args.reports)
    rows = []
    for m in METHODS:
        held, valid = root / f"{m}_heldout.json", root / f"{m}_valid.json"
        if not (held.is_file() and valid.is_file()):
            continue
        h, v = json.loads(held.read_text()), json.loads(valid.read_text())
        severe = {c: h["severe_f1"][c] for c in CONDITIONS}
        rows.append(
            {
                "method": m,
                "synthetic_macro_f1": h["macro_f1"],
                "severe_f1": severe,
                "severe_f1_mean": round(sum(severe.values()) / len(severe), 4),
                "level_f1": {c: h["conditions"][c]["f1"] for c in CONDITIONS},
                "real_presence_macro_f1": v["macro_f1"],
                "real_presence_f1": v["f1"],
            }
        )
    Path(args.out).write_text(json.dumps({"rows": rows}, indent=2))
    head = "| method | severe F1 dandruff / sebum / erythema (mean) | synthetic 4-level macro-F1 | real presence F1 |"
    print(head)
    print("|---|---|---|---|")
    for r in rows:
        s = " / ".join(f"{r['severe_f1'][c]:.3f}" for c in CONDITIONS)
        scores = f"{r['synthetic_macro_f1']:.3f} | {r['real_presence_macro_f1']:.3f}"
        print(f"| {r['method']} | {s} ({r['severe_f1_mean']:.3f}) | {scores} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
