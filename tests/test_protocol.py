"""
Tests for L{twisted_zero.StreamProtocol} and L{twisted_zero.StreamFactory},
over in-memory transports and a task clock.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IHalfCloseableDescriptor,
    IHalfCloseableProtocol,
    IHandshakeListener,
    INegotiated,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.logger import LogEvent, capturedLogs
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
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
from twisted_zero._protection import ConnectionLimits, Protection
from twisted_zero._protocol import (
    LINGER_SECONDS,
    formatAddress,
)
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


@implementer(INegotiated)
class TLSLikeTransport(PausingTransport):
    """
    A transport that looks like Twisted's TLS one.
    """

    negotiatedProtocol = None


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


def streamEnded(events: list[LogEvent]) -> LogEvent:
    [event] = [e for e in events if "reason" in e and "bytes" in e]
    return event


class StreamProtocolTests(SynchronousTestCase):
    def test_interfaces(self) -> None:
        """
        L{StreamProtocol} is half-closeable and listens for TLS handshakes.
        """
        protocol = StreamProtocol()
        self.assertTrue(verifyObject(IHalfCloseableProtocol, protocol))
        self.assertTrue(verifyObject(IHandshakeListener, protocol))

    def test_streamsOnConnect(self) -> None:
        """
        A connection gets a stream at once, through a push producer
        registered on its transport.
        """
        protocol, transport, clock = connect()
        self.assertIsNotNone(transport.producer)
        self.assertTrue(transport.streaming)
        self.assertEqual(transport.value(), bytes(6000))

    def test_inputDiscarded(self) -> None:
        """
        What the peer sends is discarded and changes nothing.
        """
        protocol, transport, clock = connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\n" * 1000)
        self.assertEqual(len(transport.value()), 6000)
        self.assertIsNotNone(transport.producer)

    def test_halfCloseKeepsStreaming(self) -> None:
        """
        A peer that shuts down its sending side still gets the stream.
        """
        protocol, transport, clock = connect()
        protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        transport.drain()
        self.assertEqual(len(transport.value()), 6000)

    def test_limitThenClose(self) -> None:
        """
        With a limit, exactly that many bytes are sent, the producer is
        unregistered and only then the connection closed.
        """
        protocol, transport, clock = connect(limit=12_345)
        received = b""
        while not transport.disconnecting:
            received += transport.drain()
        self.assertEqual(len(received + transport.value()), 12_345)
        self.assertEqual(transport.calls[-2:], ["unregisterProducer", "loseConnection"])

    def test_lingeringClose(self) -> None:
        """
        On a half-closeable transport the server first shuts down its
        sending side, then closes when the peer does, so input still in
        flight cannot make the kernel reset the connection.
        """
        transport = HalfCloseableTransport()
        protocol, transport, clock = connect(limit=10, transport=transport)
        self.assertEqual(
            transport.calls[-2:], ["unregisterProducer", "loseWriteConnection"]
        )
        protocol.writeConnectionLost()
        protocol.dataReceived(b"late input")
        self.assertFalse(transport.disconnecting)
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lingerTimeout(self) -> None:
        """
        A peer that does not close after the stream is closed on after
        L{LINGER_SECONDS}.
        """
        transport = HalfCloseableTransport()
        protocol, transport, clock = connect(limit=10, transport=transport)
        protocol.writeConnectionLost()
        clock.advance(LINGER_SECONDS - 0.1)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_peerAlreadyHalfClosed(self) -> None:
        """
        If the peer has already shut down its sending side, the connection
        is closed as soon as the stream ends.
        """
        transport = HalfCloseableTransport(bufferSize=5)
        protocol, transport, clock = connect(limit=10, transport=transport, chunkSize=5)
        protocol.readConnectionLost()
        transport.drain()
        self.assertEqual(transport.calls[-1], "loseConnection")

    def test_connectionLostCancelsLinger(self) -> None:
        """
        A connection lost while lingering leaves no timer behind.
        """
        transport = HalfCloseableTransport()
        protocol, transport, clock = connect(limit=10, transport=transport)
        protocol.writeConnectionLost()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_emptyStreamOverTLS(self) -> None:
        """
        Over TLS a stream that ends before the handshake (an empty one, say)
        is closed only once the handshake is done: Twisted aborts a TLS
        connection closed before it.
        """
        protocol, transport, clock = connect(limit=0, transport=TLSLikeTransport())
        self.assertFalse(transport.disconnecting)
        protocol.handshakeCompleted()
        self.assertTrue(transport.disconnecting)

    def test_streamOverTLS(self) -> None:
        """
        Over TLS, a stream that ends after the handshake is closed at once.
        """
        protocol, transport, clock = connect(
            limit=10_000, transport=TLSLikeTransport(bufferSize=5000)
        )
        protocol.handshakeCompleted()
        self.assertFalse(transport.disconnecting)
        while transport.producer is not None:
            transport.drain()
        self.assertTrue(transport.disconnecting)

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
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(file.closeCount, 1)
        producer.resumeProducing()
        self.assertEqual(file.reads, reads)

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
        self.assertIn("abortConnection", transport.calls)
        self.assertEqual(len(transport.value()), 1500)
        self.assertIn("shrank", str([e.get("error") for e in events]))
        event = streamEnded(list(events))
        self.assertEqual(event["reason"], "aborted: source failed")
        self.assertEqual(event["bytes"], 1500)

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

        protocol, transport, clock = connect(sourceFactory=Broken)
        self.assertIn("abortConnection", transport.calls)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

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
        self.assertIn("abortConnection", transport.calls)
        self.assertEqual(streamEnded(list(events))["reason"], "source error")
        self.assertIn("/srv/x: no such file", [e.get("error") for e in events])


class AdmissionTests(SynchronousTestCase):
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
        self.assertIsInstance(first, StreamProtocol)
        refused = factory.buildProtocol(PEER)
        self.assertNotIsInstance(refused, StreamProtocol)
        transport = PausingTransport()
        refused.makeConnection(transport)
        self.assertEqual(transport.calls, ["loseConnection"])


class StreamEndLogTests(SynchronousTestCase):
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
        self.assertEqual(event["peer"], "192.0.2.7:5555")
        self.assertEqual(event["source"], "chargen")
        self.assertEqual(event["bytes"], 6000)
        self.assertEqual(event["seconds"], 2.5)
        self.assertEqual(
            event["log_namespace"], "twisted_zero._protocol.StreamProtocol"
        )

    def test_clientReset(self) -> None:
        """
        A connection lost with an error is a client reset.
        """
        self.assertEqual(
            self.ended(Failure(ConnectionLost()))["reason"], "client reset"
        )

    def test_clientClosed(self) -> None:
        """
        A clean close by the client, or an error after the client's end of
        input, is a client close.
        """
        self.assertEqual(
            self.ended(Failure(ConnectionDone()))["reason"], "client closed"
        )
        event = self.ended(Failure(ConnectionLost()), lambda p: p.readConnectionLost())
        self.assertEqual(event["reason"], "client closed")

    def test_otherFailure(self) -> None:
        """
        Other failures (a TLS error, say) are named.
        """
        event = self.ended(Failure(ValueError("bad record mac")))
        self.assertEqual(event["reason"], "connection failed: bad record mac")

    def test_shutdown(self) -> None:
        """
        Streams cut by the server's shutdown say so.
        """

        def shutDown(protocol: StreamProtocol) -> None:
            protocol.factory.shuttingDown = True

        event = self.ended(Failure(ConnectionLost()), shutDown)
        self.assertEqual(event["reason"], "server shutdown")

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
            self.assertEqual((event["reason"], event["bytes"]), (expected, 10))


class FormatAddressTests(SynchronousTestCase):
    def test_addresses(self) -> None:
        """
        Addresses are shown the way people write them.
        """
        self.assertEqual(formatAddress(PEER), "192.0.2.7:5555")
        self.assertEqual(formatAddress(IPv6Address("TCP", "::1", 80)), "[::1]:80")
        self.assertEqual(formatAddress(UNIXAddress(b"/run/z.sock")), "unix:/run/z.sock")
        self.assertEqual(formatAddress(UNIXAddress(None)), "unix:(unnamed)")


class IOSimTests(SynchronousTestCase):
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

            def connectionLost(self, reason: Failure = ConnectionDone()) -> None:  # type: ignore[assignment] # noqa: B008
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
        self.assertEqual(b"".join(received), (CHARGEN_PERIOD * 15)[:100_000])
        self.assertEqual(len(closed), 1)
