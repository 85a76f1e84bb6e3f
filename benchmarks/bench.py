#!/usr/bin/env python3
"""
Side-by-side benchmark of the twisted-zero daemon against reference servers
written with public APIs (see C{reference_servers.py}). Run by hand, never
in CI; see C{README.rst}.

Measures, on 127.0.0.1 with ephemeral ports only:

  - throughput (GB/s, GB = 10**9 bytes) of one connection and of several at
    once, for zeros, a file, and (ours only) random bytes and chargen;
  - the server's CPU seconds per GB (utime + stime from /proc/PID/stat);
  - the server's resident memory per stalled connection: many clients that
    connect and read nothing.

With C{--baseline PATH}, our daemon as run from another checkout at PATH is
measured too, as C{baseline}, and compared with ours. With C{--pin
SERVER_CPUS:CLIENT_CPUS}, every server runs on SERVER_CPUS only and this
process, the client, on CLIENT_CPUS only.

The machine is assumed noisy: every round measures every server once, in a
shuffled order, and the targets are judged on the medians of per-round
ratios.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import benchresults
import benchutil
from benchclients import connect, readStream, waitUntil, waitUntilSettled
from benchservers import (
    DAEMON_PORT_LINE,
    ServerProcess,
    ServerSetup,
    cpuSeconds,
    openFds,
    rssKiB,
    spawnServer,
    terminate,
    twistdCommand,
)
from benchutil import BASELINE, DAEMONS, HOST, OURS, MiB

REFERENCE_SERVERS = benchutil.BENCH_DIR / "reference_servers.py"

ASYNCIO_STREAM = "asyncio-stream"
ASYNCIO_SENDFILE = "asyncio-sendfile"
FILESENDER = "twisted-filesender"

SOURCES = ("zero", "random", "chargen", "file")
PROBE = """
import sys, twisted, twisted_zero
print(twisted_zero.__file__)
print(twisted.__version__)
for name in sys.argv[1:]:
    source = twisted_zero.sourceFactory(
        "file:" + twisted_zero.__file__ if name == "file" else name
    )()
    print(source.chunkSize)
    source.close()
