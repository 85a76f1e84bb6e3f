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

import argparse
import contextlib
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

from benchclients import connect, readStream, waitUntil, waitUntilSettled
from benchservers import (
    ServerProcess,
    ServerSetup,
    cpuSeconds,
    openFds,
    rssKiB,
    spawnServer,
    terminate,
    twistdCommand,
)
from benchutil import (
    BASELINE,
    BENCH_DIR,
    DAEMONS,
    HOST,
    OURS,
    STALLED_BATCH,
    THROUGHPUT_COLUMNS,
    BenchError,
    GiB,
    MiB,
    Pinning,
    RoundResults,
    RunPlan,
    Throughput,
    addRoundOptions,
    addRunOptions,
    addStalledOptions,
    checkPositive,
    fmt,
    formatSize,
    median,
    parseSize,
    picker,
    planFields,
    progress,
    roundIndexes,
    spread,
    stalledCells,
    table,
    throughputCells,
    warmPageCache,
    writeTestFile,
)

REFERENCE_SERVERS = BENCH_DIR / "reference_servers.py"

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
OUR_PORT_LINE = re.compile(
    r"ListeningService#info\] streaming .* on 127\.0\.0\.1:(\d+)$", re.MULTILINE
)
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
        portLine = OUR_PORT_LINE if spec.kind in DAEMONS else REFERENCE_PORT_LINE
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
) -> Throughput:
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
        raise BenchError(
            f"{server.spec.label}: {len(short)} of {connections} connections "
            f"gave {short[0]} bytes, not {expected}"
        )
    return Throughput(seconds, sum(received), serverCpu, clientCpu)


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
            for _ in range(min(STALLED_BATCH, count - len(socks))):
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


Results = RoundResults[ServerSpec, Throughput]


@dataclass(frozen=True)
class Plan(RunPlan):
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
    serial = 0
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        servers: dict[ServerSpec, Server] = {}
        for spec in setup.withBaseline(GENERATED + FILES):
            serial += 1
            servers[spec] = stack.enter_context(Server.start(spec, setup, serial))
        for roundIndex in roundIndexes(plan.rounds, plan.budget, began):
            warmPageCache(setup.filePath, buffer)
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
            stalledSpecs = setup.withBaseline(STALLED)
            for spec in rng.sample(stalledSpecs, len(stalledSpecs)):
                serial += 1
                results.recordStalled(
                    roundIndex,
                    spec,
                    f"{spec.label} stalled x{plan.stalledCount}",
                    partial(_startAndMeasureStalled, spec, setup, serial, plan, buffer),
                    "  {name:36} {value:6.1f} KiB/conn",
                )
            results.roundsDone = roundIndex + 1
    return results


