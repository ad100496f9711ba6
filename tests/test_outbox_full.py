"""A full filesystem under the outbox: SQLITE_FULL is detected, ``outbox_full`` fires, the
documented policy makes room (delivered rows first, then the oldest undelivered, reported by
seq), and storing resumes when space returns.

The filesystem is real: a 256 KiB tmpfs mounted for the test (needs root; skipped otherwise).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sync_device import sample_fields

from device.contracts.records import RecordFactory
from device.sync.outbox import Outbox


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs at ``tmp_path/fs``, unmounted afterwards."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a 256 KiB tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs not permitted here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _add(box: Outbox, factory: RecordFactory, i: int) -> int:
    return box.add(lambda seq: factory.build(seq, **sample_fields(i))).seq


def _kinds(alarms: list[dict[str, Any]]) -> list[str]:
    return [a["event"] for a in alarms]


def test_full_filesystem_alarm_policy_and_resume(small_fs: Path) -> None:
    # Before: after a few rows every add failed with "cannot rollback - no transaction is
    # active" (the SQLITE_FULL of the failed COMMIT was lost), no outbox_full alarm, no eviction.
    factory = RecordFactory("scanner-a", "b1")
    alarms: list[dict[str, Any]] = []
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * 64 * 1024)  # another program's file on the same filesystem
    with Outbox(small_fs / "o.sqlite", device_id="scanner-a", on_alarm=alarms.append) as box:
        seqs = [_add(box, factory, i) for i in range(6)]
        assert box.mark_delivered([r.seq for r in box.claim(6)]) == 6
        while "seqs_lost" not in _kinds(alarms) and len(seqs) < 400:  # the disk fills up
            seqs.append(_add(box, factory, len(seqs)))
        kinds = _kinds(alarms)
        assert "seqs_lost" in kinds, kinds
        assert kinds.index("outbox_full") < kinds.index("outbox_retention_evicted") < kinds.index("seqs_lost")
        assert all(box.state_of(s) is None for s in range(1, 7))  # delivered rows went first
        lost = [s for a in alarms if a["event"] == "seqs_lost" for lo, hi in a["ranges"] for s in range(lo, hi + 1)]
        assert lost == list(range(7, 7 + len(lost)))  # then the oldest undelivered, each one reported
        assert all(box.state_of(s) is None for s in lost)
        assert all(box.state_of(s) == "pending" for s in seqs[6 + len(lost) :])
        assert seqs == list(range(1, len(seqs) + 1))  # no seq skipped or reused

        filler.unlink()  # space returns: storing resumes and nothing more is evicted
        reported = len(lost)
        more = [_add(box, factory, i) for i in range(10)]
        assert more == list(range(seqs[-1] + 1, seqs[-1] + 11))
        assert all(box.state_of(s) == "pending" for s in more)
        again = [s for a in alarms if a["event"] == "seqs_lost" for lo, hi in a["ranges"] for s in range(lo, hi + 1)]
        assert len(again) == reported
