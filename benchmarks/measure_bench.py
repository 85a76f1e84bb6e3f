#!/usr/bin/env python3
"""
How well C{twisted-zero measure} measures, and what the upload sink costs.
Run by hand, never in CI; see C{README.rst}. Three parts, each in rounds
with the peers side by side (their order rotates from round to round),
judged on medians of per-round ratios:

  - A, client cost (127.0.0.1, unshaped): one C{twisted-zero serve} daemon
    with a raw listener and an HTTP one; one stream for T seconds read by
    this benchmark's own raw-socket client (C{recv_into} a preallocated
    buffer) and by C{twisted-zero measure -P 1 -t T --json}, raw and HTTP
    (C{GET /zero}). Target: measure at least 0.9 x the raw client. Both
    processes' CPU seconds per GB are shown.
  - B, agreement with iperf3: in a network namespace of its own whose
    loopback is shaped by C{tc ... tbf} (1 Gbit/s by default), C{iperf3 -s}
    and our daemon; download (C{iperf3 -R}) and upload (C{iperf3}) against
    C{twisted-zero measure} (and C{--upload}) raw and HTTP. Target: each
    within 5% of iperf3's figure (the receiver's). Needs root, iproute2 and
    iperf3.
  - C, the upload sink (127.0.0.1): a raw client POSTs C{--upload-bytes} of
    zeros to C{/upload}, with a Content-Length and chunked (1 MiB chunks),
    and C{twisted-zero measure --upload} sends as many; GB/s on the
    client's clock and the server's own figure, the daemon's RSS (before,
    after, sampled peak, VmHWM) and its writes (C{write_bytes}, C{wchar} of
    C{/proc/PID/io}). Targets: at least 1 GB/s with one stream, RSS flat,
    no disk writes.

Everything talks to 127.0.0.1 only, every process is a subprocess stopped by
PID when the benchmark ends, and the network namespace is deleted then too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import benchresults
import benchutil
from benchclients import connect, getRequest, headEnd, readStream
from benchresults import RoundResults, Throughput, fmt, median, spread
from benchservers import (
    DAEMON_PORT_LINE,
    ServerProcess,
    ServerSetup,
    _procValue,
    checkoutEnvironment,
    cpuSeconds,
    rssKiB,
    spawnServer,
    terminate,
)
from benchutil import GB, HOST, OURS, REPO_ROOT, BenchError, MiB, Pinning, progress

ENDPOINT = f"tcp:0:interface={HOST}"
RESULTS = benchutil.BENCH_DIR / "results-measure-latest.txt"
PINNED_RESULTS = benchutil.BENCH_DIR / "results-measure-pinned-latest.txt"
RAW_PORT_LINE = re.compile(rf"streaming \S+ on {re.escape(HOST)}:(\d+)")
HTTP_PORT_LINE = re.compile(rf"serving HTTP on {re.escape(HOST)}:(\d+)")
IPERF_PORT_LINE = re.compile(r"Server listening on (\d+)")
IPERF_PORT = 5201
"""
iperf3's own port: fixed, as the network namespace of part B is the
benchmark's alone.
"""
READ_STEP = 16 * MiB
"""
The raw client reads this much between looks at the clock.
"""
UPLOAD_CHUNK = MiB
RSS_INTERVAL = 0.02

CLIENT_TARGET = 0.9
IPERF_TOLERANCE = 0.05
SINK_TARGET = 1.0
RSS_FLAT_KIB = 16 * 1024
"""
The most the sink's sampled RSS may rise above its value before an upload,
and its value after the last upload above the one before the first, for
"RSS flat".
"""
WCHAR_TINY = 4 * 1024
WRITE_BYTES_TINY = 8 * 1024
"""
The most C{wchar} and C{write_bytes} may grow by during an upload, for "no
disk writes": the daemon writes its log line of the upload to its log file
(what a socket sends is not counted), which may dirty a page or two.
"""

PROBE = """
import importlib.util, twisted, twisted_zero
print(twisted_zero.__file__)
print(twisted.__version__)
print(twisted_zero.__version__)
print(importlib.util.find_spec("twisted_zero._measure") is not None)
"""
"""
Where the daemon imports our package from, the versions of Twisted and of
our package, and whether it has C{twisted-zero measure}.
"""

RAW_CLIENT = "raw client"
MEASURE = "measure"
IPERF = "iperf3"
MEASURE_RAW = "measure raw"
MEASURE_HTTP = "measure HTTP"
LENGTH = "Content-Length"
CHUNKED = "chunked"
MEASURE_UPLOAD = "measure --upload"
PATHS = ("raw", "HTTP")
DIRECTIONS = ("download", "upload")
PARTS = "ABC"


# Servers -----------------------------------------------------------------


def inNamespace(netns: str | None, command: Sequence[str]) -> list[str]:
    """
    C{command}, run in the network namespace C{netns} (L{None}: this one);
    C{ip netns exec} execs it, so that its PID is the command's.
    """
    return [*(["ip", "netns", "exec", netns] if netns else []), *command]


def zeroCommand(*arguments: str) -> list[str]:
    """
    C{twisted-zero ARGUMENTS}, run by this interpreter (C{python -m
    twisted_zero}); with L{checkoutEnvironment} of this tree, its code.
    """
    return [sys.executable, "-m", "twisted_zero", *arguments]


@dataclass
class NamedServer(ServerProcess):
    """
    A server subprocess (C{command}) that dies with the benchmark, pinned
    to the server CPUs with C{pinning}, its output in C{workDir}; started
    once its log holds C{listeners} lines that match C{portLine}.
    """

    name: str
    command: Sequence[str]
    workDir: Path
    pinning: Pinning | None
    portLine: re.Pattern[str]
    listeners: int = 1
    process: subprocess.Popen[bytes] = field(init=False)
    logPath: Path = field(init=False)

    @property
    def label(self) -> str:
        return self.name

    def __post_init__(self) -> None:
        self.logPath = self.workDir / f"{self.name.replace(' ', '-')}.log"
        self.process = spawnServer(
            self.command,
            self.logPath,
            self.logPath.with_suffix(".err"),
            self.workDir,
            checkoutEnvironment(REPO_ROOT),
            self.pinning,
            mergeErrors=True,
        )
        try:
            self._waitForPort(self.portLine, self.listeners)
            if self.pinning is not None:
                self.pinning.checkServer([self.pid], self.name)
        except BaseException:
            self.stop()
            raise

    def loggedPorts(self, portLine: re.Pattern[str]) -> list[int]:
        """
        The ports of the lines of the log that match C{portLine}.
        """
        return [int(port) for port in portLine.findall(self.logPath.read_text())]

    def cpu(self) -> float:
        return cpuSeconds(self.pid)


def startDaemon(
    name: str, args: Sequence[str], setup: ServerSetup, netns: str | None = None
) -> NamedServer:
    """
    C{twisted-zero serve ARGS} of this tree (in the network namespace
    C{netns}), started once it has logged each of its listeners.
    """
    listeners = sum(arg in ("--listen", "--http") for arg in args)
    return NamedServer(
        name,
        inNamespace(netns, zeroCommand("serve", *args)),
        setup.workDir,
        setup.pinning,
        DAEMON_PORT_LINE,
        listeners,
    )


def daemonPort(daemon: NamedServer, portLine: re.Pattern[str]) -> int:
    """
    The port of C{daemon}'s one listener whose line matches C{portLine}.
    """
    (port,) = daemon.loggedPorts(portLine)
    return port


# Clients -----------------------------------------------------------------


def childrenCpu() -> float:
    """
    The CPU seconds of this process's children that have been waited for.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def runClient(command: Sequence[str], timeout: float) -> tuple[Any, float]:
    """
    Run the client C{command}, which prints one JSON document, with this
    tree's code.

    @return: The document, and the client's CPU seconds.
    @raise BenchError: If it fails or prints no JSON.
    """
    before = childrenCpu()
    try:
        completed = subprocess.run(
            command,
            env=checkoutEnvironment(REPO_ROOT),
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=benchutil.dieWithParent,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{command[-1]}: no result after {timeout:g}s") from None
    cpu = childrenCpu() - before
    if completed.returncode != 0:
        lines = (completed.stderr.strip() or completed.stdout.strip()).splitlines()
        raise BenchError(
            f"{' '.join(command)} exited with {completed.returncode}: "
            f"{lines[-1] if lines else '(no output)'}"
        )
    try:
        return json.loads(completed.stdout), cpu
    except ValueError:
        raise BenchError(f"{' '.join(command)}: no JSON document") from None


def figures(summary: Any, what: str) -> tuple[int, float]:
    """
    The bytes of a JSON C{summary} (C{measure}'s C{end.sum}, iperf3's
    C{end.sum_received}), and the seconds that make its rate
    C{bits_per_second / 8}.
    """
    try:
        count, bits = int(summary["bytes"]), float(summary["bits_per_second"])
    except (KeyError, TypeError, ValueError) as e:
        raise BenchError(f"{what}: no bytes and bits_per_second: {e}") from None
    if count <= 0 or bits <= 0:
        raise BenchError(f"{what}: {count} bytes at {bits} bit/s")
    return count, 8 * count / bits


def runMeasured(
    command: Sequence[str],
    summary: Callable[[Any], Any],
    server: NamedServer,
    timeout: float,
) -> Throughput:
    """
    Run the client C{command}, and make its JSON C{summary} a throughput
    with both processes' CPU seconds.
    """
    before = server.cpu()
    document, clientCpu = runClient(command, timeout)
    serverCpu = server.cpu() - before
    count, seconds = figures(summary(document), command[-1])
    return Throughput(seconds, count, serverCpu, clientCpu)


def measureCommand(netns: str | None, *arguments: str) -> list[str]:
    return inNamespace(netns, zeroCommand("measure", "--json", *arguments))


def measureSum(document: Any) -> Any:
    return document["end"]["sum"]


def iperfReceived(document: Any) -> Any:
    if "error" in document:
        raise BenchError(f"iperf3: {document['error']}")
    return document["end"]["sum_received"]


def readHead(sock: socket.socket, deadline: float) -> tuple[str, dict[str, str], bytes]:
    """
    Read a response head from C{sock}.

    @return: Its status line, its headers (names in lower case) and the
        bytes that came after it.
    """
    data = bytearray()
    while (length := headEnd(data)) is None:
        if time.monotonic() > deadline:
            raise BenchError("no response head in time")
        chunk = sock.recv(64 * 1024)
        if not chunk:
            raise BenchError(f"the connection ended in the head: {bytes(data)!r}")
        data += chunk
    statusLine, *lines = bytes(data[: length - 4]).decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if statusLine.split(" ")[1:2] != ["200"]:
        raise BenchError(f"status line {statusLine!r}, not 200")
    return statusLine, headers, bytes(data[length:])


def rawClientRead(
    port: int, http: bool, seconds: float, recvSize: int, timeout: float
) -> tuple[int, float]:
    """
    Read one stream from C{port} for C{seconds} from its first byte, with
    C{recv_into} a preallocated buffer of C{recvSize}; with C{http}, after
    a C{GET /zero} and its response head (the chunked body's few framing
    bytes are counted with it).

    @return: The bytes read and the seconds they took.
    """
    deadline = time.monotonic() + timeout
    view = memoryview(bytearray(recvSize))
    with connect(port, deadline) as sock:
        if http:
            sock.sendall(getRequest("/zero"))
            _, _, rest = readHead(sock, deadline)
            total = len(rest)
        else:
            total = sock.recv_into(view)
        started = time.perf_counter()
        end = started + seconds
        while (now := time.perf_counter()) < end:
            count = readStream(sock, view, READ_STEP)
            if count < READ_STEP:
                raise BenchError("the stream ended early")
            total += count
    return total, now - started


def rawClient(
    daemon: NamedServer,
    port: int,
    http: bool,
    seconds: float,
    recvSize: int,
    timeout: float,
) -> Throughput:
    """
    L{rawClientRead}, with the CPU seconds of the daemon and of this
    process meanwhile.
    """
    serverBefore, clientBefore = daemon.cpu(), time.process_time()
    count, elapsed = rawClientRead(port, http, seconds, recvSize, timeout)
    clientCpu = time.process_time() - clientBefore
    return Throughput(elapsed, count, daemon.cpu() - serverBefore, clientCpu)


def rotated(peers: Sequence[str], roundIndex: int) -> list[str]:
    """
    C{peers} in the order of round C{roundIndex}: rotated by one each round,
    so that each goes first in turn.
    """
    shift = roundIndex % len(peers)
    return [*peers[shift:], *peers[:shift]]


# The upload sink ---------------------------------------------------------


@dataclass(frozen=True)
class UploadSample(Throughput):
    """
    One upload to the sink: a L{Throughput} on the client's clock, the
    server's own seconds (L{None}: not known), and what the daemon's
    C{/proc} said (in KiB, and bytes for the writes).
    """

    serverSeconds: float | None
    rssBefore: int
    rssAfter: int
    rssPeak: int
    """
    The highest RSS sampled during the upload (every 20 ms).
    """
    highWater: int
    """
    VmHWM after the upload: the peak since the daemon started.
    """
    writeBytes: int
    wchar: int
    logGrowth: int
    """
    What the daemon's log file grew by.
    """

    @property
    def serverGbPerSecond(self) -> float | None:
        if self.serverSeconds is None or self.serverSeconds <= 0:
            return None
        return self.bytes / GB / self.serverSeconds

    @property
    def clientCpuPerGb(self) -> float:
        return self.clientCpu / (self.bytes / GB)

    def serverNote(self) -> str:
        return (
            f" (server's {fmt(self.serverGbPerSecond)} GB/s; RSS "
            f"{self.rssBefore / 1024:.1f}->{self.rssAfter / 1024:.1f} MiB, peak "
            f"+{(self.rssPeak - self.rssBefore) / 1024:.1f}; write_bytes "
            f"{self.writeBytes}, wchar {self.wchar}, log +{self.logGrowth})"
        )


class RssSampler:
    """
    A thread that samples a process's RSS every L{RSS_INTERVAL} seconds
    while in its C{with} block; C{peak} is the highest seen.
    """

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = rssKiB(pid)

    def _run(self) -> None:
        while not self._done.wait(RSS_INTERVAL):
            self.peak = max(self.peak, rssKiB(self._pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        excType: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rssKiB(self._pid))


def ioValue(pid: int, name: str) -> int:
    return _procValue(f"/proc/{pid}/io", name)


def sendUpload(port: int, size: int, chunked: bool, timeout: float) -> Any:
    """
    POST C{size} zeros to C{/upload}, with a Content-Length or chunked in
    1 MiB chunks, and read the answer.

    @return: The answer's JSON document.
    """
    deadline = time.monotonic() + timeout
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = f"POST /upload HTTP/1.1\r\nHost: bench\r\n{framing}\r\n\r\n"
    zeros = bytes(UPLOAD_CHUNK)
    frame = b"%x\r\n%s\r\n" % (UPLOAD_CHUNK, zeros) if chunked else zeros
    with connect(port, deadline) as sock:
        sock.sendall(head.encode("ascii"))
        left = size
        while left >= UPLOAD_CHUNK:
            sock.sendall(frame)
            left -= UPLOAD_CHUNK
            if time.monotonic() > deadline:
                raise BenchError(f"upload not sent after {timeout:g}s")
        if left:
            last = zeros[:left]
            sock.sendall(b"%x\r\n%s\r\n" % (left, last) if chunked else last)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        _, headers, body = readHead(sock, deadline)
        length = int(headers.get("content-length", "-1"))
        while len(body) < length:
            more = sock.recv(64 * 1024)
            if not more:
                break
            body += more
    try:
        return json.loads(body)
    except ValueError:
        raise BenchError(f"the answer is not JSON: {body[:200]!r}") from None


def watchUpload(
    daemon: NamedServer, send: Callable[[], tuple[int, float | None, float, float]]
) -> UploadSample:
    """
    Run C{send()}, an upload to C{daemon} that returns the bytes sent, the
    server's seconds, the client's seconds and CPU seconds, and watch
    C{daemon}'s CPU, RSS and writes meanwhile.
    """
    pid = daemon.pid
    rssBefore, cpuBefore = rssKiB(pid), daemon.cpu()
    writeBefore, wcharBefore = ioValue(pid, "write_bytes"), ioValue(pid, "wchar")
    logBefore = daemon.logPath.stat().st_size
    with RssSampler(pid) as sampler:
        count, serverSeconds, seconds, clientCpu = send()
    return UploadSample(
        seconds,
        count,
        daemon.cpu() - cpuBefore,
        clientCpu,
        serverSeconds,
        rssBefore,
        rssKiB(pid),
        sampler.peak,
        _procValue(f"/proc/{pid}/status", "VmHWM"),
        ioValue(pid, "write_bytes") - writeBefore,
        ioValue(pid, "wchar") - wcharBefore,
        daemon.logPath.stat().st_size - logBefore,
    )


def rawUpload(
    port: int, size: int, chunked: bool, timeout: float
) -> tuple[int, float | None, float, float]:
    """
    L{sendUpload}, timed on this process's clock from the request's first
    byte to the answer's last.

    @return: What L{watchUpload} expects.
    """
    clientBefore, started = time.process_time(), time.perf_counter()
    answer = sendUpload(port, size, chunked, timeout)
    seconds = time.perf_counter() - started
    clientCpu = time.process_time() - clientBefore
    if answer.get("bytes") != size:
        raise BenchError(f"the sink counted {answer.get('bytes')}, not {size}")
    return size, float(answer["seconds"]), seconds, clientCpu


def measureUpload(
    port: int, size: int, timeout: float
) -> tuple[int, float | None, float, float]:
    """
    C{twisted-zero measure --upload --bytes SIZE} to the sink.

    @return: What L{watchUpload} expects (the server's seconds as
        L{serverSeconds} finds them).
    """
    command = measureCommand(
        None, "--upload", "--bytes", str(size), f"http://{HOST}:{port}/upload"
    )
    document, clientCpu = runClient(command, timeout)
    count, seconds = figures(measureSum(document), command[-1])
    return count, serverSeconds(document), seconds, clientCpu


def serverSeconds(document: Any) -> float | None:
    """
    The sink's own seconds for the one stream of C{measure}'s JSON
    C{document}, if it says them (C{end.streams[0].server.seconds}).
    """
    with contextlib.suppress(KeyError, IndexError, TypeError, ValueError):
        return float(document["end"]["streams"][0]["server"]["seconds"])
    return None


# The network namespace ---------------------------------------------------


def partBMissing() -> str | None:
    """
    Why part B cannot run here, or L{None}.
    """
    if os.geteuid() != 0:
        return "part B needs root (a network namespace and tc)"
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("iperf3", "iperf3")):
        if shutil.which(tool) is None:
            return f"part B needs {tool} (apt-get install {package})"
    return None


def runTool(command: Sequence[str]) -> None:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if completed.returncode != 0:
        raise BenchError(
            f"{' '.join(command)} failed: {completed.stderr.strip() or completed.returncode}"
        )


@contextlib.contextmanager
def shapedNamespace(rate: str) -> Iterator[str]:
    """
    A new network namespace of a unique name whose loopback is up and shaped
    by C{tbf} at C{rate}; deleted on the way out, however it is left.
    """
    name = f"twisted-zero-bench-{os.getpid()}"
    runTool(["ip", "netns", "add", name])
    try:
        runTool(["ip", "-n", name, "link", "set", "lo", "up"])
        runTool(
            [
                *("tc", "-n", name, "qdisc", "add", "dev", "lo", "root", "tbf"),
                *("rate", rate, "burst", "1mb", "latency", "20ms"),
            ]
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], timeout=30, check=False)


