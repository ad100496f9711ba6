"""Client sessions: one visit of one client, the site of the head being scanned, and the tags
every diagnosis of the visit carries.

The active session is a small JSON file, ``$SCALPEDGE_HOME/session.json`` (``~/.config/scalpedge``
when unset), written atomically by ``scalpedge session start|site|end`` and read by the running
``scalpedge device run`` (another process) at each diagnosis, so the operator can change the
site between two presses of the scanner's button::

    {"schema": "scalpedge.session/1", "client_id": "c-0042", "session_id": "20240601-3fa2c1",
     "visit_date": "2024-06-01", "started_at": "2024-06-01T09:30:00.000000Z", "site": "top"}

Client ids are pseudonymous codes (``CLIENT_ID_PATTERN``: letters, digits, ``_ . -``, no spaces
or ``@``), so a name or an e-mail address is refused; nothing else about the client is kept.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import tempfile
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from device.contracts.records import SITES, utc_timestamp

__all__ = [
    "CLIENT_ID_PATTERN",
    "SESSION_SCHEMA",
    "SITES",
    "Session",
    "SessionError",
    "active_session",
    "current_session_tags",
    "default_session_path",
    "end_session",
    "set_site",
    "start_session",
]

log = logging.getLogger(__name__)

SESSION_SCHEMA = "scalpedge.session/1"
#: A pseudonymous client code (also the shape of a session id): 1-64 characters.
CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SessionError(ValueError):
    """A session command cannot be done (bad client id or site, no active session, one already
    active); the message says what to do. A ``ValueError``: the CLI exits 2."""


@dataclass(frozen=True)
class Session:
    """One visit: client_id (pseudonymous), session_id, visit_date (YYYY-MM-DD), started_at
    (RFC 3339 UTC), and the site now being scanned (one of ``SITES``, None before one is chosen)."""

    client_id: str
    session_id: str
    visit_date: str
    started_at: str
    site: str | None = None

    def tags(self) -> dict[str, str]:
        """The record's session tags (``device.contracts.records.SESSION_FIELDS``)."""
        out = {"client_id": self.client_id, "session_id": self.session_id, "visit_date": self.visit_date}
        return out | ({"site": self.site} if self.site else {})

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SESSION_SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any) -> Session:
        """Read a session file's content; SessionError naming the problem when it is not one."""
        if not isinstance(data, dict) or data.get("schema") != SESSION_SCHEMA:
            raise SessionError(f"not a session file (schema must be {SESSION_SCHEMA!r})")
        try:
            session = cls(
                client_id=str(data["client_id"]),
                session_id=str(data["session_id"]),
                visit_date=str(data["visit_date"]),
                started_at=str(data["started_at"]),
                site=None if data.get("site") is None else str(data["site"]),
            )
        except KeyError as exc:
            raise SessionError(f"session file lacks {exc.args[0]!r}") from exc
        check_client_id(session.client_id)
        check_client_id(session.session_id, "session id")
        parse_visit_date(session.visit_date)
        if session.site is not None:
            check_site(session.site)
        return session


def default_session_path() -> Path:
    """``$SCALPEDGE_HOME/session.json``, else ``~/.config/scalpedge/session.json``."""
    home = os.environ.get("SCALPEDGE_HOME")
    return (Path(home) if home else Path.home() / ".config" / "scalpedge") / "session.json"


def check_client_id(value: str, what: str = "client id") -> str:
    """``value`` if it is a pseudonymous code, else SessionError saying what is allowed."""
    if not CLIENT_ID_PATTERN.match(value):
        raise SessionError(
            f"{what} {value!r} is not a pseudonymous code: 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (no spaces, no '@': never a name or an e-mail address)"
        )
    return value


def check_site(site: str) -> str:
    if site not in SITES:
        raise SessionError(f"unknown site {site!r}; one of {', '.join(SITES)}")
    return site


def parse_visit_date(text: str) -> str:
    """``text`` if it is a calendar date ``YYYY-MM-DD``, else SessionError."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return date.fromisoformat(text).isoformat()
        problem = "expected YYYY-MM-DD"
    except ValueError as exc:
        problem = str(exc)
    raise SessionError(f"visit date {text!r} is not a date YYYY-MM-DD ({problem})")


def active_session(path: str | Path | None = None) -> Session | None:
    """The active session, or None when there is none. SessionError when the file is damaged."""
    path = Path(path) if path is not None else default_session_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return Session.from_dict(json.loads(text))
    except (json.JSONDecodeError, SessionError) as exc:
        raise SessionError(f"session file {path} is damaged: {exc}; end it with 'scalpedge session end'") from exc


def start_session(
    client_id: str,
    visit_date: str | None = None,
    site: str | None = None,
    path: str | Path | None = None,
    now: datetime | None = None,
) -> Session:
    """Start a visit of ``client_id`` (today unless ``visit_date``); refused while another is active."""
    path = Path(path) if path is not None else default_session_path()
    check_client_id(client_id)
    if site is not None:
        check_site(site)
    now = now or datetime.now(timezone.utc)
    day = parse_visit_date(visit_date) if visit_date else now.astimezone().date().isoformat()
    try:
        current = active_session(path)
    except SessionError:
        current = None  # a damaged file is replaced by the new session
        log.warning("replacing the damaged session file %s", path)
    if current is not None:
        raise SessionError(
            f"session {current.session_id} of client {current.client_id} is still active; "
            "end it first with 'scalpedge session end'"
        )
    session_id = f"{day.replace('-', '')}-{secrets.token_hex(3)}"
    session = Session(client_id, session_id, day, utc_timestamp(now), site)
    _write(path, session)
    return session


def set_site(site: str, path: str | Path | None = None) -> Session:
    """Scan ``site`` next: every diagnosis from now on carries it."""
    path = Path(path) if path is not None else default_session_path()
    check_site(site)
    session = replace(_require(path), site=site)
    _write(path, session)
    return session


def end_session(path: str | Path | None = None) -> Session:
    """End the active session (its file is removed); returns it. Diagnoses are untagged again."""
    path = Path(path) if path is not None else default_session_path()
    session = _require(path)
    path.unlink()
    return session


def current_session_tags(path: str | Path | None = None) -> dict[str, str]:
    """The active session's record tags, ``{}`` without one. Never raises: a damaged or
    unreadable file is logged and the diagnosis is stored untagged (nothing is lost)."""
    try:
        session = active_session(path)
    except (SessionError, OSError) as exc:
        log.error("diagnosis not tagged with a session: %s", exc)
        return {}
    return session.tags() if session is not None else {}


def _require(path: Path) -> Session:
    session = active_session(path)
    if session is None:
        raise SessionError(f"no active session ({path}); start one with 'scalpedge session start --client ID'")
    return session


def _write(path: Path, session: Session) -> None:
    """Write atomically (temporary file, fsync, rename), so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".session-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(session.to_dict(), f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
