"""
Tests for L{twisted_zero._service}: the listeners, and the listening
service's start and shutdown, on memory reactors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from twisted.application.service import IService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError, ConnectionAborted
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorFromThreads,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import (
    MemoryReactorClock,
    RaisingMemoryReactor,
)
from twisted.logger import LogEvent, capturedLogs
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_zero import IOPool, StreamFactory, StreamProtocol
from twisted_zero._service import _listenNow
from twisted_zero._site import StreamSite
from twisted_zero.tap import Options, StartupError, makeService

from .helpers import PausingTransport, assertNoResult, successResultOf


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class ListenerTests:
    def test_backlog(self, tmp_path: Path) -> None:
        """
        Listeners get a backlog of 511 (Twisted's is 50) unless the endpoint
        gives its own.
        """
        reactor = MemoryReactorClock()
        options = parse(
            "--listen", "tcp:1234", "--listen", "tcp:1235:backlog=7",
            "--listen", f"unix:{tmp_path / 'z.sock'}",
            "--http", "tcp6:8080",
        )  # fmt: skip
        makeService(options, reactor)
        assert [(p, b) for p, _, b, _ in reactor.tcpServers] == [
            (1234, 511),
            (1235, 7),
            (8080, 511),
        ]
        [(_, _, backlog, _, _)] = reactor.unixServers
        assert backlog == 511

    @pytest.mark.parametrize(
        ("endpoint", "message"),
        [
            ("tcp:http", "bad endpoint 'tcp:http': invalid literal"),
            ("bogus:1", "bad endpoint 'bogus:1': Unknown endpoint type: 'bogus'"),
        ],
    )
    def test_badEndpoint(self, endpoint: str, message: str) -> None:
        """
        A malformed endpoint string is refused before anything listens.
        """
        reactor = MemoryReactorClock()
        options = parse("--listen", "tcp:1", "--listen", endpoint)
        with pytest.raises(StartupError) as raised:
            makeService(options, reactor)
        assert str(raised.value).startswith(message)

    def test_noListenerLeftBehind(self) -> None:
        """
        When one endpoint fails, those already bound stop listening.
        """
        stopped: list[int] = []

        class Port:
            def __init__(self, number: int) -> None:
                self.number = number

            def stopListening(self) -> None:
                stopped.append(self.number)

        class Reactor(MemoryReactorClock):
            def __init__(self) -> None:
                MemoryReactorClock.__init__(self)

            def listenTCP(self, port: int, *args: object, **kwargs: object) -> Port:
                return Port(port)

        options = parse("--listen", "tcp:1", "--listen", "tcp:2", "--listen", "tcp:x")
        with pytest.raises(StartupError):
            makeService(options, Reactor())
        assert stopped == [1, 2]

    def test_cannotListen(self) -> None:
        """
        An address that cannot be bound (in use, say) is refused with the
        system's reason.
        """
        reactor = RaisingMemoryReactor(
            listenException=CannotListenError(
                "127.0.0.1", 8019, OSError(98, "Address already in use")
            )
        )
        with pytest.raises(
            StartupError,
            match=r"cannot listen on 'tcp:8019:interface=127\.0\.0\.1': .*Address already in use",
        ):
            makeService(parse(), reactor)  # type: ignore[arg-type]  # a reactor that only fails to listen

    def test_endpointThatDoesNotAnswer(self) -> None:
        """
        An endpoint that cannot say at once whether it listens is refused,
        and its attempt cancelled.
        """
        attempt: Deferred[IListeningPort] = Deferred()

        @implementer(IStreamServerEndpoint)
        class Slow:
            def listen(
                self, protocolFactory: IProtocolFactory
            ) -> Deferred[IListeningPort]:
                return attempt

        with pytest.raises(StartupError, match="did not listen at once"):
            _listenNow(Slow(), "slow:", Factory())
        assert attempt.called


class ListeningServiceTests:
    def test_stop(self) -> None:
        """
        Stopping the service stops listening and marks the factory as
        shutting down.
        """
        reactor = MemoryReactorClock()
        service = makeService(parse("--listen", "tcp:1234"), reactor)
        service.startService()
        [(_, factory, _, _)] = reactor.tcpServers
        assert isinstance(factory, StreamFactory)
        result: list[object] = []
        service.stopService().addBoth(result.append)
        assert len(result) == 1
        assert not isinstance(result[0], Failure)
        assert factory.shuttingDown

    def test_drain(self) -> None:
        """
        Stopping the service waits, up to the shutdown timeout, for the open
        connections; then each still open has its stream stopped and its
        connection aborted, logged as a server shutdown; the service has
        stopped once they have closed.
        """
        reactor = MemoryReactorClock()
        service = makeService(
            parse("--listen", "tcp:1234", "--shutdown-timeout", "3"), reactor
        )
        service.startService()
        [(_, factory, _, _)] = reactor.tcpServers
        assert isinstance(factory, StreamFactory)
        protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 5))
        assert isinstance(protocol, StreamProtocol)
        transport = PausingTransport()
        Protocol.makeConnection(protocol, transport)
        assert transport.producerState == "paused"
        events = drainThroughTimeout(reactor, service, transport, protocol)
        assert [
            (e["count"], e["timeout"])
            for e in events
            if "connections" in e["log_format"]
        ] == [(1, 3.0)]
        [ended] = [e for e in events if "stream to" in e["log_format"]]
        assert ended["reason"] == "server shutdown"

    def test_drainHTTP(self) -> None:
        """
        An HTTP response under way at stop is waited for, up to the shutdown
        timeout; then its stream is stopped and its connection aborted,
        logged as a server shutdown (not as the client's reset), and the
        service has stopped once it has closed.
        """
        reactor = MemoryReactorClock()
        service = makeService(
            parse("--http", "tcp:8080", "--shutdown-timeout", "3"), reactor
        )
        service.startService()
        [(_, site, _, _)] = reactor.tcpServers
        assert isinstance(site, StreamSite)
        channel = site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 5))
        assert channel is not None
        transport = PausingTransport()
        Protocol.makeConnection(channel, transport)
        channel.dataReceived(b"GET /zero HTTP/1.1\r\nHost: t\r\n\r\n")
        assert transport.producerState == "paused"
        events = drainThroughTimeout(reactor, service, transport, channel)
        [ended] = [e for e in events if "status" in e]
        assert ended["reason"] == "server shutdown"


@implementer(IReactorFromThreads)
class ThreadedMemoryReactor(MemoryReactorClock):
    """
    A memory reactor whose C{callFromThread} queues calls for the test to
    run, and tells it when one comes.
    """

    def __init__(self) -> None:
        MemoryReactorClock.__init__(self)
        self.fromThreads: list[Callable[[], object]] = []
        self.called = threading.Event()

    def callFromThread(
        self, callable: Callable[..., object], *args: object, **kwargs: object
    ) -> None:
        self.fromThreads.append(partial(callable, *args, **kwargs))
        self.called.set()

    def runFromThreads(self) -> None:
        """
        Wait for a call from a thread, then run those that came.
        """
        assert self.called.wait(10), "no call from a thread"
        self.called.clear()
        while self.fromThreads:
            self.fromThreads.pop(0)()


class ThreadShutdownTests:
    """
    The service starts its I/O threads, and at shutdown waits for the calls
    in flight, within the shutdown timeout, before it stops them.
    """

    def start(self, *args: str) -> tuple[IService, ThreadedMemoryReactor, IOPool]:
        reactor = ThreadedMemoryReactor()
        service = makeService(
            parse("--listen", "tcp:1234", "--io-threads", "2", *args), reactor
        )
        service.startService()
        [(_, factory, _, _)] = reactor.tcpServers
        assert isinstance(factory, StreamFactory)
        assert factory.ioPool is not None
        return service, reactor, factory.ioPool

    def test_waitsForCallsInFlight(self) -> None:
        """
        Shutdown waits for a call in flight to be done, then stops the
        threads; the service has stopped only then.
        """
        service, reactor, pool = self.start()
        release = threading.Event()
        threadsSeen: list[threading.Thread] = []

        def work() -> str:
            threadsSeen.append(threading.current_thread())
            release.wait(10)
            return "read"

        results: list[object] = []
        pool.submit(work, results.append)
        stopped: list[object] = []
        with capturedLogs() as events:
            service.stopService().addBoth(stopped.append)
        assert stopped == []
        assert [e["count"] for e in events if "file-system" in e["log_format"]] == [1]
        release.set()
        reactor.runFromThreads()
        assert results == ["read"]
        assert len(stopped) == 1 and not isinstance(stopped[0], Failure)
        [thread] = threadsSeen
        assert thread.daemon
        thread.join(10)
        assert not thread.is_alive()

    def test_givesUpAtTimeout(self) -> None:
        """
        A call still running when the shutdown timeout is over (a dead
        mount) does not hold up the shutdown: it is logged and left to its
        daemon thread.
        """
        service, reactor, pool = self.start("--shutdown-timeout", "3")
        release = threading.Event()
        started = threading.Event()
        workers: list[threading.Thread] = []

        def work() -> None:
            workers.append(threading.current_thread())
            started.set()
            release.wait(10)

        pool.submit(work, lambda result: None)
        assert started.wait(10)
        [worker] = workers
        stopped: list[object] = []
        with capturedLogs() as events:
            service.stopService().addBoth(stopped.append)
            reactor.advance(2.9)
            assert stopped == []
            reactor.advance(0.1)
        assert len(stopped) == 1 and not isinstance(stopped[0], Failure)
        assert any(
            e.get("log_format")
            == "stopping with {count} file-system calls still running"
            for e in events
        )
        release.set()
        reactor.runFromThreads()
        assert pool.inFlight == 0
        # Once the call returned, the threads were stopped after all.
        worker.join(10)
        assert not worker.is_alive()

    def test_idle(self) -> None:
        """
        With nothing in flight, shutdown does not wait.
        """
        service, reactor, pool = self.start()
        pool.submit(lambda: None, lambda result: None)
        reactor.runFromThreads()
        stopped: list[object] = []
        service.stopService().addBoth(stopped.append)
        assert len(stopped) == 1 and not isinstance(stopped[0], Failure)


def drainThroughTimeout(
    reactor: MemoryReactorClock,
    service: IService,
    transport: PausingTransport,
    connection: IProtocol,
) -> list[LogEvent]:
    """
    Stop C{service} with one C{connection} streaming over C{transport}
    (shutdown timeout 3 s): nothing is aborted until the timeout, then the
    connection is, its stream stopped (resumed, it writes nothing more), and
    the service has stopped once the connection is lost.

    @return: What was logged meanwhile.
    """
    with capturedLogs() as events:
        stopped = service.stopService()
        assert not transport.disconnecting
        reactor.advance(2.9)
        assert transport.calls.count("abortConnection") == 0
        assertNoResult(stopped)
        reactor.advance(0.1)
        assert transport.calls.count("abortConnection") == 1
        transport.drain()
        assert transport.drain() == b""
        assertNoResult(stopped)
        connection.connectionLost(Failure(ConnectionAborted()))
    assert successResultOf(stopped) is None
    return list(events)
