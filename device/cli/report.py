"""``scalpedge report``: the visit report of a client session, as one self-contained HTML page.

    scalpedge report --session 20240601-3fa2c1 --out report.html [--outbox PATH] [--overlays DIR] [--pdf R.pdf]
    scalpedge report --client c-0042 --out report.html        # the client's latest visit

Reads the session's records from the scanner's outbox (read-only: a running ``device run`` is
not disturbed) and the overlays ``device run`` saved, and compares the visit with the client's
previous one in the same outbox. The outbox defaults to the ``[outbox] path`` of ``--config``,
else ``scans/outbox.sqlite`` (where ``device run`` without a config keeps it; the demo's is
``out/demo/outbox.sqlite``); overlays default to the config's ``[run] out``, else the outbox's
folder. Exit codes: 0 written; 2 no such outbox, session or client; 1 the report cannot be written.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from device.app.visit_report import render_report, write_pdf, write_report
from device.app.visits import SiteFigures, load_records, overlay_path, visit_of, visits_of_client

__all__ = ["register", "run"]

log = logging.getLogger(__name__)

DEFAULT_OUTBOX = Path("scans") / "outbox.sqlite"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="visit report of a client session (HTML, optionally PDF)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--session", metavar="ID", help="the session (scalpedge session end prints its id)")
    who.add_argument("--client", metavar="ID", help="the client's latest visit")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--outbox", help=f"the scanner's outbox (default: [outbox] path of --config, else {DEFAULT_OUTBOX})")
    p.add_argument("--config", help="the scanner's TOML config (for its outbox and overlay folder)")
    p.add_argument("--overlays", help="folder of the saved overlays (default: [run] out, else the outbox's folder)")
    p.add_argument("--pdf", help="also print the page to this PDF (needs chromium)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    outbox, overlays = _paths(args)
    records = load_records(outbox)
    if args.session:
        visit = visit_of(records, args.session)
    else:
        found = visits_of_client(records, args.client)
        if not found:
            raise ValueError(f"no session of client {args.client!r} in {outbox}")
        visit = found[-1]
    history = visits_of_client(records, visit.client_id)
    index = [v.session_id for v in history].index(visit.session_id)
    previous = history[index - 1] if index > 0 else None

    def overlay_of(site: SiteFigures) -> Path | None:
        if site.latest is None:
            return None
        path = overlay_path(site.latest, overlays)
        if path is None:
            log.warning("no overlay of seq %s (site %s) in %s", site.latest["seq"], site.site, overlays)
        return path

    out = write_report(render_report(visit, previous, history, overlay_of), args.out)
    compared = f"compared with {previous.visit_date}" if previous else "first visit on record"
    print(
        f"{out}: client {visit.client_id}, visit {visit.visit_date} (session {visit.session_id}), "
        f"{visit.scans} scan(s) at {len(visit.sites)} site(s) ({', '.join(visit.sites)}); {compared}"
    )
    if args.pdf:
        print(f"{write_pdf(out, args.pdf)}: PDF")
    return 0


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The outbox and the overlay folder, from the options, the config, or the defaults."""
    outbox, overlays = args.outbox, args.overlays
    if args.config:
        from device.app.runtime_config import load_runtime_config

        config = load_runtime_config(args.config)
        outbox = outbox or config.sync.outbox.path
        overlays = overlays or config.run.out
    outbox_path = Path(outbox) if outbox else DEFAULT_OUTBOX
    if not outbox_path.is_file():
        hint = "" if outbox else " (give --outbox or --config; the demo's is out/demo/outbox.sqlite)"
        raise FileNotFoundError(f"outbox not found: {outbox_path}{hint}")
    return outbox_path, Path(overlays) if overlays else outbox_path.parent
