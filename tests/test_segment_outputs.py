"""``scalpedge segment``'s outputs are safe: results on disk as each frame is measured, an output
that cannot be written reported once with its path (exit 1) keeping what was written, frames of
other aspect ratios centre-cropped (never stretched), subfolders reported or read with
--recursive, and --save-mask writing the analysis mask. Run with the shipped bundle on ONNX
Runtime, in-process or as a real process where exit codes and tracebacks matter."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.app.analysis import analyse_frame
from device.assets import default_model_path, sample_frames
from device.capture.imageio import read_frame
from device.cli import main
from device.models.onnx_segmenter import ModelSegmenter

REPO = Path(__file__).resolve().parents[1]
SAMPLES = sample_frames()


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


_READ_ONLY_MIDWAY = """
import os, sys
from pathlib import Path
out, frames = Path(sys.argv[1]), sys.argv[2:]
import device.cli.segment as segment
from device.cli import main
measure = segment.analyse_frame
calls = []
def measure_then_lock(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # after the first frame's results: the card turns read-only (remounted ro, locked)
        out.chmod(0o555)
        if os.geteuid() == 0:  # root writes into read-only folders: go on as nobody
            os.setgid(65534)
            os.setuid(65534)
    return measure(*args, **kwargs)
segment.analyse_frame = measure_then_lock
sys.exit(main(["segment", *frames, "--out", str(out), "--save-mask"]))
"""


def test_a_folder_turning_read_only_keeps_the_results_already_measured(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "SCALPEDGE_HOME": str(tmp_path / "home")}
    res = subprocess.run(
        [sys.executable, "-c", _READ_ONLY_MIDWAY, str(out), *map(str, SAMPLES)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )
    out.chmod(0o755)
    assert res.returncode == 1, res.stderr
    # One message naming the file that could not be written, no traceback.
    errors = [line for line in res.stderr.splitlines() if line.startswith("scalpedge segment:")]
    assert len(errors) == 1 and "Traceback" not in res.stderr
    blocked = out / f"{SAMPLES[1].stem}_overlay.png"
    assert str(blocked) in errors[0] and "ermission denied" in errors[0]
    # The first frame was written in full before the folder locked, its line flushed; the second
    # frame's measurement is kept in the lines file with the reason its overlay is missing.
    lines = _lines(out / "metrics.jsonl")
    assert [Path(r["file"]).name for r in lines] == [SAMPLES[0].name, SAMPLES[1].name]
    assert (out / lines[0]["overlay"]).is_file() and (out / lines[0]["mask"]).is_file()
    assert isinstance(lines[0]["count"], int) and "output_error" not in lines[0]
    assert lines[1]["overlay"] is None and str(blocked) in lines[1]["output_error"]
    assert isinstance(lines[1]["count"], int)
    assert not blocked.exists() and not (out / "metrics.json").exists()
    assert f"2 results kept in {out / 'metrics.jsonl'}" in errors[0]


def test_out_naming_an_existing_file_exits_1_with_one_line(tmp_path: Path) -> None:
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    res = subprocess.run(
        [sys.executable, "-m", "device.cli", "segment", str(SAMPLES[0]), "--out", str(target)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "SCALPEDGE_HOME": str(tmp_path / "home")},
    )
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("scalpedge segment:")]
    assert errors == [f"scalpedge segment: cannot write the results: {target}: exists and is not a folder"]
    assert target.read_text() == "keep me"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_reported_at_the_first_line_not_at_the_end(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").symlink_to("/dev/full")  # every write: ENOSPC, as on a full card
    code = main(["segment", str(SAMPLES[0]), str(SAMPLES[1]), "--out", str(out), "--model", str(default_model_path())])
    assert code == 1
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith("scalpedge segment:")]
    assert len(err) == 1 and f"{out / 'metrics.jsonl'}: No space left on device" in err[0]
    assert SAMPLES[1].name not in captured.out  # stopped at the first frame: nothing measured unsaved


def test_a_wide_frame_is_centre_cropped_not_stretched(tmp_path: Path, capsys) -> None:
    """A 16:9 frame with a disc drawn at its centre: the overlay shows a disc (not an ellipse)
    of the size the 4:3 centre crop gives, and the result records the crop."""
    rng = np.random.default_rng(3)
    wide = rng.integers(70, 190, (720, 1280, 3), dtype=np.uint8)
    cv2.circle(wide, (640, 360), 150, (0, 0, 0), -1)
    src = tmp_path / "wide.png"
    cv2.imwrite(str(src), wide)
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), "--model", str(default_model_path())]) == 0
    (record,) = _lines(out / "metrics.jsonl")
    assert record["crop"] == [160, 0, 960, 720] and (record["width"], record["height"]) == (1280, 720)
    assert "centre-cropped to 4:3: 1280x720 -> 960x720" in capsys.readouterr().out
    overlay = cv2.imread(str(out / record["overlay"]))
    frame = overlay[:480]  # the label bar is below the frame
    disc = (frame[:, :, 2] < 20).astype(np.uint8)  # red channel: the mask tint leaves it alone
    # Strand lines and hair circles drawn across the disc are closed over; those outside dropped.
    disc = cv2.morphologyEx(disc, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    disc = cv2.morphologyEx(disc, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(disc)
    x, y, w, h, _ = stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))]
    # 300 px across in 720 rows -> 200 px in 480 rows, in both directions (stretched: 150 x 200).
    assert abs(w - 200) <= 4 and abs(h - 200) <= 4 and abs(w - h) <= 3
    assert abs((x + w / 2) - 320) <= 3 and abs((y + h / 2) - 240) <= 3


def test_subfolders_are_reported_without_recursive_and_read_with_it(tmp_path: Path, capsys) -> None:
    src = tmp_path / "visit"
    for rel in ("top.jpg", "left/a.jpg", "right/a.jpg", "right/deeper/b.jpg"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES[0], src / rel)
    out = src / "results"  # inside the input: never read back as input
    model = ["--model", str(default_model_path())]
    assert main(["segment", str(src), "--out", str(out), *model]) == 0
    captured = capsys.readouterr()
    assert "2 subfolders skipped" in captured.err and "--recursive" in captured.err
    assert [Path(r["file"]).name for r in _lines(out / "metrics.jsonl")] == ["top.jpg"]
    assert json.loads((out / "metrics.json").read_text())["skipped_subfolders"] == [
        str(src / "left"),
        str(src / "right"),
    ]
    assert main(["segment", str(src), "--out", str(out), "--recursive", *model]) == 0
    assert "skipped" not in capsys.readouterr().err
    # Outputs mirror the subfolders, so a/ in two sites do not overwrite each other.
    got = sorted(r["overlay"] for r in _lines(out / "metrics.jsonl"))
    assert got == ["left/a_overlay.png", "right/a_overlay.png", "right/deeper/b_overlay.png", "top_overlay.png"]
    assert all((out / name).is_file() for name in got)
    # A folder whose images are all in subfolders says so (exit 2: nothing to segment as asked).
    for f in (src / "top.jpg", src / "left" / "a.jpg", src / "right" / "a.jpg"):
        f.unlink()
    shutil.rmtree(out)
    capsys.readouterr()
    assert main(["segment", str(src), "--out", str(tmp_path / "o2"), *model]) == 2
    assert "no images in the folder itself; 1 subfolder holds some: use --recursive" in capsys.readouterr().err


def test_save_mask_writes_the_analysis_mask(tmp_path: Path) -> None:
    out = tmp_path / "out"
    model = default_model_path()
    assert main(["segment", str(SAMPLES[0]), "--out", str(out), "--model", str(model), "--um-per-px", "5.6"]) == 0
    assert "mask" not in _lines(out / "metrics.jsonl")[0]
    cmd = ["segment", str(SAMPLES[0]), "--out", str(out), "--model", str(model), "--um-per-px", "5.6", "--save-mask"]
    assert main([*cmd, "--threads", "2"]) == 0
    (record,) = _lines(out / "metrics.jsonl")
    written = cv2.imread(str(out / record["mask"]), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint8 and written.shape == (480, 640)
    assert set(np.unique(written).tolist()) <= {0, 255}
    want = analyse_frame(ModelSegmenter.from_onnx(model, threads=2), read_frame(SAMPLES[0]), um_per_px=5.6)
    assert want.seg is not None
    assert np.array_equal(written == 255, want.seg.mask())
    assert record["count"] == want.metrics.count
