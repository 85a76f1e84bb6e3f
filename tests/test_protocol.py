"""
Tests for L{twisted_zero.StreamProtocol} and L{twisted_zero.StreamFactory},
over in-memory transports and a task clock.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Sequence

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IHalfCloseableDescriptor,
    IHalfCloseableProtocol,
    IHandshakeListener,
    INegotiated,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import alsoProvides, implementer
from zope.interface.verify import verifyObject

from twisted_zero import (
    ChargenSource,
    FileSource,
    ISource,
    SourceError,
    StreamFactory,
    StreamProtocol,
    ZeroSource,
)
from twisted_zero._connections import LINGER_SECONDS, formatAddress
from twisted_zero._protection import ConnectionLimits, Protection
from twisted_zero._registry import ConnectionRegistry
from twisted_zero._sources import CHARGEN_PERIOD

from .helpers import CountingFile, PausingTransport

PEER = IPv4Address("TCP", "192.0.2.7", 5555)


@implementer(IHalfCloseableDescriptor)
class HalfCloseableTransport(PausingTransport):
    """
    A transport that can shut down its sending side, like TCP's.
    """

    def loseWriteConnection(self) -> None:
        self.calls.append("loseWriteConnection")

    def writeConnectionLost(self, reason: Failure) -> None:
        self.calls.append("writeConnectionLost")

    def readConnectionLost(self, reason: Failure) -> None:
        self.calls.append("readConnectionLost")


class TLSLikeTransport(PausingTransport):
    """
    A transport that looks like Twisted's TLS one to the protocol, which
    asks only whether it provides L{INegotiated}.
    """

    negotiatedProtocol = None

    def __init__(self, bufferSize: int = 64 * 1024) -> None:
        super().__init__(bufferSize)
        alsoProvides(self, INegotiated)


def connect(
    sourceFactory: Callable[[], ISource] = ZeroSource,
    transport: PausingTransport | None = None,
    limit: int | None = None,
    chunkSize: int = 1000,
) -> tuple[StreamProtocol, PausingTransport, Clock]:
    clock = Clock()
    factory = StreamFactory(
        sourceFactory=sourceFactory, clock=clock, chunkSize=chunkSize, limit=limit
    )
    protocol = factory.buildProtocol(PEER)
    assert isinstance(protocol, StreamProtocol)
    if transport is None:
        transport = PausingTransport(bufferSize=5000)
    transport.peerAddr = PEER
    protocol.makeConnection(transport)
    return protocol, transport, clock


def streamEnded(events: Sequence[LogEvent]) -> LogEvent:
    [event] = [e for e in events if "reason" in e and "bytes" in e]
    return event


class StreamProtocolTests:
    def test_interfaces(self) -> None:
        """
        L{StreamProtocol} is half-closeable and listens for TLS handshakes.
        """
        protocol = StreamProtocol()
        assert verifyObject(IHalfCloseableProtocol, protocol)
        assert verifyObject(IHandshakeListener, protocol)

    def test_streamsOnConnect(self) -> None:
        """
        A connection gets a stream at once, through a push producer
        registered on its transport.
        """
        protocol, transport, clock = connect()
        assert transport.producer is not None
        assert transport.streaming
        assert transport.value() == bytes(6000)

    def test_inputDiscarded(self) -> None:
        """
        What the peer sends is counted, then discarded, and changes nothing
        else.
        """
        protocol, transport, clock = connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\n" * 1000)
        assert len(transport.value()) == 6000
        assert transport.producer is not None
        assert protocol.received == 16_000
        assert (
            protocol.factory.metrics.registry.get_sample_value(
                "twisted_zero_received_bytes_total", {"kind": "tcp"}
            )
            == 16_000
        )

    def test_receivedLogged(self) -> None:
        """
        The stream's end event tells how many bytes the peer sent.
        """
        protocol, transport, clock = connect()
        protocol.dataReceived(b"x" * 1234)
        with capturedLogs() as events:
            protocol.connectionLost(Failure(ConnectionDone()))
        [event] = [e for e in events if "received" in e]
        assert event["received"] == 1234
        assert "1234 bytes received" in formatEvent(event)

    def test_halfCloseKeepsStreaming(self) -> None:
        """
        A peer that shuts down its sending side still gets the stream.
        """
        protocol, transport, clock = connect()
        protocol.readConnectionLost()
        assert not transport.disconnecting
        transport.drain()
        assert len(transport.value()) == 6000

    def test_limitThenClose(self) -> None:
        """
        With a limit, exactly that many bytes are sent, the producer is
        unregistered and only then the connection closed.
        """
        protocol, transport, clock = connect(limit=12_345)
        received = b""
        while not transport.disconnecting:
            received += transport.drain()
        assert len(received + transport.value()) == 12_345
        assert transport.calls[-2:] == ["unregisterProducer", "loseConnection"]

    def test_lingeringClose(self) -> None:
        """
        On a half-closeable transport the server first shuts down its
        sending side, then closes when the peer does, so input still in
        flight cannot make the kernel reset the connection.
        """
        transport: PausingTransport = HalfCloseableTransport()
        protocol, transport, clock = connect(limit=10, transport=transport)
        assert transport.calls[-2:] == ["unregisterProducer", "loseWriteConnection"]
        protocol.writeConnectionLost()
        protocol.dataReceived(b"late input")
        assert not transport.disconnecting
        protocol.readConnectionLost()
        assert transport.disconnecting
        assert clock.getDelayedCalls() == []

    def test_lingerTimeout(self) -> None:
        """
        A peer that does not close after the stream is closed on after
        L{LINGER_SECONDS}.
        """
        transport: PausingTransport = HalfCloseableTransport()
        protocol, transport, clock = connect(limit=10, transport=transport)
        protocol.writeConnectionLost()
        clock.advance(LINGER_SECONDS - 0.1)
        assert not transport.disconnecting
        clock.advance(0.1)
        assert transport.disconnecting

    def test_peerAlreadyHalfClosed(self) -> None:
        """
        If the peer has already shut down its sending side, the connection
        is closed as soon as the stream ends.
        """
        transport: PausingTransport = HalfCloseableTransport(bufferSize=5)
        protocol, transport, clock = connect(limit=10, transport=transport, chunkSize=5)
        protocol.readConnectionLost()
        transport.drain()
        assert transport.calls[-1] == "loseConnection"

    def test_connectionLostCancelsLinger(self) -> None:
        """
        A connection lost while lingering leaves no timer behind.
        """
        transport: PausingTransport = HalfCloseableTransport()
        protocol, transport, clock = connect(limit=10, transport=transport)
        protocol.writeConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))
        assert clock.getDelayedCalls() == []

    def test_emptyStreamOverTLS(self) -> None:
        """
        Over TLS a stream that ends before the handshake (an empty one, say)
        is closed only once the handshake is done: Twisted aborts a TLS
        connection closed before it.
        """
        protocol, transport, clock = connect(limit=0, transport=TLSLikeTransport())
        assert not transport.disconnecting
        protocol.handshakeCompleted()
        assert transport.disconnecting

    def test_streamOverTLS(self) -> None:
        """
        Over TLS, a stream that ends after the handshake is closed at once.
        """
        protocol, transport, clock = connect(
            limit=10_000, transport=TLSLikeTransport(bufferSize=5000)
        )
        protocol.handshakeCompleted()
        assert not transport.disconnecting
        while transport.producer is not None:
            transport.drain()
        assert transport.disconnecting

    def test_disconnectStopsReading(self) -> None:
        """
        When the connection is lost the file is closed and never read again.
        """
        file = CountingFile(bytes(100_000))
        protocol, transport, clock = connect(
            sourceFactory=lambda: FileSource(file=file, length=100_000)
        )
        reads = file.reads
        producer = transport.producer
        assert producer is not None
        protocol.connectionLost(Failure(ConnectionLost()))
        assert file.closeCount == 1
        producer.resumeProducing()
        assert file.reads == reads

    def test_truncatedFileAborts(self) -> None:
        """
        A file that shrinks ends the stream with an abort, so the client can
        tell that it is short, and a logged warning.
        """
        file = CountingFile(bytes(1500))
        with capturedLogs() as events:
            protocol, transport, clock = connect(
                sourceFactory=lambda: FileSource(file=file, length=100_000)
            )
            protocol.connectionLost(Failure(ConnectionLost()))
        assert "abortConnection" in transport.calls
        assert len(transport.value()) == 1500
        assert "shrank" in (str([e.get("error") for e in events]))
        event = streamEnded(list(events))
        assert event["reason"] == "aborted: source failed"
        assert event["bytes"] == 1500

    def test_unexpectedSourceErrorAborts(self) -> None:
        """
        Any other source failure aborts the connection and is logged with
        its traceback.
        """

        @implementer(ISource)
        class Broken:
            description = "broken"
            chunkSize = 1

            def read(self, maxBytes: int) -> bytes:
                raise ZeroDivisionError()

            def close(self) -> None:
                pass

        with capturedLogs() as events:
            protocol, transport, clock = connect(sourceFactory=Broken)
        assert "abortConnection" in transport.calls
        failures = [e["log_failure"] for e in events if "log_failure" in e]
        assert [f.check(ZeroDivisionError) for f in failures] == [ZeroDivisionError]

    def test_sourceCannotOpen(self) -> None:
        """
        A source that cannot be opened for a connection (the file was
        removed) aborts that connection and logs one line.
        """

        def gone() -> ISource:
            raise SourceError("/srv/x: no such file")

        with capturedLogs() as events:
            protocol, transport, clock = connect(sourceFactory=gone)
            protocol.connectionLost(Failure(ConnectionLost()))
        assert "abortConnection" in transport.calls
        assert streamEnded(list(events))["reason"] == "source error"
        assert "/srv/x: no such file" in ([e.get("error") for e in events])


class AdmissionTests:
    def test_refusedClosedAtOnce(self) -> None:
        """
        A connection beyond the limits gets a protocol (never None, which a
        wrapping factory such as TLS's would wrap) that aborts it at once.
        """
        clock = Clock()
        factory = StreamFactory(
            sourceFactory=ZeroSource,
            clock=clock,
            protection=Protection(clock, limits=ConnectionLimits(maxConnections=1)),
        )
        first = factory.buildProtocol(PEER)
        assert isinstance(first, StreamProtocol)
        refused = factory.buildProtocol(PEER)
        assert not isinstance(refused, StreamProtocol)
        transport = PausingTransport()
        refused.makeConnection(transport)
        assert transport.calls == ["loseConnection"]


class StreamEndLogTests:
    def ended(
        self, reason: Failure, before: Callable[[StreamProtocol], None] = lambda p: None
    ) -> LogEvent:
        with capturedLogs() as events:
            protocol, transport, clock = connect(sourceFactory=ChargenSource)
            clock.advance(2.5)
            before(protocol)
            protocol.connectionLost(reason)
        return streamEnded(list(events))

    def test_fields(self) -> None:
        """
        One event per stream end carries the peer, source, bytes, seconds
        and reason.
        """
        event = self.ended(Failure(ConnectionLost()))
        assert event["peer"] == "192.0.2.7:5555"
        assert event["source"] == "chargen"
        assert event["bytes"] == 6000
        assert event["seconds"] == 2.5
        assert event["log_namespace"] == "twisted_zero._protocol.StreamProtocol"

    def test_clientReset(self) -> None:
        """
        A connection lost with an error is a client reset.
        """
        assert self.ended(Failure(ConnectionLost()))["reason"] == "client reset"

    def test_clientClosed(self) -> None:
        """
        A clean close by the client, or an error after the client's end of
        input, is a client close.
        """
        assert self.ended(Failure(ConnectionDone()))["reason"] == "client closed"
        event = self.ended(Failure(ConnectionLost()), lambda p: p.readConnectionLost())
        assert event["reason"] == "client closed"

    def test_otherFailure(self) -> None:
        """
        Other failures (a TLS error, say) are named.
        """
        event = self.ended(Failure(ValueError("bad record mac")))
        assert event["reason"] == "connection failed: bad record mac"

    def test_shutdown(self) -> None:
        """
        Streams cut by the server's shutdown say so.
        """

        def shutDown(protocol: StreamProtocol) -> None:
            protocol.factory.shuttingDown = True

        event = self.ended(Failure(ConnectionLost()), shutDown)
        assert event["reason"] == "server shutdown"

    def test_complete(self) -> None:
        """
        A stream that ended and then closed cleanly is complete; one whose
        close failed lost its end.
        """
        for reason, expected in [
            (ConnectionDone(), "complete"),
            (ConnectionLost(), "client reset before the end"),
        ]:
            with capturedLogs() as events:
                protocol, transport, clock = connect(limit=10)
                protocol.connectionLost(Failure(reason))
            event = streamEnded(list(events))
            assert (event["reason"], event["bytes"]) == (expected, 10)


class FormatAddressTests:
    def test_addresses(self) -> None:
        """
        Addresses are shown the way people write them.
        """
        assert formatAddress(PEER) == "192.0.2.7:5555"
        assert formatAddress(IPv6Address("TCP", "::1", 80)) == "[::1]:80"
        assert formatAddress(UNIXAddress(b"/run/z.sock")) == "unix:/run/z.sock"
        assert formatAddress(UNIXAddress(None)) == "unix:(unnamed)"


class IOSimTests:
    def test_wholeStream(self) -> None:
        """
        Through a simulated connection the client receives exactly the
        limited stream and sees the connection close.
        """
        received: list[bytes] = []
        closed: list[Failure] = []

        class Client(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)

            def connectionLost(self, reason: Failure = connectionDone) -> None:
                closed.append(reason)

        clock = Clock()
        factory = StreamFactory(sourceFactory=ChargenSource, clock=clock, limit=100_000)
        server = factory.buildProtocol(PEER)
        client = Client()
        serverTransport = iosim.FakeTransport(server, isServer=True)
        clientTransport = iosim.FakeTransport(client, isServer=False)
        pump = iosim.connect(
            server, serverTransport, client, clientTransport, greet=False
        )
        for _ in range(1000):
            if closed:
                break
            pump.pump()
            clock.advance(LINGER_SECONDS)
        assert b"".join(received) == (CHARGEN_PERIOD * 15)[:100_000]
        assert len(closed) == 1


@implementer(ISource)
class RecordingZeros:
    """
    Zeros that record their closing in a list of calls (a transport's), and
    fail on the read after C{failAfter} reads.
    """

    description = "zero"
    chunkSize = 1000

    def __init__(self, calls: list[str], failAfter: int | None = None) -> None:
        self._calls = calls
        self._failAfter = failAfter
        self.reads = 0

    def read(self, maxBytes: int) -> bytes:
        if self._failAfter is not None and self.reads >= self._failAfter:
            raise SourceError("the disk went away")
        self.reads += 1
        return bytes(maxBytes)

    def close(self) -> None:
        self._calls.append("close")


def connectRecorded(
    protection: Callable[[Clock], Protection] | None = None,
    failAfter: int | None = None,
) -> tuple[StreamProtocol, PausingTransport, Clock, RecordingZeros]:
    """
    A protocol streaming L{RecordingZeros} to a transport that records the
    order of its calls and the source's closing (the producer's stopping).
    """
    clock = Clock()
    transport = PausingTransport(bufferSize=5000)
    transport.peerAddr = PEER
    sources: list[RecordingZeros] = []

    def makeSource() -> ISource:
        sources.append(RecordingZeros(transport.calls, failAfter))
        return sources[-1]

    factory = StreamFactory(
        sourceFactory=makeSource,
        clock=clock,
        protection=Protection(clock) if protection is None else protection(clock),
    )
    protocol = factory.buildProtocol(PEER)
    assert isinstance(protocol, StreamProtocol)
    protocol.makeConnection(transport)
    [source] = sources
    return protocol, transport, clock, source


def abortOrder(transport: PausingTransport) -> list[str]:
    """
    The source's closing and the aborts, in the order they came.
    """
    return [call for call in transport.calls if call in ("close", "abortConnection")]


class AbortTests:
    """
    Every abort the protocol starts stops its producer (which closes the
    source and reads no more) before it aborts the connection, and logs why.
    """

    def test_abort(self) -> None:
        """
        L{StreamProtocol.abort} stops the producer, then aborts the
        connection; the stream's end is logged with the reason given.
        """
        protocol, transport, clock, source = connectRecorded()
        protocol.abort("server shutdown")
        assert abortOrder(transport) == ["close", "abortConnection"]
        reads = source.reads
        clock.advance(1)
        assert source.reads == reads
        with capturedLogs() as events:
            protocol.connectionLost(Failure(ConnectionAborted()))
        assert streamEnded(events)["reason"] == "server shutdown"
        assert abortOrder(transport) == ["close", "abortConnection"]

    def test_stalled(self) -> None:
        """
        A stalled stream's producer is stopped before the connection is
        aborted, and the stream is logged as stalled.
        """
        protocol, transport, clock, source = connectRecorded(
            lambda clock: Protection(clock, stallTimeout=10)
        )
        assert transport.producerState == "paused"  # the client reads nothing
        for _ in range(5):
            clock.advance(5)
        assert abortOrder(transport) == ["close", "abortConnection"]
        with capturedLogs() as events:
            protocol.connectionLost(Failure(ConnectionAborted()))
        assert streamEnded(events)["reason"] == "stalled"

    def test_uploadingNotStalled(self) -> None:
        """
        A client that reads nothing but keeps sending (an upload) is not
        stalled; once it stops sending too, it is.
        """
        protocol, transport, clock, source = connectRecorded(
            lambda clock: Protection(clock, stallTimeout=10)
        )
        assert transport.producerState == "paused"  # the client reads nothing
        for _ in range(20):
            clock.advance(5)
            protocol.dataReceived(b"x" * 1000)
        assert abortOrder(transport) == []
        for _ in range(3):
            clock.advance(5)
        assert abortOrder(transport) == ["close", "abortConnection"]

    def test_maxDuration(self) -> None:
        """
        A stream at its maximum duration has its producer stopped before
        the connection is aborted, and is logged as such.
        """
        protocol, transport, clock, source = connectRecorded(
            lambda clock: Protection(clock, maxDuration=30)
        )
        clock.advance(29)
        assert abortOrder(transport) == []
        clock.advance(1)
        assert abortOrder(transport) == ["close", "abortConnection"]
        with capturedLogs() as events:
            protocol.connectionLost(Failure(ConnectionAborted()))
        assert streamEnded(events)["reason"] == "max duration"

    def test_sourceFailed(self) -> None:
        """
        A source that fails ends its producer (the source is closed) before
        the connection is aborted, and the stream is logged as aborted.
        """
        with capturedLogs() as events:
            protocol, transport, clock, source = connectRecorded(failAfter=2)
        assert source.reads == 2
        assert abortOrder(transport) == ["close", "abortConnection"]
        assert any("the disk went away" in str(e.get("error")) for e in events)
        with capturedLogs() as events:
            protocol.connectionLost(Failure(ConnectionAborted()))
        assert streamEnded(events)["reason"] == "aborted: source failed"

    def test_connectionLostBare(self) -> None:
        """
        C{connectionLost()} called without a reason takes the connection as
        closed cleanly: the producer is stopped (the source closed) and the
        stream logged as closed by the client.
        """
        protocol, transport, clock, source = connectRecorded()
        with capturedLogs() as events:
            protocol.connectionLost()
        assert abortOrder(transport) == ["close"]
        assert streamEnded(events)["reason"] == "client closed"
        reads = source.reads
        transport.drain()
        clock.advance(1)
        assert source.reads == reads


class FreedTests:
    """
    A closed raw connection is freed at once, as an HTTP one is.
    """

    @pytest.mark.parametrize(
        "ending",
        ["client closed", "stalled", "max duration", "server shutdown"],
    )
    def test_noCycle(self, ending: str) -> None:
        """
        A connection, its protocol, its stream's producer and guard are
        freed as soon as it is closed, however it ended: they hold no cycle
        that only the garbage collector would break (which on a busy server
        comes late, holding every such connection's buffers until then).
        """
        gc.collect()
        gc.disable()
        try:
            clock = Clock()
            factory = StreamFactory(
                sourceFactory=ZeroSource,
                clock=clock,
                chunkSize=1000,
                protection=Protection(clock, stallTimeout=10, maxDuration=60),
                registry=ConnectionRegistry(clock=clock),
            )
            protocol = factory.buildProtocol(PEER)
            assert isinstance(protocol, StreamProtocol)
            transport = PausingTransport(bufferSize=5000)
            protocol.makeConnection(transport)
            freed = weakref.ref(protocol)
            producer = transport.producer
            assert producer is not None
            producerFreed = weakref.ref(producer)
            del producer
            if ending == "stalled":
                clock.advance(30)
            elif ending == "max duration":
                for _ in range(61):
                    transport.drain()
                    clock.advance(1)
            elif ending == "server shutdown":
                protocol.abort("server shutdown")
            # As a socket transport loses its connection:
            if transport.producer is not None:
                transport.producer.stopProducing()
                transport.producer = None
            protocol.connectionLost(Failure(ConnectionDone()))
            del protocol, transport
            assert freed() is None
            assert producerFreed() is None
            assert clock.getDelayedCalls() == []
        finally:
            gc.enable()