def iperfVersion() -> str:
    completed = subprocess.run(
        ["iperf3", "--version"], capture_output=True, text=True, timeout=30
    )
    return completed.stdout.split("\n", 1)[0].strip()


# The plan and the rounds -------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Plan:
    """
    What a run measures: the options.
    """

    rounds: int
    parts: str
    seconds: int
    rate: str
    uploadBytes: int
    recvSize: int
    timeout: float
    budget: float
    pinning: Pinning | None
    hasMeasure: bool = True
    startCpu: float | None = None
    """
    The CPU seconds of starting a measure process (see L{startupCpu}).
    """

    def clientTimeout(self) -> float:
        return self.seconds + self.timeout


@dataclass
class Results:
    """
    What the rounds of each part measured: throughputs keyed by (group,
    peer), uploads by peer.
    """

    plan: Plan
    client: RoundResults[tuple[str, str], Throughput] = field(init=False)
    iperf: RoundResults[tuple[str, str], Throughput] = field(init=False)
    sink: RoundResults[tuple[str, str], UploadSample] = field(init=False)
    sinkRss: list[int] = field(default_factory=list)
    partFailures: list[str] = field(default_factory=list)
    """
    The sink's RSS when it started serving, and after the last upload.
    """

    def __post_init__(self) -> None:
        self.client = RoundResults(self.plan.rounds)
        self.iperf = RoundResults(self.plan.rounds)
        self.sink = RoundResults(self.plan.rounds)

    def failures(self) -> list[str]:
        return [
            *self.partFailures,
            *self.client.failures,
            *self.iperf.failures,
            *self.sink.failures,
        ]


