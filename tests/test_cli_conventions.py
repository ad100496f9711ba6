"""One convention for every ``scalpedge`` command (issue 19, "One CLI convention"): exit codes
and messages ("not found" is not "refused"), global options anywhere, ``--version``,
timestamped logs, correlation ids on MQTT command replies, and defaults that work on a fresh
clone and measure what ships (``bench refiner``, ``eval diseases``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from importlib.metadata import version
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from mosquitto import Mosquitto, mosquitto_binary
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sync_device import sync_config, wait_for

from device.assets import default_bundle_path, sample_frames
from device.cli import build_parser, main
from device.contracts.errors import ExitCode, MissingExtra
from device.contracts.validation import validate
from device.models.bundle import Bundle, BundleError, BundleNotFound
from device.sync.outbox_store import OutboxError

ROOT = Path(__file__).resolve().parents[1]
UTC_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"  # ISO-8601 UTC with milliseconds


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m device.cli ARGV`` in a fresh process (logging is configured once per process)."""
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *argv], cwd=cwd, capture_output=True, text=True, timeout=120
    )


# ---------------------------------------------------------------- exit codes and messages


@pytest.mark.parametrize("kind", ["no folder", "a file", "no manifest"])
def test_a_missing_bundle_is_not_found_exit_2_not_refused(tmp_path: Path, capsys, kind: str) -> None:
    # Before: "model bundle REFUSED: ...manifest.json: missing or not a plain file" and exit 4,
    # as if the bundle had been tampered with.
    target = {"no folder": tmp_path / "absent", "a file": tmp_path / "bundle.zip", "no manifest": tmp_path / "empty"}
    path = target[kind]
    if kind == "a file":
        path.write_bytes(b"PK")
    elif kind == "no manifest":
        path.mkdir()
    with pytest.raises(BundleNotFound, match="model bundle not found") as err:
        Bundle.open(path)
    assert isinstance(err.value, FileNotFoundError) and not isinstance(err.value, BundleError)
    frame = str(sample_frames()[0])
    assert main(["segment", frame, "--bundle", str(path), "--out", str(tmp_path / "o")]) == ExitCode.USAGE == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith(f"scalpedge segment: error: {path}: model bundle not found")
    assert "REFUSED" not in err_text


def test_a_tampered_bundle_is_still_refused_exit_4(tmp_path: Path, capsys) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    manifest = bundle / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"disease"', '"disease2"', 1))  # signature no longer matches
    frame = str(sample_frames()[0])
    assert main(["segment", frame, "--bundle", str(bundle), "--out", str(tmp_path / "o")]) == 4
    assert "scalpedge segment: model bundle REFUSED: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (MissingExtra("needs the device extra"), 3, "needs the device extra"),
        (BundleError("x/segmenter.onnx: file altered"), 4, "model bundle REFUSED: x/segmenter.onnx: file altered"),
        (OutboxError("outbox.sqlite: read-only"), 5, "outbox unusable: outbox.sqlite: read-only"),
        (BundleNotFound("b: model bundle not found (no such folder)"), 2, "error: b: model bundle not found"),
        (FileNotFoundError(2, "No such file or directory", "a.png"), 2, "error: a.png: No such file or directory"),
        (ValueError("--um-per-px must be positive"), 2, "error: --um-per-px must be positive"),
        (PermissionError(13, "Permission denied", "out/metrics.json"), 1, "error: out/metrics.json: Permission denied"),
        (IsADirectoryError(21, "Is a directory", "out"), 1, "error: out: Is a directory"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_every_failure_maps_to_the_documented_exit_code(exc: BaseException, code: int, message: str) -> None:
    from device.cli import _outcome

    got_code, got_message = _outcome(exc)
    assert got_code == code and got_message.startswith(message)
    table = (ROOT / "docs" / "runtime.md").read_text().split("## Exit codes, logs, shutdown")[1]
    assert re.search(rf"^\s*\| {code} \|", table, re.M), f"exit code {code} is missing from docs/runtime.md"


def test_an_output_that_cannot_be_written_is_exit_1_naming_the_path(tmp_path: Path, capsys) -> None:
    # Before: a traceback (FileExistsError) instead of one line and a documented code.
    taken = tmp_path / "out"
    taken.write_text("a file where the output folder should go")
    assert main(["segment", str(sample_frames()[0]), "--out", str(taken)]) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert err.startswith("scalpedge segment: ") and str(taken) in err and "Traceback" not in err


def test_bad_usage_is_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["segment", "--no-such-option"])
    assert exc.value.code == 2


