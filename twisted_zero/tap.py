"""
C{twistd zero}: options and the service they make. The only place where the
pieces are put together.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReactorFromThreads,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger, jsonFileLogObserver
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Site

from ._connections import formatAddress
from ._iopool import IOPool
from ._limits import ConnectionLimits, Protection
from ._metrics import Metrics, MetricsResource
from ._protocol import StreamFactory
from ._resources import makeResource
from ._responses import MAX_CONTENT_LENGTH
from ._site import HEADER_TIMEOUT, MAX_BODY, StreamSite
from ._sizes import parseSize
from ._sources import SOURCE_NAMES, SourceError, sourceFactory
from ._systemd import SystemdNotifier
from ._workers import (
    FIRST_WORKER_FD,
    InheritedSocket,
    ParentWatch,
    WorkerSupervisor,
    parseInherited,
    workerCommand,
)

DEFAULT_LISTEN = "tcp:8019:interface=127.0.0.1"
MAX_WORKERS = 64
STATUS_INTERVAL = 5.0
"""
How often systemd is told how many connections are open, in seconds.
"""
MAX_CHUNK_SIZE = 16 * 2**20
MAX_IO_THREADS = 1024
MAX_UNSENT = 2**30


class StartupError(Exception):
    """
    The service cannot start (an endpoint is malformed or cannot be bound);
    the message is one line, fit to show to a person.
    """


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
            "header-timeout",
            None,
            None,
            "HTTP: close a connection whose request head (request line and "
            "header fields) has not all arrived SECONDS after it began, with "
            "408. Default: 15; 0: never.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
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
            super().parseOptions(options)  # type: ignore[no-untyped-call]
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
            "header-timeout",
        ):
            if self[option] and not self["http"]:
                raise usage.UsageError(f"--{option} needs --http")
        self["max-bytes"] = _size(self["max-bytes"], "--max-bytes", 0)
        maxUnsent = _size(self["max-unsent"], "--max-unsent", 0)
        if maxUnsent is not None and maxUnsent > MAX_UNSENT:
            raise usage.UsageError(
                f"--max-unsent: at most {MAX_UNSENT // 2**20}M, not {maxUnsent} bytes"
            )
        self["max-unsent"] = maxUnsent or None
        maxBody = _size(self["max-body"], "--max-body", 0)
        if maxBody is not None and maxBody > MAX_CONTENT_LENGTH:
            raise usage.UsageError(f"--max-body: at most {MAX_CONTENT_LENGTH} bytes")
        self["max-body"] = MAX_BODY if maxBody is None else maxBody
        self["header-timeout"] = (
            HEADER_TIMEOUT
            if self["header-timeout"] is None
            else _seconds(self["header-timeout"], "header-timeout")
        )
        if self["root"] is not None:
            self["root"] = _directory(self["root"])
        self["limit"] = _size(self["limit"], "--limit", 0)
        self["chunk-size"] = _size(self["chunk-size"], "--chunk-size", 1)
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
            self[option] = _seconds(self[option], option)
        for option in ("max-connections", "max-per-ip", "workers", "io-threads"):
            self[option] = _count(self[option], option)
        for option in ("rate", "total-rate"):
            self[option] = _size(self[option], f"--{option}", 1)
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


def _directory(path: str) -> str:
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        what = "no such directory" if not os.path.exists(real) else "not a directory"
        raise usage.UsageError(f"--root: {path}: {what}")
    if not os.access(real, os.R_OK | os.X_OK):
        raise usage.UsageError(f"--root: {path}: permission denied")
    return real


def _seconds(text: str | None, option: str) -> float | None:
    """
    A duration in seconds; L{None} (or 0) for none.
    """
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 10**9:
        raise usage.UsageError(f"--{option}: {text!r} is not a number of seconds")
    return seconds or None


def _count(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise usage.UsageError(f"--{option}: {text!r} is not a positive whole number")
    return int(text)


def _size(text: str | None, option: str, minimum: int) -> int | None:
    if text is None:
        return None
    try:
        size = parseSize(text)
    except ValueError as e:
        raise usage.UsageError(f"{option}: {e}") from None
    if size < minimum:
        raise usage.UsageError(f"{option}: must be at least {minimum} bytes")
    return size


class ListeningService(Service):
    """
    Own the listening ports that L{makeService} bound; stop listening when
    stopped.
    """

    _log = Logger()

    def __init__(
        self,
        factory: StreamFactory,
        ports: list[IListeningPort],
        source: str,
        httpPorts: list[IListeningPort],
        metricsPorts: list[IListeningPort],
        shutdownTimeout: float,
        reactor: IReactorCore,
        notifier: SystemdNotifier,
        site: StreamSite,
        threads: ThreadPool,
        ioPool: IOPool | None,
    ) -> None:
        self.factory = factory
        self.ports = ports + httpPorts + metricsPorts
        self._streamPorts = ports
        self._httpPorts = httpPorts
        self._metricsPorts = metricsPorts
        self.source = source
        self._shutdownTimeout = shutdownTimeout
        self._reactor = reactor
        self._notifier = notifier
        self._site = site
        self._threads = threads
        self._ioPool = ioPool
        self._status = LoopingCall(self._reportStatus)
        self._status.clock = notifier.clock

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._threads.start()
        for port in self._streamPorts:
            self._log.info(
                "streaming {source} on {address}",
                source=self.source,
                address=formatAddress(port.getHost()),
            )
        for port in self._httpPorts:
            self._log.info(
                "serving HTTP on {address}", address=formatAddress(port.getHost())
            )
        for port in self._metricsPorts:
            self._log.info(
                "serving metrics on {address}", address=formatAddress(port.getHost())
            )
        # Every listener is bound (makeService did it): tell systemd.
        self._notifier.ready()
        self._notifier.startWatchdog()
        if self._notifier.enabled:
            self._status.start(STATUS_INTERVAL)
        self._reactor.callWhenRunning(self._handleSIGTERM)

    def _handleSIGTERM(self) -> None:
        """
        Stop on SIGTERM like the reactor does, but exit with status 0 once
        the graceful shutdown is done: twistd otherwise ends the process by
        the signal again, which a supervisor may count as a failure.
        """
        reactor = self._reactor
        stopping: list[bool] = []

        def stop(signum: int, frame: object) -> None:
            if not stopping:  # a second SIGTERM (from systemd, say) changes nothing
                stopping.append(True)
                reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]

        signal.signal(signal.SIGTERM, stop)

    def _reportStatus(self) -> None:
        count = self.factory.protection.openConnections
        self._notifier.status(f"{count} connection{'' if count == 1 else 's'} open")

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting connections, let the open ones finish for the
        shutdown timeout, then abort those left; then wait, for what is left
        of the timeout, for the file-system calls in flight, and stop their
        threads.
        """
        super().stopService()  # type: ignore[no-untyped-call]
        clock: IReactorTime = self._notifier.clock
        deadline = clock.seconds() + self._shutdownTimeout
        self.factory.shuttingDown = True
        self._notifier.stopping()
        if self._status.running:
            self._status.stop()
        stopping: list[Deferred[object]] = [
            maybeDeferred(port.stopListening) for port in self.ports
        ]
        self._site.closeIdle()
        protection = self.factory.protection
        if protection.openConnections:
            self._log.info(
                "stopping: waiting up to {timeout}s for {count} connections",
                timeout=self._shutdownTimeout,
                count=protection.openConnections,
            )
        stopping.append(protection.drain(self._shutdownTimeout))  # type: ignore[arg-type]
        done = gatherResults(stopping, consumeErrors=True)
        done.addBoth(lambda _: self._stopThreads(clock, deadline))
        return done.addBoth(lambda _: self._notifier.close())

    def _stopThreads(self, clock: IReactorTime, deadline: float) -> Deferred[None]:
        """
        Wait until no thread uses a file, until C{deadline} at the latest,
        then stop the threads. Threads still blocked then (a dead mount) do
        not hold up the shutdown: they are daemon threads, which end with
        the process (or are stopped once their calls return).
        """
        pool = self._ioPool
        if pool is None:
            return succeed(None)
        idle = pool.whenIdle()
        if not idle.called:
            remaining = max(deadline - clock.seconds(), 0.0)
            self._log.info(
                "stopping: waiting up to {timeout}s for {count} file-system calls",
                timeout=round(remaining, 3),
                count=pool.inFlight,
            )
            idle.addTimeout(remaining, clock)

        def stop(result: object) -> None:
            if isinstance(result, Failure):
                self._log.warn(
                    "stopping with {count} file-system calls still running",
                    count=pool.inFlight,
                )
                # Should they end while the process lives on.
                pool.whenIdle().addCallback(lambda _: self._threads.stop())
            else:
                self._threads.stop()

        return idle.addBoth(stop)


