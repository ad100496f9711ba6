"""The scanner's microcontroller, simulated on a real pty (tests, demos, benchmarks).

- :mod:`.mcu`: :class:`McuSimulator`, the MCU side of PROTOCOL.md with scriptable faults.
- :mod:`.cli`: its command line, ``python -m firmware_bridge.simulator --help``.
"""

from firmware_bridge.simulator.mcu import McuSimulator, SimConfig, SimStats

__all__ = ["McuSimulator", "SimConfig", "SimStats"]