# ---------------------------------------------------------------- global options, --version, logs


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["segment", "x.png", "--out", "o"], "segment"),  # built in
        (["bundle", "verify", "b"], "bundle verify"),  # entry point (export.bundle_cli)
        (["eval", "seg", "--data", "d", "--out", "o"], "eval seg"),  # entry point, two levels (server_train.cli)
        (["fleet", "listen", "--config", "c.toml"], "fleet listen"),  # entry point (fleet.cli)
    ],
)
def test_global_options_are_accepted_after_the_subcommand(argv: list[str], command: str) -> None:
    # Before: "unrecognized arguments: --log-json -v" (exit 2) unless given before the subcommand.
    parser = build_parser()
    for line in (
        [*argv, "--log-json", "-v"],
        ["--log-json", "-v", *argv],
        [argv[0], "--verbose", *argv[1:], "--log-json"],
    ):
        args = parser.parse_args(line)
        assert (args.verbose, args.log_json) == (True, True), line
    args = parser.parse_args(argv)
    assert (args.verbose, args.log_json, args.command_path) == (False, False, f"scalpedge {command}")


def test_bundle_build_keeps_its_own_version_option() -> None:
    args = build_parser().parse_args(
        ["bundle", "build", "d", "--card", "c.json", "--key", "k.pem", "--version", "2026.1"]
    )
    assert args.version == "2026.1"


def test_version_prints_the_package_version(capsys) -> None:
    # Before: "unrecognized arguments" (exit 2).
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"scalpedge {version('scalpedge')}"


def test_text_and_json_logs_carry_utc_timestamps_with_global_options_last(tmp_path: Path) -> None:
    # An entry-point command failing with -v after the subcommand: its debug line (with the
    # traceback) is logged, stamped; before, text lines were "LEVEL logger: message".
    text = _cli("bundle", "verify", str(tmp_path / "absent"), "-v", cwd=tmp_path)
    assert text.returncode == 2
    lines = text.stderr.splitlines()
    assert re.fullmatch(rf"{UTC_MS} DEBUG device\.cli: scalpedge bundle verify: exit 2", lines[0]), lines[0]
    assert (
        lines[-1] == f"scalpedge bundle verify: error: {tmp_path / 'absent'}: model bundle not found (no such folder)"
    )
    as_json = _cli("bundle", "verify", str(tmp_path / "absent"), "--log-json", "-v", cwd=tmp_path)
    assert as_json.returncode == 2
    record = json.loads(as_json.stderr.splitlines()[0])
    assert re.fullmatch(UTC_MS, record["ts"]) and record["level"] == "DEBUG" and "BundleNotFound" in record["exc"]


def test_a_built_in_command_logs_json_with_global_options_last(tmp_path: Path) -> None:
    # segment on a frame that does not exist: exit 2, and its debug line is JSON, as asked
    # for after the subcommand (before: "unrecognized arguments", exit 2, no log at all).
    run = _cli("segment", str(tmp_path / "absent.png"), "--out", str(tmp_path / "o"), "--log-json", "-v", cwd=tmp_path)
    assert run.returncode == 2
    *logged, last = run.stderr.splitlines()
    records = [json.loads(line) for line in logged]
    assert records and all(re.fullmatch(UTC_MS, r["ts"]) for r in records)
    assert any(r["level"] == "DEBUG" and r["msg"] == "scalpedge segment: exit 2" for r in records)
    assert last.startswith("scalpedge segment: error: ") and "absent.png" in last


# ---------------------------------------------------------------- MQTT correlation ids


class _Fleet:
    """A fleet tool on a real broker: publishes commands (with MQTT 5 properties) and records
    the device's events with the Correlation Data of each PUBLISH."""

    def __init__(self, port: int, topics: str) -> None:
        self.events: list[tuple[dict[str, Any], bytes | None]] = []
        self.online = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topics, qos=1)
        self.client.loop_start()
        if not subscribed.wait(5):
            self.close()
            raise RuntimeError(f"no SUBACK for {topics}")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/status") and json.loads(msg.payload)["state"] == "online":
            self.online.set()  # published after the device subscribed to its cmd topic
        if not msg.topic.endswith("/event"):
            return
        correlation = getattr(msg.properties, "CorrelationData", None)
        with self._lock:
            self.events.append((json.loads(msg.payload), bytes(correlation) if correlation is not None else None))

    def send(self, topic: str, payload: bytes, correlation: bytes | None = None) -> None:
        properties = None
        if correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = correlation
        self.client.publish(topic, payload, qos=1, properties=properties).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is installed by .ci/setup")
