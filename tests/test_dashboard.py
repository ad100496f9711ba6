"""The fleet dashboard (``scalpedge fleet serve``) and the overlay thumbnail it shows.

The scanner puts a thumbnail (its overlay, 320 px wide JPEG) into a record only when its config
says ``[run] publish_thumbnails = true``; by default no image leaves the scanner. The dashboard
runs as the real command over a real SQLite store seeded through the store's write API with
schema-valid records (three visits of one client on two scanners, one record with a thumbnail
made by the shipped bundle's pipeline), is read over HTTP, and headless Chromium screenshots
the scanners, a result with its overlay and the client's trend into ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import csv
import io
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from sync_device import sample_fields, sync_config
from test_pipeline import counting_pipeline

from device.app.pipeline import ScanPipeline
from device.app.runtime import ScannerRuntime
from device.app.runtime_config import RuntimeConfig, load_runtime_config
from device.app.visits import load_records
from device.assets import ASSETS
from device.capture.imageio import read_frame
from device.capture.sources import open_source
from device.contracts import validation
from device.contracts.records import RecordError, RecordFactory, dumps_record, metric, utc_timestamp, validate_record
from device.sync.device_sync import DeviceSync
from fleet.store import open_store
from fleet.web import PAGE_SIZE
from fleet.web.plot import trend_svg

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
SAMPLE = ASSETS / "samples" / "synthetic_000000.jpg"
BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
CLIENT = "c-0042"
# (session, visit date, [(site, scanner, hair count, density, thin ratio, accepted)]): visit 2 has
# a rejected scan whose zeros must not be averaged.
VISITS = [
    ("s-0301", "2024-03-01", [("top", "scanner-a", 52, 210.0, 0.10, True),
                              ("crown", "scanner-a", 48, 190.0, 0.14, True)]),
    ("s-0405", "2024-04-05", [("top", "scanner-b", 44, 170.0, 0.20, True),
                              ("top", "scanner-b", 0, 0.0, 0.0, False),
                              ("crown", "scanner-b", 40, 150.0, 0.22, True)]),
    ("s-0510", "2024-05-10", [("top", "scanner-a", 58, 230.0, 0.08, True),
                              ("crown", "scanner-a", 54, 220.0, 0.06, True)]),
]  # fmt: skip
EXTRA_A = 30  # results of scanner-a outside any session: its stream spans two pages


@pytest.fixture(scope="module")
def pipeline() -> ScanPipeline:
    return counting_pipeline()


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALPEDGE_HOME", str(tmp_path / "home"))  # no client session is active


# ------------------------------------------------------------------ the scanner: thumbnails are opt-in
def _one_diagnosis(tmp: Path, pipeline: ScanPipeline, publish_thumbnails: bool | None) -> tuple[dict[str, Any], Any]:
    """Diagnose one still on the runtime with a real outbox; the stored record and the summary row."""
    folder = tmp / "stills"
    folder.mkdir(parents=True)
    shutil.copy(SAMPLE, folder / SAMPLE.name)
    sync = DeviceSync.from_config(sync_config(tmp, port=1), bundle_version=pipeline.bundle.version)
    source = open_source(str(folder))
    extra = {} if publish_thumbnails is None else {"publish_thumbnails": publish_thumbnails}
    try:
        runtime = ScannerRuntime(pipeline, source, tmp / "scans", sync=sync, **extra)
        summary = runtime.run(max_diagnoses=1, max_seconds=120)
    finally:
        source.close()
        sync.close(timeout_s=0.5)
    assert len(summary.results) == 1 and summary.results[0].error is None, summary.results
    (record,) = load_records(tmp / "outbox-scanner-a.sqlite")
    return record, summary.results[0]


def test_no_image_leaves_the_scanner_unless_its_config_publishes_thumbnails(
    tmp_path: Path, pipeline: ScanPipeline
) -> None:
    # The default config publishes no thumbnail; the key turns it on.
    assert RuntimeConfig().run.publish_thumbnails is False
    toml = tmp_path / "scanner.toml"
    toml.write_text("[run]\npublish_thumbnails = true\n")
    assert load_runtime_config(toml).run.publish_thumbnails is True

    # A scanner left at its defaults stores (and so publishes) a record without any image.
    plain, _ = _one_diagnosis(tmp_path / "default", pipeline, None)
    assert "thumbnail" not in plain and "jpeg" not in dumps_record(plain).decode().lower()

    # Configured to publish them: the record carries the overlay as a small JPEG, valid by the
    # schema; the summary row (the run report) does not carry it.
    record, row = _one_diagnosis(tmp_path / "on", pipeline, True)
    validate_record(record)
    thumb = record["thumbnail"]
    jpeg = base64.b64decode(thumb["jpeg_base64"], validate=True)
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (thumb["height"], thumb["width"], 3) and thumb["width"] == 320
    assert 230 <= thumb["height"] <= 300  # 320x240 of the frame plus the overlay's label bar
    assert 3_000 < len(jpeg) < 40_000, len(jpeg)  # a thumbnail, not a frame
    assert len(dumps_record(record)) < 64 * 1024  # far below the consumer's 256 KiB payload limit
    assert "thumbnail" not in row.fields
    # It is the overlay: the saved overlay's image part (left of its figures panel), scaled down.
    saved = cv2.imread(str(tmp_path / "on" / "scans" / str(row.overlay)))
    assert saved is not None
    part = cv2.resize(saved[: thumb["height"] * 2, :640], (320, thumb["height"]), interpolation=cv2.INTER_AREA)
    assert np.abs(part.astype(int) - image.astype(int)).mean() < 6  # JPEG at quality 70

    # A version 1 record never carried images: one with a thumbnail is refused.
    old = {**plain, "schema": "scalpedge.result/1", "thumbnail": thumb}
    with pytest.raises(RecordError, match="thumbnail"):
        validate_record(old)
    with pytest.raises(RecordError, match="thumbnail"):
        validate_record({**record, "thumbnail": {**thumb, "jpeg_base64": "not base64!"}})


# ------------------------------------------------------------------ the dashboard
def _status(device: str, boot: str, state: str, last_seq: int, reason: str | None = None) -> dict[str, Any]:
    msg = {"schema": "scalpedge.status/1", "state": state, "device_id": device, "boot_id": boot, "ts": utc_timestamp()}
    if state == "online":
        msg |= {"last_seq": last_seq, "delivered_upto": last_seq}
    if reason:
        msg["reason"] = reason
    validation.validate("status", msg)
    return msg


def _seed(db: Path, thumbnail: dict[str, Any]) -> dict[str, Any]:
    """Fill a SQLite store the way the consumer does; what was stored, for the checks."""
    store = open_store(str(db))
    boots = {d: str(uuid.uuid4()) for d in ("scanner-a", "scanner-b")}
    factories = {d: RecordFactory(d, "2024.06-int8", boot_id=b) for d, b in boots.items()}
    seqs = {d: 0 for d in boots}
    stored: dict[str, Any] = {"client": [], "scanner-a": [], "thumb_msg": None, "plain_msg": None}

    def put(device: str, when: datetime, fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
        seqs[device] += 1
        rec = factories[device].build(seqs[device], captured_at=when, **fields, **extra)
        tags = {k: rec[k] for k in ("client_id", "session_id", "site", "visit_date") if k in rec}
        outcome, _ = store.store_result(
            device, rec["seq"], rec["msg_id"], rec["boot_id"], rec["captured_at"], dumps_record(rec).decode(),
            schema=rec["schema"], tags=tags, bundle_version=rec["bundle_version"], stored_by="fleet-replica-1",
        )  # fmt: skip
        assert outcome == "new"
        if device == "scanner-a":
            stored["scanner-a"].append(rec)
        return rec

    for i in range(EXTRA_A):  # scans outside any session, before the visits
        put("scanner-a", datetime(2024, 2, 1, 9, tzinfo=timezone.utc) + timedelta(minutes=i), sample_fields(i))
    for session, day, scans in VISITS:
        start = datetime.fromisoformat(day).replace(hour=10, tzinfo=timezone.utc)
        for k, (site, device, count, density, thin, accepted) in enumerate(scans):
            fields = sample_fields(k)
            fields["metrics"] |= {
                "hair_count": metric(count, "count"),
                "density": metric(density, "per_cm2"),
                "thin_ratio": metric(thin, "ratio"),
            }
            fields["quality"] = {"accepted": accepted, "reason": None if accepted else "out of focus"}
            session_tags = {"client_id": CLIENT, "session_id": session, "visit_date": day, "site": site}
            extra = {"thumbnail": thumbnail} if stored["thumb_msg"] is None else {}
            rec = put(device, start + timedelta(minutes=k), fields, session=session_tags, **extra)
            stored["client"].append(rec)
            stored["thumb_msg"] = stored["thumb_msg"] or rec["msg_id"]
            if "thumbnail" not in rec:
                stored["plain_msg"] = stored["plain_msg"] or rec["msg_id"]
    # scanner-a is online with a battery report; scanner-b dropped off (its last will) after an
    # error; scanner-c has connected to nothing yet.
    store.record_status("scanner-a", _status("scanner-a", boots["scanner-a"], "online", seqs["scanner-a"]))
    telemetry = {
        "device_id": "scanner-a", "boot_id": boots["scanner-a"], "fps": 14.8,
        "battery": {"percent": 87, "charging": False}, "temperature_c": 41.5, "last_seq": seqs["scanner-a"],
        "delivered_upto": seqs["scanner-a"], "ts": utc_timestamp(),
        "outbox": {"pending": 0, "inflight": 0, "delivered_retained": 5, "undelivered_bytes": 0,
                   "oldest_undelivered_age_s": None},
    }  # fmt: skip
    validation.validate("telemetry", telemetry)
    store.record_telemetry("scanner-a", telemetry)
    store.record_status("scanner-b", _status("scanner-b", boots["scanner-b"], "online", seqs["scanner-b"]))
    event = {
        "schema": "scalpedge.event/1", "device_id": "scanner-b", "boot_id": boots["scanner-b"], "event": "outbox_full",
        "severity": "error", "message": "outbox full: 50000 pending records", "ts": utc_timestamp(),
    }  # fmt: skip
    validation.validate("event", event)
    store.record_event("scanner-b", event, dumps_record(event))
    store.record_status("scanner-b", _status("scanner-b", boots["scanner-b"], "offline", 0, "connection lost"))
    store.add_device("scanner-c")
    store.close()
    return stored


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fleet_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleet", *args]


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any], Path]]:
    """``scalpedge fleet serve`` (as ``python -m fleet serve``) over a seeded store: its base
    URL, what was stored, its log file."""
    tmp = tmp_path_factory.mktemp("dashboard")
    pipeline = counting_pipeline()
    diagnosis = pipeline.diagnose(pipeline.live(read_frame(SAMPLE)))
    stored = _seed(tmp / "fleet.sqlite", diagnosis.thumbnail())
    (tmp / "fleet.toml").write_text('[mqtt]\nfleet = "clinic"\n[fleet]\ndb = "fleet.sqlite"\n')
    port = _free_port()
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _fleet_cmd("serve", "--config", str(tmp / "fleet.toml"), "--port", str(port)), stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/", timeout=5).close()
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield base, stored, log
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers.get("Content-Type", ""), e.read().decode("utf-8")


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_scanners_page_shows_each_scanner_online_or_offline_with_its_status(
    dashboard: tuple[str, dict[str, Any], Path],
) -> None:
    base, _, log = dashboard
    assert f"on http://127.0.0.1:{base.rsplit(':', 1)[1]}/" in log.read_text()  # bound to this machine only
    status, ctype, page = _get(base + "/")
    assert status == 200 and ctype.startswith("text/html")
    rows = dict(re.findall(r'<tr class="device" data-device="([^"]+)" data-state="([^"]+)">', page))
    assert rows == {"scanner-a": "online", "scanner-b": "offline", "scanner-c": "unknown"}
    row_a = _text(page.split('data-device="scanner-a"')[1].split("</tr>")[0])
    assert "87 %" in row_a and "42 °C" in row_a and "2024.06-int8" in row_a and "s ago" in row_a
    assert f" {EXTRA_A + 4} " in row_a  # results stored: 30 + two visits of two scans
    row_b = _text(page.split('data-device="scanner-b"')[1].split("</tr>")[0])
    assert "offline (connection lost)" in row_b and "outbox_full: outbox full: 50000 pending records" in row_b
    assert "no status yet" in _text(page.split('data-device="scanner-c"')[1].split("</tr>")[0])
    assert "1 of 3 online" in _text(page)


def test_a_scanners_results_come_newest_first_in_pages_and_unknown_pages_are_404(
    dashboard: tuple[str, dict[str, Any], Path],
) -> None:
    base, stored, _ = dashboard
    seqs_of = lambda page: [int(s) for s in re.findall(r'<td class="num"><a href="/results/[^"]+">(\d+)</a>', page)]  # noqa: E731
    status, _, first = _get(base + "/scanners/scanner-a")
    assert status == 200 and "online" in first and "Events" not in first
    total = len(stored["scanner-a"])
    assert seqs_of(first) == list(range(total, total - PAGE_SIZE, -1))
    older = re.search(r'href="(/scanners/scanner-a\?before_seq=(\d+))"', first)
    assert older is not None and int(older.group(2)) == total - PAGE_SIZE + 1
    status, _, second = _get(base + older.group(1))
    assert status == 200 and seqs_of(second) == list(range(total - PAGE_SIZE, 0, -1))
    assert "before_seq" not in second.split('class="pager"')[1]  # the last page
    status, _, page_b = _get(base + "/scanners/scanner-b")
    assert status == 200 and "outbox_full" in page_b and "Events" in page_b
    for url, words in [
        ("/scanners/nope", "no scanner &#39;nope&#39;"),
        ("/results/0b7c7f0e-0000-4000-8000-000000000000", "no result"),
        ("/clients/nobody", "no results of client &#39;nobody&#39;"),
        ("/no/such/page", "no page at /no/such/page"),
        ("/scanners/nope/results.csv", "no scanner"),
    ]:
        status, ctype, body = _get(base + url)
        assert status == 404 and ctype.startswith("text/html") and words in body, (url, status, body[:300])
    status, _, body = _get(base + "/scanners/scanner-a?before_seq=abc")
    assert status == 400 and "before_seq must be an integer" in body
    req = urllib.request.Request(base + "/", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    err.value.close()
    assert err.value.code == 405  # read-only


def test_a_result_shows_its_figures_and_its_overlay_thumbnail_or_says_publishing_is_off(
    dashboard: tuple[str, dict[str, Any], Path],
) -> None:
    base, stored, _ = dashboard
    rec = next(r for r in stored["client"] if r["msg_id"] == stored["thumb_msg"])
    status, _, page = _get(base + f"/results/{rec['msg_id']}")
    assert status == 200
    img = re.search(r'<img class="thumbnail" src="([^"]+)" width="(\d+)" height="(\d+)"', page)
    assert img is not None and (int(img.group(2)), int(img.group(3))) == (320, rec["thumbnail"]["height"])
    with urllib.request.urlopen(base + img.group(1), timeout=10) as r:
        assert r.headers["Content-Type"] == "image/jpeg"
        assert r.read() == base64.b64decode(rec["thumbnail"]["jpeg_base64"])
    figures = dict(re.findall(r'<tr data-metric="([a-z_]+)"><td>[^<]*</td><td class="num">([^<]*)</td>', page))
    assert figures["hair_count"] == "52" and figures["density"] == "210.0" and figures["thin_ratio"] == "0.1"
    text = _text(page)
    assert all(w in text for w in (CLIENT, "s-0301 on 2024-03-01", "top", "dandruff", "2024.06-int8"))
    assert "no thumbnail" not in text

    status, _, plain = _get(base + f"/results/{stored['plain_msg']}")
    assert status == 200 and "no thumbnail (publishing off)" in plain and "<img" not in plain
    status, _, _ = _get(base + f"/results/{stored['plain_msg']}/thumbnail.jpg")
    assert status == 404


def test_a_clients_trend_has_one_point_per_visit_from_its_accepted_scans(
    dashboard: tuple[str, dict[str, Any], Path],
) -> None:
    base, _, _ = dashboard
    with urllib.request.urlopen(base + f"/clients?client_id={CLIENT}", timeout=10) as r:  # the lookup box
        assert r.url == base + f"/clients/{CLIENT}"
        page = r.read().decode()
    svgs = re.findall(r'<svg class="trend".*?</svg>', page, re.S)
    assert len(svgs) == 3  # hair count, density, thin ratio
    expected = {  # per visit, the mean of its accepted scans (visit 2's rejected zeros left out)
        "Hair count": ["50", "42", "56"],
        "Density": ["200", "160", "225"],
        "Thin-hair ratio": ["12.0", "21.0", "7.0"],
    }
    for svg in svgs:
        title = re.search(r'aria-label="([^"]+)"', svg)
        assert title is not None
        points = re.findall(r'<circle class="point"[^>]*><title>([^<]+)</title>', svg)
        dates = [p.split(": ")[0] for p in points]
        assert dates == ["2024-03-01", "2024-04-05", "2024-05-10"], (title.group(1), points)
        assert [p.split(": ")[1].split()[0] for p in points] == expected[title.group(1)]
        assert svg.count("<polyline") == 1
    assert page.count('<tr class="visit">') == 3
    status, _, body = _get(base + "/clients?client_id=")
    assert status == 400 and "give a client id" in body


def test_csv_exports_a_scanners_or_a_clients_results(dashboard: tuple[str, dict[str, Any], Path]) -> None:
    base, stored, _ = dashboard
    with urllib.request.urlopen(base + "/scanners/scanner-a/results.csv", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/csv")
        assert "scanner-a-results.csv" in r.headers["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(r.read().decode())))
    assert [int(row["seq"]) for row in rows] == list(range(1, len(stored["scanner-a"]) + 1))  # oldest first
    assert {"msg_id", "captured_at", "client_id", "site", "metric.hair_count", "condition.dandruff"} <= set(rows[0])
    assert {row["device_id"] for row in rows} == {"scanner-a"}
    with urllib.request.urlopen(base + f"/clients/{CLIENT}/results.csv", timeout=10) as r:
        rows = list(csv.DictReader(io.StringIO(r.read().decode())))
    assert [row["msg_id"] for row in rows] == [rec["msg_id"] for rec in stored["client"]]
    assert [row["metric.hair_count"] for row in rows] == [str(s[2]) for _, _, scans in VISITS for s in scans]
    assert [row["quality_accepted"] for row in rows].count("False") == 1
    assert {row["client_id"] for row in rows} == {CLIENT} and rows[0]["site"] == "top"


def test_serve_refuses_a_store_that_does_not_exist(tmp_path: Path) -> None:
    (tmp_path / "fleet.toml").write_text('[fleet]\ndb = "missing.sqlite"\n')
    done = subprocess.run(
        _fleet_cmd("serve", "--config", str(tmp_path / "fleet.toml"), "--port", str(_free_port())),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no fleet store at" in done.stderr and "fleet listen" in done.stderr
    assert not (tmp_path / "missing.sqlite").exists()  # nothing was created


def _shot(url: str, name: str) -> np.ndarray:
    assert BROWSER is not None
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    cmd = [BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1600"]
    subprocess.run([*cmd, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    image = cv2.imread(str(shot))
    assert image is not None and image.shape == (1600, 1280, 3), name
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert grey.std() > 20 and (grey < 200).mean() > 0.02, name  # text and tables, not a blank page
    return image


def _near(image: np.ndarray, bgr: tuple[int, int, int], tol: int = 30) -> int:
    """Pixels within ``tol`` of colour ``bgr`` on every channel."""
    return int((np.abs(image.astype(int) - np.array(bgr)).max(axis=2) <= tol).sum())


def test_headless_chromium_shows_the_scanners_a_result_with_its_overlay_and_a_client_trend(
    dashboard: tuple[str, dict[str, Any], Path],
) -> None:
    if BROWSER is None:
        pytest.skip("no chromium binary installed: the pages were checked over HTTP, not screenshotted")
    base, stored, _ = dashboard
    scanners = _shot(base + "/", "dashboard_scanners.png")
    assert _near(scanners, (76, 138, 31)) > 200 and _near(scanners, (43, 57, 192)) > 200  # online and offline badges
    result = _shot(base + f"/results/{stored['thumb_msg']}", "dashboard_result.png")
    hsv = cv2.cvtColor(result, cv2.COLOR_BGR2HSV)
    assert ((hsv[..., 1] > 80) & (hsv[..., 2] > 60)).sum() > 5_000  # the overlay's coloured strands and image
    trend = _shot(base + f"/clients/{CLIENT}", "dashboard_client.png")
    assert _near(trend, (168, 99, 37), tol=25) > 300  # the plotted lines and points (#2563a8)


def test_a_visit_without_an_accepted_scan_is_a_gap_in_the_trend_not_a_zero() -> None:
    svg = str(trend_svg("Hair count", ["2024-03-01", "2024-04-05", "2024-05-10"], [50.0, None, 56.0], "hairs"))
    assert svg.count('<circle class="point"') == 2 and "<polyline" not in svg  # no line across the gap
    assert "2024-04-05" in svg  # the visit still has its place on the axis
    with pytest.raises(ValueError, match="3 labels for 2 values"):
        trend_svg("x", ["a", "b", "c"], [1.0, 2.0])
