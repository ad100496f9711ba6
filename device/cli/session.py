"""``scalpedge session``: group the scanner's diagnoses into one visit of one client.

    scalpedge session start --client c-0042 [--visit-date 2024-06-01] [--site top]
    scalpedge session site crown        # the site being scanned now (top crown front back left right)
    scalpedge session show [--json]
    scalpedge session end               # then: scalpedge report --session ID --out report.html

The active session lives in ``$SCALPEDGE_HOME/session.json`` (``~/.config/scalpedge``); a
running ``scalpedge device run`` tags every diagnosis with its client id, session id, site and
visit date. Exit codes: 0 done; 2 a bad client id, site or date, no active session, or one
already active.
"""

from __future__ import annotations

import argparse
import json

from device.app.sessions import SITES, Session, active_session, end_session, set_site, start_session

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "session",
        help="a client's visit: start it, set the site being scanned, end it",
        description="Diagnoses taken while a session is active carry its client id, session id and site.",
    )
    ssub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    s = ssub.add_parser("start", help="start a visit of a client (one session at a time)")
    s.add_argument(
        "--client",
        required=True,
        metavar="ID",
        help="the client's pseudonymous code: 1-64 letters, digits, '_', '.', '-', starting with a letter or "
        "digit; never a name or an e-mail address (spaces and '@' are refused)",
    )
    s.add_argument("--visit-date", metavar="YYYY-MM-DD", help="date of the visit (default: today)")
    s.add_argument("--site", choices=SITES, help="the first site to scan (default: none yet)")
    s.set_defaults(func=_start)
    t = ssub.add_parser("site", help="the site of the head being scanned now")
    t.add_argument("site", choices=SITES)
    t.set_defaults(func=_site)
    e = ssub.add_parser("end", help="end the active session (diagnoses are untagged again)")
    e.set_defaults(func=_end)
    w = ssub.add_parser("show", help="the active session, if any")
    w.add_argument("--json", action="store_true", help="print it as JSON (null when there is none)")
    w.set_defaults(func=_show)


def _describe(session: Session) -> str:
    site = session.site or "not set (scalpedge session site SITE)"
    return f"client {session.client_id}, visit {session.visit_date}, session {session.session_id}, site {site}"


def _start(args: argparse.Namespace) -> int:
    session = start_session(args.client, args.visit_date, args.site)
    print(f"session started: {_describe(session)}")
    return 0


def _site(args: argparse.Namespace) -> int:
    session = set_site(args.site)
    print(f"scanning {session.site}: {_describe(session)}")
    return 0


def _end(args: argparse.Namespace) -> int:
    session = end_session()
    print(f"session ended: {_describe(session)}")
    print(f"report: scalpedge report --session {session.session_id} --out report.html")
    return 0


def _show(args: argparse.Namespace) -> int:
    session = active_session()
    if args.json:
        print(json.dumps(None if session is None else session.to_dict()))
    else:
        print("no active session" if session is None else f"active session: {_describe(session)}")
    return 0