WIDTH = 24


def runPartA(plan: Plan, setup: ServerSetup, results: Results, began: float) -> None:
    progress("part A: client cost, host loopback")
    args = ("--listen", ENDPOINT, "--http", ENDPOINT)
    with startDaemon("client-cost", args, setup) as daemon:
        ports = {
            "raw": daemonPort(daemon, RAW_PORT_LINE),
            "HTTP": daemonPort(daemon, HTTP_PORT_LINE),
        }
        for roundIndex in benchresults.roundIndexes(plan.rounds, plan.budget, began):
            for path in PATHS:
                http = path == "HTTP"
                port = ports[path]
                target = f"http://{HOST}:{port}/zero" if http else f"tcp:{HOST}:{port}"
                for peer in rotated((RAW_CLIENT, MEASURE), roundIndex):
                    measure: Callable[[], Throughput]
                    if peer == RAW_CLIENT:

                        def measure(port: int = port, http: bool = http) -> Throughput:
                            return rawClient(
                                daemon,
                                port,
                                http,
                                plan.seconds,
                                plan.recvSize,
                                plan.clientTimeout(),
                            )

                    else:
                        command = measureCommand(
                            None, "-P", "1", "-t", str(plan.seconds), target
                        )

                        def measure(command: list[str] = command) -> Throughput:
                            return runMeasured(
                                command, measureSum, daemon, plan.clientTimeout()
                            )

                    results.client.record(
                        roundIndex, (path, peer), 1, f"{path} {peer}", measure, WIDTH
                    )
            results.client.roundsDone = roundIndex + 1