class _DaemonThread(threading.Thread):
    """
    A thread that does not keep the process alive: one blocked for good on a
    dead mount must not keep the daemon from exiting.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.daemon = True


class _IOThreads(ThreadPool):
    """
    The threads that make the file-system calls for clients.
    """

    threadFactory = _DaemonThread


def makeService(options: Options, reactor: IReactorCore | None = None) -> IService:
    """
    Bind every listener now, so that a bad endpoint or a port in use stops
    the daemon before it starts, and return the service that serves them.

    @raise StartupError: If an endpoint cannot be parsed or bound (under
        C{twistd}: exit with that message as one line on stderr).
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    clock: IReactorTime = reactor  # type: ignore[assignment]
    metrics = Metrics()
    threads = _IOThreads(
        minthreads=0, maxthreads=options["io-threads"], name="twisted-zero-io"
    )
    # A reactor with no threads (a test's) has file-system calls made at once.
    ioPool = (
        IOPool(reactor=reactor, threads=threads)
        if IReactorFromThreads.providedBy(reactor)
        else None
    )
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
    )
    site = StreamSite(
        makeResource(
            clock=reactor,  # type: ignore[arg-type]
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
        headerTimeout=options["header-timeout"],
    )
    metricsSite = Site(MetricsResource(metrics), reactor=clock)
    metricsSite.noisy = False
    metricsPorts: list[IListeningPort] = []
    ports: list[IListeningPort] = []
    httpPorts: list[IListeningPort] = []
    try:
        if options["worker-sockets"] is not None:
            for inherited in options["worker-sockets"]:
                adopted = _adopt(reactor, inherited, factory, site)
                (ports if inherited.kind == "tcp" else httpPorts).append(adopted)
            watch = ParentWatch(reactor=reactor)  # type: ignore[arg-type]
            watch.startReading()  # type: ignore[no-untyped-call]
        else:
            for description in options["listen"]:
                ports.append(_listen(reactor, description, factory))
            for description in options["http"]:
                httpPorts.append(_listen(reactor, description, site))
        if options["metrics"] is not None:
            metricsPorts.append(_listen(reactor, options["metrics"], metricsSite))
    except StartupError as e:
        for port in ports + httpPorts + metricsPorts:
            port.stopListening()
        _exitUnderTwistd(options, str(e))
        raise
    service = MultiService()
    listening = ListeningService(
        factory,
        ports,
        options["source"],
        httpPorts,
        metricsPorts,
        options["shutdown-timeout"] or 0.0,
        reactor,
        SystemdNotifier(clock=clock),
        site,
        threads,
        ioPool,
    )
    listening.setServiceParent(service)  # type: ignore[no-untyped-call]
    if options["workers"] > 1 and options["worker-sockets"] is None:
        # The parent only binds; its workers accept.
        inherited = []
        for kind, kindPorts in (("tcp", ports), ("http", httpPorts)):
            for port in kindPorts:
                port.stopReading()  # type: ignore[attr-defined]
                inherited.append((kind, port))
        sockets = [
            InheritedSocket(kind, FIRST_WORKER_FD + index, port.addressFamily)
            for index, (kind, port) in enumerate(inherited)
        ]
        childFDs: dict[int, object] = {0: "w", 1: 1, 2: 2}
        for index, (_, port) in enumerate(inherited):
            childFDs[FIRST_WORKER_FD + index] = port.fileno()
        supervisor = WorkerSupervisor(
            reactor=reactor,  # type: ignore[arg-type]
            clock=clock,
            command=workerCommand(sys.argv, sockets),
            childFDs=childFDs,
            count=options["workers"],
            stopTimeout=(options["shutdown-timeout"] or 0.0) + 5,
        )
        supervisor.setServiceParent(service)  # type: ignore[no-untyped-call]
    return service


def _adopt(
    reactor: Any, inherited: InheritedSocket, factory: StreamFactory, site: StreamSite
) -> IListeningPort:
    """
    Serve a listening socket inherited from the parent (a worker).
    """
    try:
        port: IListeningPort = reactor.adoptStreamPort(
            inherited.fd, inherited.family, factory if inherited.kind == "tcp" else site
        )
    except Exception as e:
        raise StartupError(f"cannot adopt socket {inherited.fd}: {e}") from None
    os.close(inherited.fd)
    return port


LISTEN_BACKLOG = 511
"""
The listen backlog unless an endpoint says otherwise (C{backlog=}): nginx's.
Twisted's default of 50 makes a burst of connections wait a second for the
client's SYN to be sent again.
"""


def _withBacklog(description: str) -> str:
    """
    C{description} with C{backlog=LISTEN_BACKLOG} added, for the endpoint
    types that take one and where it is not given.
    """
    kind = description.partition(":")[0].lower()
    if kind not in ("tcp", "tcp6", "ssl", "unix") or "backlog=" in description:
        return description
    return f"{description}:backlog={LISTEN_BACKLOG}"


def _listen(
    reactor: Any, description: str, factory: IProtocolFactory
) -> IListeningPort:
    try:
        endpoint = serverFromString(reactor, _withBacklog(description))
    except Exception as e:
        raise StartupError(f"bad endpoint {description!r}: {e}") from None
    return _listenNow(endpoint, description, factory)


def _listenNow(
    endpoint: IStreamServerEndpoint, description: str, factory: IProtocolFactory
) -> IListeningPort:
    """
    Listen on C{endpoint}, which must answer at once, as Twisted's own
    endpoints do.
    """
    results: list[IListeningPort | Failure] = []
    listening = endpoint.listen(factory)
    listening.addBoth(results.append)
    if not results:
        listening.cancel()
        raise StartupError(f"endpoint {description!r} did not listen at once")
    [result] = results
    if isinstance(result, Failure):
        raise StartupError(
            f"cannot listen on {description!r}: {result.getErrorMessage()}"
        )
    return result


def jsonLogObserver() -> ILogObserver:
    """
    One JSON object per line on standard output, every field of every event
    kept (for journald and log shippers): C{twistd --logger
    twisted_zero.tap.jsonLogObserver -n zero ...}.
    """
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
