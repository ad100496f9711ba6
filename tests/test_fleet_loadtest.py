"""``scalpedge fleet loadtest`` at a small size: simulated scanners, a real Mosquitto, two
consumer replicas on one SQLite file, one replica SIGKILLed and the broker SIGKILLed and
restarted mid-run; nothing lost, nothing stored twice, and the report says so.

The 200 x 20 runs of the acceptance are benchmarks (benchmarks/reports/fleet_loadtest_*.json).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fleet.loadtest import LoadTestConfig, run_loadtest

REPO = Path(__file__).resolve().parents[1]


def test_a_small_loadtest_with_both_faults_loses_nothing(tmp_path: Path) -> None:
    cfg = LoadTestConfig(
        devices=12,
        results=8,
        replicas=2,
        interval_s=0.15,
        gap_grace_s=0.5,
        resend_interval_s=1.0,
        drain_timeout_s=40.0,
        workdir=str(tmp_path / "work"),
    )
    report = run_loadtest(cfg, str(tmp_path / "report.json"))
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert (report["produced"], report["stored"], report["lost"], report["duplicates_stored"]) == (96, 96, 0, 0)
    assert report["conflicts"] == 0 and report["rejected"] == 0 and report["unknown_stored"] == 0
    assert [f["event"] for f in report["faults"]] == ["replica_sigkill", "broker_sigkill_restart"]
    assert report["replica_exit_codes"][0] == -9  # SIGKILLed, not stopped
    assert report["throughput_per_s"] > 0 and report["p95_latency_ms"] >= report["p50_latency_ms"] > 0
    assert report["store"] == "sqlite" and report["machine"]["cpus"] >= 1
    # The replicas' logs are kept in the work folder given.
    assert (tmp_path / "work" / "replica-1.log").read_text().count("connected") >= 2  # again after the broker restart


def test_loadtest_bad_arguments_exit_2_naming_the_option() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fleet", "loadtest", "--devices", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--devices must be >= 1 (got 0)" in proc.stderr, proc.stderr
