"""Per-device seq tracking and resend planning for the fleet consumer.

``SeqTrack`` is what the consumer knows about one device's stream, every set of seqs kept as
ranges (``fleet.ranges``). ``plan_resend`` decides, as a pure function, which missing seqs to
ask for this interval and which gaps are too large to be honest:

- a gap is *requestable* once the device says every seq up to ``delivered_upto`` was
  acknowledged by the broker (the rest is still queued on the device and comes by itself);
- a requestable gap of more than ``max_gap`` seqs (or one touching a gap flagged before) is a
  *seq jump*: flagged for the operator, never requested. One record with seq 10^15 must not
  make the consumer ask for 10^15 records, interval after interval;
- the rest is requested lowest first, in commands of at most ``chunk_seqs`` seqs, at most
  ``max_commands`` commands per device and interval.

With several consumer replicas sharing a subscription, each replica's ``SeqTrack`` sees only
the records the broker gave it: its gaps are mostly seqs another replica stored. Before a gap
is requested the consumer folds in what the database holds (``SeqTrack.merge``), so only seqs
that no replica stored are asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.ranges import Range, add, chunks, clip, gaps, overlaps, union

__all__ = ["ResendPlan", "SeqTrack", "plan_resend"]


@dataclass
class SeqTrack:
    """What the consumer knows about one device's seq stream. Times from ``time.monotonic``."""

    held: list[Range] = field(default_factory=list)  # seqs stored
    received: int = 0  # how many seqs ``held`` holds
    unavailable: list[Range] = field(default_factory=list)  # the device says these are gone
    jumps: list[Range] = field(default_factory=list)  # flagged seq jumps: never requested
    known_last: int = 0  # highest seq the device says it has allocated
    delivered_upto: int | None = None  # device says: every seq up to this was acknowledged (None: unknown)
    gap_since: float | None = None
    last_request: float = float("-inf")
    requested: list[Range] = field(default_factory=list)  # ranges of the last request
    resend_progress: float = float("-inf")  # when a requested seq last arrived

    def hold(self, seq: int, now: float) -> None:
        """A new record ``seq`` is stored."""
        self.received += add(self.held, seq, seq)
        if overlaps(self.requested, seq, seq):
            self.resend_progress = now

    def merge(self, held: list[Range], unavailable: list[Range], known_last: int, delivered_upto: int | None) -> int:
        """Fold in what the database holds (what other replicas stored and learnt): seqs held
        and unrecoverable are added, the seq marks raised. Returns how many seqs were new here."""
        new = 0
        for lo, hi in held:
            new += add(self.held, lo, hi)
        self.received += new
        for lo, hi in unavailable:
            add(self.unavailable, lo, hi)
        self.known_last = max(self.known_last, known_last)
        if delivered_upto is not None:
            self.delivered_upto = max(self.delivered_upto or 0, delivered_upto)
        return new

    def lose(self, lo: int, hi: int) -> int:
        """Seqs ``lo..hi`` are unrecoverable; returns how many were not known so before."""
        return add(self.unavailable, lo, hi)

    @property
    def max_seq(self) -> int:
        return self.held[-1][1] if self.held else 0

    @property
    def contig(self) -> int:
        """Every seq up to this one is held or known unrecoverable."""
        known = union(self.held, self.unavailable)
        return known[0][1] if known and known[0][0] <= 1 else 0

    def missing(self) -> list[Range]:
        """Seq ranges neither held nor unrecoverable, up to the highest seq known to exist."""
        return gaps(union(self.held, self.unavailable), 1, max(self.known_last, self.max_seq))

    def requestable(self) -> list[Range]:
        """Missing ranges the device has already had acknowledged (a broker lost them, or we
        were not subscribed): the rest is still queued on the device and will come by itself."""
        missing = self.missing()
        return missing if self.delivered_upto is None else clip(missing, self.delivered_upto)


@dataclass(frozen=True)
class ResendPlan:
    """One interval's decision for one device."""

    wanted: list[Range]  # requestable and not a jump: asked for, in pieces, over intervals
    commands: list[Range]  # this interval's resend commands, ``(from_seq, to_seq)`` each
    jumps: list[Range]  # requestable gaps to flag as seq jumps instead


def plan_resend(
    requestable: list[Range], flagged: list[Range], max_gap: int, chunk_seqs: int, max_commands: int
) -> ResendPlan:
    """Split ``requestable`` into seq jumps (longer than ``max_gap`` or touching a ``flagged``
    jump) and gaps to ask for, the first ``max_commands`` pieces of ``chunk_seqs`` seqs of
    which make this interval's commands. Work is O(ranges + max_commands)."""
    wanted: list[Range] = []
    jumps: list[Range] = []
    for lo, hi in requestable:
        suspicious = hi - lo + 1 > max_gap or overlaps(flagged, lo, hi)
        (jumps if suspicious else wanted).append((lo, hi))
    return ResendPlan(wanted, chunks(wanted, chunk_seqs, max_commands), jumps)
