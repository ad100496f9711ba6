"""The outbox's durable high-water mark, kept outside SQLite, in two phases: the highest ``seq``
handed out (``reserved``, made durable before its commit) and the highest seq whose commit
returned (``committed``, written after it).

A torn WAL or a damaged database can lose committed rows; the mark does not go with them, so
the next start continues after it and no committed seq is ever given to a second record. The
two phases tell a lost commit from a commit that never happened: a process killed between
reserving seq N and committing it leaves ``reserved = N > committed``, and N (never stored,
never published) is handed out again instead of being reported lost.

The file ``<outbox>.seq`` holds two 32-byte slots, each ``b"SEQ2"`` + reserved + committed
(8 bytes each, big endian) + CRC-32 of those (4 bytes) + padding. A write overwrites the older
slot in place: no block is allocated after creation (so it still works on a full disk), and a
write torn by a power cut spoils one slot at most; the reader takes the highest valid slot.
``reserve`` fsyncs; ``confirm`` does not (the page cache survives a killed process; after a
power cut the database's own synchronous commit is the record).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

__all__ = ["SeqMark", "mark_path"]

_MAGIC = b"SEQ2"
_SLOT = 32
_BODY = struct.Struct(">4sQQ")


def mark_path(db_path: Path) -> Path:
    """Where the mark of the outbox at ``db_path`` lives: ``<db_path>.seq``."""
    return db_path.with_name(db_path.name + ".seq")


def _encode(reserved: int, committed: int) -> bytes:
    body = _BODY.pack(_MAGIC, reserved, committed)
    return (body + struct.pack(">I", zlib.crc32(body))).ljust(_SLOT, b"\0")


def _decode(slot: bytes) -> tuple[int, int] | None:
    """(reserved, committed) of one slot, or None when it is torn or foreign."""
    if len(slot) < _BODY.size + 4:
        return None
    body, (crc,) = slot[: _BODY.size], struct.unpack(">I", slot[_BODY.size : _BODY.size + 4])
    magic, reserved, committed = _BODY.unpack(body)
    return (int(reserved), int(committed)) if magic == _MAGIC and zlib.crc32(body) == crc else None


class SeqMark:
    """The mark file of one outbox, open for the outbox's lifetime. Not thread-safe (the
    outbox's lock covers it). ``value``: the highest seq handed out (0: none yet);
    ``committed``: the highest seq whose commit returned (<= value)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            data = os.pread(self._fd, 2 * _SLOT, 0)
            slots = [_decode(data[i * _SLOT : (i + 1) * _SLOT]) for i in range(2)]
            valid = [s for s in slots if s is not None]
            #: True when the file existed but neither slot could be read (the mark is lost).
            self.unreadable = bool(data) and not valid
            self.value, self.committed = max(valid, default=(0, 0))
            self._next_slot = 0  # the slot holding the older value is overwritten next
            if len(valid) < 2:  # new, short or half-torn file: both slots get the value read
                os.pwrite(self._fd, _encode(self.value, self.committed) * 2, 0)
                os.fsync(self._fd)
                if created:
                    _fsync_dir(self.path.parent)
            elif slots[1] is not None and slots[0] is not None and slots[1] < slots[0]:
                self._next_slot = 1
        except BaseException:
            os.close(self._fd)
            raise

    def advance(self, seq: int) -> None:
        """Reserve ``seq``: durable as handed out before its commit (no-op when already there)."""
        if seq <= self.value:
            return
        self._write(seq, self.committed)
        os.fsync(self._fd)

    def confirm(self, seq: int) -> None:
        """``seq``'s commit returned (no fsync: see the module docstring)."""
        if seq <= self.committed:
            return
        self._write(max(self.value, seq), seq)

    def _write(self, reserved: int, committed: int) -> None:
        os.pwrite(self._fd, _encode(reserved, committed), self._next_slot * _SLOT)
        self.value, self.committed = reserved, committed
        self._next_slot ^= 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