def runPartB(plan: Plan, setup: ServerSetup, results: Results, began: float) -> None:
    progress(f"part B: against iperf3, namespace loopback shaped at {plan.rate}")
    with contextlib.ExitStack() as stack:
        netns = stack.enter_context(shapedNamespace(plan.rate))
        iperfCommand = ["iperf3", "-s", "-B", HOST, "-p", str(IPERF_PORT)]
        iperf = stack.enter_context(
            NamedServer(
                "iperf3-server",
                inNamespace(netns, [*iperfCommand, "--forceflush"]),
                setup.workDir,
                setup.pinning,
                IPERF_PORT_LINE,
            )
        )
        daemon = stack.enter_context(
            startDaemon(
                "shaped", ("--listen", ENDPOINT, "--http", ENDPOINT), setup, netns
            )
        )
        raw = f"tcp:{HOST}:{daemonPort(daemon, RAW_PORT_LINE)}"
        http = f"http://{HOST}:{daemonPort(daemon, HTTP_PORT_LINE)}"
        seconds = str(plan.seconds)
        for roundIndex in benchresults.roundIndexes(plan.rounds, plan.budget, began):
            for direction in DIRECTIONS:
                upload = direction == "upload"
                iperfClient = ["iperf3", "-c", HOST, "-p", str(IPERF_PORT), "-J"]
                commands = {
                    IPERF: (
                        inNamespace(
                            netns,
                            [*iperfClient, *([] if upload else ["-R"]), "-t", seconds],
                        ),
                        iperfReceived,
                        iperf,
                    ),
                    MEASURE_RAW: (
                        measureCommand(
                            netns, *(["--upload"] if upload else []), "-t", seconds, raw
                        ),
                        measureSum,
                        daemon,
                    ),
                    MEASURE_HTTP: (
                        measureCommand(
                            netns,
                            *(["--upload"] if upload else []),
                            "-t",
                            seconds,
                            f"{http}/upload" if upload else f"{http}/zero",
                        ),
                        measureSum,
                        daemon,
                    ),
                }
                for peer in rotated(list(commands), roundIndex):
                    command, summary, server = commands[peer]

                    def measure(
                        command: list[str] = command,
                        summary: Callable[[Any], Any] = summary,
                        server: NamedServer = server,
                    ) -> Throughput:
                        return runMeasured(
                            command, summary, server, plan.clientTimeout()
                        )

                    results.iperf.record(
                        roundIndex,
                        (direction, peer),
                        1,
                        f"{direction} {peer}",
                        measure,
                        WIDTH,
                    )
            results.iperf.roundsDone = roundIndex + 1


