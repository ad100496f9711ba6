"""``python -m device.cli``: the ``scalpedge`` command line."""

from device.cli import main

raise SystemExit(main())
