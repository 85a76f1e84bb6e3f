"""
The harness the benchmarks share: sizes, the command line and the plan it
makes, pinning to CPUs, the test file, the rounds and their results, the
medians and per-round ratios, and the report's tables. The servers measured
are in C{benchservers.py}, the clients measuring in C{benchclients.py}. Not
a benchmark itself.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import os
import random
import re
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
STALLED_BATCH = 25
HOST = "127.0.0.1"
GB = 10**9
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

OURS = "ours"
BASELINE = "baseline"
DAEMONS = (OURS, BASELINE)
"""
The kinds of server that are our daemon: of this tree, or of the baseline's.
"""


class BenchError(Exception):
    """
    A measurement or a server failed; the message says how.
    """


# Sizes -------------------------------------------------------------------

_SIZE = re.compile(r"([0-9]+)\s*([KMG]?)(?:i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": KiB, "M": MiB, "G": GiB}


def parseSize(text: str) -> int:
    """
    C{65536}, C{64K}, C{256M}, C{1G}: powers of 1024.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 256M")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def formatSize(size: int) -> str:
    for unit, scale in (("G", GiB), ("M", MiB), ("K", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


# Checkouts ---------------------------------------------------------------


def checkoutDirectory(text: str) -> Path:
    """
    An argparse type: a directory that holds another checkout of this project
    (a C{twisted_zero} package and C{twisted/plugins}, as made by C{git
    worktree add DIR COMMIT}), resolved.
    """
    path = Path(text).expanduser().resolve()
    for needed in ("twisted_zero/__init__.py", "twisted/plugins"):
        if not (path / needed).exists():
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a checkout of twisted-zero: no {needed}"
            )
    return path


def addBaselineOption(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline",
        type=checkoutDirectory,
        metavar="PATH",
        help="also measure, in every round, our daemon as run from the "
        "checkout at PATH (e.g. made by git worktree add PATH COMMIT), "
        "started like ours but with PYTHONPATH set to PATH, and report the "
        "per-round ratios ours / baseline",
    )


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


# Processes ---------------------------------------------------------------


def dieWithParent() -> None:
    """
    In a child before it execs: get SIGTERM when the benchmark dies, even by
    SIGKILL, so no server outlives it.
    """
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# Pinning to CPUs ---------------------------------------------------------

_CPU_LISTS = re.compile(r"([0-9]+(?:,[0-9]+)*):([0-9]+(?:,[0-9]+)*)")


def _cpuList(cpus: Iterable[int]) -> str:
    """
    C{CPU 0} or C{CPUs 0,1}.
    """
    ordered = sorted(cpus)
    return f"CPU{'s' if len(ordered) > 1 else ''} {','.join(map(str, ordered))}"


@dataclass(frozen=True)
class Pinning:
    """
    The CPUs that the servers a benchmark starts, and its measuring client,
    may run on (C{--pin}).
    """

    serverCpus: frozenset[int]
    clientCpus: frozenset[int]

    def describe(self) -> str:
        return (
            f"servers on {_cpuList(self.serverCpus)}, "
            f"client on {_cpuList(self.clientCpus)}"
        )

    def pinClient(self) -> None:
        """
        Restrict this process, the measuring client, to the client CPUs; the
        processes it forks from then on inherit that.
        """
        os.sched_setaffinity(0, self.clientCpus)

    def prepareServer(self) -> None:
        """
        A C{preexec_fn}: L{dieWithParent}, and restrict the server to the
        server CPUs before it execs, so that every process it forks later
        (nginx's workers) inherits that.
        """
        dieWithParent()
        os.sched_setaffinity(0, self.serverCpus)

    def checkServer(self, pids: Iterable[int], what: str) -> None:
        """
        Check that the processes C{pids} of a server may run on the server
        CPUs only.

        @raise BenchError: If one may run elsewhere.
        """
        for pid in pids:
            cpus = os.sched_getaffinity(pid)
            if cpus != self.serverCpus:
                raise BenchError(
                    f"{what} (pid {pid}) may run on {_cpuList(cpus)}, not "
                    f"only on {_cpuList(self.serverCpus)}"
                )


def parsePinning(text: str) -> Pinning:
    """
    An argparse type: C{SERVER_CPUS:CLIENT_CPUS}, each a comma-separated list
    of CPU numbers this process may run on (C{0:1}, C{0,1:2,3}).
    """
    match = _CPU_LISTS.fullmatch(text.replace(" ", ""))
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not SERVER_CPUS:CLIENT_CPUS, such as 0:1"
        )
    available = os.sched_getaffinity(0)
    servers, client = (frozenset(map(int, cpus.split(","))) for cpus in match.groups())
    missing = (servers | client) - available
    if missing:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {_cpuList(missing)} not available (this process may "
            f"run on {_cpuList(available)})"
        )
    return Pinning(servers, client)


def addPinOption(parser: argparse.ArgumentParser, clientNote: str = "") -> None:
    parser.add_argument(
        "--pin",
        type=parsePinning,
        metavar="SERVER_CPUS:CLIENT_CPUS",
        help="run every server the benchmark starts (and every process it "
        "forks) on SERVER_CPUS only and the measuring client on CLIENT_CPUS "
        f"only{clientNote}; each a comma-separated list of CPU numbers, e.g. "
        "0:1 (default: no pinning, where the scheduler happens to put them "
        "changes the throughput)",
    )


