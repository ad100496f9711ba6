"""Link-down and recovery times of the serial link against the MCU simulator on a pty.

    .venv/bin/python benchmarks/firmware_link_timing.py --out benchmarks/reports/firmware_link_timing.json

Per run: the MCU goes silent (time until the host reports the link down), resumes, is
unplugged for 1 s, and is plugged back in (time until the link is up again). Default settings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from firmware_bridge.events import LinkConfig, LinkDownEvent, LinkUpEvent
from firmware_bridge.link import SerialLink
from firmware_bridge.simulator import McuSimulator, SimConfig


def _next(link: SerialLink, kind: type, timeout_s: float) -> object:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        event = link.get_event(0.05)
        if isinstance(event, kind):
            return event
    raise TimeoutError(f"no {kind.__name__} within {timeout_s} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    down_s, up_s = [], []
    for run in range(args.runs):
        path = Path(tempfile.mkdtemp(prefix="scalpedge-link-")) / "scanner"
        with McuSimulator(str(path), SimConfig(seed=run)) as mcu, SerialLink(str(path), LinkConfig()) as link:
            if not link.wait_up(3.0):
                raise RuntimeError("no handshake")
            time.sleep(0.3)
            mcu.go_silent()
            t = time.monotonic()
            down_s.append(_next(link, LinkDownEvent, 5.0).at - t)  # type: ignore[attr-defined]
            mcu.resume()
            _next(link, LinkUpEvent, 3.0)
            mcu.unplug()
            _next(link, LinkDownEvent, 3.0)
            time.sleep(1.0)
            mcu.replug()
            t = time.monotonic()
            up_s.append(_next(link, LinkUpEvent, 4.0).at - t)  # type: ignore[attr-defined]
    report = {
        "runs": args.runs,
        "link_down_after_silence_s": [round(x, 3) for x in down_s],
        "link_up_after_replug_s": [round(x, 3) for x in up_s],
        "max_down_s": round(max(down_s), 3),
        "max_up_s": round(max(up_s), 3),
        "limits_s": {"down": 3.0, "up": 2.0},
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