def _startAndMeasureStalled(
    spec: ServerSpec, setup: Setup, serial: int, plan: Plan, buffer: bytearray
) -> float:
    """
    Start a server for C{spec}, L{measureStalled} it and stop it.
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
    out: list[str] = []
    rounds = f"median of {results.roundsDone} round(s)"
    rows: list[list[str]] = []
    for connections in (1, plan.multiConnections):
        for spec in setup.withBaseline(GENERATED + FILES):
            samples = results.samples(spec, connections)
            done = [sample for sample in samples if sample is not None]
            rows.append(
                [
                    f"{spec.source} x{connections}",
                    spec.kind,
                    *throughputCells(done),
                    fmt(median([sample.clientLoad for sample in done]), ".0%"),
                    str(len(done)),
                ]
            )
    out.append(f"Throughput ({rounds}; GB = 10^9 bytes)")
    header = ["test", "server", *THROUGHPUT_COLUMNS, "client CPU", "n"]
    out.append(table(header, rows))
    out.append("")
    out.append(
        f"Stalled readers ({plan.stalledCount} connections reading nothing; "
        f"added server RSS, {rounds})"
    )
    rows = []
    for spec in setup.withBaseline(STALLED):
        values = results.stalled.get(spec, [])
        rows.append([spec.source, spec.kind, *stalledCells(values)])
    out.append(table(["source", "server", "KiB/conn", "min-max", "n"], rows))
    out.append("")
    out.append(f"Ratios and targets ({rounds} of per-round values)")
    rows = []
    for ratio in _ratios(plan, setup):
        values = _ratioValues(results, ratio)
        middle = median(values)
        if ratio.atLeast is not None:
            target = f">= {ratio.atLeast:.2f}"
            verdict = middle is not None and middle >= ratio.atLeast
        elif ratio.atMost is not None:
            target = f"<= {ratio.atMost:.0f}"
            verdict = middle is not None and middle <= ratio.atMost
        else:
            target, verdict = "", None
        rows.append(
            [
                ratio.title,
                fmt(middle),
                spread(values),
                target,
                "" if verdict is None else ("PASS" if verdict else "FAIL"),
            ]
        )
    out.append(table(["ratio", "median", "min-max", "target", ""], rows, 1))
    out += results.failureLines()
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


def parseArguments(
    argv: Sequence[str] | None,
) -> tuple[Plan, str | None, Path | None, Pinning | None]:
    parser = argparse.ArgumentParser(
        description="Benchmark twisted-zero against reference servers on "
        "127.0.0.1 (run by hand, not in CI).",
    )
    addRoundOptions(parser)
    parser.add_argument(
        "--chunk-size",
        type=parseSize,
        help="passed to our daemon's --chunk-size for every source (default: "
        "none, so each source uses its own default chunk size); the "
        "asyncio-stream reference writes chunks of the size ours uses",
    )
    parser.add_argument(
        "--single-bytes",
        type=parseSize,
        help="bytes read from one connection (default 1G; quick 128M)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=16,
        help="connections at once in the multi-connection test (default 16)",
    )
    parser.add_argument(
        "--multi-bytes",
        type=parseSize,
        help="bytes read from each of those (default 256M; quick 16M)",
    )
    parser.add_argument(
        "--file-size",
        type=parseSize,
        help="size of the streamed temporary file, read whole by every "
        "connection (default 512M; quick 64M)",
    )
    addStalledOptions(parser, "connections")
    addRunOptions(parser, " (this process, which reads the streams)")
    args = parser.parse_args(argv)
    pick = picker(args.quick)
    plan = Plan(
        **planFields(parser, args),
        singleBytes=pick(args.single_bytes, GiB, 128 * MiB),
        multiConnections=args.connections,
        multiBytes=pick(args.multi_bytes, 256 * MiB, 16 * MiB),
        fileSize=pick(args.file_size, 512 * MiB, 64 * MiB),
        stalledCount=args.stalled,
        recvSize=args.recv_size,
    )
    checkPositive(
        parser,
        [
            ("--connections", plan.multiConnections - 1),
            ("--stalled", plan.stalledCount),
            ("--single-bytes", plan.singleBytes),
            ("--multi-bytes", plan.multiBytes),
            ("--file-size", plan.fileSize),
            ("--recv-size", plan.recvSize),
        ],
    )
    chunk: int | None = args.chunk_size
    baseline: Path | None = args.baseline
    pinning: Pinning | None = args.pin
    return plan, None if chunk is None else str(chunk), baseline, pinning


def main(argv: Sequence[str] | None = None) -> int:
    plan, ourChunkOption, baseline, pinning = parseArguments(argv)
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
                    f"{source} {formatSize(baseChunks[source])}" for source in SOURCES
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
            f"{source} {formatSize(chunkSizes[source])}" for source in SOURCES
        )
        referenceChunks = ", ".join(
            f"{spec.source} {formatSize(chunkSizes[spec.source])}"
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
            f"1 x {formatSize(plan.singleBytes)} and {plan.multiConnections} x "
            f"{formatSize(plan.multiBytes)} generated, file of "
            f"{formatSize(plan.fileSize)} read whole per connection, "
            f"recv_into {formatSize(plan.recvSize)}, "
            f"{plan.stalledCount} stalled readers\n",
            flush=True,
        )
        progress(f"writing {formatSize(plan.fileSize)} to {filePath}")
        writeTestFile(filePath, plan.fileSize)
        started = time.monotonic()
        results = runRounds(plan, setup)
        print(report(plan, setup, results))
        print(f"\n({time.monotonic() - started:.0f}s)")
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
