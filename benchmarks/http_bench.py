#!/usr/bin/env python3
"""
Side-by-side HTTP file-download benchmark of the twisted-zero daemon's HTTP
front end (C{twistd zero --http ... --root DIR}) against
C{twisted.web.static.File} (C{twistd web --path DIR}), aiohttp's
C{web.FileResponse} (C{aiohttp_server.py}) and nginx with C{sendfile on}.
Run by hand, never in CI; see C{README.rst}.

Measures, on 127.0.0.1 with ephemeral ports only, downloads of one file in
the page cache:

  - throughput (GB/s, GB = 10**9 bytes of body) of one connection and of
    several at once;
  - the server's CPU seconds per GB (utime + stime from /proc/PID/stat,
    summed over its processes: nginx's master and worker);
  - the server's resident memory per stalled download: many clients send a
    GET, read the response head and then nothing more.

Every round measures every server once, in a shuffled order, and the target
(ours ahead of twisted.web.static and aiohttp) is judged on the medians of
per-round ratios. With C{--baseline PATH}, our daemon as run from another
checkout at PATH is measured too, as C{baseline}, and compared with ours.
With C{--pin SERVER_CPUS:CLIENT_CPUS}, every server (nginx's worker too)
runs on SERVER_CPUS only and the client processes on CLIENT_CPUS only.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import os
import platform
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path

import benchresults
import benchutil
from benchclients import (
    HEAD_READ,
    connect,
    getRequest,
    parseHead,
    waitUntilSettled,
)
from benchservers import (
    DAEMON_PORT_LINE,
    STARTUP_TIMEOUT,
    ServerProcess,
    ServerSetup,
    childPids,
    cpuTimes,
    rssKiB,
    spawnServer,
    terminate,
    twistdCommand,
)
from benchutil import BASELINE, DAEMONS, HOST, OURS, MiB

AIOHTTP_SERVER = benchutil.BENCH_DIR / "aiohttp_server.py"
FILE_NAME = "download.bin"
WARM_NAME = "warm.bin"
WARM_SIZE = 4 * MiB

TWISTED_STATIC = "twisted.web.static"
AIOHTTP = "aiohttp"
NGINX = "nginx"
TARGETS = (TWISTED_STATIC, AIOHTTP)
"""
The servers ours must be ahead of; nginx is measured for reference only.
"""

PROBE = """
import twisted, twisted_zero, aiohttp
print(twisted_zero.__file__)
print(twisted.__version__)
print(aiohttp.__version__)
"""
"""
Where the daemon's package is imported from, and the versions of Twisted and
aiohttp, as the servers' interpreter sees them.
"""
PORT_LINES = {
    OURS: DAEMON_PORT_LINE,
    TWISTED_STATIC: re.compile(r"\[-\] Site starting on (\d+)$", re.MULTILINE),
    AIOHTTP: re.compile(r"\A(\d+)\n"),
}
NGINX_CONFIG = """\
{user}daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    sendfile on;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {host}:{port};
        location /files/ {{
            alias {root}/;
        }}
    }}
}}
"""


# Servers -----------------------------------------------------------------


@dataclass(frozen=True)
class Setup(ServerSetup):
    """
    What every server of a run is started with: a L{ServerSetup} (its
    C{workDir} holds the logs and nginx configurations), the directory
    served, and nginx.
    """

    dataDir: Path
    """
    The directory served: the test file and a small warm-up file.
    """
    nginx: str | None
    """
    The nginx executable, or L{None} to leave nginx out.
    """

    def environment(self, kind: str = OURS) -> dict[str, str]:
        env = super().environment(kind)
        env.pop("AIOHTTP_NOSENDFILE", None)
        return env

    def daemonOptions(self, kind: str) -> tuple[str, ...]:
        """
        The options our daemon of C{kind} gets after C{--http} and
        C{--root}: none here.
        """
        return ()

    def nginxConfig(self) -> str:
        """
        The template of nginx's configuration (see L{NGINX_CONFIG}).
        """
        return NGINX_CONFIG

    def kinds(self) -> tuple[str, ...]:
        return (
            (OURS,)
            + (() if self.baseline is None else (BASELINE,))
            + (TWISTED_STATIC, AIOHTTP)
            + (() if self.nginx is None else (NGINX,))
        )

    def urlPath(self, kind: str, name: str) -> str:
        """
        Where C{kind} serves the file C{name} of L{dataDir}.
        """
        return f"/{name}" if kind == TWISTED_STATIC else f"/files/{name}"


def _freePort() -> int:
    """
    A port of 127.0.0.1 that was free a moment ago, for nginx, which cannot
    listen on port 0 and say which port it got.
    """
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class HttpServer(ServerProcess):
    """
    A running HTTP server that this benchmark started: one process, or for
    nginx a master and its worker.
    """

    kind: str
    process: subprocess.Popen[bytes]
    logPath: Path
    extraLogs: tuple[Path, ...] = ()
    port: int = 0
    workers: tuple[int, ...] = ()
    """
    The processes the server forked (nginx's worker), found at start.
    """

    @property
    def label(self) -> str:
        return self.kind

    def logPaths(self) -> tuple[Path, ...]:
        return (self.logPath, *self.extraLogs)

    def cpuTimes(self) -> tuple[float, float]:
        """
        User and system CPU time so far, of all the server's processes.
        """
        times = [cpuTimes(pid) for pid in (self.pid, *self.workers)]
        return sum(user for user, _ in times), sum(system for _, system in times)

    def rssKiB(self) -> int:
        """
        The resident memory of the processes that serve: the workers if the
        server has any (a master's does not change with connections), else
        the one process.
        """
        return sum(map(rssKiB, self.workers or (self.pid,)))

    @classmethod
    def start(cls, kind: str, setup: Setup, serial: int) -> HttpServer:
        logPath = setup.workDir / f"{serial:03d}-{kind}.log"
        errPath = logPath.with_suffix(".err")
        if kind == NGINX:
            return cls._startNginx(setup, logPath, errPath)
        root = str(setup.dataDir)
        if kind in DAEMONS:
            command = twistdCommand("zero", "--http", f"tcp:0:interface={HOST}")
            command += ["--root", root, *setup.daemonOptions(kind)]
        elif kind == TWISTED_STATIC:
            command = twistdCommand("web", "--listen", f"tcp:0:interface={HOST}")
            command += ["--path", root]
        else:
            command = [sys.executable, str(AIOHTTP_SERVER), "--root", root]
            command += ["--port", "0"]
        server = cls(
            kind, _spawn(kind, command, setup, logPath, errPath), logPath, (errPath,)
        )
        try:
            server.port = server._waitForPort(
                PORT_LINES[OURS if kind in DAEMONS else kind]
            )
            server._checkPinned(setup)
        except BaseException:
            server.stop()
            raise
        return server

    @classmethod
    def _startNginx(cls, setup: Setup, logPath: Path, errPath: Path) -> HttpServer:
        assert setup.nginx is not None
        prefix = logPath.with_suffix("")
        for attempt in range(3):
            shutil.rmtree(prefix, ignore_errors=True)
            prefix.mkdir()
            port = _freePort()
            config = prefix / "nginx.conf"
            config.write_text(
                setup.nginxConfig().format(
                    # The worker must read the private temporary directory.
                    user="user root;\n" if os.geteuid() == 0 else "",
                    prefix=prefix,
                    host=HOST,
                    port=port,
                    root=setup.dataDir,
                )
            )
            errorLog = prefix / "error.log"
            command = [setup.nginx, "-p", f"{prefix}/", "-c", str(config)]
            command += ["-e", str(errorLog)]
            server = cls(
                NGINX,
                _spawn(NGINX, command, setup, logPath, errPath),
                logPath,
                (errPath, errorLog),
                port,
            )
            try:
                server._waitForNginx()
                server._checkPinned(setup)
            except benchutil.BenchError:
                server.stop()
                if attempt < 2 and "Address already in use" in server.logTail():
                    continue  # another process took the port meanwhile
                raise
            except BaseException:
                server.stop()
                raise
            return server
        raise AssertionError("unreachable")

    def _waitForNginx(self) -> None:
        """
        Wait until nginx accepts connections and its worker is there.
        """
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            self.checkAlive()
            workers = childPids(self.pid)
            if workers:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection((HOST, self.port), timeout=1),
                ):
                    self.workers = tuple(workers)
                    return
            time.sleep(0.05)
        raise benchutil.BenchError(
            f"{self.label}: not serving after {STARTUP_TIMEOUT}s"
        )

    def _checkPinned(self, setup: Setup) -> None:
        """
        With C{--pin}, check that the server's processes (nginx's master and
        worker) may run on the server CPUs only.
        """
        if setup.pinning is not None:
            setup.pinning.checkServer((self.pid, *self.workers), self.label)

    def stop(self) -> None:
        """
        Terminate this server (by its PID only) and reap it; then kill any
        worker of it that outlived it.
        """
        super().stop()
        for pid in self.workers:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "nginx":
                    os.kill(pid, signal.SIGKILL)


def _spawn(
    kind: str, command: list[str], setup: Setup, logPath: Path, errPath: Path
) -> subprocess.Popen[bytes]:
    return spawnServer(
        command, logPath, errPath, setup.workDir, setup.environment(kind), setup.pinning
    )


# The client --------------------------------------------------------------


@dataclass
class _Download:
    sock: socket.socket
    head: bytearray = field(default_factory=bytearray)
    body: int = 0
    headDone: bool = False


def download(
    port: int,
    path: str,
    connections: int,
    expected: int,
    view: memoryview,
    deadline: float,
) -> int:
    """
    GET C{path} on C{connections} connections at once and read each whole
    body (C{expected} bytes) into C{view}, which is overwritten: the data is
    thrown away.

    @return: The body bytes read.
    """
    request = getRequest(path, host=HOST, close=True)
    size = len(view)
    downloads: list[_Download] = []
    try:
        for _ in range(connections):
            sock = connect(port, deadline)
            downloads.append(_Download(sock))
            sock.sendall(request)
            sock.setblocking(False)
        with selectors.DefaultSelector() as selector:
            for item in downloads:
                selector.register(item.sock, selectors.EVENT_READ, item)
            while selector.get_map():
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise benchutil.BenchError("the downloads took too long")
                for key, _ in selector.select(timeout):
                    item = key.data
                    want = HEAD_READ if not item.headDone else expected - item.body
                    try:
                        count = item.sock.recv_into(view, min(size, want))
                    except BlockingIOError:
                        continue
                    if not count:
                        raise benchutil.BenchError(
                            f"connection closed after {item.body} of {expected} "
                            "body bytes"
                        )
                    if item.headDone:
                        item.body += count
                    else:
                        item.head += view[:count]
                        headLength = parseHead(item.head, expected)
                        if headLength is not None:
                            item.headDone = True
                            item.body = len(item.head) - headLength
                            if item.body > expected:
                                raise benchutil.BenchError(
                                    "more bytes than Content-Length"
                                )
                    if item.headDone and item.body == expected:
                        selector.unregister(item.sock)
    finally:
        for item in downloads:
            item.sock.close()
    return sum(item.body for item in downloads)


@dataclass(frozen=True)
class ClientJob:
    """
    What one client process does: C{sequential} times, download the file on
    C{connections} connections at once.
    """

    port: int
    path: str
    connections: int
    sequential: int
    expected: int
    recvSize: int
    deadline: float
    """
    On the C{time.monotonic} clock, which forked processes share.
    """


ClientResult = tuple[int, float, str | None]
"""
Body bytes read, CPU seconds spent, and what went wrong if anything did.
"""


def _clientProcess(job: ClientJob, go: Event, results: Connection) -> None:
    """
    A forked client process: get ready, wait for C{go}, do C{job}, send a
    L{ClientResult} on C{results}.
    """
    view = memoryview(bytearray(job.recvSize))
    if not go.wait(max(job.deadline - time.monotonic(), 0)):
        return
    before = time.process_time()
    received = 0
    error: str | None = None
    try:
        for _ in range(job.sequential):
            received += download(
                job.port, job.path, job.connections, job.expected, view, job.deadline
            )
    except benchutil.BenchError as e:
        error = str(e)
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    result: ClientResult = (received, time.process_time() - before, error)
    results.send(result)
    results.close()


def _shares(total: int, parts: int) -> list[int]:
    """
    C{total} split into C{parts} near-equal positive parts.
    """
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@dataclass(frozen=True)
class HttpThroughput(benchresults.Throughput):
    """
    A throughput measurement that also tells the server's CPU time in the
    kernel apart.
    """

    serverSystemCpu: float

    @property
    def serverSystemShare(self) -> float:
        return self.serverSystemCpu / self.serverCpu if self.serverCpu else 0.0

    def serverNote(self) -> str:
        return f" ({self.serverSystemShare:4.0%} sys)"


def measureThroughput(
    server: HttpServer,
    path: str,
    connections: int,
    sequential: int,
    expected: int,
    plan: Plan,
) -> HttpThroughput:
    """
    Download C{path} from C{server} on C{connections} connections at once,
    C{sequential} times, with the connections spread over client processes
    forked (and ready) before the clock starts, and time it.
    """
    server.checkAlive()
    time.sleep(0.2)  # Let the server finish with the previous clients.
    deadline = time.monotonic() + plan.timeout
    context = multiprocessing.get_context("fork")
    go = context.Event()
    clients: list[tuple[BaseProcess, Connection]] = []
    results: list[ClientResult] = []
    try:
        for share in _shares(connections, plan.clientProcesses):
            job = ClientJob(
                server.port, path, share, sequential, expected, plan.recvSize, deadline
            )
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_clientProcess, args=(job, go, sender), daemon=True
            )
            process.start()
            sender.close()
            clients.append((process, receiver))
        userBefore, systemBefore = server.cpuTimes()
        started = time.perf_counter()
        go.set()
        for _, receiver in clients:
            if not receiver.poll(max(deadline - time.monotonic(), 0)):
                raise benchutil.BenchError(
                    f"the downloads took over {plan.timeout:.0f}s"
                )
            try:
                results.append(receiver.recv())
            except EOFError:
                raise benchutil.BenchError("a client process died") from None
        seconds = time.perf_counter() - started
        userAfter, systemAfter = server.cpuTimes()
    finally:
        for client, receiver in clients:
            receiver.close()
            client.join(5)
            if client.is_alive():
                client.kill()
                client.join(5)
    errors = [error for _, _, error in results if error is not None]
    if errors:
        raise benchutil.BenchError(f"{server.label}: {errors[0]}")
    received = sum(count for count, _, _ in results)
    if received != connections * sequential * expected:
        raise benchutil.BenchError(
            f"{server.label}: {received} body bytes read, expected more"
        )
    clientCpu = sum(cpu for _, cpu, _ in results)
    systemCpu = systemAfter - systemBefore
    serverCpu = userAfter - userBefore + systemCpu
    return HttpThroughput(seconds, received, serverCpu, clientCpu, systemCpu)


def _readHead(sock: socket.socket, expected: int, deadline: float) -> None:
    sock.settimeout(max(deadline - time.monotonic(), 0.1))
    head = bytearray()
    while parseHead(head, expected) is None:
        data = sock.recv(4096)
        if not data:
            raise benchutil.BenchError("connection closed before the response head")
        head += data


def openStalled(
    server: HttpServer, path: str, count: int, expected: int, deadline: float
) -> list[socket.socket]:
    """
    Open C{count} downloads of C{path} that read the response head and stop.
    """
    request = getRequest(path, host=HOST, close=True)
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            batch = [
                connect(server.port, deadline)
                for _ in range(min(benchutil.STALLED_BATCH, count - len(socks)))
            ]
            socks += batch
            for sock in batch:
                sock.sendall(request)
            for sock in batch:
                _readHead(sock, expected, deadline)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def measureStalled(
    server: HttpServer, setup: Setup, plan: Plan, buffer: bytearray
) -> float:
    """
    Start C{count} downloads that stop reading after the response head, wait
    for the server to fill what it can, and return its added resident memory
    per download in KiB.

    A few whole and stalled downloads first make the server's one-time
    allocations (lazy imports, caches, buffers) before the baseline is taken.
    """
    deadline = time.monotonic() + plan.timeout
    warmPath = setup.urlPath(server.kind, WARM_NAME)
    filePath = setup.urlPath(server.kind, FILE_NAME)
    view = memoryview(buffer)
    for _ in range(2):
        download(server.port, warmPath, 2, WARM_SIZE, view, deadline)
    for sock in openStalled(server, filePath, 4, plan.fileSize, deadline):
        sock.close()
    time.sleep(0.5)
    server.checkAlive()
    baseRss = server.rssKiB()
    socks = openStalled(server, filePath, plan.stalledCount, plan.fileSize, deadline)
    try:
        # At least 2 s: time for the server's reads of the file to settle.
        waitUntilSettled(server.rssKiB, socks, deadline, least=2.0)
        server.checkAlive()
        rss = server.rssKiB()
    finally:
        for sock in socks:
            sock.close()
    return (rss - baseRss) / plan.stalledCount


# The plan ----------------------------------------------------------------


@dataclass(frozen=True)
class Plan(benchutil.RunPlan):
    fileSize: int
    singleDownloads: int
    connections: int
    stalledCount: int
    recvSize: int
    clientProcesses: int


Results = benchresults.RoundResults[str, HttpThroughput]


def runRounds(plan: Plan, setup: Setup) -> Results:
    results = Results(plan.rounds)
    rng = random.Random(plan.seed)
    buffer = bytearray(plan.recvSize)
    kinds = setup.kinds()
    serials = itertools.count(1)
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        servers = {
            kind: stack.enter_context(HttpServer.start(kind, setup, next(serials)))
            for kind in kinds
        }
        for roundIndex in benchresults.roundIndexes(plan.rounds, plan.budget, began):
            benchutil.warmPageCache(setup.dataDir / FILE_NAME, buffer)
            for connections in rng.sample(
                [1, plan.connections], 2 if plan.connections > 1 else 1
            ):
                sequential = plan.singleDownloads if connections == 1 else 1
                for kind in rng.sample(kinds, len(kinds)):
                    results.record(
                        roundIndex,
                        kind,
                        connections,
                        f"{kind} x{connections}",
                        partial(
                            measureThroughput,
                            servers[kind],
                            setup.urlPath(kind, FILE_NAME),
                            connections,
                            sequential,
                            plan.fileSize,
                            plan,
                        ),
                        26,
                    )
            names = {kind: f"{kind} stalled x{plan.stalledCount}" for kind in kinds}

            def measureAlone(kind: str) -> float:
                with HttpServer.start(kind, setup, next(serials)) as server:
                    return measureStalled(server, setup, plan, buffer)

            results.recordStalledRound(
                roundIndex,
                rng,
                names,
                measureAlone,
                "  {name:26} {value:7.1f} KiB/download",
            )
    return results


# The report --------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    """
    A per-round ratio ours / C{other} of the throughputs (or of the CPU
    seconds per GB) of C{connections} connections, with a target or not; or
    with C{stalled}, of the memory per stalled download.
    """

    other: str
    connections: int
    cpu: bool = False
    target: bool = False
    stalled: bool = False

    @property
    def title(self) -> str:
        if self.stalled:
            return f"stalled KiB/download: ours / {self.other}"
        what = "CPU s/GB" if self.cpu else "GB/s"
        return f"{what} x{self.connections}: ours / {self.other}"

    def values(self, results: Results) -> list[float | None]:
        if self.stalled:
            return results.stalledRatios(OURS, self.other)
        if self.cpu:
            return results.throughputRatios(
                OURS, self.other, self.connections, lambda s: s.serverCpuPerGb
            )
        return results.throughputRatios(OURS, self.other, self.connections)


def _ratios(plan: Plan, setup: Setup) -> list[Ratio]:
    others = [kind for kind in setup.kinds() if kind != OURS]
    connectionCounts = sorted({1, plan.connections})
    ratios = [
        Ratio(other, connections, target=other in TARGETS)
        for connections in connectionCounts
        for other in others
    ]
    ratios += [
        Ratio(other, connections, cpu=True)
        for connections in connectionCounts
        for other in others
    ]
    if setup.baseline is not None:
        ratios.append(Ratio(BASELINE, plan.stalledCount, stalled=True))
    return ratios


def systemShare(sample: HttpThroughput) -> float:
    return sample.serverSystemShare


def report(plan: Plan, setup: Setup, results: Results) -> tuple[str, bool]:
    """
    The tables of medians and ratios, and whether the target is met.
    """
    rounds = f"median of {results.roundsDone} round(s)"
    throughput = [
        [
            f"x{connections}",
            kind,
            *benchresults.throughputCells(
                results.done(kind, connections), [systemShare]
            ),
        ]
        for connections in sorted({1, plan.connections})
        for kind in setup.kinds()
    ]
    stalled = [[kind, *results.stalledCells(kind)] for kind in setup.kinds()]
    ratios = []
    met = True
    for ratio in _ratios(plan, setup):
        values = ratio.values(results)
        middle = benchresults.median(values)
        verdict = ""
        if ratio.target:
            ahead = middle is not None and middle > 1.0
            met = met and ahead
            verdict = "PASS" if ahead else "FAIL"
        elif not ratio.cpu and ratio.other != BASELINE:
            verdict = "(reference)"
        target = "> 1.00" if ratio.target else ""
        ratios.append(benchresults.ratioCells(ratio.title, values, target, verdict))
    out = [
        *benchresults.section(
            f"Throughput ({rounds}; GB = 10^9 bytes of body)",
            ["conns", "server", *benchresults.throughputColumns(["srv sys"])],
            throughput,
        ),
        "",
        *benchresults.section(
            f"Stalled downloads ({plan.stalledCount} clients that read the head "
            f"and stop; added server RSS, {rounds})",
            ["server", *benchresults.stalledColumns("KiB/download")],
            stalled,
            1,
        ),
        "",
        *benchresults.section(
            f"Ratios ours / other ({rounds} of per-round values)",
            benchresults.RATIO_COLUMNS,
            ratios,
            1,
        ),
        "",
        f"Target: ours ahead of {' and '.join(TARGETS)} (median per-round GB/s "
        f"ratio > 1 with 1 and {plan.connections} connections): "
        f"{'PASS' if met else 'FAIL'}",
    ]
    if setup.nginx is None:
        out.append("nginx: skipped (not installed)")
    out += results.failureLines()
    return "\n".join(out), met


# Setup and command line --------------------------------------------------


def probeVersions(setup: Setup, kind: str = OURS) -> tuple[str, str, str]:
    """
    Where the daemon's package is imported from (checked: see
    L{ServerSetup.probeDaemon}), and the versions of Twisted and aiohttp, as
    the interpreter of the daemon of C{kind} (ours or the baseline) sees
    them.
    """
    output = setup.probeDaemon(
        kind,
        PROBE,
        [],
        "cannot import the servers' packages (pip install aiohttp?)",
        3,
    )
    return output[0], output[1], output[2]


def addNginxOption(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nginx",
        help="the nginx executable (default: nginx on PATH or /usr/sbin/nginx; "
        "empty: leave nginx out)",
    )


def findNginx(option: str | None) -> str | None:
    """
    The nginx executable to measure, as C{--nginx} says, or L{None} for
    none.
    """
    if option is not None:
        return option or None
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


def nginxVersion(nginx: str) -> str:
    completed = subprocess.run(
        [nginx, "-v"], capture_output=True, text=True, timeout=30, check=True
    )
    return completed.stderr.strip().removeprefix("nginx version: ")


def parseArguments(argv: Sequence[str] | None) -> tuple[Plan, str | None]:
    parser = benchutil.BenchParser(
        "Benchmark downloads from twisted-zero's HTTP front end against "
        "twisted.web.static, aiohttp and nginx on 127.0.0.1 (run by hand, not "
        "in CI)."
    )
    benchutil.addRoundOptions(parser)
    benchutil.addFileSizeOption(parser, "the downloaded file", 512 * MiB, 64 * MiB)
    parser.addNumber(
        "--single-downloads",
        "downloads one after the other in the one-connection test",
        default=2,
        quick=1,
    )
    parser.addNumber(
        "--connections",
        "downloads at once in the multi-connection test (default 16)",
        default=16,
    )
    parser.addNumber(
        "--client-processes",
        "client processes the connections are spread over (default: as many as "
        "the machine has CPUs, so that the client can use whatever CPU the "
        "server leaves; with --pin, as many as CLIENT_CPUS)",
    )
    benchutil.addStalledOptions(parser, "downloads")
    addNginxOption(parser)
    benchutil.addRunOptions(parser, " (the client processes, which download)")
    args = parser.parseArguments(argv)
    pinning: benchutil.Pinning | None = args.pin
    clientCpus = (os.cpu_count() or 1) if pinning is None else len(pinning.clientCpus)
    plan = Plan.fromArguments(
        args,
        stalledCount=args.stalled,
        clientProcesses=(
            args.client_processes if args.client_processes is not None else clientCpus
        ),
    )
    if plan.timeout <= 0:
        parser.error("--timeout must be positive")
    if plan.fileSize > 64 * benchutil.GiB:
        parser.error("--file-size is too large")
    return plan, findNginx(args.nginx)


def main(argv: Sequence[str] | None = None) -> int:
    plan, nginx = parseArguments(argv)
    baseline, pinning = plan.baseline, plan.pinning
    signal.signal(signal.SIGTERM, terminate)
    if pinning is not None:
        pinning.pinClient()  # the client processes are forked from this one
    with tempfile.TemporaryDirectory(prefix="twisted-zero-http-bench-") as tmp:
        workDir = Path(tmp).resolve()
        dataDir = workDir / "data"
        dataDir.mkdir()
        setup = Setup(
            dataDir, nginx, workDir=workDir, baseline=baseline, pinning=pinning
        )
        ourPackage, twistedVersion, aiohttpVersion = probeVersions(setup)
        baselineNote = ""
        if baseline is not None:
            basePackage, _, _ = probeVersions(setup, BASELINE)
            baselineNote = f"; baseline from {Path(basePackage).parent}"
        if nginx is None:
            nginxNote = "nginx skipped: not installed (apt-get install nginx)"
            benchutil.progress(nginxNote)
        else:
            nginxNote = f"nginx {nginxVersion(nginx)} (sendfile on, 1 worker)"
        processes = min(plan.clientProcesses, plan.connections)
        pinNote = "" if pinning is None else f"pinned: {pinning.describe()}\n"
        print(
            f"twisted-zero HTTP bench: {platform.python_implementation()} "
            f"{platform.python_version()}, Twisted {twistedVersion}, aiohttp "
            f"{aiohttpVersion}, {nginxNote}; {os.cpu_count()} CPUs, Linux "
            f"{platform.release()}\n"
            f"ours from {Path(ourPackage).parent}{baselineNote}; "
            f"rounds {plan.rounds}; seed {plan.seed}\n"
            f"{pinNote}"
            f"file of {benchutil.formatSize(plan.fileSize)} (page cache), downloaded "
            f"{plan.singleDownloads} x on 1 connection and once on each of "
            f"{plan.connections} at once; client: {processes} process(es), "
            f"recv_into {benchutil.formatSize(plan.recvSize)}; "
            f"{plan.stalledCount} stalled downloads\n",
            flush=True,
        )
        benchutil.progress(
            f"writing {benchutil.formatSize(plan.fileSize)} to {dataDir / FILE_NAME}"
        )
        benchutil.writeTestFile(dataDir / FILE_NAME, plan.fileSize)
        benchutil.writeTestFile(dataDir / WARM_NAME, WARM_SIZE)
        started = time.monotonic()
        results = runRounds(plan, setup)
        text, _ = report(plan, setup, results)
        print(text)
        print(f"\n({time.monotonic() - started:.0f}s)")
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
