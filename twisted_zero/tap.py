"""
C{twistd zero}: options and the service they make. The only place where the
pieces are put together.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, cast

from twisted.application.service import IService, Service
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorFDSet,
    IReactorFromThreads,
    IReactorProcess,
    IReactorTime,
)
from twisted.python import usage
from twisted.web.server import Site

from ._iopool import IOPool
from ._logging import jsonLogObserver
from ._metrics import Metrics
from ._protection import ConnectionLimits, Protection
from ._protocol import StreamFactory
from ._registry import ConnectionRegistry
from ._resources import MetricsResource, makeResource
from ._responses import MAX_CONTENT_LENGTH
from ._service import IOThreads, ListeningService, StartupError, bindListeners
from ._site import HEADER_TIMEOUT, MAX_BODY, StreamSite
from ._sources import SOURCE_NAMES, SourceError, sourceFactory
from ._systemd import SystemdNotifier, SystemdService
from ._values import countOption, directoryOption, secondsOption, sizeOption
from ._workers import parseInherited, superviseWorkers, watchParent

__all__ = [
    "DEFAULT_LISTEN",
    "Options",
    "StartupError",
    "jsonLogObserver",
    "makeService",
]

DEFAULT_LISTEN = "tcp:8019:interface=127.0.0.1"
MAX_WORKERS = 64
MAX_CHUNK_SIZE = 16 * 2**20
MAX_IO_THREADS = 1024
MAX_UNSENT = 2**30


def _exitUnderTwistd(options: usage.Options, message: str) -> None:
    """
    Under C{twistd}, end the process with C{message} as one line on stderr
    (twistd would print its whole usage text, or a traceback); otherwise do
    nothing and let the caller raise.
    """
    if options.parent is not None:
        raise SystemExit(f"twistd zero: error: {message}")


class Options(usage.Options):
    """
    Command-line options of C{twistd zero}.
    """

    synopsis = (
        "[--listen ENDPOINT ...] [--source SOURCE] [--limit SIZE] "
        "[--http ENDPOINT ... [--root DIR]]"
    )
    longdesc = (
        "Stream zeros, the RFC 864 chargen pattern, incompressible random "
        "bytes or a file to every client that connects, as fast as it reads; "
        "with --http, the same over HTTP, and the files under --root. "
        "SIZE takes K, M and G (powers of 1024). Without --listen or --http, "
        "listens on tcp:8019:interface=127.0.0.1."
    )
    optFlags: list[list[Any]] = [
        ["listing", None, "HTTP: list the files of directories under --root."],
        ["dotfiles", None, "HTTP: serve names starting with a dot (hidden)."],
        [
            "no-sendfile",
            None,
            "Send files by reading them, not with sendfile() (for file "
            "systems where it misbehaves, such as some network mounts).",
        ],
    ]
    optParameters: list[list[Any]] = [
        [
            "source",
            "s",
            "zero",
            f"What to send: {', '.join(SOURCE_NAMES)}.",
        ],
        ["limit", None, None, "End each stream after SIZE bytes."],
        [
            "chunk-size",
            None,
            None,
            "Bytes per write to the transport. Default: 4M for zero and "
            "chargen (shared by all connections), 2M for random, 240K for a "
            "file (one chunk is what a stalled client costs).",
        ],
        ["root", None, None, "HTTP: serve the files under DIR at /files/."],
        [
            "stall-timeout",
            None,
            "60",
            "Abort a connection that makes no write progress for SECONDS "
            "(and close idle HTTP connections after as long); 0: never.",
        ],
        ["max-duration", None, None, "Abort any stream after SECONDS."],
        ["max-connections", None, None, "Refuse connections beyond N at once."],
        ["max-per-ip", None, None, "Refuse connections beyond N per address."],
        ["rate", None, None, "Bytes per second for each connection (K, M, G)."],
        ["total-rate", None, None, "Bytes per second for all connections."],
        [
            "shutdown-timeout",
            None,
            "10",
            "On SIGTERM, let streams finish for SECONDS, then abort them.",
        ],
        ["metrics", None, None, "Serve Prometheus metrics on ENDPOINT."],
        [
            "workers",
            None,
            "1",
            "Serve the same listeners from N processes (the parent binds "
            "them and restarts a worker that dies).",
        ],
        [
            "io-threads",
            None,
            "16",
            "Threads for file-system calls that may block (opening, listing, "
            "and reading files not in the page cache), so that a slow disk "
            "or mount never holds up other clients.",
        ],
        [
            "max-unsent",
            None,
            "128K",
            "The most bytes the kernel holds unsent for a TCP connection "
            "(TCP_NOTSENT_LOWAT) until its client has taken 4M: a client that "
            "reads nothing then pins that much of the host's TCP memory, not "
            "a send buffer of up to 4M; 0: the kernel's default, no limit.",
        ],
        ["worker-sockets", None, None, "(internal: the sockets a worker adopts)"],
        [
            "max-bytes",
            None,
            None,
            "HTTP: the most bytes a generated stream may be asked for.",
        ],
        [
            "max-body",
            None,
            None,
            "HTTP: answer a request body over SIZE with 413 and close (bodies "
            "are read and thrown away, never stored). Default: 1M; 0: no body.",
        ],
        [
            "max-upload",
            None,
            None,
            "HTTP: the same for uploads to POST or PUT /upload, the upload "
            "sink. Default: no limit (an upload is counted and thrown away as "
            "it arrives, and obeys --max-duration).",
        ],
        [
            "header-timeout",
            None,
            None,
            "HTTP: close a connection whose request head (request line and "
            "header fields) has not all arrived SECONDS after it began, with "
            "408. Default: 15; 0: never.",
        ],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["listen"] = []
        self["http"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Endpoint for raw TCP streams, repeatable."""
        self["listen"].append(endpoint)

    def opt_http(self, endpoint: str) -> None:
        """Endpoint for HTTP, repeatable."""
        self["http"].append(endpoint)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            _exitUnderTwistd(self, str(e))
            raise

    def postOptions(self) -> None:
        if not self["listen"] and not self["http"]:
            self["listen"] = [DEFAULT_LISTEN]
        for option in (
            "root",
            "listing",
            "dotfiles",
            "max-bytes",
            "max-body",
            "max-upload",
            "header-timeout",
        ):
            if self[option] and not self["http"]:
                raise usage.UsageError(f"--{option} needs --http")
        self["max-bytes"] = sizeOption(self["max-bytes"], "--max-bytes", 0)
        maxUnsent = sizeOption(self["max-unsent"], "--max-unsent", 0)
        if maxUnsent is not None and maxUnsent > MAX_UNSENT:
            raise usage.UsageError(
                f"--max-unsent: at most {MAX_UNSENT // 2**20}M, not {maxUnsent} bytes"
            )
        self["max-unsent"] = maxUnsent or None
        maxBody = sizeOption(self["max-body"], "--max-body", 0)
        if maxBody is not None and maxBody > MAX_CONTENT_LENGTH:
            raise usage.UsageError(f"--max-body: at most {MAX_CONTENT_LENGTH} bytes")
        self["max-body"] = MAX_BODY if maxBody is None else maxBody
        maxUpload = sizeOption(self["max-upload"], "--max-upload", 0)
        if maxUpload is not None and maxUpload > MAX_CONTENT_LENGTH:
            raise usage.UsageError(f"--max-upload: at most {MAX_CONTENT_LENGTH} bytes")
        self["max-upload"] = maxUpload
        self["header-timeout"] = (
            HEADER_TIMEOUT
            if self["header-timeout"] is None
            else secondsOption(self["header-timeout"], "header-timeout")
        )
        if self["root"] is not None:
            self["root"] = directoryOption(self["root"])
        self["limit"] = sizeOption(self["limit"], "--limit", 0)
        self["chunk-size"] = sizeOption(self["chunk-size"], "--chunk-size", 1)
        if self["chunk-size"] is not None and self["chunk-size"] > MAX_CHUNK_SIZE:
            raise usage.UsageError(
                f"--chunk-size: at most {MAX_CHUNK_SIZE // 2**20}M, "
                f"not {self['chunk-size']} bytes"
            )
        try:
            self["sourceFactory"] = sourceFactory(self["source"])
        except SourceError as e:
            raise usage.UsageError(f"--source: {e}") from None
        for option in ("stall-timeout", "max-duration", "shutdown-timeout"):
            self[option] = secondsOption(self[option], option)
        for option in ("max-connections", "max-per-ip", "workers", "io-threads"):
            self[option] = countOption(self[option], option)
        for option in ("rate", "total-rate"):
            self[option] = sizeOption(self[option], f"--{option}", 1)
        if self["workers"] > MAX_WORKERS:
            raise usage.UsageError(f"--workers: at most {MAX_WORKERS}")
        if self["io-threads"] > MAX_IO_THREADS:
            raise usage.UsageError(f"--io-threads: at most {MAX_IO_THREADS}")
        if self["workers"] > 1 and self["metrics"] is not None:
            raise usage.UsageError(
                "--metrics cannot be used with --workers yet (each worker "
                "counts its own connections)"
            )
        if self["worker-sockets"] is not None:
            try:
                self["worker-sockets"] = parseInherited(self["worker-sockets"])
            except ValueError as e:
                raise usage.UsageError(f"--worker-sockets: {e}") from None


