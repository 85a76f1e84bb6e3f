"""
What a stalled client costs the daemon, path by path, and how fast the
paths whose sending changed still go.

For every path a client can take (raw TCP or HTTP; each source; a file with
and without C{sendfile()}; a Content-Length, chunked or HTTP/1.0 body; TLS),
the benchmark starts a daemon, opens C{--stalled} clients that ask for an
endless or huge stream and then read nothing (a 4 KiB receive buffer), and
once the daemon's memory has settled reports:

  - its resident memory per stalled client (RSS growth / clients), in KiB;
  - what it read (C{rchar} of C{/proc/PID/io}: files, and C{sendfile()})
    and the CPU it used over C{--idle} seconds while they stay stalled.

Then, for the paths whose sending changed (chunked HTTP, TLS, random), one
client reads as fast as it can: throughput in GB/s.

With C{--baseline PATH} (a checkout made by C{git worktree add PATH
COMMIT}), every round measures that daemon too, in the same round and in a
random order, and the report gives per-round ratios ours / baseline. Run by
hand, never in CI::

    python benchmarks/stalled_bench.py --quick
    python benchmarks/stalled_bench.py --rounds 3 --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import benchresults
import benchutil
from benchclients import getRequest, readStream, waitUntilSettled
from benchservers import ZeroDaemon, cpuSeconds, daemonEnvironments, rssKiB
from benchutil import BASELINE, HOST, OURS, MiB

sys.path.insert(0, str(benchutil.REPO_ROOT))
from tests.helpers import TLSFiles, writeTLSFiles
from tests.slowfs import mounted, unavailable

FILE_SIZE = 64 * MiB
RECEIVE_BUFFER = 4096


@dataclass(frozen=True)
class Path_:
    """
    A way to ask the daemon for bytes: C{args} for the daemon, C{request}
    (for HTTP) to send once connected, C{tls} to speak TLS.
    """

    label: str
    args: tuple[str, ...]
    request: bytes = b""
    tls: bool = False
    http: bool = False
    fast: bool = False  # also measure its throughput


def paths(file: Path, tls: TLSFiles, slow: Path | None) -> list[Path_]:
    raw = ("--listen", f"tcp:0:interface={HOST}")
    rawTLS = ("--listen", tls.serverEndpoint())
    web = ("--http", f"tcp:0:interface={HOST}", "--root", str(file.parent))
    webTLS = ("--http", tls.serverEndpoint())
    name = f"/files/{file.name}"
    found = [
        Path_("raw zero", (*raw, "--source", "zero")),
        Path_("raw chargen", (*raw, "--source", "chargen")),
        Path_("raw random", (*raw, "--source", "random"), fast=True),
        Path_("raw file", (*raw, "--source", f"file:{file}")),
        Path_(
            "raw file, --no-sendfile",
            (*raw, "--source", f"file:{file}", "--no-sendfile"),
        ),
        Path_("raw TLS zero", (*rawTLS, "--source", "zero"), tls=True, fast=True),
        Path_("raw TLS random", (*rawTLS, "--source", "random"), tls=True),
        Path_("HTTP /zero?bytes=100G", web, getRequest("/zero?bytes=100G"), http=True),
        Path_("HTTP /zero (chunked)", web, getRequest("/zero"), http=True, fast=True),
        Path_(
            "HTTP /chargen (chunked)", web, getRequest("/chargen"), http=True, fast=True
        ),
        Path_(
            "HTTP /random (chunked)", web, getRequest("/random"), http=True, fast=True
        ),
        Path_(
            "HTTP /random?bytes=100G", web, getRequest("/random?bytes=100G"), http=True
        ),
        Path_("HTTP/1.0 /zero", web, getRequest("/zero", "1.0"), http=True),
        Path_(f"HTTP {name}", web, getRequest(name), http=True),
        Path_(
            f"HTTP {name}, --no-sendfile",
            (*web, "--no-sendfile"),
            getRequest(name),
            http=True,
        ),
        Path_(
            "HTTPS /zero (chunked)",
            webTLS,
            getRequest("/zero"),
            tls=True,
            http=True,
            fast=True,
        ),
    ]
    if slow is not None:
        slowRoot = ("--http", f"tcp:0:interface={HOST}", "--root", str(slow))
        found.append(
            Path_(
                f"HTTP {name}, FUSE (20 ms per read)",
                slowRoot,
                getRequest(name),
                http=True,
            )
        )
    return found


def openClient(port: int, path: Path_, context: ssl.SSLContext) -> socket.socket:
    """
    A client of C{path} that has asked for its stream and will read nothing.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.settimeout(10)
    sock.connect((HOST, port))
    if path.tls:
        sock = context.wrap_socket(sock, server_hostname="bench")
    if path.request:
        sock.sendall(path.request)
    return sock


