"""
The harness the benchmarks share: sizes, the command line and the plan it
makes, pinning to CPUs, the test file and progress lines. The results and
the report's tables are in C{benchresults.py}, the servers measured in
C{benchservers.py}, the clients measuring in C{benchclients.py}. Not a
benchmark itself.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import os
import random
import re
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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


# Progress ----------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
