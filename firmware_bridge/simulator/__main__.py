"""``python -m firmware_bridge.simulator``: the simulator's command line (:mod:`.cli`)."""

from firmware_bridge.simulator.cli import main

raise SystemExit(main())
