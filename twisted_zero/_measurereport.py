"""
The accounting of C{twisted-zero measure}: bytes per stream on the client's
clock, interval reports, and the final report as text (like iperf3) or as
one JSON document.

The clock of a stream starts at its first byte moved (received, or handed to
the connection when sending) and stops at its end; the clock of the test
starts at the first byte of any stream. Intervals are slices of the test's
clock, measured (not nominal) reactor times.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define, field
from twisted.internet.interfaces import IReactorTime

_BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
_BIT_UNITS = ["bit/s", "Kbit/s", "Mbit/s", "Gbit/s", "Tbit/s", "Pbit/s"]


def formatBytes(count: float) -> str:
    """
    A byte count in binary units, three significant digits:
    C{"1.50 GiB"}.
    """
    return _scaled(count, 1024, _BYTE_UNITS)


def formatBits(bitsPerSecond: float) -> str:
    """
    A rate in bits per second in decimal units: C{"9.41 Gbit/s"}.
    """
    return _scaled(bitsPerSecond, 1000, _BIT_UNITS)


def _scaled(value: float, base: int, units: Sequence[str]) -> str:
    index = 0
    while value >= base * 0.9995 and index < len(units) - 1:
        value /= base
        index += 1
    if index == 0:
        return f"{value:.0f} {units[0]}"
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{digits}f} {units[index]}"


def figures(start: float, end: float, count: int) -> dict[str, Any]:
    """
    The JSON figures of C{count} bytes moved from C{start} to C{end}:
    C{bits_per_second} is exactly C{8 * bytes / seconds} (0 for no time).
    """
    seconds = max(end - start, 0.0)
    return {
        "start": start,
        "end": end,
        "seconds": seconds,
        "bytes": count,
        "bits_per_second": 8 * count / seconds if seconds > 0 else 0.0,
    }


@define
class StreamMeter:
    """
    What one stream moved and when. Protocols add to L{bytes} directly: the
    only work done per chunk.

    @ivar number: The stream's number in reports, from 1.
    @ivar bytes: Bytes received by the application, or handed to the
        connection when sending.
    @ivar started: When the first byte moved; L{None} before.
    @ivar ended: When the stream ended; L{None} before.
    """

    clock: IReactorTime
    number: int
    onStart: Callable[[StreamMeter], object] = lambda meter: None
    bytes: int = 0
    started: float | None = None
    ended: float | None = None

    def start(self) -> None:
        """
        Note the first byte moved, once.
        """
        if self.started is None:
            self.started = self.clock.seconds()
            self.onStart(self)

    def end(self) -> None:
        """
        Note the end of the stream, once; a stream that never started ends
        with no time.
        """
        if self.ended is None:
            self.ended = self.clock.seconds()
            if self.started is None:
                self.started = self.ended

    def seconds(self) -> float:
        """
        The stream's time so far: from its first byte to its end (or now).
        """
        if self.started is None:
            return 0.0
        end = self.clock.seconds() if self.ended is None else self.ended
        return max(end - self.started, 0.0)


@define
class Interval:
    """
    One interval report: per-stream bytes from C{start} to C{end}, seconds of
    the test's clock.
    """

    start: float
    end: float
    streams: list[int]

    def toJSON(self) -> dict[str, Any]:
        streams = [
            {"stream": number, **figures(self.start, self.end, count)}
            for number, count in enumerate(self.streams, 1)
        ]
        return {
            "streams": streams,
            "sum": figures(self.start, self.end, sum(self.streams)),
        }


TAIL = 0.001
"""
Seconds: a final interval shorter than this joins the one before.
"""


@define
class Recorder:
    """
    The meters of all streams, the test's clock and its intervals.

    @ivar meters: One per stream.
    @ivar origin: When the test's clock started (first byte of any
        stream); L{None} before.
    @ivar intervals: The intervals closed so far.
    """

    clock: IReactorTime
    count: int
    onStart: Callable[[], object] = lambda: None
    meters: list[StreamMeter] = field(init=False)
    origin: float | None = field(default=None, init=False)
    intervals: list[Interval] = field(factory=list, init=False)
    _mark: float = field(default=0.0, init=False)
    _marked: list[int] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.meters = [
            StreamMeter(self.clock, number, self._started)
            for number in range(1, self.count + 1)
        ]
        self._marked = [0] * self.count

    def _started(self, meter: StreamMeter) -> None:
        if self.origin is None:
            self.origin = meter.started
            self._mark = self.clock.seconds()
            self.onStart()

    def now(self) -> float:
        """
        Seconds on the test's clock (0 before it started).
        """
        if self.origin is None:
            return 0.0
        return self.clock.seconds() - self.origin

    def total(self) -> int:
        """
        Bytes moved by all streams so far.
        """
        return sum(meter.bytes for meter in self.meters)

    def closeInterval(self, final: bool = False) -> Interval | None:
        """
        End the current interval now and return it; the final one only if
        it has any time.
        """
        if self.origin is None:
            return None
        now = self.clock.seconds()
        counts = [meter.bytes for meter in self.meters]
        if final and now - self._mark < TAIL and self.intervals:
            # A tail too short to report: the last interval takes it.
            last = self.intervals[-1]
            last.end = now - self.origin
            last.streams = [
                count + new - marked
                for count, new, marked in zip(
                    last.streams, counts, self._marked, strict=True
                )
            ]
            self._mark, self._marked = now, counts
            return None
        interval = Interval(
            self._mark - self.origin,
            now - self.origin,
            [
                count - marked
                for count, marked in zip(counts, self._marked, strict=True)
            ],
        )
        self._mark, self._marked = now, counts
        self.intervals.append(interval)
        return interval

    def endFigures(self) -> dict[str, Any]:
        """
        The JSON figures of the whole test: per stream (its own clock) and
        their sum (from the first start to the last end).
        """
        streams = []
        starts, ends = [], []
        for meter in self.meters:
            start = meter.started if meter.started is not None else 0.0
            end = meter.ended if meter.ended is not None else start
            origin = self.origin if self.origin is not None else start
            streams.append(
                {
                    "stream": meter.number,
                    **figures(start - origin, end - origin, meter.bytes),
                }
            )
            if meter.started is not None:
                starts.append(start - origin)
                ends.append(end - origin)
        first = min(starts, default=0.0)
        last = max(ends, default=0.0)
        return {
            "streams": streams,
            "sum": figures(first, last, sum(meter.bytes for meter in self.meters)),
        }


def intervalLines(interval: Interval, direction: str = "") -> list[str]:
    """
    The text lines of one interval: one per stream and a C{[SUM]} line when
    there are several.
    """
    data = interval.toJSON()
    lines = [_line(f"{s['stream']:3d}", s, direction) for s in data["streams"]]
    if len(lines) > 1:
        lines.append(_line("SUM", data["sum"], direction))
    return lines


def endLines(end: dict[str, Any], direction: str) -> list[str]:
    """
    The text lines of the end report.
    """
    lines = [_line(f"{s['stream']:3d}", s, direction) for s in end["streams"]]
    if len(lines) > 1:
        lines.append(_line("SUM", end["sum"], direction))
    return lines


HEADER = "[ ID] Interval           Transfer     Bitrate         Rate"
SEPARATOR = "- " * 30


def _line(label: str, f: dict[str, Any], direction: str) -> str:
    span = f"{f['start']:6.2f}-{f['end']:<6.2f} sec"
    rate = f["bytes"] / f["seconds"] if f["seconds"] > 0 else 0.0
    line = (
        f"[{label}] {span}  {formatBytes(f['bytes']):>10}  "
        f"{formatBits(f['bits_per_second']):>13}  {formatBytes(rate) + '/s':>12}"
    )
    return f"{line}  {direction}".rstrip()


def progressLine(recorder: Recorder, goal: str) -> str:
    """
    The live progress line: time, bytes and rate so far.
    """
    now = recorder.now()
    total = recorder.total()
    rate = 8 * total / now if now > 0 else 0.0
    return f"{now:6.1f} s{goal}  {formatBytes(total):>10}  {formatBits(rate):>13}"


def latencyFigures(samples: Sequence[float]) -> dict[str, Any]:
    """
    Round-trip figures in milliseconds: min, median, p99 (nearest rank),
    mean and jitter (the mean absolute difference of consecutive samples).
    """
    ms = [sample * 1000 for sample in samples]
    ordered = sorted(ms)
    n = len(ordered)
    if n == 0:
        return {"count": 0, "samples_ms": []}
    middle = n // 2
    median = ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    jitter = (
        sum(abs(b - a) for a, b in itertools.pairwise(ms)) / (n - 1) if n > 1 else 0.0
    )
    return {
        "count": n,
        "min_ms": ordered[0],
        "median_ms": median,
        "p99_ms": ordered[max(math.ceil(0.99 * n) - 1, 0)],
        "max_ms": ordered[-1],
        "mean_ms": sum(ms) / n,
        "jitter_ms": jitter,
        "samples_ms": ms,
    }


def latencyLine(f: dict[str, Any]) -> str:
    """
    One line of round-trip figures.
    """
    if not f["count"]:
        return "no round trips"
    return (
        f"{f['count']} round trips: min {f['min_ms']:.3f} ms, "
        f"median {f['median_ms']:.3f} ms, p99 {f['p99_ms']:.3f} ms, "
        f"jitter {f['jitter_ms']:.3f} ms"
    )


def jsonDocument(document: dict[str, Any]) -> str:
    """
    The one JSON document, as a line of text.
    """
    return json.dumps(document, sort_keys=False) + "\n"