@dataclass
class Stalled:
    kiBPerClient: float
    readPerSecond: float
    cpuPercent: float


def measureStalled(
    daemon: ZeroDaemon, path: Path_, count: int, idle: float, context: ssl.SSLContext
) -> Stalled:
    """
    What C{count} stalled clients cost, once as many have come and gone:
    the first ones pay for what the daemon keeps for good (its I/O threads,
    their stacks and malloc arenas, TLS's tables), which is not theirs.
    """
    pid = daemon.process.pid
    warm = [openClient(daemon.port, path, context) for _ in range(count)]
    settle(pid, warm, path)
    for client in warm:
        client.close()
    time.sleep(1.0)
    before = rssKiB(pid)
    clients = [openClient(daemon.port, path, context) for _ in range(count)]
    try:
        settle(pid, clients, path)
        grown = rssKiB(pid) - before
        read, cpu, start = daemon.rchar(), cpuSeconds(pid), time.monotonic()
        time.sleep(idle)
        elapsed = time.monotonic() - start
        return Stalled(
            grown / count,
            (daemon.rchar() - read) / elapsed,
            100 * (cpuSeconds(pid) - cpu) / elapsed,
        )
    finally:
        for client in clients:
            client.close()


def settle(pid: int, clients: list[socket.socket], path: Path_) -> None:
    """
    Wait until the daemon's memory and what its clients have received stop
    changing.
    """
    waitUntilSettled(
        lambda: rssKiB(pid),
        [c for c in clients if not path.tls],
        time.monotonic() + 30,
        least=2.0,
        quiet=1.5,
    )


def measureThroughput(
    daemon: ZeroDaemon, path: Path_, size: int, context: ssl.SSLContext
) -> float:
    """
    GB/s of one client reading C{size} bytes (as they come on the wire:
    chunk framing included) as fast as it can.
    """
    sock = socket.create_connection((HOST, daemon.port), timeout=30)
    if path.tls:
        sock = context.wrap_socket(sock, server_hostname="bench")
    view = memoryview(bytearray(MiB))
    try:
        if path.request:
            sock.sendall(path.request)
        start = time.perf_counter()
        received = readStream(sock, view, size)
        if received < size:
            raise benchutil.BenchError(
                f"{path.label}: stream ended after {received} bytes"
            )
        return received / (time.perf_counter() - start) / 1e9
    finally:
        sock.close()


@dataclass
class Crowd:
    idleSeconds: float
    crowdSeconds: float
    readPerSecond: float
    cpuPercent: float
    tcpPages: int


def fetchSeconds(port: int, size: int) -> float:
    """
    How long a new client takes to fetch C{/zero?bytes=size} over HTTP.
    """
    start = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.sendall(getRequest(f"/zero?bytes={size}"))
        readStream(sock, memoryview(bytearray(MiB)), size)
    return time.perf_counter() - start


def tcpPages() -> int:
    """
    The host's TCP memory in use, in pages (C{/proc/net/sockstat}).
    """
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            words = line.split()
            return int(words[words.index("mem") + 1])
    return 0


