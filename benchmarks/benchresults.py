"""
The results the benchmarks share: throughput measurements, what the rounds
measured of each server, the medians, spreads and per-round ratios of the
values, and the report's tables. Not a benchmark itself.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Generic, TypeVar

from benchutil import GB, BenchError, progress

# Measurements ------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    """
    One throughput measurement.
    """

    seconds: float
    bytes: int
    serverCpu: float
    clientCpu: float

    @property
    def gbPerSecond(self) -> float:
        return self.bytes / GB / self.seconds

    @property
    def serverCpuPerGb(self) -> float:
        return self.serverCpu / (self.bytes / GB)

    @property
    def serverLoad(self) -> float:
        return self.serverCpu / self.seconds

    @property
    def clientLoad(self) -> float:
        return self.clientCpu / self.seconds

    def serverNote(self) -> str:
        """
        What L{describe} adds after the server's CPU share: nothing here.
        """
        return ""

    def describe(self, name: str, width: int) -> str:
        """
        The progress line of this measurement of C{name}, in a column
        C{width} wide.
        """
        return (
            f"  {name:{width}} {self.gbPerSecond:6.2f} GB/s  "
            f"{self.serverCpuPerGb:5.2f} CPU s/GB  "
            f"server {self.serverLoad:4.0%}{self.serverNote()}  "
            f"client {self.clientLoad:4.0%}"
        )


_Sample = TypeVar("_Sample", bound=Throughput)


# Medians, ratios and tables ----------------------------------------------


def median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def roundRatios(
    tops: Sequence[float | None], bottoms: Sequence[float | None]
) -> list[float | None]:
    """
    The per-round ratios C{top / bottom}: L{None} for a round that lacks
    either value, or whose C{bottom} is not positive (as a stalled test's
    added memory can be: no ratio means anything then).
    """
    return [
        None if top is None or bottom is None or bottom <= 0 else top / bottom
        for top, bottom in zip(tops, bottoms, strict=True)
    ]


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def spread(values: Sequence[float | None], spec: str = ".2f") -> str:
    """
    C{min-max} of the values present, or C{n/a}.
    """
    present = [value for value in values if value is not None]
    if not present:
        return "n/a"
    return f"{min(present):{spec}}-{max(present):{spec}}"


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], textColumns: int = 2
) -> str:
    """
    Align C{rows} under C{header}: the first C{textColumns} columns to the
    left, the numbers to the right.
    """
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.ljust(width) if i < textColumns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *map(line, rows)])


def throughputColumns(extra: Sequence[str] = ()) -> list[str]:
    """
    The headers of L{throughputCells}, with C{extra} headers before the
    client's CPU.
    """
    return ["GB/s", "min-max", "srv CPU s/GB", "srv CPU", *extra, "client CPU", "n"]


def _clientLoad(sample: Throughput) -> float:
    return sample.clientLoad


def throughputCells(
    done: Sequence[_Sample], extra: Sequence[Callable[[_Sample], float]] = ()
) -> list[str]:
    """
    The medians of the measurements C{done} and their count, under
    L{throughputColumns}: with C{extra} figures of each measurement (as
    percentages), before the client's CPU.
    """
    speeds: list[float | None] = [sample.gbPerSecond for sample in done]
    figures: list[Callable[[_Sample], float]] = [*extra, _clientLoad]
    return [
        fmt(median(speeds)),
        spread(speeds),
        fmt(median([sample.serverCpuPerGb for sample in done])),
        fmt(median([sample.serverLoad for sample in done]), ".0%"),
        *(
            fmt(median([figure(sample) for sample in done]), ".0%")
            for figure in figures
        ),
        str(len(done)),
    ]


def stalledCells(values: Sequence[float | None]) -> list[str]:
    """
    The median, C{min-max} and count of the memory figures present, under
    L{stalledColumns}.
    """
    count = sum(value is not None for value in values)
    return [fmt(median(values), ".1f"), spread(values, ".1f"), str(count)]


def stalledColumns(unit: str) -> list[str]:
    """
    The headers of L{stalledCells}, the median's in C{unit}.
    """
    return [unit, "min-max", "n"]


RATIO_COLUMNS = ("ratio", "median", "min-max", "target", "")
"""
The headers of L{ratioCells}.
"""


def ratioCells(
    title: str, values: Sequence[float | None], target: str, verdict: str
) -> list[str]:
    """
    A ratio's row: its C{title}, the median and C{min-max} of its per-round
    C{values}, its C{target} and the C{verdict} on it.
    """
    return [title, fmt(median(values)), spread(values), target, verdict]


def section(
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    textColumns: int = 2,
) -> list[str]:
    """
    The lines of a report's table (see L{table}) under its C{title}.
    """
    return [title, table(header, rows, textColumns)]


# Rounds and results ------------------------------------------------------

_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


def roundIndexes(rounds: int, budget: float, began: float) -> Iterator[int]:
    """
    The rounds to run, saying which one starts; none after the first once
    C{budget} seconds have passed since C{began} (on C{time.monotonic}).
    """
    for roundIndex in range(rounds):
        if roundIndex and time.monotonic() - began > budget:
            progress(f"time budget of {budget:.0f}s spent: stopping early")
            return
        progress(f"round {roundIndex + 1}/{rounds}")
        yield roundIndex


@dataclass
class RoundResults(Generic[_Key, _Sample]):
    """
    What the rounds measured of each server (a C{_Key}): per round, the
    throughput measurements and the stalled memory figures, L{None} where a
    measurement failed or was not made; and the failures.
    """

    rounds: int
    throughput: dict[tuple[_Key, int], list[_Sample | None]] = field(
        default_factory=dict
    )
    stalled: dict[_Key, list[float | None]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    roundsDone: int = 0

    def addThroughput(
        self, server: _Key, connections: int, roundIndex: int, value: _Sample | None
    ) -> None:
        slots = self.throughput.setdefault((server, connections), [None] * self.rounds)
        slots[roundIndex] = value

    def addStalled(self, server: _Key, roundIndex: int, value: float | None) -> None:
        self.stalled.setdefault(server, [None] * self.rounds)[roundIndex] = value

    def samples(self, server: _Key, connections: int) -> list[_Sample | None]:
        return self.throughput.get((server, connections), [None] * self.rounds)

    def done(self, server: _Key, connections: int) -> list[_Sample]:
        """
        The throughput measurements of C{server} on C{connections}
        connections that were made.
        """
        samples = self.samples(server, connections)
        return [sample for sample in samples if sample is not None]

    def stalledCells(self, server: _Key) -> list[str]:
        """
        The L{stalledCells} of C{server}'s stalled memory figures.
        """
        return stalledCells(self.stalled.get(server, []))

    def throughputRatios(
        self,
        top: _Key,
        bottom: _Key,
        connections: int,
        value: Callable[[_Sample], float] = lambda sample: sample.gbPerSecond,
    ) -> list[float | None]:
        """
        The per-round ratios (L{roundRatios}) of C{value} (GB/s by default)
        of the servers C{top} and C{bottom} on C{connections} connections.
        """

        def values(server: _Key) -> list[float | None]:
            samples = self.samples(server, connections)
            return [None if sample is None else value(sample) for sample in samples]

        return roundRatios(values(top), values(bottom))

    def stalledRatios(self, top: _Key, bottom: _Key) -> list[float | None]:
        """
        The per-round ratios (L{roundRatios}) of the stalled memory figures
        of the servers C{top} and C{bottom}.
        """
        missing: list[float | None] = [None] * self.rounds
        return roundRatios(
            self.stalled.get(top, missing), self.stalled.get(bottom, missing)
        )

    def attempt(
        self, roundIndex: int, name: str, measure: Callable[[], _Value]
    ) -> _Value | None:
        """
        C{measure()}; or if it fails, L{None}, the failure noted and said.
        """
        try:
            return measure()
        except (OSError, BenchError) as e:
            self.failures.append(f"round {roundIndex + 1}: {name}: {e}")
            progress(f"  {name}: FAILED: {e}")
            return None

    def record(
        self,
        roundIndex: int,
        server: _Key,
        connections: int,
        name: str,
        measure: Callable[[], _Sample],
        width: int,
    ) -> None:
        """
        L{attempt} C{measure()}, the throughput of C{server} on
        C{connections} connections, say it (L{Throughput.describe}, C{name}
        in a column C{width} wide) and keep it.
        """
        sample = self.attempt(roundIndex, name, measure)
        if sample is not None:
            progress(sample.describe(name, width))
        self.addThroughput(server, connections, roundIndex, sample)

    def recordStalled(
        self,
        roundIndex: int,
        server: _Key,
        name: str,
        measure: Callable[[], float],
        line: str,
    ) -> None:
        """
        L{attempt} C{measure()}, the stalled memory figure of C{server}, say
        it (C{line}, formatted with C{name} and C{value}) and keep it.
        """
        value = self.attempt(roundIndex, name, measure)
        if value is not None:
            progress(line.format(name=name, value=value))
        self.addStalled(server, roundIndex, value)

    def recordStalledRound(
        self,
        roundIndex: int,
        rng: random.Random,
        names: Mapping[_Key, str],
        measure: Callable[[_Key], float],
        line: str,
    ) -> None:
        """
        The last of a round: L{recordStalled} C{measure(server)} for each
        server of C{names} (with its name), in an order C{rng} shuffles.
        """
        servers = list(names)
        for server in rng.sample(servers, len(servers)):
            measureServer = partial(measure, server)
            self.recordStalled(roundIndex, server, names[server], measureServer, line)
        self.roundsDone = roundIndex + 1

    def failureLines(self) -> list[str]:
        """
        The end of the report: the failures, if any.
        """
        if not self.failures:
            return []
        return [
            "",
            f"{len(self.failures)} measurement(s) failed:",
            *(f"  {failure}" for failure in self.failures),
        ]
