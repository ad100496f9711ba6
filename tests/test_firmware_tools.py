"""The demo tools as separate processes: the simulator CLI against a link, the monitor against a simulator."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_bridge import ButtonEvent, ButtonKind, LinkConfig, SerialLink
from firmware_bridge.monitor import ACK_BLINK
from firmware_bridge.simulator import McuSimulator, SimConfig
from firmware_bridge.simulator.cli import parse_script

REPO = Path(__file__).resolve().parents[1]


def _wait_for(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert predicate(), "condition not met in time"


def test_simulator_cli_plays_its_script_to_a_link(tmp_path: Path) -> None:
    link_path = tmp_path / "by-id" / "usb-ScalpEdge_Scanner_MCU_SE-CLI-1-if00"
    cmd = [sys.executable, "-m", "firmware_bridge.simulator", "--link", str(link_path), "--serial", "SE-CLI-1"]
    cmd += ["--seed", "3", "--script", "wait 0.5; press 3 0.05; long; idle 10"]
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            _wait_for(link_path.exists, 15.0)
            # The simulator process publishes the by-id style symlink; the link opens it, HELLO both ways.
            with SerialLink(str(link_path), LinkConfig()) as link:
                assert link.wait_up(5.0) and link.hello is not None and link.hello.serial == "SE-CLI-1"
                # Script: three short presses 50 ms apart, then a long one; each arrives once.
                events = []
                deadline = time.monotonic() + 10.0
                while len(events) < 4 and time.monotonic() < deadline:
                    event = link.get_event(0.2)
                    if isinstance(event, ButtonEvent):
                        events.append(event)
                press, long = ButtonKind.PRESS, ButtonKind.LONG_PRESS
                assert [(e.kind, e.count) for e in events] == [(press, 1), (press, 2), (press, 3), (long, 4)]
                time.sleep(0.3)  # let the "idle" step see the last ACK
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "> press 3 0.05" in out and "presses 4 acked 4" in out
    assert not link_path.exists()  # unplugged on exit


def test_monitor_cli_prints_events_and_answers_presses_with_led(tmp_path: Path) -> None:
    link_path = tmp_path / "by-id" / "usb-ScalpEdge_Scanner_MCU-if00"
    with McuSimulator(str(link_path), SimConfig(seed=2)) as mcu:
        cmd = [sys.executable, "-m", "firmware_bridge.monitor", str(link_path), "--ack-led", "--count", "2"]
        with subprocess.Popen(cmd + ["--seconds", "30"], cwd=REPO, stdout=subprocess.PIPE, text=True) as proc:
            # The monitor's link says HELLO; once the MCU has heard it, two presses.
            _wait_for(lambda: mcu.stats.host_hellos > 0, 15.0)
            mcu.press(2, interval_s=0.1)
            out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        lines = out.splitlines()
        assert any("link up: MCU SE-SIM-0001 firmware 1.4.2" in line for line in lines)
        assert [line.split(None, 1)[1].split(" held")[0] for line in lines if " button " in f" {line}"] == [
            "button press count=1",
            "button press count=2",
        ]
        assert json.loads(lines[-1])["buttons_delivered"] == 2
        # Each press was answered with the green blink, applied once each by the MCU.
        assert mcu.stats.led_history == [ACK_BLINK, ACK_BLINK]


def test_simulator_script_parser() -> None:
    assert parse_script("press 3 0.5; long\nunplug 2;; error 4 LED too hot") == [
        ("press", ["3", "0.5"]),
        ("long", []),
        ("unplug", ["2"]),
        ("error", ["4", "LED too hot"]),
    ]
    with pytest.raises(ValueError, match="unknown step"):
        parse_script("fly 3")
    with pytest.raises(ValueError, match="usage"):
        parse_script("wait")


def test_simulator_command_loads_the_simulator_once() -> None:
    # `python -m firmware_bridge.simulator --help` as runpy runs it, counting each execution of the
    # module that defines McuSimulator (a module run as __main__ and imported again counts twice).
    code = (
        "import runpy, sys, types\n"
        "runs = []\n"
        "def hook(event, args):\n"
        "    if event == 'exec' and isinstance(args[0], types.CodeType) and any(\n"
        "            isinstance(c, types.CodeType) and c.co_name == 'McuSimulator' for c in args[0].co_consts):\n"
        "        runs.append(args[0].co_filename)\n"
        "sys.addaudithook(hook)\n"
        "sys.argv = ['simulator', '--help']\n"
        "try:\n"
        "    runpy.run_module('firmware_bridge.simulator', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(len(runs))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "script steps:" in out and "  error CODE [TEXT]: send an ERROR report" in out
    assert out.strip().splitlines()[-1] == "1"


def test_step_arity_comes_from_the_usage_line() -> None:
    from firmware_bridge.simulator.cli import STEPS

    assert STEPS["press"][:2] == (0, 2) and STEPS["battery"][:2] == (1, 2) and STEPS["wait"][:2] == (1, 1)
    assert parse_script("battery 40 charging; reboot") == [("battery", ["40", "charging"]), ("reboot", [])]
    with pytest.raises(ValueError, match="usage battery PCT"):
        parse_script("battery 40 charging now")