def runPartC(plan: Plan, setup: ServerSetup, results: Results, began: float) -> None:
    progress(f"part C: the upload sink, {benchutil.formatSize(plan.uploadBytes)}")
    peers = [LENGTH, CHUNKED, *([MEASURE_UPLOAD] if plan.hasMeasure else [])]
    timeout = plan.uploadBytes / GB + plan.timeout
    with startDaemon("upload-sink", ("--http", ENDPOINT), setup) as daemon:
        port = daemonPort(daemon, HTTP_PORT_LINE)
        results.sinkRss.append(rssKiB(daemon.pid))
        for roundIndex in benchresults.roundIndexes(plan.rounds, plan.budget, began):
            for peer in rotated(peers, roundIndex):
                send: Callable[[], tuple[int, float | None, float, float]]
                if peer == MEASURE_UPLOAD:

                    def send() -> tuple[int, float | None, float, float]:
                        return measureUpload(port, plan.uploadBytes, timeout)

                else:

                    def send(
                        chunked: bool = peer == CHUNKED,
                    ) -> tuple[int, float | None, float, float]:
                        return rawUpload(port, plan.uploadBytes, chunked, timeout)

                def measure(
                    send: Callable[[], tuple[int, float | None, float, float]] = send,
                ) -> UploadSample:
                    return watchUpload(daemon, send)

                results.sink.record(
                    roundIndex, ("upload", peer), 1, peer, measure, WIDTH
                )
            results.sink.roundsDone = roundIndex + 1
        results.sinkRss.append(rssKiB(daemon.pid))


# The report --------------------------------------------------------------


def verdict(
    values: Sequence[float | None], low: float, high: float | None = None
) -> str:
    """
    PASS or FAIL of the median of C{values} against C{low} (and C{high}),
    with a note when their spread crosses a bound: noise may hide the
    verdict then.
    """
    middle = median(values)
    present = [value for value in values if value is not None]
    if middle is None:
        return "n/a"
    bounds = [low] if high is None else [low, high]
    met = middle >= low and (high is None or middle <= high)
    noisy = any(min(present) < bound < max(present) for bound in bounds)
    return ("PASS" if met else "FAIL") + (" (noisy)" if noisy else "")


