"""Device runtime latency on this machine: live-path FPS and per-stage diagnosis timings.

Runs the real frame loop (shipped bundle, ONNX Runtime, synthetic camera unpaced, a local
outbox, no scanner) for ``--seconds``, diagnosing every ``--every`` seconds, and writes the
summary as JSON::

    .venv/bin/python benchmarks/bench_device.py --out benchmarks/reports/device_latency.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
from pathlib import Path

from device.app.run_report import print_summary, summary_dict
from device.app.runtime_config import RuntimeConfig
from device.cli.run import run_device


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--every", type=float, default=1.0, help="diagnose every S seconds")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "int8"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scalpedge-bench-device-"))
    config = RuntimeConfig().with_overrides(
        camera={"source": "synthetic://"},
        models={"precision": args.precision, "threads": args.threads},
        run={
            "out": str(work / "scans"),
            "preview": "headless",
            "diagnose_every_s": args.every,
            "max_seconds": args.seconds,
            "stdin_trigger": False,
            "save_overlays": True,
        },
    )
    outbox = dataclasses.replace(config.sync.outbox, path=str(work / "outbox.sqlite"))
    config = dataclasses.replace(config, sync=dataclasses.replace(config.sync, outbox=outbox))
    summary = run_device(config)
    print_summary(summary)
    report = summary_dict(summary)
    report.pop("results")
    report |= {
        "diagnoses": len(summary.results),
        "average_fps": round(summary.frames / args.seconds, 2),
        "seconds": args.seconds,
        "precision": args.precision,
        "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "command": "python benchmarks/bench_device.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