# The command line --------------------------------------------------------


def _shown(value: float | None, parse: Callable[[str], Any]) -> str:
    """
    C{value} as the help of an option that C{parse}s it says it.
    """
    if value is not None and parse is parseSize:
        return formatSize(int(value))
    return f"{value:g}" if value is not None else "none"


class BenchParser(argparse.ArgumentParser):
    """
    The command line of a benchmark: an argument parser whose number options
    say their least value and, where C{--quick} changes it, their default
    with and without it; L{parseArguments} applies both.
    """

    def __init__(self, description: str) -> None:
        super().__init__(description=description)
        self._numbers: list[tuple[str, float | None, float | None, float | None]] = []

    def addNumber(
        self,
        name: str,
        help: str,
        parse: Callable[[str], Any] = int,
        default: float | None = None,
        quick: float | None = None,
        least: float | None = 1,
    ) -> None:
        """
        An option that C{parse}s a number, at least C{least} if it has a
        value (L{None}: any). With C{quick}, its value is by default
        C{default}, or C{quick} with C{--quick}, as its C{help} goes on to
        say.
        """
        if quick is None:
            self.add_argument(name, type=parse, default=default, help=help)
        else:
            normal, small = _shown(default, parse), _shown(quick, parse)
            help = f"{help} (default {normal}; quick {small})"
            self.add_argument(name, type=parse, help=help)
        self._numbers.append((name, default, quick, least))

    def parseArguments(self, argv: Sequence[str] | None) -> argparse.Namespace:
        """
        Parse C{argv}, give each number option left out its default (see
        L{addNumber}), and stop with a usage error if one is too small.
        """
        args = self.parse_args(argv)
        for name, default, quick, least in self._numbers:
            dest = name.removeprefix("--").replace("-", "_")
            if quick is not None and getattr(args, dest) is None:
                setattr(args, dest, quick if args.quick else default)
            value = getattr(args, dest)
            if least is not None and value is not None and value < least:
                self.error(f"{name} is too small")
        return args


def addRoundOptions(parser: BenchParser) -> None:
    """
    The first options of every benchmark: C{--quick} and C{--rounds}.
    """
    parser.add_argument(
        "--quick", action="store_true", help="one round, small sizes: a smoke test"
    )
    parser.addNumber("--rounds", "rounds", default=5, quick=1)


def addStalledOptions(parser: BenchParser, what: str) -> None:
    """
    C{--stalled}, how many stalled C{what} the memory test opens, and
    C{--recv-size}.
    """
    parser.addNumber(
        "--stalled", f"stalled {what} for the memory test (default 200)", default=200
    )
    parser.addNumber(
        "--recv-size",
        "client recv_into buffer (default 1M)",
        parseSize,
        default=MiB,
    )


def addFileSizeOption(parser: BenchParser, what: str, normal: int, quick: int) -> None:
    """
    C{--file-size}, the size of C{what}: C{normal}, or C{quick} with
    C{--quick}.
    """
    parser.addNumber(
        "--file-size", f"size of {what}", parseSize, default=normal, quick=quick
    )


def addRunOptions(parser: BenchParser, clientNote: str) -> None:
    """
    The last options of every benchmark: C{--timeout}, C{--budget},
    C{--seed}, C{--baseline} and C{--pin} (see L{addPinOption} for
    C{clientNote}).
    """
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds one measurement may take (default 300)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=3600.0,
        help="start no new round after this many seconds (default 3600)",
    )
    parser.add_argument("--seed", type=int, help="seed of the shuffled order")
    addBaselineOption(parser)
    addPinOption(parser, clientNote)


_Plan = TypeVar("_Plan", bound="RunPlan")


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """
    What the plan of every benchmark has; a benchmark's own plan adds what
    it measures.
    """

    rounds: int
    timeout: float
    budget: float
    seed: int
    baseline: Path | None = None
    """
    The checkout the baseline daemon is run from, or L{None} for none.
    """
    pinning: Pinning | None = None
    """
    The CPUs of the servers and of the client, or L{None} to leave them to
    the scheduler.
    """

    @classmethod
    def fromArguments(
        cls: type[_Plan], args: argparse.Namespace, **fields: Any
    ) -> _Plan:
        """
        The plan that the options C{args} (of L{BenchParser.parseArguments})
        make: each field not in C{fields} is the option of its name
        (C{singleBytes}: C{--single-bytes}), C{seed} the one given or a
        random one, and C{pinning} C{--pin}.
        """
        fields.setdefault("pinning", args.pin)
        fields.setdefault(
            "seed", args.seed if args.seed is not None else random.randrange(2**32)
        )
        for planField in dataclasses.fields(cls):
            if planField.name not in fields:
                option = re.sub("([A-Z])", r"_\1", planField.name).lower()
                fields[planField.name] = getattr(args, option)
        return cls(**fields)


# The test file -----------------------------------------------------------


def writeTestFile(path: Path, size: int) -> None:
    """
    Write C{size} random bytes to a new file at C{path}.
    """
    block = os.urandom(MiB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        written = 0
        while written < size:
            written += os.write(fd, block[: min(MiB, size - written)])
        os.fsync(fd)
    finally:
        os.close(fd)


def warmPageCache(path: Path, buffer: bytearray) -> None:
    with open(path, "rb", buffering=0) as file:
        while file.readinto(buffer):
            pass


# The report --------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
