"""
The listening service: the listeners (bound before the daemon starts,
with a sensible backlog, or adopted from a parent process), the startup
log, SIGTERM, and the shutdown: stop listening, drain the connections,
stop the file-system threads.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence
from socket import AddressFamily
from typing import Any

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReactorFromThreads,
    IReactorSocket,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ._connections import formatAddress
from ._iopool import IOPool
from ._protocol import StreamFactory
from ._registry import ConnectionRegistry
from ._site import StreamSite
from ._workers import InheritedSocket

LISTEN_BACKLOG = 511
"""
The listen backlog unless an endpoint says otherwise (C{backlog=}): nginx's.
Twisted's default of 50 makes a burst of connections wait a second for the
client's SYN to be sent again.
"""


class StartupError(Exception):
    """
    The service cannot start (an endpoint is malformed or cannot be bound);
    the message is one line, fit to show to a person.
    """


@define
class Listeners:
    """
    The listening ports, by what they serve.

    @param streams: Raw TCP streams (C{--listen}).
    @param http: HTTP (C{--http}).
    @param metrics: Prometheus metrics (C{--metrics}).
    """

    streams: list[IListeningPort] = field(factory=list)
    http: list[IListeningPort] = field(factory=list)
    metrics: list[IListeningPort] = field(factory=list)

    def all(self) -> list[IListeningPort]:
        """
        Every port, streams first.
        """
        return self.streams + self.http + self.metrics

    def stopListening(self) -> list[Deferred[None]]:
        """
        Stop listening on every port.

        @return: One L{Deferred} per port, fired once it no longer listens.
        """
        stopping: list[Deferred[None]] = []
        for port in self.all():
            try:
                stopped = port.stopListening()
            except Exception:
                stopping.append(fail())
            else:
                stopping.append(succeed(None) if stopped is None else stopped)
        return stopping


def bindListeners(
    reactor: object,
    streams: Sequence[str],
    http: Sequence[str],
    metrics: str | None,
    factory: IProtocolFactory,
    site: IProtocolFactory,
    metricsSite: IProtocolFactory,
    inherited: Sequence[InheritedSocket] | None = None,
) -> Listeners:
    """
    Listen on every endpoint now (or, in a worker, adopt the sockets the
    parent bound), so that a bad endpoint or a port in use stops the daemon
    before it starts.

    @param reactor: Listens.
    @param streams: Endpoints for the raw streams of C{factory}.
    @param http: Endpoints for C{site}.
    @param metrics: The endpoint for C{metricsSite}, if any.
    @param inherited: In a worker, the sockets to adopt instead of
        C{streams} and C{http}.
    @raise StartupError: If an endpoint cannot be parsed or bound, or a
        socket adopted; those already bound then stop listening.
    """
    listeners = Listeners()
    try:
        if inherited is not None:
            for socket in inherited:
                if socket.kind == "tcp":
                    listeners.streams.append(_adopt(reactor, socket, factory))
                else:
                    listeners.http.append(_adopt(reactor, socket, site))
        else:
            for description in streams:
                listeners.streams.append(_listen(reactor, description, factory))
            for description in http:
                listeners.http.append(_listen(reactor, description, site))
        if metrics is not None:
            listeners.metrics.append(_listen(reactor, metrics, metricsSite))
    except StartupError:
        for port in listeners.all():
            port.stopListening()
        raise
    return listeners


def _adopt(
    reactor: object, inherited: InheritedSocket, factory: IProtocolFactory
) -> IListeningPort:
    """
    Serve a listening socket inherited from the parent (a worker).
    """
    try:
        port = IReactorSocket(reactor).adoptStreamPort(
            inherited.fd,
            AddressFamily(inherited.family),
            factory,  # type: ignore[arg-type]  # annotated for a ServerFactory; any protocol factory serves
        )
    except Exception as e:
        raise StartupError(f"cannot adopt socket {inherited.fd}: {e}") from None
    os.close(inherited.fd)
    return port


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
    reactor: object, description: str, factory: IProtocolFactory
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


class _DaemonThread(threading.Thread):
    """
    A thread that does not keep the process alive: one blocked for good on a
    dead mount must not keep the daemon from exiting.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.daemon = True


