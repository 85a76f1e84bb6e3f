#!/usr/bin/env python3
"""
Side-by-side benchmark of the latency of small requests while heavy
downloads run from a slow file system, for the twisted-zero daemon's HTTP
front end and the servers of C{http_bench.py}: C{twisted.web.static},
aiohttp's C{web.FileResponse} and nginx (with C{aio threads}, C{sendfile on}
and C{autoindex on}). Run by hand, never in CI, from the repository root::

    python benchmarks/slowfs_bench.py --quick    # one short round: a smoke test
    python benchmarks/slowfs_bench.py --write    # 5 rounds, results-slowfs-latest.txt
    python benchmarks/slowfs_bench.py --cold-disk --write

It needs what C{tests/slowfs.py} needs (C{apt-get install fuse3}, mfusepy),
aiohttp, and nginx unless C{--nginx ''} leaves it out.

The served directory, on the ordinary disk, holds a 1-byte C{probe.bin} and
C{slow/}: by default a FUSE mount (C{tests/slowfs.py}) in which every read
sleeps C{--delay} seconds, with C{--cold-disk} a plain directory whose files
are dropped from the page cache before each download. In C{slow/} are the
large files (C{--downloads} of C{--file-size}, random bytes) and C{many/},
C{--small-files} small files; the root links to them (C{big0.bin ->
slow/big0.bin}, C{many -> slow/many}), so every server finds them by name.

In every round each server, in a shuffled order, is started afresh on an
ephemeral port of 127.0.0.1, and:

  - a client process downloads each large file on its own connection, as
    fast as it can, again and again, throwing the bytes away; and, for the
    servers that list directories (ours with C{--listing},
    C{twisted.web.static}, nginx), lists C{many/} again and again;
  - after C{--warmup} seconds, this process sends one small request at a
    time, each on a new connection, for C{--duration} seconds, and times
    each until its 1 body byte has come: C{GET /zero?bytes=1} for our daemon,
    C{GET probe.bin} for the others;

then the server is stopped. C{ours, no load} is our daemon probed the same
way with no load at all: the floor the machine itself sets. The report
gives, per server, the medians over the rounds of the probes' p50, p99,
p99.9 and max latency, how many took over 100 ms, and their count, the
downloads' throughput, the listings, and the server's CPU share.

Our daemon gets C{--listing} and C{--io-threads N} when its C{--help} lists
them; with C{--baseline PATH}, the daemon of the checkout at PATH is
measured too, as C{baseline}.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import platform
import random
import selectors
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import benchresults
import benchutil
from benchclients import HEAD_READ, connect, getRequest, headEnd, parseHead
from benchservers import TWISTD, runProbe, terminate
from benchutil import BASELINE, DAEMONS, HOST, OURS, MiB
from http_bench import (
    NGINX,
    NGINX_CONFIG,
    TWISTED_STATIC,
    HttpServer,
    Setup,
    addNginxOption,
    findNginx,
    nginxVersion,
    probeVersions,
)

sys.path.insert(0, str(benchutil.REPO_ROOT))
from tests.slowfs import mounted, unavailable

SLOW_DIR = "slow"
SMALL_DIR = "many"
PROBE_NAME = "probe.bin"
ZERO_PROBE = "/zero?bytes=1"
SMALL_FILE = b"a small file\n"
RECV_SIZE = MiB
SLOW_MS = 100
"""Probes slower than this many milliseconds are counted (the target's max)."""
STOP_TIMEOUT = 10.0
"""Seconds the load client may take to stop once told to."""

IDLE = "ours, no load"
"""
Our daemon probed the same way with no load at all: the floor that the
machine itself sets (its scheduler, other guests' steal time), measured in
the same rounds.
"""

LISTERS = (OURS, BASELINE, TWISTED_STATIC, NGINX)
"""The servers that list directories; aiohttp's C{FileResponse} does not."""

RESULTS = benchutil.BENCH_DIR / "results-slowfs-latest.txt"
COLD_RESULTS = benchutil.BENCH_DIR / "results-slowfs-cold-disk-latest.txt"


def _derive(template: str, old: str, new: str) -> str:
    """
    C{template} with its one C{old} replaced by C{new}.

    @raise BenchError: If C{template} does not hold exactly one C{old}.
    """
    if template.count(old) != 1:
        raise benchutil.BenchError(f"http_bench's nginx configuration changed: {old!r}")
    return template.replace(old, new)


SLOW_NGINX_CONFIG = _derive(
    _derive(NGINX_CONFIG, "    sendfile on;\n", "    sendfile on;\n    aio threads;\n"),
    "alias {root}/;\n",
    "alias {root}/;\n            autoindex on;\n",
)
"""
http_bench's nginx configuration with reads and sendfile() in nginx's thread
pool (C{aio threads}), as a server would be set up for slow disks, and
directory listings (C{autoindex on}).
"""


# The plan and the servers -------------------------------------------------


@dataclass(frozen=True)
class Plan(benchutil.RunPlan):
    coldDisk: bool
    listing: bool
    delay: float
    downloads: int
    fileSize: int
    smallFiles: int
    warmup: float
    duration: float
    probeTimeout: float
    ioThreads: int

    @property
    def bigFiles(self) -> tuple[str, ...]:
        return tuple(f"big{i}.bin" for i in range(self.downloads))


@dataclass(frozen=True)
class SlowSetup(Setup):
    """
    A L{Setup} whose C{dataDir} is the served root described above, and
    which knows what more each of our daemons is started with.
    """

    daemonArguments: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """
    Per daemon kind, the options added to its command line.
    """

    def listingPath(self, kind: str) -> str | None:
        """
        Where C{kind} lists C{many/}, or L{None} if it does not list.
        """
        if kind not in LISTERS:
            return None
        if kind in DAEMONS and "--listing" not in self.daemonArguments[kind]:
            return None
        return self.urlPath(kind, SMALL_DIR) + "/"

    def probePath(self, kind: str) -> str:
        return ZERO_PROBE if kind in DAEMONS else self.urlPath(kind, PROBE_NAME)

    def kinds(self) -> tuple[str, ...]:
        return (*super().kinds(), IDLE)

    def daemonOptions(self, kind: str) -> tuple[str, ...]:
        return self.daemonArguments[kind]

    def nginxConfig(self) -> str:
        return SLOW_NGINX_CONFIG


def daemonArguments(kind: str, setup: Setup, ioThreads: int) -> tuple[str, ...]:
    """
    C{--listing} and C{--io-threads N} for the daemon of C{kind}, each only if
    its C{twistd zero --help} lists it.
    """
    words = runProbe(
        TWISTD,
        ["zero", "--help"],
        setup.environment(kind),
        setup.workDir,
        f"twistd zero --help failed for {kind}",
    )
    options = {word.split("=")[0] for word in words if word.startswith("--")}
    arguments: tuple[str, ...] = ()
    if "--listing" in options:
        arguments += ("--listing",)
    if "--io-threads" in options:
        arguments += ("--io-threads", str(ioThreads))
    return arguments


# The served directory -----------------------------------------------------


def writeData(directory: Path, plan: Plan) -> None:
    """
    Write the large files and C{many/} with its small files to C{directory}.
    """
    for name in plan.bigFiles:
        benchutil.progress(
            f"writing {benchutil.formatSize(plan.fileSize)} to {directory / name}"
        )
        benchutil.writeTestFile(directory / name, plan.fileSize)
    small = directory / SMALL_DIR
    small.mkdir()
    for i in range(plan.smallFiles):
        (small / f"{i:05d}.txt").write_bytes(SMALL_FILE)


def makeRoot(root: Path, plan: Plan) -> None:
    """
    Make the served root: C{probe.bin} and an empty C{slow/}, and links
    through C{slow/} to the large files and C{many/}.
    """
    (root / SLOW_DIR).mkdir(parents=True)
    (root / PROBE_NAME).write_bytes(b"x")
    for name in (*plan.bigFiles, SMALL_DIR):
        (root / name).symlink_to(Path(SLOW_DIR, name))


def dropFromPageCache(path: Path) -> None:
    """
    Drop the clean pages of the file at C{path} from the page cache.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# The load: downloads and listings -----------------------------------------


@dataclass(frozen=True)
class LoadJob:
    """
    What the load client does until told to stop: download each of
    C{downloads} (a URL path, its size, and the file to drop from the page
    cache before each download of it, if any) on its own connection, again
    and again; and list C{listing} again and again, if not L{None}.
    """

    port: int
    downloads: tuple[tuple[str, int, Path | None], ...]
    listing: str | None
    deadline: float
    """
    On the C{time.monotonic} clock, which forked processes share.
    """


@dataclass(frozen=True)
class LoadResult:
    """
    What the load client did: body bytes read and downloads completed in
    C{seconds}, with C{cpu} seconds of its own CPU, the durations of the
    listings completed, and what went wrong if anything did.
    """

    seconds: float
    bytes: int
    downloads: int
    cpu: float
    listings: tuple[float, ...]
    error: str | None


@dataclass
class _Stream:
    """
    One connection of the load client: a download (of C{expected} body
    bytes) or, with C{expected} L{None}, a listing, read to its end.
    """

    path: str
    expected: int | None
    dropCache: Path | None = None
    sock: socket.socket | None = None
    head: bytearray = field(default_factory=bytearray)
    headDone: bool = False
    body: int = 0
    started: float = 0.0

    def begin(
        self, port: int, deadline: float, selector: selectors.BaseSelector
    ) -> None:
        if self.dropCache is not None:
            dropFromPageCache(self.dropCache)
        self.head.clear()
        self.headDone = False
        self.body = 0
        self.started = time.perf_counter()
        self.sock = connect(port, deadline)
        self.sock.sendall(getRequest(self.path, host=HOST, close=True))
        self.sock.setblocking(False)
        selector.register(self.sock, selectors.EVENT_READ, self)

    def end(self, selector: selectors.BaseSelector) -> None:
        if self.sock is not None:
            selector.unregister(self.sock)
            self.sock.close()
            self.sock = None

    def received(self, data: memoryview) -> int:
        """
        Take C{data}, just received.

        @return: The body bytes of a download among them.
        @raise BenchError: If the response is not the one expected.
        """
        if self.headDone:
            self.body += len(data)
            return len(data) if self.expected is not None else 0
        self.head += data
        if self.expected is not None:
            headLength = parseHead(self.head, self.expected)
        else:
            headLength = _listingHead(self.head)
        if headLength is None:
            return 0
        self.headDone = True
        self.body = len(self.head) - headLength
        return self.body if self.expected is not None else 0

    @property
    def finished(self) -> bool:
        """
        Whether this is a download and all its body is here.

        @raise BenchError: If more than all of it is.
        """
        if self.expected is None or self.body < self.expected:
            return False
        if self.body > self.expected:
            raise benchutil.BenchError(f"{self.path}: more bytes than Content-Length")
        return True

    def closed(self) -> float:
        """
        The server closed the connection: the end of a listing.

        @return: The seconds the listing took.
        @raise BenchError: If this is a download, or the listing's response
            head did not come.
        """
        if self.expected is not None:
            raise benchutil.BenchError(
                f"{self.path}: connection closed after {self.body} of "
                f"{self.expected} body bytes"
            )
        if not self.headDone:
            raise benchutil.BenchError(
                f"{self.path}: connection closed before the head"
            )
        return time.perf_counter() - self.started


def _listingHead(data: bytearray) -> int | None:
    """
    The length of the response head at the start of C{data}, if it is all
    there, for a listing: status 200.

    @raise BenchError: If the status is another.
    """
    length = headEnd(data)
    if length is None:
        return None
    statusLine = bytes(data[: data.find(b"\r\n")]).decode("latin-1")
    if statusLine.split(" ")[1:2] != ["200"]:
        raise benchutil.BenchError(f"listing: status line {statusLine!r}, not 200")
    return length


def _loadProcess(job: LoadJob, stop: Event, results: Connection) -> None:
    """
    The forked load client: do C{job} until C{stop} is set, then send a
    L{LoadResult} on C{results}.
    """
    benchutil.dieWithParent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark stops it
    view = memoryview(bytearray(RECV_SIZE))
    streams = [_Stream(path, size, drop) for path, size, drop in job.downloads]
    if job.listing is not None:
        streams.append(_Stream(job.listing, None))
    cpuBefore = time.process_time()
    started = time.perf_counter()
    body = 0
    downloads = 0
    listings: list[float] = []
    error: str | None = None
    with selectors.DefaultSelector() as selector:
        try:
            for stream in streams:
                stream.begin(job.port, job.deadline, selector)
            while not stop.is_set():
                if time.monotonic() > job.deadline:
                    raise benchutil.BenchError("the load ran past its deadline")
                for key, _ in selector.select(0.1):
                    stream = key.data
                    assert stream.sock is not None
                    want = RECV_SIZE if stream.headDone else HEAD_READ
                    try:
                        count = stream.sock.recv_into(view, want)
                    except BlockingIOError:
                        continue
                    body += stream.received(view[:count])
                    if count == 0:
                        listings.append(stream.closed())
                    elif stream.finished:
                        downloads += 1
                    else:
                        continue
                    stream.end(selector)
                    stream.begin(job.port, job.deadline, selector)
        except (OSError, benchutil.BenchError) as e:
            error = f"{type(e).__name__}: {e}"
        finally:
            for stream in streams:
                stream.end(selector)
    result = LoadResult(
        time.perf_counter() - started,
        body,
        downloads,
        time.process_time() - cpuBefore,
        tuple(listings),
        error,
    )
    results.send(result)
    results.close()


class LoadClient:
    """
    The load client, a forked process doing a L{LoadJob}; as a context
    manager, stopped (and killed if it must be) on the way out.
    """

    def __init__(self, job: LoadJob) -> None:
        context = multiprocessing.get_context("fork")
        self._stop = context.Event()
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_loadProcess, args=(job, self._stop, sender), daemon=True
        )
        self._process.start()
        sender.close()

    def finish(self) -> LoadResult:
        """
        Stop the load and say what it did.

        @raise BenchError: If it failed, or did not stop in time.
        """
        self._stop.set()
        if not self._results.poll(STOP_TIMEOUT):
            raise benchutil.BenchError(
                f"the load client did not stop in {STOP_TIMEOUT:.0f}s"
            )
        try:
            result: LoadResult = self._results.recv()
        except EOFError:
            raise benchutil.BenchError("the load client died") from None
        if result.error is not None:
            raise benchutil.BenchError(f"load: {result.error}")
        return result

    def __enter__(self) -> LoadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._results.close()
        self._process.join(STOP_TIMEOUT)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(STOP_TIMEOUT)


# The probe and the measurement ---------------------------------------------


def probe(port: int, path: str, plan: Plan, deadline: float) -> list[float]:
    """
    Send C{GET path}, expecting 1 body byte, one at a time, each on a new
    connection, for C{plan.duration} seconds.

    @return: The seconds each took, from before the connection to its byte.
    @raise BenchError: If a response is not the one expected, or one takes
        over C{plan.probeTimeout} seconds.
    """
    request = getRequest(path, host=HOST, close=True)
    latencies: list[float] = []
    end = time.monotonic() + plan.duration
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            with connect(
                port, min(deadline, time.monotonic() + plan.probeTimeout)
            ) as sock:
                sock.sendall(request)
                response = bytearray()
                headLength = None
                while headLength is None or len(response) == headLength:
                    data = sock.recv(4096)
                    if not data:
                        raise benchutil.BenchError(
                            f"probe: connection closed after {response!r}"
                        )
                    response += data
                    headLength = parseHead(response, 1)
                latencies.append(time.perf_counter() - started)
        except TimeoutError:
            raise benchutil.BenchError(
                f"probe: no response in {plan.probeTimeout:.0f}s "
                f"(after {len(latencies)} probes)"
            ) from None
    return latencies


@dataclass(frozen=True)
class Sample(benchresults.Throughput):
    """
    One server in one round: the load's downloads as a L{Throughput} (the
    client CPU being the load client's), the probes' latencies, the
    listings' durations and the downloads completed, all in seconds.
    """

    latencies: tuple[float, ...]
    listings: tuple[float, ...]
    downloads: int

    @property
    def mbPerSecond(self) -> float:
        return self.bytes / 1e6 / self.seconds

    @property
    def slow(self) -> int:
        """
        How many probes took more than L{SLOW_MS}.
        """
        return sum(latency * 1000 > SLOW_MS for latency in self.latencies)

    def latencyMs(self, fraction: float) -> float:
        """
        The latency below which C{fraction} of the probes fell (nearest
        rank), in milliseconds.
        """
        ordered = sorted(self.latencies)
        return 1000 * ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]

    def describe(self, name: str, width: int) -> str:
        return (
            f"  {name:{width}} p50 {self.latencyMs(0.5):8.1f} ms  "
            f"p99 {self.latencyMs(0.99):8.1f} ms  "
            f"max {self.latencyMs(1.0):8.1f} ms  "
            f"{self.slow:3d} over {SLOW_MS} ms  "
            f"{len(self.latencies):6d} probes  "
            f"{self.mbPerSecond:7.1f} MB/s  "
            f"{len(self.listings):4d} listings"
        )


def measure(kind: str, setup: SlowSetup, plan: Plan, serial: int) -> Sample:
    """
    Start a server of C{kind}, put it under the load, probe it, stop it.
    """
    deadline = time.monotonic() + plan.timeout
    slow = setup.dataDir / SLOW_DIR
    if plan.coldDisk:
        os.sync()
        for name in plan.bigFiles:
            dropFromPageCache(slow / name)
    downloads = tuple(
        (
            setup.urlPath(kind, name),
            plan.fileSize,
            slow / name if plan.coldDisk else None,
        )
        for name in plan.bigFiles
    )
    listing = setup.listingPath(kind) if plan.listing else None
    if kind == IDLE:
        with HttpServer.start(OURS, setup, serial) as server:
            cpuBefore = sum(server.cpuTimes())
            time.sleep(plan.warmup)
            latencies = probe(server.port, ZERO_PROBE, plan, deadline)
            server.checkAlive()
            serverCpu = sum(server.cpuTimes()) - cpuBefore
        return Sample(plan.duration, 0, serverCpu, 0.0, tuple(latencies), (), 0)
    with HttpServer.start(kind, setup, serial) as server:
        cpuBefore = sum(server.cpuTimes())
        with LoadClient(LoadJob(server.port, downloads, listing, deadline)) as load:
            time.sleep(plan.warmup)
            latencies = probe(server.port, setup.probePath(kind), plan, deadline)
            result = load.finish()
        server.checkAlive()
        serverCpu = sum(server.cpuTimes()) - cpuBefore
    return Sample(
        result.seconds,
        result.bytes,
        serverCpu,
        result.cpu,
        tuple(latencies),
        result.listings,
        result.downloads,
    )


Results = benchresults.RoundResults[str, Sample]


def runRounds(plan: Plan, setup: SlowSetup) -> Results:
    results = Results(plan.rounds)
    rng = random.Random(plan.seed)
    kinds = setup.kinds()
    serial = 0
    began = time.monotonic()
    for roundIndex in benchresults.roundIndexes(plan.rounds, plan.budget, began):
        for kind in rng.sample(kinds, len(kinds)):
            serial += 1
            results.record(
                roundIndex,
                kind,
                plan.downloads,
                kind,
                partial(measure, kind, setup, plan, serial),
                20,
            )
        results.roundsDone = roundIndex + 1
    return results


# The report ----------------------------------------------------------------


def _medianCell(values: Sequence[float | None], spec: str) -> str:
    return benchresults.fmt(benchresults.median(values), spec)


def report(plan: Plan, setup: SlowSetup, results: Results) -> str:
    """
    The table of per-server medians over the rounds.
    """
    rows: list[list[str]] = []
    for kind in setup.kinds():
        done = [s for s in results.samples(kind, plan.downloads) if s is not None]
        lister = plan.listing and setup.listingPath(kind) is not None
        rows.append(
            [
                kind,
                ZERO_PROBE if kind in DAEMONS or kind == IDLE else PROBE_NAME,
                _medianCell([s.latencyMs(0.5) for s in done], ".1f"),
                _medianCell([s.latencyMs(0.99) for s in done], ".1f"),
                _medianCell([s.latencyMs(0.999) for s in done], ".1f"),
                _medianCell([s.latencyMs(1.0) for s in done], ".1f"),
                _medianCell([s.slow for s in done], ".0f"),
                _medianCell([len(s.latencies) for s in done], ".0f"),
                _medianCell([s.mbPerSecond for s in done], ".1f"),
                benchresults.spread([s.mbPerSecond for s in done], ".1f"),
                _medianCell([s.downloads for s in done], ".0f"),
                _medianCell([len(s.listings) for s in done], ".0f") if lister else "-",
                _medianCell([benchresults.median(s.listings) for s in done], ".2f")
                if lister
                else "-",
                _medianCell([s.serverLoad for s in done], ".0%"),
                str(len(done)),
            ]
        )
    header = [
        "server",
        "probe",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        f">{SLOW_MS} ms",
        "probes",
        "dl MB/s",
        "min-max",
        "downloads",
        "listings",
        "list s",
        "srv CPU",
        "n",
    ]
    out = [
        f"Probe latency under load (median of {results.roundsDone} round(s); "
        f"MB = 10^6 bytes of body; >{SLOW_MS} ms: probes slower than that; "
        f"list s: median seconds per listing; {IDLE}: ours probed with no "
        "load, the machine's own floor)",
        benchresults.table(header, rows),
    ]
    if setup.nginx is None:
        out.append("nginx: left out (not installed, or --nginx '')")
    out += results.failureLines()
    return "\n".join(out)


def describe(plan: Plan, setup: SlowSetup, nginxNote: str) -> str:
    """
    The header of the report: versions, where the daemons come from, and
    the scenario.
    """
    ourPackage, twistedVersion, aiohttpVersion = probeVersions(setup)
    lines = [
        f"twisted-zero slowfs bench: {platform.python_implementation()} "
        f"{platform.python_version()}, Twisted {twistedVersion}, aiohttp "
        f"{aiohttpVersion}, {nginxNote}; {os.cpu_count()} CPUs, Linux "
        f"{platform.release()}",
        f"ours from {Path(ourPackage).parent}; rounds {plan.rounds}; seed {plan.seed}",
    ]
    if setup.baseline is not None:
        basePackage, _, _ = probeVersions(setup, BASELINE)
        lines.append(f"baseline from {Path(basePackage).parent}")
    if setup.pinning is not None:
        lines.append(f"pinned: {setup.pinning.describe()}")
    for kind, arguments in setup.daemonArguments.items():
        lines.append(f"{kind} started with: {' '.join(arguments) or 'no more options'}")
    where = (
        "on the ordinary disk, each dropped from the page cache before each "
        "download of it"
        if plan.coldDisk
        else f"on a FUSE mount whose every read sleeps {plan.delay:g}s (tests/slowfs.py)"
    )
    listers = [kind for kind in setup.kinds() if setup.listingPath(kind)]
    listed = (
        f"{SMALL_DIR}/ listed again and again by {', '.join(listers)}"
        if plan.listing
        else "no listing"
    )
    lines += [
        f"files: {plan.downloads} x {benchutil.formatSize(plan.fileSize)} (random) and "
        f"{plan.smallFiles} small files in {SMALL_DIR}/, {where}",
        "load: each large file downloaded on its own connection again and "
        f"again; {listed}",
        f"probe: after {plan.warmup:g}s, for {plan.duration:g}s, one request at "
        f"a time, each on a new connection, timed to its 1 body byte: "
        f"GET {ZERO_PROBE} (our daemons), GET {PROBE_NAME} (the others: a 1-byte "
        "file on the ordinary disk)",
        "",
    ]
    return "\n".join(lines)


# Setup and command line ----------------------------------------------------


def parseArguments(
    argv: Sequence[str] | None,
) -> tuple[Plan, str | None, Path | None]:
    parser = benchutil.BenchParser(
        "Benchmark the latency of small requests to twisted-zero's HTTP front "
        "end, twisted.web.static, aiohttp and nginx while large files are "
        "downloaded from a slow file system (run by hand, not in CI)."
    )
    benchutil.addRoundOptions(parser)
    parser.add_argument(
        "--cold-disk",
        action="store_true",
        help="serve the files from the ordinary disk, dropped from the page "
        "cache before each download, instead of from the slow FUSE mount",
    )
    parser.add_argument(
        "--no-listing",
        action="store_true",
        help="download only: list no directory during the probe",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=0.02,
        help="seconds every read of the FUSE mount sleeps (default 0.02)",
    )
    parser.addNumber(
        "--downloads",
        "large files, each downloaded on its own connection (default 4)",
        default=4,
    )
    benchutil.addFileSizeOption(parser, "each large file", 64 * MiB, 16 * MiB)
    parser.addNumber(
        "--small-files", "files in the listed directory (default 5000)", default=5000
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of load before the probe starts (default 1)",
    )
    parser.addNumber(
        "--duration", "seconds of probing", float, default=10.0, quick=3.0, least=None
    )
    parser.add_argument(
        "--probe-timeout",
        type=float,
        default=60.0,
        help="seconds one probe may take (default 60)",
    )
    parser.addNumber(
        "--io-threads",
        "--io-threads passed to our daemons, if they have the option (default "
        "16, the daemon's own default)",
        default=16,
    )
    addNginxOption(parser)
    parser.add_argument(
        "--write",
        nargs="?",
        const="",
        metavar="PATH",
        help=f"also write the report to PATH (default: {RESULTS.name}, or with "
        f"--cold-disk {COLD_RESULTS.name}, in benchmarks/)",
    )
    benchutil.addRunOptions(parser, " (the probe and the load client)")
    args = parser.parseArguments(argv)
    plan = Plan.fromArguments(args, listing=not args.no_listing)
    if min(plan.duration, plan.probeTimeout, plan.timeout) <= 0:
        parser.error("--duration, --probe-timeout and --timeout must be positive")
    if min(plan.delay, plan.warmup) < 0:
        parser.error("--delay and --warmup cannot be negative")
    if plan.warmup + plan.duration + plan.probeTimeout >= plan.timeout:
        parser.error("--timeout must exceed --warmup + --duration + --probe-timeout")
    write = None
    if args.write is not None:
        write = Path(args.write or (COLD_RESULTS if plan.coldDisk else RESULTS))
    return plan, findNginx(args.nginx), write


def main(argv: Sequence[str] | None = None) -> int:
    plan, nginx, write = parseArguments(argv)
    baseline, pinning = plan.baseline, plan.pinning
    if not plan.coldDisk and (reason := unavailable()) is not None:
        raise SystemExit(f"cannot mount the slow file system: {reason}")
    signal.signal(signal.SIGTERM, terminate)
    if pinning is not None:
        pinning.pinClient()  # the load client is forked from this process
    if nginx is None:
        nginxNote = (
            "nginx left out (not installed: apt-get install nginx; or --nginx '')"
        )
        benchutil.progress(nginxNote)
    else:
        nginxNote = (
            f"nginx {nginxVersion(nginx)} (aio threads, sendfile on, autoindex "
            "on, 1 worker)"
        )
    with tempfile.TemporaryDirectory(prefix="twisted-zero-slowfs-bench-") as tmp:
        workDir = Path(tmp).resolve()
        root = workDir / "root"
        makeRoot(root, plan)
        source = root / SLOW_DIR if plan.coldDisk else workDir / "source"
        source.mkdir(exist_ok=True)
        writeData(source, plan)
        base = Setup(root, nginx, workDir=workDir, baseline=baseline, pinning=pinning)
        arguments = {
            kind: daemonArguments(kind, base, plan.ioThreads)
            for kind in base.kinds()
            if kind in DAEMONS
        }
        setup = SlowSetup(
            root,
            nginx,
            arguments,
            workDir=workDir,
            baseline=baseline,
            pinning=pinning,
        )
        header = describe(plan, setup, nginxNote)
        print(header, flush=True)
        started = time.monotonic()
        with contextlib.ExitStack() as stack:
            if not plan.coldDisk:
                stack.enter_context(mounted(source, root / SLOW_DIR, plan.delay))
            results = runRounds(plan, setup)
        text = f"{report(plan, setup, results)}\n\n({time.monotonic() - started:.0f}s)"
        print(text)
    if write is not None:
        write.write_text(f"{header}\n{text}\n")
        benchutil.progress(f"written to {write}")
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