def clientCpuPerGb(sample: Throughput) -> float:
    return sample.clientCpu / (sample.bytes / GB)


def throughputRows(
    results: RoundResults[tuple[str, str], Throughput],
    keys: Sequence[tuple[str, str]],
    scale: float = 1.0,
    spec: str = ".2f",
    startCpu: float | None = None,
) -> list[list[str]]:
    """
    A row per key: the median GB/s (times C{scale}) and spread, server CPU
    s/GB and share, client CPU s/GB (with C{startCpu}, also less that for
    every client but the raw one: see L{lessStart}) and share, and the
    count.
    """
    rows = []
    for key in keys:
        done = results.done(key, 1)
        speeds: list[float | None] = [sample.gbPerSecond * scale for sample in done]
        cells = benchresults.throughputCells(done)
        clientCost = [fmt(median([clientCpuPerGb(sample) for sample in done]))]
        if startCpu is not None:
            less = lessStart(0.0 if key[1] == RAW_CLIENT else startCpu)
            clientCost.append(fmt(median([less(sample) for sample in done])))
        rows.append(
            [
                *key,
                fmt(median(speeds), spec),
                spread(speeds, spec),
                *cells[2:4],
                *clientCost,
                *cells[4:],
            ]
        )
    return rows


def lessStart(startCpu: float) -> Callable[[Throughput], float]:
    """
    The client CPU seconds per GB of a measurement, less C{startCpu}, the
    CPU seconds that starting the client process took.
    """

    def figure(sample: Throughput) -> float:
        return (sample.clientCpu - startCpu) / (sample.bytes / GB)

    return figure


def throughputHeader(
    first: str, second: str, unit: str = "GB/s", lessStart: bool = False
) -> list[str]:
    return [
        first,
        second,
        unit,
        "min-max",
        "srv CPU s/GB",
        "srv CPU",
        "client CPU s/GB",
        *(["less start"] if lessStart else []),
        "client CPU",
        "n",
    ]


def reportPartA(plan: Plan, results: Results) -> tuple[list[str], bool]:
    client = results.client
    rounds = f"median of {client.roundsDone} round(s)"
    keys = [(path, peer) for path in PATHS for peer in (RAW_CLIENT, MEASURE)]
    ratios = []
    met = True
    for path in PATHS:
        values = client.throughputRatios((path, MEASURE), (path, RAW_CLIENT), 1)
        judged = verdict(values, CLIENT_TARGET)
        met = met and judged.startswith("PASS")
        ratios.append(
            benchresults.ratioCells(
                f"{path} GB/s: measure / raw client",
                values,
                f">= {CLIENT_TARGET:.2f}",
                judged,
            )
        )
    startCpu = plan.startCpu or 0.0
    for path in PATHS:
        measured, raw = (
            [None if s is None else lessStart(startCpu)(s) for s in samples]
            for samples in (
                client.samples((path, MEASURE), 1),
                client.samples((path, RAW_CLIENT), 1),
            )
        )
        ratios.append(
            benchresults.ratioCells(
                f"{path} client CPU s/GB less start: measure / raw client",
                benchresults.roundRatios(measured, raw),
                "",
                "",
            )
        )
        ratios.append(
            benchresults.ratioCells(
                f"{path} server CPU s/GB: with measure / with raw client",
                client.throughputRatios(
                    (path, MEASURE),
                    (path, RAW_CLIENT),
                    1,
                    lambda sample: sample.serverCpuPerGb,
                ),
                "",
                "",
            )
        )
    lines = [
        *benchresults.section(
            f"A. Client cost: one stream on 127.0.0.1, unshaped ({rounds}; GB = "
            "10^9 bytes; measure's client CPU includes its start, less start: "
            f"without the {fmt(plan.startCpu)} CPU s of measure --help)",
            throughputHeader("path", "client", lessStart=plan.startCpu is not None),
            throughputRows(client, keys, startCpu=plan.startCpu),
        ),
        "",
        *benchresults.section(
            f"A. Ratios ({rounds} of per-round values)",
            benchresults.RATIO_COLUMNS,
            ratios,
            1,
        ),
    ]
    return lines, met


def reportPartB(plan: Plan, results: Results) -> tuple[list[str], bool]:
    iperf = results.iperf
    rounds = f"median of {iperf.roundsDone} round(s)"
    peers = (IPERF, MEASURE_RAW, MEASURE_HTTP)
    keys = [(direction, peer) for direction in DIRECTIONS for peer in peers]
    ratios = []
    met = True
    for direction in DIRECTIONS:
        for peer in (MEASURE_RAW, MEASURE_HTTP):
            values = iperf.throughputRatios((direction, peer), (direction, IPERF), 1)
            judged = verdict(values, 1 - IPERF_TOLERANCE, 1 + IPERF_TOLERANCE)
            met = met and judged.startswith("PASS")
            ratios.append(
                benchresults.ratioCells(
                    f"{direction}: {peer} / iperf3",
                    values,
                    f"{1 - IPERF_TOLERANCE:.2f}-{1 + IPERF_TOLERANCE:.2f}",
                    judged,
                )
            )
    lines = [
        *benchresults.section(
            f"B. Against iperf3: loopback of a network namespace shaped by tbf "
            f"rate {plan.rate} burst 1mb latency 20ms, {plan.seconds} s per "
            f"measurement ({rounds}; iperf3: the receiver's figure; measure: "
            "end.sum)",
            throughputHeader("direction", "client", "Mbit/s"),
            throughputRows(iperf, keys, 8000, ".0f"),
        ),
        "",
        *benchresults.section(
            f"B. Ratios ({rounds} of per-round values)",
            benchresults.RATIO_COLUMNS,
            ratios,
            1,
        ),
    ]
    return lines, met