def measureCrowd(daemon: ZeroDaemon, path: Path_, count: int, idle: float) -> Crowd:
    """
    A new client's 10 MiB, alone and then beside C{count} stalled clients
    of C{path}; and what the daemon reads and spends while they stall.
    """
    pid = daemon.process.pid
    size = 10 * MiB
    alone = statistics.median(fetchSeconds(daemon.port, size) for _ in range(5))
    context = ssl.create_default_context()
    clients = []
    try:
        for _ in range(count):
            clients.append(openClient(daemon.port, path, context))
        settle(pid, clients, path)
        read, cpu, start = daemon.rchar(), cpuSeconds(pid), time.monotonic()
        time.sleep(idle)
        elapsed = time.monotonic() - start
        readRate = (daemon.rchar() - read) / elapsed
        cpuPercent = 100 * (cpuSeconds(pid) - cpu) / elapsed
        pages = tcpPages()
        crowded = statistics.median(fetchSeconds(daemon.port, size) for _ in range(5))
    finally:
        for client in clients:
            client.close()
    return Crowd(alone, crowded, readRate, cpuPercent, pages)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchutil.addBaselineOption(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stalled", type=int, default=100)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds stalled")
    parser.add_argument(
        "--size", type=int, default=1024, help="MiB per throughput read"
    )
    parser.add_argument("--only", help="only the paths whose label contains this")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--quick", action="store_true", help="one round, 20 clients")
    parser.add_argument(
        "--crowd",
        type=int,
        metavar="N",
        help="instead: N stalled HTTP readers of a file, and a new client's "
        "10 MiB beside them (ours also with --max-unsent 0)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.stalled, args.idle, args.size = 1, 20, 1.0, 128
    envs = daemonEnvironments(args.baseline)
    kinds = list(envs)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if args.crowd:
        crowd(args, kinds, envs)
        return
    stalled: dict[tuple[str, str], list[Stalled]] = {}
    fast: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="stalled-bench-") as work:
        workDir = Path(work)
        source = workDir / "files"
        source.mkdir()
        file = source / "big.bin"
        benchutil.writeTestFile(file, FILE_SIZE)
        slowMount = workDir / "slow"
        slowMount.mkdir()
        missing = unavailable()
        if missing:
            benchutil.progress(f"no FUSE path: {missing}")
        with contextlib.ExitStack() as stack:
            slow = None
            if not missing:
                slow = stack.enter_context(mounted(source, slowMount, 0.02))
            allPaths = [
                p
                for p in paths(file, writeTLSFiles(workDir), slow)
                if args.only is None or args.only in p.label
            ]
            measureAll(allPaths, kinds, envs, workDir, args, context, stalled, fast)
    report(allPaths, kinds, stalled, fast, args)


def measureAll(
    allPaths: list[Path_],
    kinds: list[str],
    envs: dict[str, dict[str, str]],
    workDir: Path,
    args: argparse.Namespace,
    context: ssl.SSLContext,
    stalled: dict[tuple[str, str], list[Stalled]],
    fast: dict[tuple[str, str], list[float]],
) -> None:
    """
    Every round, every path, each daemon in a random order.
    """
    rng = random.Random(1)
    for roundIndex in range(args.rounds):
        for path in allPaths:
            for kind in rng.sample(kinds, len(kinds)):
                benchutil.progress(f"round {roundIndex + 1}: {path.label}, {kind}")
                daemon = ZeroDaemon(kind, path.args, envs[kind], workDir)
                try:
                    stalled.setdefault((path.label, kind), []).append(
                        measureStalled(daemon, path, args.stalled, args.idle, context)
                    )
                    if path.fast and not args.no_throughput:
                        size = args.size * MiB // (4 if path.tls else 1)
                        fast.setdefault((path.label, kind), []).append(
                            measureThroughput(daemon, path, size, context)
                        )
                finally:
                    daemon.stop()


