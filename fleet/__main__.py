"""``python -m fleet COMMAND``: the fleet commands (``listen``, ``loadtest``, ``broker-config``)
without the scanner's CLI, e.g. to run consumer replicas on a fleet server. The same commands
as ``scalpedge fleet COMMAND``; exit codes: 0, 1 failed, 2 bad input or config, 3 missing extra."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from device.contracts.errors import ExitCode, MissingExtra
from fleet.cli import register


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet", description=__doc__)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fleet", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except MissingExtra as exc:
        logging.getLogger("fleet").error("%s", exc)
        return int(ExitCode.MISSING_EXTRA)
    except (ValueError, FileNotFoundError) as exc:
        logging.getLogger("fleet").error("%s", exc)
        return int(ExitCode.USAGE)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    raise SystemExit(main())