def reportPartC(plan: Plan, results: Results) -> tuple[list[str], bool]:
    sink = results.sink
    rounds = f"median of {sink.roundsDone} round(s)"
    peers = [LENGTH, CHUNKED, *([MEASURE_UPLOAD] if plan.hasMeasure else [])]
    rows = []
    speedsMet, rssMet, writesMet = True, True, True
    speedVerdicts = []
    for peer in peers:
        done = sink.done(("upload", peer), 1)
        speeds: list[float | None] = [sample.gbPerSecond for sample in done]
        server = [sample.serverGbPerSecond for sample in done]
        rises = [float(sample.rssPeak - sample.rssBefore) for sample in done]
        writes = max((sample.writeBytes for sample in done), default=0)
        wchar = max((sample.wchar for sample in done), default=0)
        logGrowth = max((sample.logGrowth for sample in done), default=0)
        if peer != MEASURE_UPLOAD:
            judged = verdict(speeds, SINK_TARGET)
            speedsMet = speedsMet and judged.startswith("PASS")
            speedVerdicts.append(f"{peer} {judged}")
        rssMet = rssMet and max(rises, default=0) <= RSS_FLAT_KIB
        writesMet = writesMet and writes <= WRITE_BYTES_TINY and wchar <= WCHAR_TINY
        rows.append(
            [
                peer,
                fmt(median(speeds)),
                spread(speeds),
                fmt(median(server)),
                fmt(median([sample.serverCpuPerGb for sample in done])),
                fmt(median([sample.clientCpuPerGb for sample in done])),
                fmt(median([sample.rssBefore / 1024 for sample in done]), ".1f"),
                fmt(median([sample.rssAfter / 1024 for sample in done]), ".1f"),
                fmt(max(rises, default=None), ".0f"),
                fmt(max((s.highWater / 1024 for s in done), default=None), ".1f"),
                str(writes),
                str(wchar),
                str(logGrowth),
                str(len(done)),
            ]
        )
    if len(results.sinkRss) == 2:
        first, last = results.sinkRss
        rssMet = rssMet and last - first <= RSS_FLAT_KIB
        drift = (
            f"RSS {first / 1024:.1f} MiB once serving, {last / 1024:.1f} MiB after "
            f"the last upload"
        )
    else:
        drift = "RSS after the last upload: n/a"
    ok = speedsMet and rssMet and writesMet
    lines = [
        *benchresults.section(
            f"C. Upload sink: POST /upload of {benchutil.formatSize(plan.uploadBytes)} "
            f"of zeros on 127.0.0.1, one stream ({rounds}; GB/s on the client's "
            "clock, srv GB/s the server's answer; RSS in MiB; peak: KiB above "
            "before, the highest of 20 ms samples, worst round; VmHWM includes "
            "startup; write_bytes, wchar: /proc/PID/io deltas, log +B: the daemon's "
            "log file's growth, in bytes, worst round)",
            [
                "client",
                "GB/s",
                "min-max",
                "srv GB/s",
                "srv CPU s/GB",
                "client CPU s/GB",
                "RSS before",
                "after",
                "peak +KiB",
                "VmHWM",
                "write_bytes",
                "wchar",
                "log +B",
                "n",
            ],
            rows,
            1,
        ),
        drift,
        "",
        f"C. Targets: >= {SINK_TARGET:.0f} GB/s with one stream (Content-Length "
        f"and chunked, median): {', '.join(speedVerdicts)}; RSS flat "
        f"(peak and drift <= {RSS_FLAT_KIB // 1024} MiB): "
        f"{'PASS' if rssMet else 'FAIL'}; no disk writes (write_bytes <= "
        f"{WRITE_BYTES_TINY // 1024} KiB and wchar <= {WCHAR_TINY // 1024} KiB "
        f"per upload: the log line): {'PASS' if writesMet else 'FAIL'}",
    ]
    return lines, ok


def report(plan: Plan, results: Results) -> str:
    out: list[str] = []
    verdicts = []
    if "A" in plan.parts:
        lines, met = reportPartA(plan, results)
        out += [*lines, ""]
        verdicts.append(
            f"A (measure >= {CLIENT_TARGET} x raw client): {'PASS' if met else 'FAIL'}"
        )
    if "B" in plan.parts:
        lines, met = reportPartB(plan, results)
        out += [*lines, ""]
        verdicts.append(
            f"B (measure within {IPERF_TOLERANCE:.0%} of iperf3): {'PASS' if met else 'FAIL'}"
        )
    if "C" in plan.parts:
        lines, met = reportPartC(plan, results)
        out += [*lines, ""]
        verdicts.append(f"C (upload sink): {'PASS' if met else 'FAIL'}")
    out.append("Targets: " + "; ".join(verdicts))
    failures: list[str] = results.failures()
    if failures:
        out += ["", f"{len(failures)} measurement(s) failed:"]
        out += [f"  {failure}" for failure in failures]
    return "\n".join(out)


# Setup and command line --------------------------------------------------


def parseParts(text: str) -> str:
    parts = "".join(sorted(set(text.upper())))
    if not parts or not set(parts) <= set(PARTS):
        raise argparse.ArgumentTypeError(f"{text!r}: parts are letters of {PARTS}")
    return parts


