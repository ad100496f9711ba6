"""Do the generated frames of an augmented set look like the level they are labelled with?

``scalpedge augment`` labels a translated frame with its target levels. For every generated frame
of one or more sets (``labels.jsonl`` rows with ``generated``), this grades the frame with a
condition grader and reports, per condition a translation raised (label above its source's), the
share graded at the labelled level: the label agreement of the added frames. Use a grader that
neither guided nor accepted the translations to check an ``--accept`` set independently (e.g. a
Table 3 grader trained without translations: ``runs/table3/none-s1/severity.onnx``).

    python benchmarks/augment_label_agreement.py --sets runs/table3_acc/sets/masked_accepted \\
        runs/table3_r48/sets/masked_severe --grader runs/table3/none-s1/severity.onnx --out R.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from device.capture.imageio import read_frame
from device.contracts.constants import CONDITION_NAMES, LEVEL_NAMES
from device.models.classifiers import SeverityClassifier
from server_train.diffusion.data import read_jsonl


def set_agreement(root: Path, grader: SeverityClassifier) -> dict[str, Any]:
    """Label agreement of the generated frames of the set at ``root`` (module docstring)."""
    rows = read_jsonl(root / "labels.jsonl")
    by_stem = {r["stem"]: r for r in rows}
    hits: dict[str, list[bool]] = {c: [] for c in CONDITION_NAMES}
    for row in rows:
        if not row.get("generated"):
            continue
        source = by_stem.get(row["source"])
        if source is None:
            raise ValueError(f"{root}: generated frame {row['stem']} names source {row['source']}, not in the set")
        raised = [c for c in CONDITION_NAMES if int(row[c]) > int(source[c])]
        if not raised:
            continue
        levels = grader.predict(read_frame(root / "images" / f"{row['stem']}.jpg")).levels
        for c in raised:
            hits[c].append(levels[c] == LEVEL_NAMES[int(row[c])])
    total = [h for c in CONDITION_NAMES for h in hits[c]]
    config = json.loads((root / "config.json").read_text()) if (root / "config.json").is_file() else {}
    return {
        "set": str(root),
        "raised": {c: len(hits[c]) for c in CONDITION_NAMES},
        "agreement": round(float(np.mean(total)), 4) if total else None,
        "agreement_by_condition": {c: round(float(np.mean(h)), 4) if h else None for c, h in hits.items()},
        "accept": config.get("accept"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", required=True, help="augmented sets (augment --out folders)")
    ap.add_argument("--grader", required=True, help="condition grader ONNX")
    ap.add_argument("--out", required=True, help="JSON report")
    args = ap.parse_args()
    grader = SeverityClassifier.from_onnx(args.grader)
    report = {"grader": args.grader, "sets": [set_agreement(Path(s), grader) for s in args.sets]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    for s in report["sets"]:
        print(s["set"], s["agreement"], s["agreement_by_condition"], s["raised"])


if __name__ == "__main__":
    main()