def makeService(options: Options, reactor: IReactorCore | None = None) -> IService:
    """
    Bind every listener now, so that a bad endpoint or a port in use stops
    the daemon before it starts, and return the service that serves them.

    @param options: The parsed options.
    @param reactor: The reactor to serve on; by default the global one.
    @raise StartupError: If an endpoint cannot be parsed or bound (under
        C{twistd}: exit with that message as one line on stderr).
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = cast(IReactorCore, globalReactor)
    # Every reactor is a clock (a test's may be given as one it is not).
    clock = cast(IReactorTime, reactor)
    metrics = Metrics()
    threads = IOThreads(
        minthreads=0, maxthreads=options["io-threads"], name="twisted-zero-io"
    )
    # A reactor with no threads (a test's) has file-system calls made at once.
    ioPool = (
        IOPool(reactor=reactor, threads=threads)
        if IReactorFromThreads.providedBy(reactor)
        else None
    )
    registry = ConnectionRegistry(clock=clock)
    protection = Protection(
        clock=clock,
        stallTimeout=options["stall-timeout"],
        maxDuration=options["max-duration"],
        rate=options["rate"],
        totalRate=options["total-rate"],
        limits=ConnectionLimits(
            maxConnections=options["max-connections"],
            maxPerAddress=options["max-per-ip"],
        ),
        onRateWait=metrics.rateLimitWaited,
        maxUnsent=options["max-unsent"],
    )
    factory = StreamFactory(
        sourceFactory=options["sourceFactory"],
        clock=clock,
        chunkSize=options["chunk-size"],
        limit=options["limit"],
        protection=protection,
        metrics=metrics,
        sendfile=not options["no-sendfile"],
        ioPool=ioPool,
        registry=registry,
    )
    site = StreamSite(
        makeResource(
            clock=clock,
            root=options["root"],
            listing=bool(options["listing"]),
            dotfiles=bool(options["dotfiles"]),
            maxBytes=options["max-bytes"],
            chunkSize=options["chunk-size"],
            sendfile=not options["no-sendfile"],
            ioPool=ioPool,
            protection=protection,
            metrics=metrics,
        ),
        reactor=clock,
        protection=protection,
        metrics=metrics,
        timeout=options["stall-timeout"],
        maxBody=options["max-body"],
        maxUpload=options["max-upload"],
        headerTimeout=options["header-timeout"],
        registry=registry,
    )
    metricsSite = Site(MetricsResource(metrics), reactor=clock)
    metricsSite.noisy = False
    try:
        listeners = bindListeners(
            reactor,
            streams=options["listen"],
            http=options["http"],
            metrics=options["metrics"],
            factory=factory,
            site=site,
            metricsSite=metricsSite,
            inherited=options["worker-sockets"],
        )
    except StartupError as e:
        _exitUnderTwistd(options, str(e))
        raise
    if options["worker-sockets"] is not None:
        watchParent(IReactorFDSet(reactor))
    shutdownTimeout = options["shutdown-timeout"] or 0.0
    service = SystemdService(
        notifier=SystemdNotifier(clock=clock), connections=lambda: registry.count
    )
    listening = ListeningService(
        listeners=listeners,
        source=options["source"],
        registry=registry,
        factory=factory,
        site=site,
        shutdownTimeout=shutdownTimeout,
        reactor=reactor,
        clock=clock,
        threads=threads,
        ioPool=ioPool,
    )
    Service.setServiceParent(listening, service)
    if options["workers"] > 1 and options["worker-sockets"] is None:
        ports: list[tuple[str, IListeningPort]] = [
            *(("tcp", port) for port in listeners.streams),
            *(("http", port) for port in listeners.http),
        ]
        try:
            supervisor = superviseWorkers(
                reactor=IReactorProcess(reactor),
                clock=clock,
                ports=ports,
                argv=sys.argv,
                count=options["workers"],
                stopTimeout=shutdownTimeout + 5,
            )
        except ValueError as e:
            for port in listeners.all():
                port.stopListening()
            _exitUnderTwistd(options, str(e))
            raise StartupError(str(e)) from None
        Service.setServiceParent(supervisor, service)
    return service
