"""
Real-socket tests: a L{StreamFactory} listening on 127.0.0.1 (plain TCP and
TLS) and real Twisted clients reading from it, on pytest-twisted's reactor.

Every listener binds port 0, every wait is bounded by L{DEADLINE} of reactor
time, and the L{network} fixture stops listening and aborts every connection
a test leaves behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import termios
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from attrs import define, field
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IListeningPort,
    IPushProducer,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from twisted_zero import (
    ChargenSource,
    ISource,
    StreamFactory,
    StreamProtocol,
    ZeroSource,
    openFile,
)
from twisted_zero._connections import LINGER_SECONDS
from twisted_zero._sources import CHARGEN_PERIOD, ISharedChunkSource

from .helpers import TLSFiles, asyncYieldFixture, ensureDeferred, writeTLSFiles

DEADLINE = 5.0
"""
Seconds of reactor time any one wait may take before the test fails.
"""

QUIET = 0.3
"""
Seconds of reactor time a paused or stopped stream is watched for reads.
"""

SETTLE = 0.2
SETTLE_TURNS = 20
"""
Seconds and reactor turns without progress after which a paused stream
counts as stalled.
"""

LOCALHOST = "tcp:0:interface=127.0.0.1"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def _within(d: Deferred[Any], what: str) -> Any:
    """
    Wait for C{d}, failing the test if it has not fired after L{DEADLINE}.
    """
    try:
        return await d.addTimeout(DEADLINE, _reactor())
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def _waitUntil(predicate: Callable[[], bool], what: str) -> None:
    """
    Poll C{predicate} on the reactor until it holds, for at most L{DEADLINE}.
    """
    reactor = _reactor()
    deadline = reactor.seconds() + DEADLINE
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await deferLater(reactor, 0.005, lambda: None)


def _unsentBytes(server: ServerConnection) -> int:
    """
    The bytes in the kernel's send queue of the server's socket, not yet
    acknowledged by the client.
    """
    transport: Any = server.protocol.transport
    if isinstance(transport, TLSMemoryBIOProtocol):
        transport = transport.transport
    handle = transport.getHandle()
    queued = fcntl.ioctl(handle.fileno(), termios.TIOCOUTQ, bytes(4))
    size: int = struct.unpack("i", queued)[0]
    return size


async def _waitUntilStalled(server: ServerConnection, source: CountingSource) -> None:
    """
    Wait until the server's producer is paused and neither its source nor
    the kernel's send queue has moved for L{SETTLE} seconds and
    L{SETTLE_TURNS} reactor turns: the transport's and the kernel's buffers
    are full. (Counting turns too keeps a reactor that was not scheduled for
    a while from passing for a stalled stream.)
    """
    reactor = _reactor()
    deadline = reactor.seconds() + DEADLINE
    seen: tuple[int, int] | None = None
    since, turns = reactor.seconds(), 0
    while True:
        now = reactor.seconds()
        producer = server.producer
        if producer.state not in ("producing", "paused"):
            raise AssertionError(f"the stream is {producer.state}, not stalled")
        current = (source.reads, _unsentBytes(server))
        if producer.state != "paused" or current != seen:
            seen, since, turns = current, now, 0
        elif now - since >= SETTLE and turns >= SETTLE_TURNS:
            return
        if now > deadline:
            raise AssertionError("timed out waiting until the producer stalls")
        turns += 1
        await deferLater(reactor, 0.005, lambda: None)


async def _quietPeriod() -> None:
    """
    Let L{QUIET} seconds of reactor time pass.
    """
    await deferLater(_reactor(), QUIET, lambda: None)


def _address(address: IAddress) -> str:
    assert isinstance(address, IPv4Address)
    return f"{address.host}:{address.port}"


@implementer(ISource)
@define(slots=False)  # alsoProvides() sets an attribute of its own
class CountingSource:
    """
    An L{ISource} wrapper that counts the calls made to the source it wraps.

    @ivar reads: How many times L{read} was called.
    @ivar readsAfterClose: How many of those came after L{close}.
    @ivar closes: How many times L{close} was called.
    """

    _source: ISource = field(alias="source")
    reads: int = field(default=0, init=False)
    readsAfterClose: int = field(default=0, init=False)
    closes: int = field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        # As transparent as the wrapper is: shared chunks stay shared.
        if ISharedChunkSource.providedBy(self._source):
            alsoProvides(self, ISharedChunkSource)

    @property
    def description(self) -> str:
        return self._source.description

    @property
    def chunkSize(self) -> int:
        return self._source.chunkSize

    def read(self, maxBytes: int) -> bytes:
        self.reads += 1
        if self.closes:
            self.readsAfterClose += 1
        return self._source.read(maxBytes)

    def close(self) -> None:
        self.closes += 1
        self._source.close()


@define
class ServerConnection:
    """
    What the server made for one connection: its unmodified
    L{StreamProtocol}, spied on.

    @ivar lost: Fires with the reason once the protocol's C{connectionLost}
        has run.
    @ivar producer: The protocol's producer, kept after the stream ends.
    """

    protocol: StreamProtocol
    lost: Deferred[BaseException] = field(factory=Deferred)
    producer: Any = None

    def __attrs_post_init__(self) -> None:
        protocol = self.protocol
        connectionMade = protocol.connectionMade
        connectionLost = protocol.connectionLost

        def spyConnectionMade() -> None:
            connectionMade()
            self.producer = protocol._producer

        def spyConnectionLost(reason: Failure = connectionDone) -> None:
            connectionLost(reason)
            assert reason.value is not None
            self.lost.callback(reason.value)

        protocol.connectionMade = spyConnectionMade  # type: ignore[method-assign]  # spy on the protocol's callbacks
        protocol.connectionLost = spyConnectionLost  # type: ignore[method-assign]  # spy on the protocol's callbacks


class RecordingFactory(StreamFactory):
    """
    A L{StreamFactory} that records the connections it serves and the
    sources they stream, each source wrapped in a L{CountingSource}.
    """

    def __init__(
        self,
        sourceFactory: Callable[[], ISource],
        chunkSize: int,
        limit: int | None = None,
    ) -> None:
        self.connections: list[ServerConnection] = []
        self.sources: list[CountingSource] = []

        def countingSourceFactory() -> ISource:
            source = CountingSource(source=sourceFactory())
            self.sources.append(source)
            return source

        super().__init__(
            sourceFactory=countingSourceFactory,
            clock=_reactor(),
            chunkSize=chunkSize,
            limit=limit,
        )

    def buildProtocol(self, addr: IAddress | None) -> StreamProtocol:
        protocol = super().buildProtocol(addr)
        assert isinstance(protocol, StreamProtocol)
        self.connections.append(ServerConnection(protocol))
        return protocol

    async def connection(self, count: int = 1) -> ServerConnection:
        """
        Wait until C{count} connections were made; return the last one.
        """
        await _waitUntil(
            lambda: len(self.sources) >= count,
            f"{count} server connection(s) are made",
        )
        return self.connections[count - 1]


class Client(Protocol):
    """
    Read a stream, keeping a count and a hash of it (and the bytes themselves
    if asked), optionally pausing the transport once C{pauseAfter} bytes
    arrived.

    @ivar connected: Fires when the connection is made.
    @ivar lost: Fires with the reason once the connection is lost.
    @ivar pausedReading: Fires when the client stops reading.
    """

    def __init__(self, keep: bool = False, pauseAfter: int | None = None) -> None:
        self.received = 0
        self.sha256 = hashlib.sha256()
        self.data: list[bytes] | None = [] if keep else None
        self.pauseAfter = pauseAfter
        self.pausedReading: Deferred[None] = Deferred()
        self.lost: Deferred[BaseException] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.sha256.update(data)
        if self.data is not None:
            self.data.append(data)
        if (
            self.pauseAfter is not None
            and self.received >= self.pauseAfter
            and not self.pausedReading.called
        ):
            self.reading().pauseProducing()
            self.pausedReading.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        assert reason.value is not None
        self.lost.callback(reason.value)

    def connection(self) -> ITCPTransport:
        """
        The transport of the connection: a TCP transport, or a TLS one over
        it.
        """
        assert self.transport is not None
        return cast(ITCPTransport, self.transport)

    def reading(self) -> IPushProducer:
        """
        The transport as the producer of what the client reads, to pause and
        resume it.
        """
        assert self.transport is not None
        return cast(IPushProducer, self.transport)

    def content(self) -> bytes:
        assert self.data is not None
        return b"".join(self.data)


class ChattyClient(Client):
    """
    A L{Client} that sends a line for every chunk it receives.
    """

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.connection().write(b"still here\r\n")


@implementer(IHalfCloseableProtocol)
class HalfClosingClient(Client):
    """
    A L{Client} that shuts down its sending side as soon as it connects and
    closes the connection when the server's side ends.

    @ivar readClosed: Whether the server's end of the stream was seen.
    """

    readClosed = False

    def connectionMade(self) -> None:
        self.connection().loseWriteConnection()

    def readConnectionLost(self) -> None:
        self.readClosed = True
        self.connection().loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class Network:
    """
    Listeners and client connections of one test, all undone by L{close}.
    """

    def __init__(self) -> None:
        self.ports: list[IListeningPort] = []
        self.factories: list[RecordingFactory] = []
        self.clients: list[Client] = []

    async def listen(
        self, factory: RecordingFactory, description: str = LOCALHOST
    ) -> IListeningPort:
        """
        Serve C{factory} on the endpoint C{description}.
        """
        port: IListeningPort = await _within(
            serverFromString(_reactor(), description).listen(factory),
            "the listener to start",
        )
        self.ports.append(port)
        self.factories.append(factory)
        return port

    def endpoint(
        self, port: IListeningPort, tls: Certificate | None = None
    ) -> IStreamClientEndpoint:
        """
        A client endpoint for C{port}, speaking TLS trusting C{tls} if given.
        """
        endpoint: IStreamClientEndpoint = TCP4ClientEndpoint(
            _reactor(),
            "127.0.0.1",
            cast(IPv4Address, port.getHost()).port,
            timeout=DEADLINE,
        )
        if tls is not None:
            endpoint = wrapClientTLS(
                optionsForClientTLS("localhost", trustRoot=tls), endpoint
            )
        return endpoint

    async def connect(
        self, port: IListeningPort, client: Client, tls: Certificate | None = None
    ) -> Client:
        """
        Connect C{client} to C{port}.
        """
        self.clients.append(client)
        await _within(
            connectProtocol(self.endpoint(port, tls), client), "the connection"
        )
        return client

    async def close(self) -> None:
        for client in self.clients:
            if not client.lost.called and client.transport is not None:
                client.connection().abortConnection()
        for factory in self.factories:
            for server in factory.connections:
                transport = server.protocol.transport
                if not server.lost.called and transport is not None:
                    cast(ITCPTransport, transport).abortConnection()
        for port in self.ports:
            await _within(Deferred.fromCoroutine(_stopListening(port)), "unlisten")
        for client in self.clients:
            if client.transport is not None:
                await _within(client.lost, "a client connection to close")
        for factory in self.factories:
            for server in factory.connections:
                if server.protocol.transport is not None:
                    await _within(server.lost, "a server connection to close")


async def _stopListening(port: IListeningPort) -> None:
    stopped = port.stopListening()
    if stopped is not None:
        await stopped


@asyncYieldFixture
async def network() -> AsyncIterator[Network]:
    """
    A L{Network} that is closed after the test, whatever its outcome.
    """
    net = Network()
    try:
        yield net
    finally:
        await net.close()


@pytest.fixture
def logEvents() -> Any:
    """
    The events logged by L{twisted_zero._protocol} during the test.
    """
    events: list[LogEvent] = []

    @implementer(ILogObserver)
    def observe(event: LogEvent) -> None:
        if event.get("log_namespace", "").startswith("twisted_zero._protocol"):
            events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observe)


def _streamEnded(events: list[LogEvent]) -> list[LogEvent]:
    """
    The "stream ended" events among C{events}.
    """
    return [
        event
        for event in events
        if "ended" in event.get("log_format", "") and "reason" in event
    ]


def _openDescriptorsOf(path: Path) -> list[str]:
    """
    The descriptors this process holds open on C{path}.
    """
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == str(path):
            found.append(fd)
    return found


@pytest.fixture
def bigFile(tmp_path: Path) -> Path:
    """
    A file of several MiB of random bytes, not a multiple of any chunk size.
    """
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(16 * 2**20 + 12345))
    return path


@pytest.fixture(scope="module")
def tlsFiles(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """
    A self-signed certificate and its key, in files.
    """
    return writeTLSFiles(tmp_path_factory.mktemp("tls"))


class FlowControlTests:
    """
    A client that stops reading pauses the server's producer, which then
    reads nothing until the client reads again.
    """

    @ensureDeferred
    async def test_pausedClientPausesProducer(self, network: Network) -> None:
        """
        Once a client stops reading, the server's producer becomes paused and
        its source is not read for a while; when the client reads again it
        receives the rest, exactly C{limit} bytes in all, and the connection
        closes cleanly.
        """
        limit = 64 * 2**20 + 7
        factory = RecordingFactory(ZeroSource, chunkSize=64 * 1024, limit=limit)
        port = await network.listen(factory)
        client = await network.connect(port, Client(pauseAfter=256 * 1024))
        server = await factory.connection()
        source = factory.sources[0]

        await _within(client.pausedReading, "the client to stop reading")
        await _waitUntilStalled(server, source)
        readsWhenPaused = source.reads
        receivedWhenPaused = client.received
        await _quietPeriod()
        assert server.producer.state == "paused"
        assert source.reads == readsWhenPaused
        assert client.received == receivedWhenPaused
        assert receivedWhenPaused < limit

        client.reading().resumeProducing()
        reason = await _within(client.lost, "the stream to end")

        assert isinstance(reason, ConnectionDone)
        assert client.received == limit
        assert client.sha256.digest() == hashlib.sha256(bytes(limit)).digest()
        await _within(server.lost, "the server connection to close")
        assert server.producer.state == "finished"
        assert server.producer.bytesSent == limit
        assert source.closes == 1
        assert source.readsAfterClose == 0


class DisconnectTests:
    """
    A client that goes away mid-stream stops the server's stream for good.
    """

    @ensureDeferred
    async def test_disconnectClosesFileAndStopsReading(
        self, network: Network, bigFile: Path
    ) -> None:
        """
        When a client disconnects in the middle of a file, the server
        protocol's C{connectionLost} runs, the producer is stopped, the file
        is closed and its source is read no more.
        """
        factory = RecordingFactory(lambda: openFile(str(bigFile)), chunkSize=64 * 1024)
        port = await network.listen(factory)
        client = await network.connect(port, Client(pauseAfter=64 * 1024))
        server = await factory.connection()
        source = factory.sources[0]
        assert _openDescriptorsOf(bigFile)

        await _within(client.pausedReading, "the client to stop reading")
        await _waitUntilStalled(server, source)
        assert server.producer.bytesSent < bigFile.stat().st_size
        client.connection().loseConnection()
        await _within(server.lost, "the server connection to close")

        readsAtStop = source.reads
        assert server.producer.state == "stopped"
        assert source.closes >= 1
        assert _openDescriptorsOf(bigFile) == []
        await _quietPeriod()
        assert source.reads == readsAtStop
        assert source.readsAfterClose == 0
        await _within(client.lost, "the client connection to close")


class FileContentTests:
    """
    A file arrives intact over a real socket.
    """

    @ensureDeferred
    async def test_fileArrivesByteExact(self, network: Network, bigFile: Path) -> None:
        """
        A client receives exactly the file's bytes (same SHA-256), and the
        server closes the connection cleanly after exactly the file's size.
        """
        content = bigFile.read_bytes()
        factory = RecordingFactory(lambda: openFile(str(bigFile)), chunkSize=64 * 1024)
        port = await network.listen(factory)
        client = await network.connect(port, Client())

        reason = await _within(client.lost, "the stream to end")

        assert isinstance(reason, ConnectionDone)
        assert client.received == len(content)
        assert client.sha256.digest() == hashlib.sha256(content).digest()
        server = await factory.connection()
        await _within(server.lost, "the server connection to close")
        assert server.producer.bytesSent == len(content)
        assert factory.sources[0].closes == 1
        assert _openDescriptorsOf(bigFile) == []

    @ensureDeferred
    async def test_fileLimitSendsPrefix(self, network: Network, bigFile: Path) -> None:
        """
        With a limit smaller than the file, a client receives exactly the
        file's first C{limit} bytes and the connection then closes cleanly.
        """
        limit = 2**20 + 1
        content = bigFile.read_bytes()
        factory = RecordingFactory(
            lambda: openFile(str(bigFile)), chunkSize=64 * 1024, limit=limit
        )
        port = await network.listen(factory)
        client = await network.connect(port, Client(keep=True))

        reason = await _within(client.lost, "the stream to end")

        assert isinstance(reason, ConnectionDone)
        assert client.content() == content[:limit]


# Twisted's ssl: server endpoint hands pyOpenSSL X509 and PKey objects to
# pyOpenSSL, which deprecates that: a Twisted matter, not this package's.
@pytest.mark.filterwarnings(
    "ignore:Passing pyOpenSSL (X509|PKey) objects is deprecated:DeprecationWarning"
)
class TLSTests:
    """
    Streams over TLS, the listener being an C{ssl:} endpoint string.
    """

    @ensureDeferred
    async def test_fileOverTLS(
        self,
        network: Network,
        tlsFiles: TLSFiles,
        bigFile: Path,
        logEvents: list[LogEvent],
    ) -> None:
        """
        A TLS client that verifies the server's certificate receives exactly
        the first C{limit} bytes of the file, byte-exact, and the connection
        then closes cleanly.
        """
        limit = 3 * 2**20 + 5
        content = bigFile.read_bytes()[:limit]
        factory = RecordingFactory(
            lambda: openFile(str(bigFile)), chunkSize=64 * 1024, limit=limit
        )
        port = await network.listen(factory, tlsFiles.serverEndpoint())
        client = await network.connect(port, Client(), tls=tlsFiles.trustRoot())

        reason = await _within(client.lost, "the stream to end")

        assert isinstance(reason, ConnectionDone)
        assert client.received == limit
        assert client.sha256.digest() == hashlib.sha256(content).digest()
        server = await factory.connection()
        await _within(server.lost, "the server connection to close")
        assert server.producer.state == "finished"
        assert factory.sources[0].closes == 1
        [event] = _streamEnded(logEvents)
        assert event["reason"] == "complete"
        assert event["bytes"] == limit

    @ensureDeferred
    async def test_zeroOverTLS(self, network: Network, tlsFiles: TLSFiles) -> None:
        """
        A TLS client receives exactly C{limit} zero bytes and the connection
        then closes cleanly.
        """
        limit = 2 * 2**20 + 3
        factory = RecordingFactory(ZeroSource, chunkSize=256 * 1024, limit=limit)
        port = await network.listen(factory, tlsFiles.serverEndpoint())
        client = await network.connect(port, Client(), tls=tlsFiles.trustRoot())

        reason = await _within(client.lost, "the stream to end")

        assert isinstance(reason, ConnectionDone)
        assert client.received == limit
        assert client.sha256.digest() == hashlib.sha256(bytes(limit)).digest()

    @ensureDeferred
    async def test_emptyFileOverTLS(
        self,
        network: Network,
        tlsFiles: TLSFiles,
        tmp_path: Path,
        logEvents: list[LogEvent],
    ) -> None:
        """
        A TLS client of an empty file receives nothing and a clean close, and
        the server logs the stream as complete.
        """
        empty = tmp_path / "empty"
        empty.write_bytes(b"")
        factory = RecordingFactory(lambda: openFile(str(empty)), chunkSize=64 * 1024)
        port = await network.listen(factory, tlsFiles.serverEndpoint())
        client = await network.connect(port, Client(), tls=tlsFiles.trustRoot())

        reason = await _within(client.lost, "the stream to end")
        server = await factory.connection()
        await _within(server.lost, "the server connection to close")

        assert client.received == 0
        [event] = _streamEnded(logEvents)
        assert event["reason"] == "complete"
        assert isinstance(reason, ConnectionDone)

    @ensureDeferred
    async def test_pausedTLSClientPausesProducer(
        self, network: Network, tlsFiles: TLSFiles
    ) -> None:
        """
        A TLS client that stops reading makes the server's producer pause and
        stop reading its source; when it reads again it gets the whole
        C{limit}.
        """
        limit = 64 * 2**20
        factory = RecordingFactory(ZeroSource, chunkSize=64 * 1024, limit=limit)
        port = await network.listen(factory, tlsFiles.serverEndpoint())
        client = await network.connect(
            port, Client(pauseAfter=256 * 1024), tls=tlsFiles.trustRoot()
        )
        server = await factory.connection()
        source = factory.sources[0]

        await _within(client.pausedReading, "the client to stop reading")
        await _waitUntilStalled(server, source)
        readsWhenPaused = source.reads
        await _quietPeriod()
        assert server.producer.state == "paused"
        assert source.reads == readsWhenPaused

        client.reading().resumeProducing()
        reason = await _within(client.lost, "the stream to end")

        assert isinstance(reason, ConnectionDone)
        assert client.received == limit


class HalfCloseTests:
    """
    A client that shuts down its sending side still gets the whole stream.
    """

    @ensureDeferred
    async def test_halfClosedClientGetsWholeStream(self, network: Network) -> None:
        """
        A client that shuts down writing as soon as it connects receives
        exactly C{limit} bytes, then the server's end of the stream.
        """
        limit = 4 * 2**20 + 1
        factory = RecordingFactory(ZeroSource, chunkSize=64 * 1024, limit=limit)
        port = await network.listen(factory)
        client = await network.connect(port, HalfClosingClient())
        assert isinstance(client, HalfClosingClient)

        reason = await _within(client.lost, "the stream to end")

        assert isinstance(reason, ConnectionDone)
        assert client.readClosed
        assert client.received == limit
        assert client.sha256.digest() == hashlib.sha256(bytes(limit)).digest()
        server = await factory.connection()
        await _within(server.lost, "the server connection to close")
        assert server.producer.state == "finished"


class CloseTests:
    """
    The server closes a finished stream without losing the end of it.
    """

    @ensureDeferred
    async def test_chattyClientGetsWholeStream(
        self, network: Network, logEvents: list[LogEvent]
    ) -> None:
        """
        A client that keeps sending while it reads (its bytes are read and
        discarded) receives exactly C{limit} bytes and a clean close, as the
        server's log says.
        """
        limit = 16 * 2**20
        factory = RecordingFactory(ZeroSource, chunkSize=64 * 1024, limit=limit)
        port = await network.listen(factory)
        client = await network.connect(port, ChattyClient())

        reason = await _within(client.lost, "the stream to end")
        server = await factory.connection()
        await _within(server.lost, "the server connection to close")

        [event] = _streamEnded(logEvents)
        assert event["reason"] == "complete"
        assert event["bytes"] == limit
        assert client.received == limit
        assert isinstance(reason, ConnectionDone)

    @ensureDeferred
    async def test_slowClientOutlastsLinger(
        self, network: Network, logEvents: list[LogEvent]
    ) -> None:
        """
        A client that reads nothing until the server has given up waiting for
        it to close (after L{LINGER_SECONDS}) still receives the whole stream
        and then a clean close; the stream is logged as complete.
        """
        limit = 2**20 + 3
        factory = RecordingFactory(ZeroSource, chunkSize=64 * 1024, limit=limit)
        port = await network.listen(factory)
        client = await network.connect(port, Client(pauseAfter=1))
        server = await factory.connection()

        await _within(server.lost, "the server to stop lingering")
        assert client.received < limit
        client.reading().resumeProducing()
        reason = await _within(client.lost, "the stream to end")

        assert isinstance(reason, ConnectionDone)
        assert client.received == limit
        [event] = _streamEnded(logEvents)
        assert event["reason"] == "complete"
        assert event["bytes"] == limit
        assert event["seconds"] >= LINGER_SECONDS


class ManyClientsTests:
    """
    Concurrent clients each get their own stream.
    """

    @ensureDeferred
    async def test_manyClientsEachGetWholeStream(self, network: Network) -> None:
        """
        Twenty clients connected at once each receive their own complete
        chargen stream: exactly C{limit} bytes of the repeated RFC 864
        period, from the start of the pattern, on a source of their own.
        """
        count = 20
        limit = 2**20 + 1001
        period = len(CHARGEN_PERIOD)
        expected = (CHARGEN_PERIOD * (limit // period + 1))[:limit]
        factory = RecordingFactory(ChargenSource, chunkSize=16 * 1024, limit=limit)
        port = await network.listen(factory)
        clients = [Client(keep=True) for _ in range(count)]
        for client in clients:
            await network.connect(port, client)
            # Hold every stream open until all clients are connected.
            client.reading().pauseProducing()
        await factory.connection(count)
        assert all(not client.lost.called for client in clients)
        assert len({id(source) for source in factory.sources}) == count

        for client in clients:
            client.reading().resumeProducing()
        for client in clients:
            reason = await _within(client.lost, "a stream to end")
            assert isinstance(reason, ConnectionDone)
            assert client.received == limit
            assert client.content() == expected
        assert all(source.closes == 1 for source in factory.sources)


class LogTests:
    """
    Every connection logs one "stream ended" event with structured fields.
    """

    @ensureDeferred
    async def test_completeStreamLogged(
        self, network: Network, logEvents: list[LogEvent]
    ) -> None:
        """
        A finished stream logs one "stream ended" event from
        C{twisted_zero._protocol} with the peer's address, the source, the
        bytes sent, the seconds taken and the reason C{"complete"}.
        """
        limit = 2**20
        factory = RecordingFactory(ZeroSource, chunkSize=64 * 1024, limit=limit)
        port = await network.listen(factory)
        client = await network.connect(port, Client())
        peer = _address(client.connection().getHost())
        await _within(client.lost, "the stream to end")
        server = await factory.connection()
        await _within(server.lost, "the server connection to close")

        [event] = _streamEnded(logEvents)
        assert event["log_namespace"].startswith("twisted_zero._protocol")
        assert event["peer"] == peer
        assert event["source"] == "zero"
        assert event["bytes"] == limit
        assert isinstance(event["seconds"], float)
        assert 0 <= event["seconds"] < DEADLINE
        assert event["reason"] == "complete"
        assert "complete" in formatEvent(event)

    @ensureDeferred
    async def test_disconnectLogged(
        self, network: Network, logEvents: list[LogEvent]
    ) -> None:
        """
        A client that disconnects mid-stream is logged with the bytes sent
        until then and the reason C{"client reset"} or C{"client closed"}.
        """
        factory = RecordingFactory(ChargenSource, chunkSize=64 * 1024)
        port = await network.listen(factory)
        client = await network.connect(port, Client(pauseAfter=64 * 1024))
        peer = _address(client.connection().getHost())
        server = await factory.connection()
        await _within(client.pausedReading, "the client to stop reading")
        client.connection().loseConnection()
        await _within(server.lost, "the server connection to close")

        [event] = _streamEnded(logEvents)
        assert event["peer"] == peer
        assert event["source"] == "chargen"
        assert event["bytes"] == server.producer.bytesSent > 0
        assert 0 <= event["seconds"] < DEADLINE
        assert event["reason"] in ("client reset", "client closed")