def crowd(
    args: argparse.Namespace, kinds: list[str], envs: dict[str, dict[str, str]]
) -> None:
    """
    The crowd test, each round: every daemon, and ours without its limit on
    unsent bytes (C{--max-unsent 0}).
    """
    variants = [(kind, ()) for kind in kinds] + [(OURS, ("--max-unsent", "0"))]
    results: dict[str, list[Crowd]] = {}
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="stalled-bench-") as work:
        workDir = Path(work)
        file = workDir / "big.bin"
        benchutil.writeTestFile(file, FILE_SIZE)
        web = ("--http", f"tcp:0:interface={HOST}", "--root", str(workDir))
        path = Path_("crowd", web, getRequest(f"/files/{file.name}"), http=True)
        for roundIndex in range(args.rounds):
            for kind, extra in rng.sample(variants, len(variants)):
                label = " ".join([kind, *extra])
                benchutil.progress(
                    f"round {roundIndex + 1}: {args.crowd} stalled, {label}"
                )
                daemon = ZeroDaemon(kind, (*web, *extra), envs[kind], workDir)
                try:
                    results.setdefault(label, []).append(
                        measureCrowd(daemon, path, args.crowd, args.idle)
                    )
                finally:
                    daemon.stop()
                time.sleep(2)  # the kernel frees the sockets' memory
    print(
        f"{args.crowd} stalled HTTP readers of a {FILE_SIZE // MiB} MiB file; a new "
        f"client's /zero?bytes=10M alone and beside them (median of 5 each); "
        f"{args.rounds} rounds, medians (spread)"
    )
    headers = [
        "daemon",
        "alone s",
        "beside s",
        "beside / alone",
        "read B/s",
        "CPU %",
        "host TCP pages",
    ]
    rows = []
    for label, values in results.items():
        rows.append(
            [
                label,
                cell([v.idleSeconds for v in values], ".3f"),
                cell([v.crowdSeconds for v in values], ".3f"),
                cell([v.crowdSeconds / v.idleSeconds for v in values]),
                cell([v.readPerSecond for v in values], ".0f"),
                cell([v.cpuPercent for v in values], ".1f"),
                cell([float(v.tcpPages) for v in values], ".0f"),
            ]
        )
    print(benchresults.table(headers, rows, textColumns=1))


def cell(values: Sequence[float], spec: str = ".2f") -> str:
    """
    The median and, with more than one value, the spread: C{m (lo-hi)}.
    """
    if not values:
        return "n/a"
    middle = benchresults.fmt(benchresults.median(values), spec)
    if len(values) == 1:
        return middle
    return f"{middle} ({min(values):{spec}}-{max(values):{spec}})"


def report(
    allPaths: list[Path_],
    kinds: list[str],
    stalled: dict[tuple[str, str], list[Stalled]],
    fast: dict[tuple[str, str], list[float]],
    args: argparse.Namespace,
) -> None:
    print(
        f"{args.stalled} stalled clients (receive buffer {RECEIVE_BUFFER} B), "
        f"{args.rounds} rounds, medians (spread min-max); idle {args.idle:g} s"
    )
    headers = ["path"]
    for kind in kinds:
        headers += [f"{kind} KiB/client", f"{kind} read B/s", f"{kind} CPU %"]
    rows = []
    for path in allPaths:
        row = [path.label]
        for kind in kinds:
            values = stalled.get((path.label, kind), [])
            row += [
                cell([v.kiBPerClient for v in values], ".1f"),
                benchresults.fmt(
                    benchresults.median([v.readPerSecond for v in values]), ".0f"
                ),
                benchresults.fmt(
                    benchresults.median([v.cpuPercent for v in values]), ".1f"
                ),
            ]
        rows.append(row)
    print(benchresults.table(headers, rows, textColumns=1))
    if not fast:
        return
    print(
        f"\nOne client reading as fast as it can ({args.size} MiB; TLS a quarter), GB/s"
    )
    headers = ["path", *kinds] + (["ours / baseline"] if len(kinds) > 1 else [])
    rows = []
    for path in allPaths:
        if (path.label, OURS) not in fast:
            continue
        ours = fast[(path.label, OURS)]
        row = [path.label, cell(ours)]
        if len(kinds) > 1:
            base = fast.get((path.label, BASELINE), [])
            row.append(cell(base))
            ratios = [a / b for a, b in zip(ours, base, strict=False) if b]
            row.append(cell(ratios))
        rows.append(row)
    print(benchresults.table(headers, rows, textColumns=1))


if __name__ == "__main__":
    main()
