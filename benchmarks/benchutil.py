"""
Helpers shared by the benchmarks (C{bench.py}, C{http_bench.py}): sizes,
the checkouts the daemons are run from, the command line, what /proc says of
a server, server processes, pinning to CPUs, waiting for a server to settle,
the test file, the rounds and their results, and the report's tables. Not a
benchmark itself.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Generic, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
STARTUP_TIMEOUT = 20.0
STALLED_BATCH = 25
HOST = "127.0.0.1"
GB = 10**9
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

TWISTD = (
    "import sys; sys.argv[0] = 'twistd'; "
    "from twisted.scripts.twistd import run; sys.exit(run())"
)
"""
C{python -c TWISTD ...} runs twistd with this interpreter (and its
C{PYTHONPATH}), whatever C{twistd} script is on C{PATH}.
"""

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


def checkoutEnvironment(root: Path) -> dict[str, str]:
    """
    This process's environment with C{root} first on C{PYTHONPATH}: a daemon
    started with it imports C{twisted_zero} (and so the C{twisted_zero.tap}
    that the C{zero} plugin names) from the checkout at C{root}.
    """
    env = dict(os.environ)
    paths = [str(root), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    return env


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


def serverEnvironment(kind: str, baseline: Path | None) -> dict[str, str]:
    """
    The environment of a server of C{kind}: the baseline imports our package
    from its checkout at C{baseline}, every other server from this tree.
    """
    if kind == BASELINE:
        assert baseline is not None
        return checkoutEnvironment(baseline)
    return checkoutEnvironment(REPO_ROOT)


def runProbe(
    probe: str, arguments: Sequence[str], env: dict[str, str], cwd: Path, failure: str
) -> list[str]:
    """
    Run the Python code C{probe} with C{arguments} in C{env} and C{cwd}.

    @return: The words it printed.
    @raise SystemExit: With C{failure} and the probe's error output, if it
        failed.
    """
    completed = subprocess.run(
        [sys.executable, "-c", probe, *arguments],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if completed.returncode != 0:
        raise SystemExit(f"{failure}:\n{completed.stderr.strip()}")
    return completed.stdout.split()


def checkImportedFrom(package: str, root: Path) -> None:
    """
    Stop the benchmark unless C{package}, the C{twisted_zero/__init__.py} a
    probe imported, is in the checkout at C{root}.
    """
    if not Path(package).resolve().is_relative_to(root):
        raise SystemExit(f"the daemon would import {package}, not {root}")


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


# /proc and sockets -------------------------------------------------------


def cpuTimes(pid: int) -> tuple[float, float]:
    """
    User and system CPU time of a process so far, in seconds.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name, in parentheses, may itself hold spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU time of a process so far.
    """
    return sum(cpuTimes(pid))


def rssKiB(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


def openFds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def childPids(pid: int) -> list[int]:
    """
    The processes whose parent is C{pid}.
    """
    children = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


def queuedBytes(sock: socket.socket) -> int:
    """
    Bytes received on C{sock} and not yet read.
    """
    result = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(result, sys.byteorder)


# Processes ---------------------------------------------------------------


def dieWithParent() -> None:
    """
    In a child before it execs: get SIGTERM when the benchmark dies, even by
    SIGKILL, so no server outlives it.
    """
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def terminate(signum: int, frame: FrameType | None) -> None:
    """
    A SIGTERM handler that unwinds the benchmark, so that its C{finally}
    clauses stop the servers and remove the temporary directory.
    """
    raise SystemExit(128 + signum)


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


def serverPreexec(pinning: Pinning | None) -> Callable[[], None]:
    """
    The C{preexec_fn} of a server subprocess: L{dieWithParent}, and with
    C{pinning} the server CPUs (L{Pinning.prepareServer}).
    """
    return dieWithParent if pinning is None else pinning.prepareServer


# The command line --------------------------------------------------------


def addRoundOptions(parser: argparse.ArgumentParser) -> None:
    """
    The first options of every benchmark: C{--quick} and C{--rounds}.
    """
    parser.add_argument(
        "--quick", action="store_true", help="one round, small sizes: a smoke test"
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 5; quick 1)")


def addStalledOptions(parser: argparse.ArgumentParser, what: str) -> None:
    """
    C{--stalled}, how many stalled C{what} the memory test opens, and
    C{--recv-size}.
    """
    parser.add_argument(
        "--stalled",
        type=int,
        default=200,
        help=f"stalled {what} for the memory test (default 200)",
    )
    parser.add_argument(
        "--recv-size",
        type=parseSize,
        default=MiB,
        help="client recv_into buffer (default 1M)",
    )


def addRunOptions(parser: argparse.ArgumentParser, clientNote: str) -> None:
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


def picker(quick: bool) -> Callable[[int | None, int, int], int]:
    """
    C{pick(value, normal, small)}: an option's C{value} if it was given,
    else C{small} with C{--quick} and C{normal} without.
    """

    def pick(value: int | None, normal: int, small: int) -> int:
        return value if value is not None else (small if quick else normal)

    return pick


def seedOf(seed: int | None) -> int:
    """
    The C{--seed} given, or a random one.
    """
    return seed if seed is not None else random.randrange(2**32)


def checkPositive(
    parser: argparse.ArgumentParser, values: Iterable[tuple[str, int]]
) -> None:
    """
    Stop with a usage error if one of the C{(option, value)} pairs has a
    value below 1.
    """
    for name, value in values:
        if value < 1:
            parser.error(f"{name} is too small")


# Server processes --------------------------------------------------------


def spawnServer(
    command: Sequence[str],
    logPath: Path,
    errPath: Path,
    cwd: Path,
    env: dict[str, str],
    pinning: Pinning | None,
    mergeErrors: bool = False,
) -> subprocess.Popen[bytes]:
    """
    Start a server subprocess in a session of its own, its output to
    C{logPath} and its error output to C{errPath} (or with C{mergeErrors} to
    C{logPath} too, C{errPath} being created empty).
    """
    with open(logPath, "wb") as log, open(errPath, "wb") as err:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if mergeErrors else err,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=serverPreexec(pinning),
        )


class ServerProcess:
    """
    A running server subprocess that a benchmark started; as a context
    manager, stopped on the way out. A subclass (a dataclass) has a
    C{process} and a C{logPath}, and says what C{label} it goes by.
    """

    process: subprocess.Popen[bytes]
    logPath: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def label(self) -> str:
        raise NotImplementedError

    def logPaths(self) -> tuple[Path, ...]:
        """
        The logs whose end L{logTail} shows.
        """
        return (self.logPath, self.logPath.with_suffix(".err"))

    def _waitForPort(self, portLine: re.Pattern[str]) -> int:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            match = portLine.search(self.logPath.read_text(errors="replace"))
            if match:
                return int(match.group(1))
            self.checkAlive()
            time.sleep(0.05)
        raise BenchError(f"{self.label}: no port after {STARTUP_TIMEOUT}s")

    def checkAlive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.label} (pid {self.pid}) exited with "
                f"{self.process.returncode}:\n{self.logTail()}"
            )

    def logTail(self, lines: int = 15) -> str:
        text = ""
        for path in self.logPaths():
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """
        Terminate this server (by its PID only) and reap it.
        """
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self: _Server) -> _Server:
        return self

    def __exit__(
        self,
        excType: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


_Server = TypeVar("_Server", bound=ServerProcess)


DAEMON_PORT_LINE = re.compile(
    rf"(?:streaming \S+|serving HTTP) on {re.escape(HOST)}:(\d+)"
)


@dataclass
class ZeroDaemon(ServerProcess):
    """
    A C{twistd zero} daemon of this tree or of the baseline (as C{env}
    says), as a subprocess that dies with the benchmark, its output in
    C{workDir}, and the port of its first listener.
    """

    kind: str
    args: Sequence[str]
    env: dict[str, str]
    workDir: Path
    process: subprocess.Popen[bytes] = field(init=False)
    logPath: Path = field(init=False)
    port: int = field(init=False)

    @property
    def label(self) -> str:
        return self.kind

    def __post_init__(self) -> None:
        self.logPath = self.log = self.workDir / f"{self.kind}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "zero", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workDir,
                start_new_session=True,
                preexec_fn=dieWithParent,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            match = DAEMON_PORT_LINE.search(self.log.read_text(errors="replace"))
            if match:
                self.port = int(match.group(1))
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise BenchError(
            f"{self.kind} daemon did not start:\n{self.log.read_text()[-2000:]}"
        )

    def rchar(self) -> int:
        """
        What the daemon has read so far (C{/proc/PID/io}): files, and what
        C{sendfile()} sent.
        """
        for line in Path(f"/proc/{self.process.pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
        raise BenchError("no rchar")


def connect(port: int, deadline: float) -> socket.socket:
    """
    A connection to C{port} of L{HOST}, made before C{deadline}.
    """
    timeout = max(deadline - time.monotonic(), 0.1)
    return socket.create_connection((HOST, port), timeout=timeout)


# Waiting -----------------------------------------------------------------


def waitUntil(condition: Callable[[], bool], deadline: float, what: str) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(0.02)


def waitUntilSettled(
    rss: Callable[[], int],
    socks: Sequence[socket.socket],
    deadline: float,
    least: float = 1.0,
    quiet: float = 1.0,
    most: float = 10.0,
) -> None:
    """
    Wait until neither the server's RSS (C{rss()}, in KiB: within 64 KiB) nor
    the bytes queued at the clients have changed for C{quiet} seconds; at
    least C{least} and at most C{most} seconds.
    """
    started = time.monotonic()
    end = min(started + most, deadline)
    settled = (rss(), sum(map(queuedBytes, socks)))
    since = started
    while (now := time.monotonic()) < end:
        if now - started >= least and now - since >= quiet:
            return
        time.sleep(0.1)
        current = (rss(), sum(map(queuedBytes, socks)))
        if abs(current[0] - settled[0]) > 64 or current[1] != settled[1]:
            settled, since = current, time.monotonic()


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


THROUGHPUT_COLUMNS = ("GB/s", "min-max", "srv CPU s/GB", "srv CPU")
"""
The headers of L{throughputCells}.
"""


def throughputCells(done: Sequence[Throughput]) -> list[str]:
    """
    The medians of the measurements C{done}, under L{THROUGHPUT_COLUMNS}.
    """
    speeds: list[float | None] = [sample.gbPerSecond for sample in done]
    return [
        fmt(median(speeds)),
        spread(speeds),
        fmt(median([sample.serverCpuPerGb for sample in done])),
        fmt(median([sample.serverLoad for sample in done]), ".0%"),
    ]


def stalledCells(values: Sequence[float | None]) -> list[str]:
    """
    The median, C{min-max} and count of the memory figures present.
    """
    count = sum(value is not None for value in values)
    return [fmt(median(values), ".1f"), spread(values, ".1f"), str(count)]


# Rounds and results ------------------------------------------------------

_Key = TypeVar("_Key")
_Sample = TypeVar("_Sample", bound=Throughput)
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