def test_command_replies_carry_the_commands_correlation_ids(tmp_path: Path) -> None:
    import queue

    from device.sync.device_sync import DeviceSync

    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    cfg = sync_config(tmp_path, broker.port)
    triggers: queue.SimpleQueue[str] = queue.SimpleQueue()
    sync = DeviceSync.from_config(cfg, bundle_version="b1", triggers=triggers)
    fleet = _Fleet(broker.port, "scalpedge/v1/test/scanner-a/+")
    cmd = "scalpedge/v1/test/scanner-a/cmd"
    try:
        sync.start()
        assert fleet.online.wait(10)
        # 1. A command the device does not know, with a request_id: the rejection names it
        #    (before: a cmd_rejected with no id, so the sender could not tell which it was).
        fleet.send(cmd, b'{"cmd": "reboot", "request_id": "r-unknown"}')
        # 2. A known command failing a check beyond the schema: request_id and cmd echoed.
        fleet.send(cmd, b'{"cmd": "resend", "from_seq": 5, "to_seq": 2, "request_id": "r-backwards"}')
        # 3. Not even JSON, but an MQTT 5 Correlation Data property: echoed on the reply.
        fleet.send(cmd, b"\xff\xfe not json", correlation=b"corr-garbage")
        # 4. A valid command with both ids.
        fleet.send(cmd, b'{"cmd": "diagnose", "request_id": "r-ok"}', correlation=b"corr-ok")
        assert wait_for(lambda: len(fleet.events) >= 4, 10), fleet.events
        replies = list(fleet.events)
        for body, _ in replies:
            validate("event", body)  # the echoed fields keep every event within its schema
        by_id = {body.get("request_id"): (body, corr) for body, corr in replies}
        unknown, _ = by_id["r-unknown"]
        assert unknown["event"] == "cmd_rejected" and "'reboot'" in unknown["reason"] and "cmd" not in unknown
        backwards, _ = by_id["r-backwards"]
        assert backwards["event"] == "cmd_rejected" and backwards["cmd"] == "resend"
        assert "below from_seq" in backwards["reason"]
        garbage = [(b, c) for b, c in replies if c == b"corr-garbage"]
        assert len(garbage) == 1 and garbage[0][0]["event"] == "cmd_rejected" and "request_id" not in garbage[0][0]
        accepted, correlation = by_id["r-ok"]
        assert accepted["event"] == "diagnose_accepted" and correlation == b"corr-ok"
        assert triggers.get_nowait() and triggers.empty()  # exactly one diagnosis requested
    finally:
        fleet.close()
        sync.close()
        broker.stop()


# ---------------------------------------------------------------- defaults that work and measure what ships


def test_bench_refiner_defaults_to_the_shipped_frames_on_a_fresh_clone(tmp_path: Path, monkeypatch, capsys) -> None:
    # A fresh clone has no data/heldout/images: before, no frames and a ZeroDivisionError.
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "speed.json"
    argv = ["bench", "refiner", "--out", str(out), "--n-frames", "2", "--runs", "1", "--threads", "1", "--no-naive"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "timing on 2 frames from " in said and "shipped samples" in said
    report = json.loads(out.read_text())
    assert report["frames"] == [str(p) for p in sample_frames()[:2]] and report["runs"] == 1
    (row,) = report["results"]
    assert row["threads"] == 1 and row["fused_path_total_ms"] > 0 and row["groups"] >= 0


def test_bench_refiner_on_an_empty_or_missing_folder_is_exit_2(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "frames"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    base = ["bench", "refiner", "--out", str(tmp_path / "r.json"), "--runs", "1", "--no-naive"]
    assert main([*base, "--frames", str(empty)]) == 2
    assert f"--frames {empty}: no image files" in capsys.readouterr().err
    assert main([*base, "--frames", str(tmp_path / "absent")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_bench_refiner_refuses_no_frames_instead_of_dividing_by_zero() -> None:
    from server_train.evaluation.refiner_speed import bench_refiner

    with pytest.raises(ValueError, match="no frames"):
        bench_refiner("s.onnx", "e.onnx", "d.onnx", [], (1,), runs=1, naive=False)


def test_eval_diseases_defaults_to_the_shipped_models_preprocessing(tmp_path: Path, monkeypatch) -> None:
    # Before: --preprocess defaulted to "paper" (0.655), while the shipped model uses "resize" (0.749).
    from device.models.classifiers import DiseaseClassifier, default_classifier_path
    from server_train import classifier_cli
    from server_train.training import disease_train

    shipped = classifier_cli.shipped_disease_setup()
    # The card's record agrees with what the device runs: the shipped graph's own metadata.
    assert shipped["preprocess"] == DiseaseClassifier.from_onnx(default_classifier_path("disease")).preprocess
    assert shipped == {"model": "disease_lite0", "preprocess": "resize"}

    calls: list[dict[str, Any]] = []

    def fake_cross_validate(data: str, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return {"accuracy_mean": 0.0}

    monkeypatch.setattr(disease_train, "cross_validate", fake_cross_validate)
    out = str(tmp_path / "cv.json")
    assert main(["eval", "diseases", "--data", str(tmp_path), "--out", out]) == 0
    assert main(["eval", "diseases", "--data", str(tmp_path), "--out", out, "--preprocess", "paper"]) == 0
    assert [(c["model"], c["preprocess"]) for c in calls] == [("disease_lite0", "resize"), ("disease_lite0", "paper")]


def test_the_disease_defaults_are_read_from_the_card(tmp_path: Path) -> None:
    from server_train.classifier_cli import shipped_disease_setup

    manifest = tmp_path / "manifest.json"
    training = {"model": "disease_lite0_tiles", "preprocess": "paper"}
    manifest.write_text(json.dumps({"models": {"disease": {"provenance": {"training": training}}}}))
    assert shipped_disease_setup(manifest) == training
    manifest.write_text(json.dumps({"models": {"disease": {"provenance": {}}}}))
    with pytest.raises(ValueError, match="pass --model and --preprocess"):
        shipped_disease_setup(manifest)