def parseArguments(argv: Sequence[str] | None) -> tuple[Plan, Path | None]:
    parser = benchutil.BenchParser(
        "Benchmark twisted-zero measure against a raw-socket client and iperf3, "
        "and the upload sink (run by hand, not in CI)."
    )
    benchutil.addRoundOptions(parser)
    parser.add_argument(
        "--parts",
        type=parseParts,
        default=PARTS,
        help="the parts to run: A (client cost), B (against iperf3: needs "
        "root, iproute2, iperf3), C (the upload sink) (default ABC)",
    )
    parser.addNumber(
        "--seconds", "seconds per stream in parts A and B", default=5, quick=2
    )
    parser.add_argument(
        "--rate",
        default="1gbit",
        help="the rate of part B's shaped loopback, as tc says it (default 1gbit)",
    )
    parser.addNumber(
        "--upload-bytes",
        "bytes per upload in part C",
        benchutil.parseSize,
        default=4 * benchutil.GiB,
        quick=benchutil.GiB,
    )
    parser.addNumber(
        "--recv-size",
        "the raw client's recv_into buffer (default 1M)",
        benchutil.parseSize,
        default=MiB,
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds a measurement may take beyond its own (default 60)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=1200.0,
        help="start no new round after this many seconds (default 1200)",
    )
    benchutil.addPinOption(parser, " (with the clients it runs)")
    parser.add_argument(
        "--write",
        nargs="?",
        const="",
        metavar="PATH",
        help=f"also write the report to PATH (default: {RESULTS.name}, or with "
        f"--pin {PINNED_RESULTS.name}, in benchmarks/)",
    )
    args = parser.parseArguments(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    plan = Plan(
        rounds=args.rounds,
        parts=args.parts,
        seconds=args.seconds,
        rate=args.rate,
        uploadBytes=args.upload_bytes,
        recvSize=args.recv_size,
        timeout=args.timeout,
        budget=args.budget,
        pinning=args.pin,
    )
    write = None
    if args.write is not None:
        write = Path(args.write or (RESULTS if args.pin is None else PINNED_RESULTS))
    return plan, write


def describe(plan: Plan, setup: ServerSetup, argv: Sequence[str]) -> tuple[str, Plan]:
    """
    The report's header, and the plan as this tree allows it (without
    C{measure}, part C leaves it out).

    @raise SystemExit: With one line, if a part asked for cannot run.
    """
    package, twistedVersion, version, hasMeasure = setup.probeDaemon(
        OURS, PROBE, [], "cannot import twisted_zero", 4
    )
    if hasMeasure != "True" and set(plan.parts) & set("AB"):
        raise SystemExit(
            "parts A and B need twisted-zero measure (twisted_zero/_measure.py), "
            "which this tree lacks: run --parts C"
        )
    if "B" in plan.parts and (missing := partBMissing()) is not None:
        raise SystemExit(
            f"{missing}; or leave it out: --parts {plan.parts.replace('B', '')}"
        )
    plan = dataclasses.replace(plan, hasMeasure=hasMeasure == "True")
    pinNote = "" if plan.pinning is None else f"pinned: {plan.pinning.describe()}\n"
    iperf = f", {iperfVersion()}" if "B" in plan.parts else ""
    header = (
        f"benchmarks/measure_bench.py {' '.join(argv)}\n"
        f"twisted-zero {version} from {Path(package).parent}; "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"Twisted {twistedVersion}{iperf}; {os.cpu_count()} CPUs, Linux "
        f"{platform.release()}\n{pinNote}"
        f"parts {plan.parts}; rounds {plan.rounds}; {plan.seconds} s per stream; "
        f"uploads of {benchutil.formatSize(plan.uploadBytes)}; raw client "
        f"recv_into {benchutil.formatSize(plan.recvSize)}\n"
    )
    return header, plan


def startupCpu() -> float | None:
    """
    The CPU seconds of C{twisted-zero measure --help}: what starting a
    measure process costs, which its client CPU includes.
    """
    before = childrenCpu()
    completed = subprocess.run(
        zeroCommand("measure", "--help"),
        env=checkoutEnvironment(REPO_ROOT),
        capture_output=True,
        timeout=60,
    )
    return None if completed.returncode else childrenCpu() - before


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    plan, write = parseArguments(arguments)
    signal.signal(signal.SIGTERM, terminate)
    if plan.pinning is not None:
        plan.pinning.pinClient()  # the clients it runs inherit that
    with tempfile.TemporaryDirectory(prefix="twisted-zero-measure-bench-") as tmp:
        setup = ServerSetup(workDir=Path(tmp).resolve(), pinning=plan.pinning)
        header, plan = describe(plan, setup, arguments)
        if plan.hasMeasure:
            plan = dataclasses.replace(plan, startCpu=startupCpu())
            header += (
                "starting a measure process (measure --help) takes "
                f"{fmt(plan.startCpu)} CPU s\n"
            )
        print(header, flush=True)
        results = Results(plan)
        started = time.monotonic()
        for part, run in (("A", runPartA), ("B", runPartB), ("C", runPartC)):
            if part in plan.parts:
                try:
                    run(plan, setup, results, started)
                except BenchError as e:
                    results.partFailures.append(f"part {part}: {e}")
                    progress(f"part {part}: FAILED: {e}")
        text = f"{report(plan, results)}\n\n({time.monotonic() - started:.0f}s)"
        print(text)
    if write is not None:
        write.write_text(f"{header}\n{text}\n")
        progress(f"written to {write}")
    return 1 if results.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
