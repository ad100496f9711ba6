"""Fuzz the scanner-link decoder with at least 1,000,000 inputs; write benchmarks/reports/fuzz_decoder.json.

Usage: ``python benchmarks/fuzz_decoder.py [--inputs N] [--engine atheris|random] [--seed S]``

Engines: ``atheris`` (coverage-guided libFuzzer over instrumented ``firmware_bridge.protocol``,
``.messages`` and ``cobs``; the default when atheris is installed) runs in a child process, because
libFuzzer ends the process itself; ``random`` (the fallback) draws seeded structured mutations of
valid frames: bit flips, deleted, inserted and duplicated bytes, stray 0x00s, truncation, garbage
splices and concatenations.

Each input's first byte picks what it exercises: 0 feeds the rest to a long-lived streaming decoder
in chunks; 1 treats the rest as a body, appends a correct CRC and frames it, so that the payload
parsers see CRC-valid garbage; 2 builds a valid frame of any type from the rest and feeds it after a
junk prefix; 3 calls ``decode_frame`` on the rest. Checks per input: no exception other than
FrameError/PayloadError from the pure functions and none at all from ``FrameDecoder.feed``; every
frame it returns re-encodes; at most ``MAX_ENCODED`` bytes buffered; at most ``--per-input-s`` seconds
(libFuzzer's ``-timeout`` too). Memory: peak RSS is reported and bounded by ``--rss-limit-mb``
(libFuzzer's ``-rss_limit_mb`` too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPORT = Path(__file__).resolve().parent / "reports" / "fuzz_decoder.json"
STATS_EVERY = 20_000


def _import_targets() -> None:
    global FrameDecoder, FrameError, PayloadError, Frame, crc16_ccitt, decode_frame, encode_frame, unpack
    global MAX_ENCODED, MAX_PAYLOAD, cobs, examples
    from cobs import cobs

    from firmware_bridge import messages as m
    from firmware_bridge.protocol import (
        MAX_ENCODED,
        MAX_PAYLOAD,
        Frame,
        FrameDecoder,
        FrameError,
        crc16_ccitt,
        decode_frame,
        encode_frame,
    )

    PayloadError, unpack = m.PayloadError, m.unpack
    examples = [
        m.pack(m.Hello((1, 4, 2), 0x0F, 0xC0FFEE01, "SE-0001"), 1, 1),
        m.pack(m.Heartbeat(123456), 2),
        m.pack(m.Button(m.ButtonKind.PRESS, 7, 120), 3),
        m.pack(m.Button(m.ButtonKind.LONG_PRESS, 8, 1500), 4),
        m.pack(m.LedSet(128, 255, 0, 64, m.LedPattern.SPIN, 900), 5),
        m.pack(m.Battery(3900, 67, True), 6),
        m.pack(m.ErrorReport(3, "LED overtemp"), 7),
        m.pack(m.Ack(), 8, 3),
        m.pack(m.Nack(m.NackReason.BUSY), 9, 5),
    ]


class Harness:
    """Runs one input through every decoder entry point and keeps the figures."""

    def __init__(self, per_input_s: float) -> None:
        self.stream = FrameDecoder()  # long-lived: state carries from one input to the next
        self.per_input_s = per_input_s
        self.inputs = self.frames = self.slow = 0
        self.max_input_s = 0.0

    def run(self, data: bytes) -> None:
        start = time.perf_counter()
        self._exercise(data)
        took = time.perf_counter() - start
        self.inputs += 1
        self.max_input_s = max(self.max_input_s, took)
        if took > self.per_input_s:
            self.slow += 1
            raise AssertionError(f"input took {took:.3f} s: {data.hex()}")
        if self.stream.buffered > MAX_ENCODED:
            raise AssertionError(f"decoder holds {self.stream.buffered} bytes")

    def _exercise(self, data: bytes) -> None:
        mode, rest = (data[0] % 4, data[1:]) if data else (0, b"")
        if mode == 0:
            step = 1 + (rest[0] % 64 if rest else 0)
            for i in range(0, len(rest), step):
                self._check_frames(self.stream.feed(rest[i : i + step]))
        elif mode == 1:
            body = rest + crc16_ccitt(rest).to_bytes(2, "little")
            wire = b"\x00" + cobs.encode(body) + b"\x00"
            self._check_frames(FrameDecoder().feed(wire))
            self._pure(wire)
        elif mode == 2:
            mtype, payload = (rest[0], rest[1 : 1 + MAX_PAYLOAD]) if rest else (0, b"")
            wire = encode_frame(Frame(type=mtype, seq=len(rest), payload=payload))
            self._check_frames(self.stream.feed(rest[MAX_PAYLOAD + 1 :] + wire))
        else:
            self._pure(rest)

    def _pure(self, wire: bytes) -> None:
        try:
            frame = decode_frame(wire)
        except FrameError:
            return
        self._check_frames([frame])

    def _check_frames(self, frames: list[Frame]) -> None:
        for frame in frames:
            self.frames += 1
            if decode_frame(encode_frame(frame)) != frame:
                raise AssertionError(f"frame does not round-trip: {frame!r}")
            try:
                unpack(frame)
            except PayloadError:
                pass

    def stats(self) -> dict[str, object]:
        return {
            "inputs": self.inputs,
            "frames_decoded": self.frames,
            "decoder_errors": {k.value: v for k, v in self.stream.errors.items()},
            "max_input_seconds": round(self.max_input_s, 6),
            "inputs_over_bound": self.slow,
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def _mutate(rng: random.Random, wire: bytes) -> bytes:
    data = bytearray(wire)
    for _ in range(rng.randint(0, 4)):
        op, at = rng.randrange(8), rng.randint(0, len(data))
        if op == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            del data[min(at, len(data) - 1)]
        elif op == 2:
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 3:
            data[at:at] = b"\x00"
        elif op == 4:
            data[at:] = data[at : at + rng.randint(0, 8)]
        elif op == 5 and data:
            data[at:at] = data[rng.randrange(len(data)) :][: rng.randint(1, 32)]
        elif op == 6:
            data += encode_frame(rng.choice(examples))
        else:
            data[at:at] = rng.randbytes(rng.randint(60, 200))  # longer than any frame
    return bytes(data)


def run_random(inputs: int, seed: int, harness: Harness) -> None:
    rng = random.Random(seed)
    for _ in range(inputs):
        frame = rng.choice(examples)
        kind = rng.randrange(4)
        if kind == 0:
            body = encode_frame(frame)
        elif kind == 1:
            body = rng.randbytes(rng.randint(0, 80))
        elif kind == 2:
            body = bytes([frame.type]) + frame.payload
        else:
            body = encode_frame(frame)[1:-1]
        harness.run(bytes([rng.randrange(4)]) + _mutate(rng, body))


def child_atheris(inputs: int, seed: int, per_input_s: float, rss_limit_mb: int, stats_path: str) -> None:
    import atheris

    with atheris.instrument_imports(include=["firmware_bridge", "cobs"]):
        _import_targets()
    harness = Harness(per_input_s)

    def target(data: bytes) -> None:
        harness.run(data)
        if harness.inputs % STATS_EVERY == 0 or harness.inputs >= inputs:
            Path(stats_path).write_text(json.dumps(harness.stats()))

    corpus = tempfile.mkdtemp(prefix="fuzz-corpus-")
    for i, frame in enumerate(examples):
        for mode in range(4):
            Path(corpus, f"seed-{i}-{mode}").write_bytes(bytes([mode]) + encode_frame(frame))
    timeout = max(1, int(per_input_s + 0.999))
    flags = [f"-runs={inputs}", f"-seed={seed}", "-max_len=512", f"-timeout={timeout}"]
    flags += [f"-rss_limit_mb={rss_limit_mb}", "-print_final_stats=1", corpus]
    atheris.Setup([sys.argv[0], *flags], target)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--engine", choices=["atheris", "random"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--per-input-s", type=float, default=1.0)
    parser.add_argument("--rss-limit-mb", type=int, default=512)
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--child-stats", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_stats:
        child_atheris(args.inputs, args.seed, args.per_input_s, args.rss_limit_mb, args.child_stats)
        return 0
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "random"
    start = time.monotonic()
    if engine == "atheris":
        with tempfile.TemporaryDirectory() as tmp:
            stats_path = os.path.join(tmp, "stats.json")
            cmd = [sys.executable, __file__, "--child-stats", stats_path, *sys.argv[1:]]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
            stats = json.loads(Path(stats_path).read_text()) if os.path.exists(stats_path) else {}
        exceptions = 0 if proc.returncode == 0 else 1
        stats["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
        final = {
            ln.split(":")[2].strip(): ln.split(":")[3].strip()
            for ln in proc.stderr.splitlines()
            if ln.startswith("stat::")
        }
        stats["libfuzzer_final_stats"] = final
    else:
        _import_targets()
        harness = Harness(args.per_input_s)
        exceptions = 0
        try:
            run_random(args.inputs, args.seed, harness)
        except Exception as exc:  # report it rather than lose the figures
            print(f"FAIL after {harness.inputs} inputs: {exc!r}", file=sys.stderr)
            exceptions = 1
        stats = harness.stats()
    seconds = time.monotonic() - start
    report = {
        "engine": engine,
        "inputs": stats.get("inputs", 0),
        "seconds": round(seconds, 1),
        "inputs_per_second": round(int(stats.get("inputs", 0)) / seconds),
        "exceptions": exceptions,
        "per_input_bound_s": args.per_input_s,
        "rss_limit_mb": args.rss_limit_mb,
        **stats,
        "seed": args.seed,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    bounded = report["max_rss_mb"] <= args.rss_limit_mb  # type: ignore[operator]
    ok = exceptions == 0 and report["inputs"] >= args.inputs and bounded and not stats.get("inputs_over_bound")
    report["ok"] = ok
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