class IOThreads(ThreadPool):
    """
    The threads that make the file-system calls for clients.
    """

    threadFactory = _DaemonThread


@define(eq=False)
class ListeningService(Service):
    """
    Serve the listeners L{bindListeners} bound; at shutdown, stop
    listening, let the open connections finish for the shutdown timeout,
    abort those left, then stop the file-system threads.

    @param listeners: The listening ports.
    @param source: What the raw streams send, for the startup log.
    @param registry: The connections open now, drained at shutdown.
    @param factory: The raw streams' factory, told the server is shutting
        down.
    @param site: The HTTP site, whose idle connections are closed at
        shutdown.
    @param shutdownTimeout: How long, in seconds, the open connections may
        take to finish at shutdown; and then the file-system calls in
        flight, in what is left of it.
    @param reactor: Stopped on SIGTERM.
    @param clock: Times the shutdown.
    @param threads: The file-system threads: started with the service,
        stopped at shutdown.
    @param ioPool: The calls in flight on C{threads}; L{None} where there
        are none (a reactor without threads).
    """

    _listeners: Listeners = field(alias="listeners")
    _source: str = field(alias="source")
    _registry: ConnectionRegistry = field(alias="registry")
    _factory: StreamFactory = field(alias="factory")
    _site: StreamSite = field(alias="site")
    _shutdownTimeout: float = field(alias="shutdownTimeout")
    _reactor: IReactorCore = field(alias="reactor")
    _clock: IReactorTime = field(alias="clock")
    _threads: ThreadPool = field(alias="threads")
    _ioPool: IOPool | None = field(alias="ioPool")

    _log = Logger()

    def startService(self) -> None:
        Service.startService(self)
        self._threads.start()
        for port in self._listeners.streams:
            self._log.info(
                "streaming {source} on {address}",
                source=self._source,
                address=formatAddress(port.getHost()),
            )
        for port in self._listeners.http:
            self._log.info(
                "serving HTTP on {address}", address=formatAddress(port.getHost())
            )
        for port in self._listeners.metrics:
            self._log.info(
                "serving metrics on {address}", address=formatAddress(port.getHost())
            )
        self._reactor.callWhenRunning(self._handleSIGTERM)

    def _handleSIGTERM(self) -> None:
        """
        Stop on SIGTERM like the reactor does, but exit with status 0 once
        the graceful shutdown is done: twistd otherwise ends the process by
        the signal again, which a supervisor may count as a failure.
        """
        reactor = self._reactor
        fromThreads = IReactorFromThreads(reactor)
        stopping: list[bool] = []

        def stop(signum: int, frame: object) -> None:
            if not stopping:  # a second SIGTERM (from systemd, say) changes nothing
                stopping.append(True)
                fromThreads.callFromThread(reactor.stop)

        signal.signal(signal.SIGTERM, stop)

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting connections, let the open ones finish for the
        shutdown timeout, then abort those left; then wait, for what is left
        of the timeout, for the file-system calls in flight, and stop their
        threads.
        """
        Service.stopService(self)
        clock = self._clock
        deadline = clock.seconds() + self._shutdownTimeout
        self._factory.shuttingDown = True
        stopping = self._listeners.stopListening()
        self._site.closeIdle()
        registry = self._registry
        if registry.count:
            self._log.info(
                "stopping: waiting up to {timeout}s for {count} connections",
                timeout=self._shutdownTimeout,
                count=registry.count,
            )
        stopping.append(registry.drain(self._shutdownTimeout))
        done = gatherResults(stopping, consumeErrors=True)
        return done.addBoth(lambda _: self._stopThreads(clock, deadline))

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