"""
"""
Where the daemon's package is imported from, the Twisted version, and the
default chunk size of each of L{SOURCES}: that of a source made the way the
daemon makes it (any regular file will do for C{file}).
"""
REFERENCE_PORT_LINE = re.compile(r"\A(\d+)\n")


# Servers -----------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """
    One server to measure: who serves (C{ours}, C{baseline} or a reference
    kind) what
    (C{zero}, C{random}, C{chargen} or C{file}).
    """

    kind: str
    source: str

    @property
    def label(self) -> str:
        return f"{self.kind} {self.source}"


@dataclass(frozen=True)
class Setup(ServerSetup):
    """
    What every server of a run is started with: a L{ServerSetup} and the
    file streamed.
    """

    filePath: Path
    chunkSizes: Mapping[str, int]
    """
    The chunk size our daemon uses for each source (its own default, or
    C{--chunk-size}); the asyncio-stream reference uses the same.
    """
    ourChunkOption: str | None

    def sourceArgument(self, source: str) -> str:
        return f"file:{self.filePath}" if source == "file" else source

    def withBaseline(self, specs: Sequence[ServerSpec]) -> tuple[ServerSpec, ...]:
        """
        C{specs}, with, if there is a baseline, the baseline's same server
        right after each of ours.
        """
        result: list[ServerSpec] = []
        for spec in specs:
            result.append(spec)
            if spec.kind == OURS and self.baseline is not None:
                result.append(ServerSpec(BASELINE, spec.source))
        return tuple(result)

    def command(self, spec: ServerSpec) -> list[str]:
        source = self.sourceArgument(spec.source)
        if spec.kind in DAEMONS:
            command = twistdCommand(
                "zero", "--listen", f"tcp:0:interface={HOST}", "--source", source
            )
            if self.ourChunkOption is not None:
                command += ["--chunk-size", self.ourChunkOption]
            return command
        return [
            sys.executable,
            str(REFERENCE_SERVERS),
            "--kind",
            spec.kind,
            "--source",
            source,
            "--port",
            "0",
            "--chunk-size",
            str(self.chunkSizes[spec.source]),
        ]


@dataclass
class Server(ServerProcess):
    """
    A running server subprocess that this benchmark started.
    """

    spec: ServerSpec
    process: subprocess.Popen[bytes]
    logPath: Path
    port: int = 0

    @property
    def label(self) -> str:
        return self.spec.label

    @classmethod
    def start(cls, spec: ServerSpec, setup: Setup, serial: int) -> Server:
        logPath = setup.workDir / f"{serial:03d}-{spec.kind}-{spec.source}.log"
        portLine = DAEMON_PORT_LINE if spec.kind in DAEMONS else REFERENCE_PORT_LINE
        process = spawnServer(
            setup.command(spec),
            logPath,
            logPath.with_suffix(".err"),
            setup.workDir,
            setup.environment(spec.kind),
            setup.pinning,
            mergeErrors=spec.kind in DAEMONS,
        )
        server = cls(spec, process, logPath)
        try:
            server.port = server._waitForPort(portLine)
            if setup.pinning is not None:
                setup.pinning.checkServer([server.pid], spec.label)
        except BaseException:
            server.stop()
            raise
        return server


# The client --------------------------------------------------------------


def readStreams(
    port: int, connections: int, limit: int | None, buffer: bytearray, deadline: float
) -> list[int]:
    """
    Open C{connections} connections at once and read each into C{buffer}
    (the data is thrown away) until it has given C{limit} bytes, then close
    it; with no limit, read each to its end.

    @return: The bytes read on each connection.
    """
    view = memoryview(buffer)
    socks = [connect(port, deadline) for _ in range(connections)]
    received = [0] * connections
    try:
        if connections == 1:
            socks[0].settimeout(max(deadline - time.monotonic(), 0.1))
            received[0] = readStream(socks[0], view, limit)
        else:
            _readMany(socks, limit, view, received, deadline)
    finally:
        for sock in socks:
            sock.close()
    return received


def _readMany(
    socks: list[socket.socket],
    limit: int | None,
    view: memoryview,
    received: list[int],
    deadline: float,
) -> None:
    size = len(view)
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(socks):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, index)
        while selector.get_map():
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError("the streams took too long")
            for key, _ in selector.select(timeout):
                index = key.data
                sock = socks[index]
                want = size if limit is None else min(size, limit - received[index])
                try:
                    count = sock.recv_into(view, want)
                except BlockingIOError:
                    continue
                received[index] += count
                if not count or received[index] == limit:
                    selector.unregister(sock)


def measureThroughput(
    server: Server,
    connections: int,
    limit: int | None,
    expected: int,
    buffer: bytearray,
    timeout: float,
) -> benchresults.Throughput:
    """
    Stream from C{server} on C{connections} connections, each of which must
    give C{expected} bytes, and time it.
    """
    server.checkAlive()
    time.sleep(0.2)  # Let the server finish with the previous clients.
    serverBefore = cpuSeconds(server.pid)
    clientBefore = time.process_time()
    started = time.perf_counter()
    received = readStreams(
        server.port, connections, limit, buffer, time.monotonic() + timeout
    )
    seconds = time.perf_counter() - started
    clientCpu = time.process_time() - clientBefore
    serverCpu = cpuSeconds(server.pid) - serverBefore
    short = [count for count in received if count != expected]
    if short:
        raise benchutil.BenchError(
            f"{server.spec.label}: {len(short)} of {connections} connections "
            f"gave {short[0]} bytes, not {expected}"
        )
    return benchresults.Throughput(seconds, sum(received), serverCpu, clientCpu)


def measureStalled(
    server: Server, count: int, warmUpBytes: int, buffer: bytearray, timeout: float
) -> float:
    """
    Connect C{count} clients that read nothing, wait for the server to fill
    what it can, and return its added resident memory per client in KiB.

    A few short streams first make the server's one-time allocations (lazy
    imports, shared chunks, caches) before the baseline is taken.
    """
    deadline = time.monotonic() + timeout
    for _ in range(2):
        readStreams(server.port, 2, warmUpBytes, buffer, deadline)
    time.sleep(0.5)
    server.checkAlive()
    baseRss = rssKiB(server.pid)
    baseFds = openFds(server.pid)
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            for _ in range(min(benchutil.STALLED_BATCH, count - len(socks))):
                socks.append(connect(server.port, deadline))
            waitUntil(
                lambda: openFds(server.pid) - baseFds >= len(socks),
                deadline,
                f"{server.spec.label} to accept {len(socks)} connections",
            )
        waitUntilSettled(lambda: rssKiB(server.pid), socks, deadline)
        server.checkAlive()
        rss = rssKiB(server.pid)
    finally:
        for sock in socks:
            sock.close()
    return (rss - baseRss) / count


# The plan ----------------------------------------------------------------

GENERATED = (
    ServerSpec(OURS, "zero"),
    ServerSpec(ASYNCIO_STREAM, "zero"),
    ServerSpec(OURS, "random"),
    ServerSpec(OURS, "chargen"),
)
FILES = (
    ServerSpec(OURS, "file"),
    ServerSpec(ASYNCIO_STREAM, "file"),
    ServerSpec(ASYNCIO_SENDFILE, "file"),
    ServerSpec(FILESENDER, "file"),
)
STALLED = (
    ServerSpec(OURS, "zero"),
    ServerSpec(ASYNCIO_STREAM, "zero"),
    ServerSpec(OURS, "file"),
    ServerSpec(ASYNCIO_STREAM, "file"),
    ServerSpec(FILESENDER, "file"),
    ServerSpec(ASYNCIO_SENDFILE, "file"),
)


@dataclass(frozen=True)
class Ratio:
    """
    A per-round ratio of two throughputs (or a stalled-memory bound, or
    with C{stalled} a ratio of two stalled-memory figures), with an optional
    target.
    """

    title: str
    numerator: ServerSpec
    denominator: ServerSpec | None = None
    connections: int = 1
    atLeast: float | None = None
    atMost: float | None = None
    stalled: bool = False

    def judge(self, middle: float | None) -> tuple[str, str]:
        """
        The target, and the verdict on the median per-round value C{middle}:
        C{PASS}, C{FAIL}, or none without a target.
        """
        if self.atLeast is not None:
            target = f">= {self.atLeast:.2f}"
            met = middle is not None and middle >= self.atLeast
        elif self.atMost is not None:
            target = f"<= {self.atMost:.0f}"
            met = middle is not None and middle <= self.atMost
        else:
            return "", ""
        return target, "PASS" if met else "FAIL"


Results = benchresults.RoundResults[ServerSpec, benchresults.Throughput]


@dataclass(frozen=True)
class Plan(benchutil.RunPlan):
    singleBytes: int
    multiConnections: int
    multiBytes: int
    fileSize: int
    stalledCount: int
    recvSize: int


def runRounds(plan: Plan, setup: Setup) -> Results:
    results = Results(plan.rounds)
    rng = random.Random(plan.seed)
    buffer = bytearray(plan.recvSize)
    serials = itertools.count(1)
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        servers: dict[ServerSpec, Server] = {}
        for spec in setup.withBaseline(GENERATED + FILES):
            server = Server.start(spec, setup, next(serials))
            servers[spec] = stack.enter_context(server)
        for roundIndex in benchresults.roundIndexes(plan.rounds, plan.budget, began):
            benchutil.warmPageCache(setup.filePath, buffer)
            groups = [
                (specs, connections)
                for specs in map(setup.withBaseline, (GENERATED, FILES))
                for connections in (1, plan.multiConnections)
            ]
            rng.shuffle(groups)
            for specs, connections in groups:
                for spec in rng.sample(specs, len(specs)):
                    if spec.source == "file":
                        limit, expected = None, plan.fileSize
                    else:
                        limit = (
                            plan.singleBytes if connections == 1 else plan.multiBytes
                        )
                        expected = limit
                    results.record(
                        roundIndex,
                        spec,
                        connections,
                        f"{spec.label} x{connections}",
                        partial(
                            measureThroughput,
                            servers[spec],
                            connections,
                            limit,
                            expected,
                            buffer,
                            plan.timeout,
                        ),
                        36,
                    )
            results.recordStalledRound(
                roundIndex,
                rng,
                {
                    spec: f"{spec.label} stalled x{plan.stalledCount}"
                    for spec in setup.withBaseline(STALLED)
                },
                lambda spec: _measureStalledAlone(
                    spec, setup, next(serials), plan, buffer
                ),
                "  {name:36} {value:6.1f} KiB/conn",
            )
    return results


def _measureStalledAlone(
    spec: ServerSpec, setup: Setup, serial: int, plan: Plan, buffer: bytearray
) -> float:
    """
    L{measureStalled} a server for C{spec} of its own, started and stopped.
    """
    with Server.start(spec, setup, serial) as server:
        return measureStalled(
            server,
            plan.stalledCount,
            4 * setup.chunkSizes[spec.source],
            buffer,
            plan.timeout,
        )


# The report --------------------------------------------------------------


def _ratios(plan: Plan, setup: Setup) -> list[Ratio]:
    many = plan.multiConnections
    ratios: list[Ratio] = []
    for connections in (1, many):
        ratios += [
            Ratio(
                f"zero x{connections}: ours / asyncio-stream",
                ServerSpec(OURS, "zero"),
                ServerSpec(ASYNCIO_STREAM, "zero"),
                connections,
                atLeast=1.0,
            ),
            Ratio(
                f"file x{connections}: ours / twisted-filesender",
                ServerSpec(OURS, "file"),
                ServerSpec(FILESENDER, "file"),
                connections,
                atLeast=2.0,
            ),
            Ratio(
                f"file x{connections}: ours / asyncio-stream",
                ServerSpec(OURS, "file"),
                ServerSpec(ASYNCIO_STREAM, "file"),
                connections,
            ),
            Ratio(
                f"file x{connections}: ours / asyncio-sendfile",
                ServerSpec(OURS, "file"),
                ServerSpec(ASYNCIO_SENDFILE, "file"),
                connections,
            ),
            Ratio(
                f"random x{connections}: ours random / ours zero",
                ServerSpec(OURS, "random"),
                ServerSpec(OURS, "zero"),
                connections,
                atLeast=0.5,
            ),
            Ratio(
                f"chargen x{connections}: ours chargen / ours zero",
                ServerSpec(OURS, "chargen"),
                ServerSpec(OURS, "zero"),
                connections,
            ),
        ]
    for source in ("zero", "file"):
        ratios.append(
            Ratio(
                f"stalled {source}: ours KiB/conn",
                ServerSpec(OURS, source),
                atMost=256.0,
            )
        )
    if setup.baseline is not None:
        ours = [spec for spec in GENERATED + FILES if spec.kind == OURS]
        ratios += [
            Ratio(
                f"{spec.source} x{connections}: ours / baseline",
                spec,
                ServerSpec(BASELINE, spec.source),
                connections,
            )
            for connections in (1, many)
            for spec in ours
        ]
        ratios += [
            Ratio(
                f"stalled {spec.source}: ours / baseline KiB/conn",
                spec,
                ServerSpec(BASELINE, spec.source),
                stalled=True,
            )
            for spec in STALLED
            if spec.kind == OURS
        ]
    return ratios


def _ratioValues(results: Results, ratio: Ratio) -> list[float | None]:
    if ratio.denominator is None:
        return results.stalled.get(ratio.numerator, [])
    if ratio.stalled:
        return results.stalledRatios(ratio.numerator, ratio.denominator)
    return results.throughputRatios(
        ratio.numerator, ratio.denominator, ratio.connections
    )


def report(plan: Plan, setup: Setup, results: Results) -> str:
    rounds = f"median of {results.roundsDone} round(s)"
    throughput = [
        [
            f"{spec.source} x{connections}",
            spec.kind,
            *benchresults.throughputCells(results.done(spec, connections)),
        ]
        for connections in (1, plan.multiConnections)
        for spec in setup.withBaseline(GENERATED + FILES)
    ]
    stalled = [
        [spec.source, spec.kind, *results.stalledCells(spec)]
        for spec in setup.withBaseline(STALLED)
    ]
    ratios = []
    for ratio in _ratios(plan, setup):
        values = _ratioValues(results, ratio)
        target, verdict = ratio.judge(benchresults.median(values))
        ratios.append(benchresults.ratioCells(ratio.title, values, target, verdict))
    out = [
        *benchresults.section(
            f"Throughput ({rounds}; GB = 10^9 bytes)",
            ["test", "server", *benchresults.throughputColumns()],
            throughput,
        ),
        "",
        *benchresults.section(
            f"Stalled readers ({plan.stalledCount} connections reading nothing; "
            f"added server RSS, {rounds})",
            ["source", "server", *benchresults.stalledColumns("KiB/conn")],
            stalled,
        ),
        "",
        *benchresults.section(
            f"Ratios and targets ({rounds} of per-round values)",
            benchresults.RATIO_COLUMNS,
            ratios,
            1,
        ),
        *results.failureLines(),
    ]
    return "\n".join(out)


# Setup and command line --------------------------------------------------


def _probeOurs(setup: Setup, kind: str = OURS) -> tuple[str, str, dict[str, int]]:
    """
    Where the daemon's package is imported from (checked: see
    L{ServerSetup.probeDaemon}), the Twisted version and the default chunk
    size of each source, as the interpreter of the daemon of C{kind} (ours
    or the baseline) sees them.
    """
    output = setup.probeDaemon(
        kind,
        PROBE,
        SOURCES,
        f"cannot probe the {kind} daemon's package",
        2 + len(SOURCES),
    )
    sizes = dict(zip(SOURCES, map(int, output[2:]), strict=True))
    return output[0], output[1], sizes


def parseArguments(argv: Sequence[str] | None) -> tuple[Plan, str | None]:
    parser = benchutil.BenchParser(
        "Benchmark twisted-zero against reference servers on 127.0.0.1 (run by "
        "hand, not in CI)."
    )
    benchutil.addRoundOptions(parser)
    parser.add_argument(
        "--chunk-size",
        type=benchutil.parseSize,
        help="passed to our daemon's --chunk-size for every source (default: "
        "none, so each source uses its own default chunk size); the "
        "asyncio-stream reference writes chunks of the size ours uses",
    )
    size = benchutil.parseSize
    parser.addNumber(
        "--single-bytes",
        "bytes read from one connection",
        size,
        default=benchutil.GiB,
        quick=128 * MiB,
    )
    parser.addNumber(
        "--connections",
        "connections at once in the multi-connection test (default 16)",
        default=16,
        least=2,
    )
    parser.addNumber(
        "--multi-bytes",
        "bytes read from each of those",
        size,
        default=256 * MiB,
        quick=16 * MiB,
    )
    benchutil.addFileSizeOption(
        parser,
        "the streamed temporary file, read whole by every connection",
        512 * MiB,
        64 * MiB,
    )
    benchutil.addStalledOptions(parser, "connections")
    benchutil.addRunOptions(parser, " (this process, which reads the streams)")
    args = parser.parseArguments(argv)
    plan = Plan.fromArguments(
        args, multiConnections=args.connections, stalledCount=args.stalled
    )
    chunk: int | None = args.chunk_size
    return plan, None if chunk is None else str(chunk)


def main(argv: Sequence[str] | None = None) -> int:
    plan, ourChunkOption = parseArguments(argv)
    baseline, pinning = plan.baseline, plan.pinning
    signal.signal(signal.SIGTERM, terminate)
    if pinning is not None:
        pinning.pinClient()
    with tempfile.TemporaryDirectory(prefix="twisted-zero-bench-") as tmp:
        workDir = Path(tmp)
        filePath = workDir / "stream.bin"
        setup = Setup(filePath, {}, ourChunkOption, workDir=workDir, baseline=baseline)
        ourPackage, twistedVersion, defaultChunks = _probeOurs(setup)
        baselineNote = baselineChunksNote = ""
        if baseline is not None:
            basePackage, _, baseChunks = _probeOurs(setup, BASELINE)
            baselineNote = f"; baseline from {Path(basePackage).parent}"
            if ourChunkOption is None:
                baselineChunksNote = "; baseline " + ", ".join(
                    f"{source} {benchutil.formatSize(baseChunks[source])}"
                    for source in SOURCES
                )
            else:
                baselineChunksNote = f"; baseline --chunk-size {ourChunkOption}"
        if ourChunkOption is None:
            chunkSizes = defaultChunks
            chunkOrigin = "per-source defaults, no --chunk-size"
        else:
            chunkSizes = dict.fromkeys(SOURCES, int(ourChunkOption))
            chunkOrigin = f"--chunk-size {ourChunkOption}"
        setup = Setup(
            filePath,
            chunkSizes,
            ourChunkOption,
            workDir=workDir,
            baseline=baseline,
            pinning=pinning,
        )
        ourChunks = ", ".join(
            f"{source} {benchutil.formatSize(chunkSizes[source])}" for source in SOURCES
        )
        referenceChunks = ", ".join(
            f"{spec.source} {benchutil.formatSize(chunkSizes[spec.source])}"
            for spec in GENERATED + FILES
            if spec.kind == ASYNCIO_STREAM
        )
        pinNote = "" if pinning is None else f"pinned: {pinning.describe()}\n"
        print(
            f"twisted-zero bench: {platform.python_implementation()} "
            f"{platform.python_version()}, Twisted {twistedVersion}, "
            f"{os.cpu_count()} CPUs, Linux {platform.release()}\n"
            f"ours from {Path(ourPackage).parent}{baselineNote}; "
            f"rounds {plan.rounds}; seed {plan.seed}\n"
            f"{pinNote}"
            f"chunks: ours {ourChunks} ({chunkOrigin}){baselineChunksNote}; "
            f"{ASYNCIO_STREAM} {referenceChunks}; "
            f"{FILESENDER} 16K (its own)\n"
            f"1 x {benchutil.formatSize(plan.singleBytes)} and {plan.multiConnections} x "
            f"{benchutil.formatSize(plan.multiBytes)} generated, file of "
            f"{benchutil.formatSize(plan.fileSize)} read whole per connection, "
            f"recv_into {benchutil.formatSize(plan.recvSize)}, "
            f"{plan.stalledCount} stalled readers\n",
            flush=True,
        )
        benchutil.progress(
            f"writing {benchutil.formatSize(plan.fileSize)} to {filePath}"
        )
        benchutil.writeTestFile(filePath, plan.fileSize)
        started = time.monotonic()
        results = runRounds(plan, setup)
        print(report(plan, setup, results))
        print(f"\n({time.monotonic() - started:.0f}s)")
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
