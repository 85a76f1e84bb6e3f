"""
Tests for direct sends (L{twisted_zero._outlet}): the producer sending to
the socket under its consumer, over a real socket pair wrapped in Twisted's
own socket transport on a memory reactor, driven by hand.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import HTTPChannel, Request
from twisted.web.resource import Resource
from zope.interface import implementer

from twisted_zero import _kernel
from twisted_zero._httpoutlet import requestOutlet
from twisted_zero._limits import Throttle, TokenBucket
from twisted_zero._outlet import SocketOutlet, transportOutlet
from twisted_zero._producer import ConnectionBroken, StreamProducer, StreamStopped
from twisted_zero._protocol import StreamFactory
from twisted_zero._resources import makeResource
from twisted_zero._send import CONSUMER_WRITE_SIZE, MAX_HELD
from twisted_zero._site import StreamSite
from twisted_zero._sources import (
    CHARGEN_PERIOD,
    ChargenSource,
    FileSource,
    IRewindableSource,
    ISendfileSource,
    ISource,
    RandomSource,
    SourceTruncated,
    TimedSource,
    ZeroSource,
    openFile,
)
from twisted_zero._unsent import limitUnsent

from .helpers import ManualThreads, SlowSource, manualPool, parseResponses
from .sockets import BUFFER, Pair, countSendfiles, getFile


@pytest.fixture
def pair() -> Iterator[Pair]:
    pair = Pair()
    yield pair
    pair.close()


@implementer(ISendfileSource, IRewindableSource)
class CountingSource:
    """
    A file source that counts its reads, rewinds and C{sendfile()} calls,
    and can be told to make C{sendfile()} fail.
    """

    def __init__(self, source: FileSource, error: int | None = None) -> None:
        self._source = source
        self.description = source.description
        self.chunkSize = source.chunkSize
        self.reads: list[int] = []
        self.rewound: list[int] = []
        self.sends = 0
        self.closed = False
        self._error = error

    def read(self, maxBytes: int) -> bytes:
        assert not self.closed, "read after close"
        self.reads.append(maxBytes)
        return self._source.read(maxBytes)

    def sendTo(self, socket: int, maxBytes: int) -> int | None:
        assert not self.closed, "sendfile after close"
        self.sends += 1
        if self._error is not None:
            raise OSError(self._error, os.strerror(self._error))
        return self._source.sendTo(socket, maxBytes)

    def rewind(self, count: int) -> None:
        self.rewound.append(count)
        self._source.rewind(count)

    def fail(self, error: int | None) -> None:
        """
        Make C{sendfile()} fail with C{error} from now on (L{None}: not).
        """
        self._error = error

    def close(self) -> None:
        self.closed = True
        self._source.close()


def writeFile(tmp_path: Path, size: int) -> tuple[str, bytes]:
    content = os.urandom(size)
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    return str(path), content


def results(done: Deferred[int]) -> list[int | Failure]:
    outcome: list[int | Failure] = []
    done.addBoth(outcome.append)
    return outcome


class FileSendsTests:
    def test_exactBytes(self, pair: Pair, tmp_path: Path) -> None:
        """
        A file goes from the file to the socket with C{sendfile()}, byte for
        byte, pausing whenever the socket is full; the result is its size.
        """
        path, content = writeFile(tmp_path, 3 * 2**20 + 7)
        source = CountingSource(openFile(path))
        producer = StreamProducer(source=source, clock=pair.reactor)
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        assert producer.state == "paused"  # the socket pair holds far less
        received = pair.pump()
        assert received == content
        assert outcome == [len(content)]
        assert source.sends > 1 and source.closed
        # Reads: one byte each time the socket was full, nothing else.
        assert source.reads and set(source.reads) == {1}
        assert len(source.reads) < source.sends
        assert pair.transport.producer is None

    def test_nothingWhilePaused(self, pair: Pair, tmp_path: Path) -> None:
        """
        Once the socket is full, nothing is sent or read until the transport
        has sent what it holds.
        """
        path, content = writeFile(tmp_path, 2**20)
        source = CountingSource(openFile(path))
        producer = StreamProducer(source=source, clock=pair.reactor)
        producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        assert producer.state == "paused"
        sends, reads = source.sends, len(source.reads)
        for _ in range(5):  # the client reads nothing
            pair.turn()
            pair.reactor.advance(1)
        assert (source.sends, len(source.reads)) == (sends, reads)
        # The transport holds the one byte that pauses the producer.
        assert (
            pair.transport.dataBuffer + b"".join(pair.transport._tempDataBuffer)
            == content[producer.bytesSent - 1 : producer.bytesSent]
        )
        producer.stopProducing()

    def test_stopped(self, pair: Pair, tmp_path: Path) -> None:
        """
        When the connection is lost the file is closed at once and nothing
        more is sent or read.
        """
        path, _ = writeFile(tmp_path, 2**20)
        source = CountingSource(openFile(path))
        producer = StreamProducer(source=source, clock=pair.reactor)
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        pair.receive()
        pair.transport.connectionLost(Failure(ConnectionError()))
        assert source.closed
        sends, reads = source.sends, len(source.reads)
        for _ in range(5):
            pair.turn()
        assert (source.sends, len(source.reads)) == (sends, reads)
        [failure] = outcome
        assert isinstance(failure, Failure) and failure.check(StreamStopped)

    def test_clientGone(self, pair: Pair, tmp_path: Path) -> None:
        """
        A client that goes while the producer waits for room: the transport
        finds out, and the stream stops with nothing more sent or read.
        """
        path, _ = writeFile(tmp_path, 4 * 2**20)
        source = CountingSource(openFile(path))
        producer = StreamProducer(source=source, clock=pair.reactor)
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        pair.receive()
        sends, reads = source.sends, len(source.reads)
        pair.client.close()
        for _ in range(10):
            pair.turn()
        [failure] = outcome
        assert isinstance(failure, Failure) and failure.check(StreamStopped)
        assert source.closed and not pair.transport.connected
        assert (source.sends, len(source.reads)) == (sends, reads)

    def test_clientGoneFirst(self, pair: Pair, tmp_path: Path) -> None:
        """
        A direct send that finds the connection gone, before the transport
        does, stops the stream at once with nothing read: the result is
        L{ConnectionBroken}, the file is closed, and the connection is left
        to the producer's owner to drop.
        """
        path, _ = writeFile(tmp_path, 2**20)
        source = CountingSource(openFile(path))
        producer = StreamProducer(source=source, clock=pair.reactor)
        pair.client.close()
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        assert producer.state == "stopped"
        [failure] = outcome
        assert isinstance(failure, Failure) and failure.check(ConnectionBroken)
        assert source.closed and source.sends == 1 and not source.reads
        assert pair.transport.connected and not pair.transport._aborting
        pair.reactor.advance(0)
        assert source.sends == 1 and not source.reads

    def test_noBuffers(self, pair: Pair, tmp_path: Path) -> None:
        """
        C{ENOBUFS} from C{sendfile()} means no room for now, as Twisted's
        transports take it: the producer waits for room, and goes on.
        """
        path, content = writeFile(tmp_path, 2**20)
        source = CountingSource(openFile(path), error=errno.ENOBUFS)
        producer = StreamProducer(source=source, clock=pair.reactor)
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        assert producer.state == "paused" and source.reads == [1]
        source.fail(None)
        assert pair.pump() == content
        assert outcome == [len(content)]

    def test_bufferedFile(self, pair: Pair, tmp_path: Path) -> None:
        """
        A file object that buffers what it reads is sent from where it is,
        not from where its descriptor is.
        """
        path, content = writeFile(tmp_path, 3 * 2**20)
        source = FileSource(file=open(path, "rb"), length=len(content))  # noqa: SIM115
        producer = StreamProducer(source=source, clock=pair.reactor)
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        assert pair.pump() == content
        assert outcome == [len(content)]

    def test_lostBeforeStart(self, pair: Pair, tmp_path: Path) -> None:
        """
        Started on a connection already lost, the producer stops at once:
        the result is L{StreamStopped} and the file is closed, unread.
        """
        path, _ = writeFile(tmp_path, 2**20)
        source = CountingSource(openFile(path))
        pair.transport.connectionLost(Failure(ConnectionDone()))
        producer = StreamProducer(source=source, clock=pair.reactor)
        [failure] = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        assert isinstance(failure, Failure) and failure.check(StreamStopped)
        assert source.closed and source.sends == 0 and not source.reads

    def test_unsupported(self, pair: Pair, tmp_path: Path) -> None:
        """
        Where C{sendfile()} cannot send from the file, the file is read and
        its bytes sent instead.
        """
        path, content = writeFile(tmp_path, 2**20 + 3)
        source = CountingSource(openFile(path), error=errno.EINVAL)
        producer = StreamProducer(source=source, clock=pair.reactor)
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        assert pair.pump() == content
        assert outcome == [len(content)]
        assert source.sends == 1 and len(source.reads) > 1

    def test_fileFails(self, pair: Pair, tmp_path: Path) -> None:
        """
        Any other error of C{sendfile()} fails the stream with it.
        """
        path, _ = writeFile(tmp_path, 2**20)
        source = CountingSource(openFile(path), error=errno.EIO)
        producer = StreamProducer(source=source, clock=pair.reactor)
        [failure] = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        assert isinstance(failure, Failure) and failure.check(OSError)
        assert isinstance(failure.value, OSError) and failure.value.errno == errno.EIO
        assert source.closed and not source.reads

    def test_truncated(self, pair: Pair, tmp_path: Path) -> None:
        """
        A file that shrinks while it is sent fails the stream with
        L{SourceTruncated}, without hanging or padding.
        """
        path, content = writeFile(tmp_path, 2**20)
        producer = StreamProducer(source=openFile(path), clock=pair.reactor)
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        os.truncate(path, producer.bytesSent + 10)
        received = pair.pump()
        assert received == content[: len(received)]
        assert len(received) <= producer.bytesSent + 10
        [failure] = outcome
        assert isinstance(failure, Failure) and failure.check(SourceTruncated)

    def test_sendfileOff(self, pair: Pair, tmp_path: Path) -> None:
        """
        With C{sendfile=False} the file is read and sent directly.
        """
        path, content = writeFile(tmp_path, 2**20 + 5)
        source = CountingSource(openFile(path))
        producer = StreamProducer(source=source, clock=pair.reactor, sendfile=False)
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        assert pair.pump() == content
        assert outcome == [len(content)]
        assert source.sends == 0

    def test_offsetAndLimit(self, pair: Pair, tmp_path: Path) -> None:
        """
        A run from an offset of the file, under a limit, is sent exactly.
        """
        path, content = writeFile(tmp_path, 2**20)
        source = openFile(path, offset=1000, length=500_000)
        producer = StreamProducer(source=source, clock=pair.reactor, limit=400_001)
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        assert pair.pump() == content[1000:401_001]
        assert outcome == [400_001]

    def test_throttled(self, pair: Pair, tmp_path: Path) -> None:
        """
        C{sendfile()} takes no more than the throttle allows, and what the
        socket did not take is given back.
        """
        path, content = writeFile(tmp_path, 300_000)
        bucket = TokenBucket(clock=pair.reactor, rate=100_000, burst=100_000)
        producer = StreamProducer(
            source=openFile(path),
            clock=pair.reactor,
            throttle=Throttle(buckets=[bucket]),
        )
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        received = pair.pump()
        assert received == content[:100_000]
        for _ in range(3):
            pair.reactor.advance(1)
            received += pair.pump()
        assert received == content and outcome == [len(content)]

    def test_readFails(self, pair: Pair, tmp_path: Path) -> None:
        """
        A source that fails when read for the byte that waits for room fails
        the stream.
        """
        path, _ = writeFile(tmp_path, 2**20)
        source = CountingSource(openFile(path), error=errno.EAGAIN)

        def failingRead(maxBytes: int) -> bytes:
            raise ZeroDivisionError("division by zero")

        source.read = failingRead  # type: ignore[method-assign]  # a source whose read fails
        producer = StreamProducer(source=source, clock=pair.reactor)
        [failure] = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        assert isinstance(failure, Failure) and failure.check(ZeroDivisionError)
        assert source.closed


class ChunkSendsTests:
    def test_order(self, pair: Pair) -> None:
        """
        Chunks sent directly keep the stream in order across full sockets:
        the chargen pattern arrives intact.
        """
        size = 5 * 2**20 + 11
        producer = StreamProducer(
            source=ChargenSource(), clock=pair.reactor, limit=size
        )
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        received = pair.pump()
        periods = size // len(CHARGEN_PERIOD) + 1
        assert received == (CHARGEN_PERIOD * periods)[:size]
        assert outcome == [size]

    def test_clientGoneFirst(self, pair: Pair) -> None:
        """
        A direct send of a chunk that finds the connection gone stops the
        stream at once, with L{ConnectionBroken}; dropping the connection is
        left to the producer's owner.
        """
        producer = StreamProducer(source=ChargenSource(), clock=pair.reactor)
        pair.client.close()
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        assert producer.state == "stopped" and producer.bytesSent == 0
        [failure] = outcome
        assert isinstance(failure, Failure) and failure.check(ConnectionBroken)
        assert pair.transport.connected and not pair.transport._aborting

    def test_closingWithChunkInHand(self, pair: Pair) -> None:
        """
        A connection that starts closing while the producer holds the rest
        of a chunk gets that rest through the transport, in order.
        """
        size = 2**20
        producer = StreamProducer(
            source=ChargenSource(), clock=pair.reactor, limit=size
        )
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        assert producer.state == "paused"
        pair.transport.loseConnection()
        received = pair.pump()
        assert received == (CHARGEN_PERIOD * 150)[:size]
        assert outcome == [size]

    def test_transportThatDoesNotPause(self, pair: Pair) -> None:
        """
        A transport that does not pause the producer for the byte it is
        handed gets ordinary writes from then on: nothing is lost or out of
        order.
        """
        pair.transport._maybePauseProducer = lambda: None  # type: ignore[method-assign]  # a transport that never pauses its producer
        size = 2**20
        producer = StreamProducer(
            source=ChargenSource(), clock=pair.reactor, limit=size
        )
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        received = pair.pump()
        assert received == (CHARGEN_PERIOD * 150)[:size]
        assert outcome == [size]

    def test_noOutlet(self, pair: Pair) -> None:
        """
        Without an outlet every byte goes through the transport, even on a
        transport that allows direct sends.
        """
        producer = StreamProducer(
            source=ChargenSource(), clock=pair.reactor, limit=300_000
        )
        producer.startStreaming(pair.transport)
        assert pair.receive() == b""  # nothing sent before the transport's turn
        received = pair.pump()
        assert received == (CHARGEN_PERIOD * 50)[:300_000]

    def test_timed(self, pair: Pair) -> None:
        """
        A timed source that cannot send from a file is read and sent until
        its deadline.
        """
        source = TimedSource(source=ZeroSource(), clock=pair.reactor, seconds=1)
        producer = StreamProducer(source=source, clock=pair.reactor)
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        received = pair.pump(turns=20)
        assert len(received) > 2**20 and received == bytes(len(received))
        assert not outcome
        pair.reactor.advance(1)
        received += pair.pump()
        assert outcome == [len(received)]

    def test_throttled(self, pair: Pair) -> None:
        """
        Direct sends take no more than the throttle allows.
        """
        bucket = TokenBucket(clock=pair.reactor, rate=100_000, burst=100_000)
        producer = StreamProducer(
            source=ZeroSource(),
            clock=pair.reactor,
            throttle=Throttle(buckets=[bucket]),
            limit=350_000,
        )
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        received = len(pair.pump())
        assert received == 100_000
        for second in range(1, 4):
            pair.reactor.advance(1)
            received += len(pair.pump())
            assert received == min(100_000 * (second + 1), 350_000)
        assert outcome == [350_000]


def pumpWithThreads(
    pair: Pair, threads: ManualThreads, outcome: list[int | Failure]
) -> bytes:
    """
    Run the threads' calls and read as fast as a client can, until the
    stream has an outcome; what the client received.
    """
    received = b""
    for _ in range(1000):
        threads.runAll()
        received += pair.pump()
        if outcome:
            break
    return received


class ThreadedSendsTests:
    def test_readsChunkBeforeRoom(self, pair: Pair) -> None:
        """
        When an HTTP response's headers are still to be written and the
        next bytes must be read in a thread, a whole chunk is read there,
        not the single byte that makes the transport pause: a hop to a
        thread is worth more, and the socket has room.
        """
        pool, threads = manualPool()
        content = os.urandom(50_000)
        source = SlowSource(content)
        request = chunkedRequest(pair)
        request.setHeader(b"content-length", b"%d" % len(content))
        producer = StreamProducer(source=source, clock=pair.reactor, ioPool=pool)
        done = producer.startStreaming(request, requestOutlet(request))
        outcome = results(done)
        done.addCallback(lambda sent: request.finish())
        [response] = parseResponses(pumpWithThreads(pair, threads, outcome))
        assert response.body == content
        assert outcome == [len(content)]
        assert set(source.asked) == {source.chunkSize}

    def test_byteAloneAfterBytesHeld(self, pair: Pair) -> None:
        """
        When the transport holds bytes for another reason (here, written
        before), the socket may be full: only the byte that makes the
        transport pause is read.
        """
        pool, threads = manualPool()
        source = SlowSource(os.urandom(5000))
        producer = StreamProducer(source=source, clock=pair.reactor, ioPool=pool)
        pair.transport.write(b"head")
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        threads.runAll()
        assert source.asked == [1]
        pumpWithThreads(pair, threads, outcome)
        assert outcome == [5000]


class OutletTests:
    def test_notASocket(self) -> None:
        """
        An in-memory transport has no socket to send to.
        """
        assert transportOutlet(StringTransport()) is None

    def test_tls(self, pair: Pair) -> None:
        """
        A transport that has started TLS gets no direct sends.
        """
        pair.transport.TLS = True
        assert transportOutlet(pair.transport) is None

    def test_buffered(self, pair: Pair) -> None:
        """
        Nothing is sent directly past bytes in the transport's buffer, nor
        once the connection is closing.
        """
        outlet = transportOutlet(pair.transport)
        assert outlet is not None and outlet.usable() and outlet.ready()
        pair.transport.write(b"x")
        assert outlet.usable() and not outlet.ready()
        pair.transport.doWrite()
        assert outlet.ready()
        pair.transport.loseConnection()
        assert not outlet.usable()

    def test_request(self, pair: Pair) -> None:
        """
        An HTTP request gets direct sends once its headers have gone: on
        HTTP/1.1 with a C{Content-Length} or without (chunks the outlet
        frames), on HTTP/1.0 with or without (the body then ends at the
        close).
        """
        channel = HTTPChannel()
        channel.makeConnection(pair.transport)
        for version, length in [
            (b"HTTP/1.1", True),
            (b"HTTP/1.1", False),
            (b"HTTP/1.0", False),
        ]:
            request = Request(channel)
            request.method, request.clientproto = b"GET", version
            if length:
                request.setHeader(b"content-length", b"10")
            outlet = requestOutlet(request)
            assert outlet is not None and outlet.usable() and not outlet.ready()
            request.write(b"")
            assert not outlet.ready()  # the headers wait in the transport
            pair.transport.doWrite()
            assert outlet.usable() and outlet.ready()

    @pytest.mark.parametrize(
        "prepare",
        [
            pytest.param(lambda r: setattr(r, "method", b"HEAD"), id="HEAD"),
            pytest.param(lambda r: r.setResponseCode(204), id="204"),
            pytest.param(lambda r: r.setResponseCode(304), id="304"),
            pytest.param(lambda r: setattr(r, "_encoder", object()), id="gzip"),
            pytest.param(lambda r: setattr(r, "_inFakeHead", True), id="fake HEAD"),
            pytest.param(
                lambda r: setattr(r, "__class__", RewritingRequest), id="rewritten"
            ),
        ],
    )
    def test_bodyNotAsWritten(
        self, pair: Pair, prepare: Callable[[Request], None]
    ) -> None:
        """
        A response whose body is not what it is given, or not sent at all,
        gets no direct sends: bytes sent past the request would skip its
        encoding, its framing or its C{write}.
        """
        channel = HTTPChannel()
        channel.site = server.Site(Resource())  # type: ignore[attr-defined]  # as Site.buildProtocol sets it
        channel.makeConnection(pair.transport)
        request = server.Request(channel)
        request.method, request.clientproto = b"GET", b"HTTP/1.1"
        request.setHeader(b"content-length", b"10")
        assert requestOutlet(request) is not None
        prepare(request)
        assert requestOutlet(request) is None


class RewritingRequest(Request):
    def write(self, data: bytes) -> None:
        Request.write(self, data.upper())


class ProtocolTests:
    def test_clientGoneFirst(self) -> None:
        """
        When a direct send finds the connection gone before the transport
        does, the raw protocol drops the connection at once, and logs the
        stream as reset by the client.
        """
        reactor = MemoryReactorClock()
        factory = StreamFactory(sourceFactory=ChargenSource, clock=reactor)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        pair = Pair(reactor=reactor)
        pair.client.close()
        try:
            with capturedLogs() as events:
                pair.protocol = pair.transport.protocol = protocol
                protocol.makeConnection(pair.transport)
                assert pair.transport._aborting
                reactor.advance(0)
            assert not pair.transport.connected
        finally:
            pair.close()
        [ended] = [e for e in events if "reason" in e]
        assert ended["reason"] == "client reset" and ended["bytes"] == 0

    def test_sendfile(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        The raw protocol sends a file with C{sendfile()} unless its factory
        says not to.
        """
        sendfiles = countSendfiles(monkeypatch)
        path, content = writeFile(tmp_path, 2**20)
        for sendfile, used in [(False, False), (True, True)]:
            reactor = MemoryReactorClock()
            factory = StreamFactory(
                sourceFactory=partial(openFile, path), clock=reactor, sendfile=sendfile
            )
            protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
            pair = Pair(protocol, reactor)
            try:
                assert pair.pump() == content
            finally:
                pair.close()
            assert bool(sendfiles) is used


class HTTPTests:
    def test_noSendfile(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        With C{sendfile=False}, files are read and sent.
        """
        sendfiles = countSendfiles(monkeypatch)
        content = os.urandom(2**20)
        (tmp_path / "data.bin").write_bytes(content)
        reactor = MemoryReactorClock()
        for sendfile, used in [(False, False), (True, True)]:
            resource = makeResource(
                clock=reactor, root=str(tmp_path), sendfile=sendfile
            )
            site = StreamSite(resource, reactor=reactor)
            assert getFile(site, reactor) == content
            assert bool(sendfiles) is used

    def test_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        Through the real site, file responses go out sent directly, headers
        first, in order with pipelined requests, and each request counts the
        bytes of its body.
        """
        sendfiles = countSendfiles(monkeypatch)
        root = tmp_path / "root"
        root.mkdir()
        content = os.urandom(3 * 2**20)
        (root / "data.bin").write_bytes(content)
        reactor = MemoryReactorClock()
        site = StreamSite(makeResource(clock=reactor, root=str(root)), reactor=reactor)
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        assert channel is not None
        pair = Pair(channel, reactor)
        try:
            requests = [
                b"GET /files/data.bin HTTP/1.1\r\nHost: t\r\n\r\n",
                b"GET /files/data.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=5-99,200-\r\n\r\n",
                b"GET /chargen?bytes=1M HTTP/1.1\r\nHost: t\r\n\r\n",
            ]
            with capturedLogs() as events:
                channel.dataReceived(b"".join(requests))
                whole, ranges, chargen = parseResponses(pair.pump())
        finally:
            pair.close()
        assert len(sendfiles) > 2
        logged = [event["bytes"] for event in events if "bytes" in event]
        assert logged == [len(r.body) for r in (whole, ranges, chargen)]
        assert whole.status == 200 and whole.body == content
        assert ranges.status == 206
        assert content[5:100] in ranges.body and content[200:] in ranges.body
        assert chargen.body == (CHARGEN_PERIOD * 150)[: 2**20]

    def test_stalled(self, tmp_path: Path) -> None:
        """
        For a client that reads nothing, the transport holds the headers and
        one byte of the body: the rest waits in the file, not in memory.
        """
        (tmp_path / "data.bin").write_bytes(os.urandom(8 * 2**20))
        reactor = MemoryReactorClock()
        site = StreamSite(
            makeResource(clock=reactor, root=str(tmp_path)), reactor=reactor
        )
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        assert channel is not None
        pair = Pair(channel, reactor)
        try:
            channel.dataReceived(b"GET /files/data.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            transport = pair.transport
            held = transport.dataBuffer[transport.offset :] + b"".join(
                transport._tempDataBuffer
            )
            headers, _, body = held.partition(b"\r\n\r\n")
            assert headers.startswith(b"HTTP/1.1 200 OK\r\n") and len(body) == 1
            for _ in range(20):
                pair.turn()
            # Twisted declares the channel's request producer None: it is ours.
            producer = cast(StreamProducer, cast(HTTPChannel, channel)._requestProducer)
            assert producer.state == "paused"
            unsent = (
                len(transport.dataBuffer) - transport.offset + transport._tempDataLen
            )
            assert unsent == 1
        finally:
            pair.close()


def chunkedRequest(pair: Pair) -> Request:
    """
    An HTTP/1.1 request on C{pair}'s transport with no C{Content-Length}:
    its body goes in chunks.
    """
    channel = HTTPChannel()
    channel.makeConnection(pair.transport)
    request = Request(channel)
    channel.requests.append(request)
    request.method, request.clientproto = b"GET", b"HTTP/1.1"
    return request


def streamChunked(
    pair: Pair, size: int, source: ISource | None = None
) -> tuple[bytes, list[int | Failure]]:
    """
    Stream C{size} bytes of C{source} (chargen by default) in chunks to
    C{pair}'s client, reading as fast as it can; the body the client
    decodes, and the outcome.
    """
    request = chunkedRequest(pair)
    producer = StreamProducer(
        source=ChargenSource() if source is None else source,
        clock=pair.reactor,
        limit=size,
    )
    done = producer.startStreaming(request, requestOutlet(request))
    outcome = results(done)
    done.addCallback(lambda sent: request.finish())
    [response] = parseResponses(pair.pump())
    assert response.headers["transfer-encoding"] == "chunked"
    return response.body, outcome


class ChunkedSendsTests:
    def test_framed(self, pair: Pair) -> None:
        """
        A chunked body is sent directly in frames of its own, across full
        sockets, and ends as HTTP/1.1 says: the chargen pattern decodes
        intact, and the request counts the body's bytes.
        """
        size = 3 * 2**20 + 7
        body, outcome = streamChunked(pair, size)
        assert body == (CHARGEN_PERIOD * (size // len(CHARGEN_PERIOD) + 1))[:size]
        assert outcome == [size]

    @pytest.mark.parametrize("kind", ["shared", "file"])
    @pytest.mark.parametrize("seed", range(16))
    def test_cutAnywhere(
        self,
        pair: Pair,
        seed: int,
        kind: str,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> None:
        """
        Whatever a send takes of a frame (part of its size line, of its
        data, of its closing CRLF, of the rest of a chunk owed and the next
        one), the frames on the wire stay whole, whether the rest of a
        chunk is kept (chargen's are shared) or given back to the source (a
        file's): the body decodes intact.
        """
        rng = random.Random(seed)
        monkeypatch.setattr(SocketOutlet, "room", lambda outlet: 2**30)
        realSendmsg = pair.server.sendmsg

        def sendmsg(buffers: list[bytes | memoryview]) -> int:
            wire = b"".join(buffers)
            if rng.random() < 0.3:
                raise BlockingIOError(errno.EAGAIN, "full")
            cut = rng.choice(
                [1, 2, 3, 5, 8, rng.randint(1, len(wire)), len(wire) - 1, len(wire)]
            )
            return realSendmsg([wire[: max(cut, 1)]])

        outlets: list[SocketOutlet] = []

        def wrap(outlet: SocketOutlet, real: SendMsg) -> SendMsg:
            outlets.append(outlet)
            return sendmsg

        patchSendmsg(monkeypatch, wrap)
        size = 40_000 + seed
        expected = (CHARGEN_PERIOD * 7)[:size]
        source: ISource = ChargenSource()
        if kind == "file":
            expected = os.urandom(size)
            (tmp_path / "data").write_bytes(expected)
            source = openFile(str(tmp_path / "data"))
        body, outcome = streamChunked(pair, size, source)
        assert outlets
        assert body == expected
        assert outcome == [size]

    def test_stalled(self, pair: Pair) -> None:
        """
        For a client that reads nothing, an endless chunked body holds
        almost nothing in the transport: its frames are in the socket.
        """
        request = chunkedRequest(pair)
        producer = StreamProducer(source=ZeroSource(), clock=pair.reactor)
        outcome = results(producer.startStreaming(request, requestOutlet(request)))
        for _ in range(20):
            pair.turn()
        assert producer.state == "paused" and producer.bytesSent > BUFFER
        transport = pair.transport
        unsent = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        assert unsent < 64
        producer.stopProducing()
        assert len(outcome) == 1

    def test_closingMidFrame(self, pair: Pair) -> None:
        """
        A connection that starts closing while a frame is cut gets the rest
        of that frame, then chunks framed by the request, in order.
        """
        request = chunkedRequest(pair)
        size = 2**20
        producer = StreamProducer(
            source=ChargenSource(), clock=pair.reactor, limit=size
        )
        done = producer.startStreaming(request, requestOutlet(request))
        outcome = results(done)
        done.addCallback(lambda sent: request.finish())
        assert producer.state == "paused"
        pair.transport.loseConnection()
        [response] = parseResponses(pair.pump())
        assert response.body == (CHARGEN_PERIOD * 150)[:size]
        assert outcome == [size]

    def test_site(self) -> None:
        """
        Through the site, an HTTP/1.1 stream of unknown length is chunked,
        sent directly, and decodes intact.
        """
        reactor = MemoryReactorClock()
        site = StreamSite(makeResource(clock=reactor), reactor=reactor)
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        assert channel is not None
        pair = Pair(channel, reactor)
        try:
            channel.dataReceived(
                b"GET /chargen?seconds=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                b"GET /zero?bytes=5 HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            received = pair.pump(turns=50)
            reactor.advance(1)
            received += pair.pump()
            timed, sized = parseResponses(received)
        finally:
            pair.close()
        assert timed.headers["transfer-encoding"] == "chunked"
        periods = len(timed.body) // len(CHARGEN_PERIOD) + 1
        assert len(timed.body) > 2**20
        assert timed.body == (CHARGEN_PERIOD * periods)[: len(timed.body)]
        assert sized.body == bytes(5)


@implementer(ISource)
class RecordingSource:
    """
    Random bytes, new for every read, with a record of the sizes read.
    """

    description = "recorded"
    chunkSize = 2 * 2**20

    def __init__(self) -> None:
        self.reads: list[int] = []

    def read(self, maxBytes: int) -> bytes:
        self.reads.append(maxBytes)
        return os.urandom(maxBytes)

    def close(self) -> None:
        pass


@implementer(IRewindableSource)
class RewindableSource(RecordingSource):
    """
    New random bytes for every read, that can be given back; it ends once
    told to.
    """

    ended = False

    def read(self, maxBytes: int) -> bytes:
        return b"" if self.ended else super().read(maxBytes)

    def rewind(self, count: int) -> None:
        pass


class FreshChunkTests:
    def test_sizedToRoom(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        A source whose chunks are new for each read is read no more than
        the socket has room for, as the kernel tells it, and not at all
        while it has none: once a client stops reading, the producer holds
        no more than the kernel's estimate was off by, not a chunk.
        """
        rooms: list[int | None] = []
        room = SocketOutlet.room

        def recordedRoom(outlet: SocketOutlet) -> int | None:
            rooms.append(room(outlet))
            return rooms[-1]

        monkeypatch.setattr(SocketOutlet, "room", recordedRoom)
        pair = Pair(tcp=True)
        try:
            source = RecordingSource()
            producer = StreamProducer(source=source, clock=pair.reactor)
            outcome = results(
                producer.startStreaming(pair.transport, transportOutlet(pair.transport))
            )
            for _ in range(20):
                pair.turn()
            assert producer.state == "paused"
            assert rooms and all(size is not None for size in rooms)
            # Each read is sized to the room found just before it; none is
            # made where there was none (the byte handed over aside).
            chunks = [size for size in source.reads if size > 1]
            roomy = [size for size in rooms if size]
            assert chunks == [min(size, source.chunkSize) for size in roomy]
            producer.stopProducing()
            assert len(outcome) == 1
        finally:
            pair.close()

    def test_unsentLimit(self) -> None:
        """
        On a socket whose unsent bytes are limited (C{--max-unsent}), new
        chunks are read no larger than what is left of that limit.
        """
        pair = Pair(tcp=True)
        try:
            limit = 32 * 1024
            assert limitUnsent(pair.transport, limit)
            outlet = transportOutlet(pair.transport)
            assert outlet is not None
            room = outlet.room()
            assert room is not None and 0 < room <= limit
            source = RecordingSource()
            producer = StreamProducer(source=source, clock=pair.reactor)
            outcome = results(
                producer.startStreaming(pair.transport, transportOutlet(pair.transport))
            )
            for _ in range(20):
                pair.turn()
            assert source.reads and max(source.reads) <= limit
            producer.stopProducing()
            assert len(outcome) == 1
        finally:
            pair.close()

    def test_unmeasurable(self, pair: Pair) -> None:
        """
        Where the kernel cannot tell the room (a UNIX socket), new chunks
        are read no larger than L{CONSUMER_WRITE_SIZE}; the stream is
        intact.
        """
        source = RecordingSource()
        producer = StreamProducer(source=source, clock=pair.reactor, limit=300_000)
        producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        received = pair.pump()
        assert len(received) == 300_000
        assert max(source.reads) <= CONSUMER_WRITE_SIZE

    def test_consumerWrites(self) -> None:
        """
        Writes to a consumer (no socket under it: TLS, or chunks that are
        not sent directly) are at most L{CONSUMER_WRITE_SIZE}, whatever the
        chunk size: a transport copies what it is given.
        """
        transport = StringTransport()
        writes: list[int] = []

        def recording(data: bytes) -> None:
            writes.append(len(data))
            StringTransport.write(transport, data)

        transport.write = recording  # type: ignore[method-assign]  # record the writes
        producer = StreamProducer(
            source=ZeroSource(), clock=MemoryReactorClock(), limit=10 * 2**20
        )
        outcome = results(producer.startStreaming(transport))
        assert max(writes) == CONSUMER_WRITE_SIZE
        assert sum(writes) == len(transport.value()) > CONSUMER_WRITE_SIZE
        producer.stopProducing()
        [failure] = outcome
        assert isinstance(failure, Failure) and failure.check(StreamStopped)


class RewindTests:
    def test_restGivenBack(
        self, pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        When the socket takes less of a new chunk than the room it reported
        (the kernel shrinks a stalled client's buffer), the rest, if more
        than L{MAX_HELD}, goes back to the file and is read again once there
        is room: the producer holds little, and the file arrives intact.
        """
        monkeypatch.setattr(SocketOutlet, "room", lambda outlet: 2**30)
        path, content = writeFile(tmp_path, 3 * 2**20)
        source = CountingSource(openFile(path))
        producer = StreamProducer(
            source=source, clock=pair.reactor, sendfile=False, chunkSize=256 * 1024
        )
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        for _ in range(5):
            pair.turn()
        assert producer.state == "paused"
        pending = producer._pending
        assert pending is None or len(cast(bytes, pending.obj)) <= MAX_HELD
        assert source.rewound and all(n > MAX_HELD for n in source.rewound)
        received = pair.pump()
        assert received == content
        assert outcome == [len(content)]
        assert sum(source.reads) >= len(content) + sum(source.rewound)

    def test_notShared(self, pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        The rest of a shared chunk is kept, not given back: it costs
        nothing, and the source is not asked again.
        """
        monkeypatch.setattr(SocketOutlet, "room", lambda outlet: 2**30)
        rewound: list[int] = []
        monkeypatch.setattr(
            ZeroSource,
            "rewind",
            lambda self, count: rewound.append(count),
            raising=False,
        )
        producer = StreamProducer(source=ZeroSource(), clock=pair.reactor)
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        assert producer.state == "paused"
        assert producer._pending is not None and len(producer._pending) > MAX_HELD
        assert rewound == []
        producer.stopProducing()
        assert len(outcome) == 1

    def test_smallRestCopied(self, pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        A small rest of a new chunk, kept while the socket is full, is kept
        as a copy: a view of it would keep the whole chunk alive.
        """
        monkeypatch.setattr(SocketOutlet, "room", lambda outlet: 2**30)
        monkeypatch.setattr(SocketOutlet, "send", lambda outlet, data: len(data) - 1000)
        source = RecordingSource()
        producer = StreamProducer(source=source, clock=pair.reactor)
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        assert producer.state == "paused"
        assert source.reads == [source.chunkSize]
        pending = producer._pending
        assert pending is not None and len(pending) == 999
        assert len(cast(bytes, pending.obj)) == 999
        producer.stopProducing()
        assert len(outcome) == 1


class HandOverTests:
    def test_byteReadInThread(
        self, pair: Pair, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        With no room in the socket, the byte that makes the transport pause
        is read alone, in a thread for a source that may block, and then
        handed to the transport, not sent: a socket with almost no room
        would take it, and the next, one read each.
        """
        monkeypatch.setattr(SocketOutlet, "room", lambda outlet: 0)
        pool, threads = manualPool()
        source = SlowSource(os.urandom(5000))
        producer = StreamProducer(source=source, clock=pair.reactor, ioPool=pool)
        outcome = results(
            producer.startStreaming(pair.transport, transportOutlet(pair.transport))
        )
        threads.runAll()
        assert source.asked == [1]
        assert producer.state == "paused"
        transport = pair.transport
        unsent = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        assert unsent == 1
        producer.stopProducing()
        assert len(outcome) == 1


SendMsg = Callable[[list[bytes | memoryview]], int]


def patchSendmsg(
    monkeypatch: pytest.MonkeyPatch, wrap: Callable[[SocketOutlet, SendMsg], SendMsg]
) -> None:
    """
    Have every outlet made from now on send with what C{wrap} makes of it
    and its real C{sendmsg}.
    """
    init = SocketOutlet.__init__

    def patched(outlet: SocketOutlet, *args: Any, **kwargs: Any) -> None:
        init(outlet, *args, **kwargs)
        outlet._sendmsg = wrap(outlet, outlet._sendmsg)  # type: ignore[assignment]  # as the outlet calls it

    monkeypatch.setattr(SocketOutlet, "__init__", patched)


def cutFirstSend(monkeypatch: pytest.MonkeyPatch, extra: int = 1000) -> None:
    """
    Have the first C{sendmsg()} of every chunked outlet take only its first
    buffer and C{extra} bytes more: a frame cut in its data.
    """

    def wrap(outlet: SocketOutlet, real: SendMsg) -> SendMsg:
        cut = [True]

        def sendmsg(buffers: list[bytes | memoryview]) -> int:
            wire = b"".join(buffers)
            if cut[0]:
                cut[0] = False
                return real([wire[: len(buffers[0]) + extra]])
            return real([wire])

        return sendmsg

    patchSendmsg(monkeypatch, wrap)


def startCut(
    pair: Pair, source: ISource, limit: int | None = None
) -> tuple[StreamProducer, list[int | Failure]]:
    """
    Stream C{source} in chunks until a frame is cut and the producer
    paused, owing the rest of it.
    """
    request = chunkedRequest(pair)
    producer = StreamProducer(source=source, clock=pair.reactor, limit=limit)
    done = producer.startStreaming(request, requestOutlet(request))
    outcome = results(done)
    done.addCallback(lambda sent: request.finish())
    for _ in range(10):
        pair.turn()
        if producer._outlet is not None and producer._outlet.owed:
            break
    assert producer.state == "paused"
    assert producer._outlet is not None and producer._outlet.owed > MAX_HELD
    return producer, outcome


class OwedChunkTests:
    def test_deadlineWhileOwed(
        self, pair: Pair, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        A timed stream whose deadline passes while it owes the rest of a
        chunk, given back to the source, still ends that chunk: the
        response stays well framed.
        """
        cutFirstSend(monkeypatch)
        source = TimedSource(source=RandomSource(), clock=pair.reactor, seconds=1)
        producer, outcome = startCut(pair, source)
        assert producer._pending is None  # given back
        pair.reactor.advance(2)
        [response] = parseResponses(pair.pump())
        assert outcome == [len(response.body)]

    def test_endedWhileOwed(self, pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        A source that ends while a chunk it began is owed cannot end the
        body well: the stream fails (the connection is then cut), rather
        than finish a malformed response.
        """
        cutFirstSend(monkeypatch)
        source = RewindableSource()
        producer, outcome = startCut(pair, source)
        assert producer._pending is None  # given back
        source.ended = True
        pair.pump()
        [failure] = outcome
        assert isinstance(failure, Failure) and failure.check(SourceTruncated)

    def test_closingWhileOwed(
        self, pair: Pair, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        A connection that starts closing while the rest of a cut chunk was
        given back to the source gets that rest first, then chunks framed by
        the request.
        """
        cutFirstSend(monkeypatch)
        producer, outcome = startCut(pair, RandomSource(), limit=300_000)
        assert producer._pending is None
        pair.transport.loseConnection()
        [response] = parseResponses(pair.pump())
        assert len(response.body) == 300_000
        assert outcome == [300_000]

    def test_owedThenNewChunkInOneSend(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        Once the rest of a cut chunk is in hand, it and a new chunk for what
        follows go in one send: ending a chunk is not taken for a full
        socket (no byte handed over, no pause).
        """
        pair = Pair(tcp=True)
        cutFirstSend(monkeypatch)
        pauses: list[int] = []
        pause = StreamProducer.pauseProducing

        def recorded(producer: StreamProducer) -> None:
            pauses.append(producer.bytesSent)
            pause(producer)

        monkeypatch.setattr(StreamProducer, "pauseProducing", recorded)
        try:
            request = chunkedRequest(pair)
            producer = StreamProducer(
                source=RandomSource(), clock=pair.reactor, limit=3 * 2**20
            )
            done = producer.startStreaming(request, requestOutlet(request))
            done.addCallback(lambda sent: request.finish())
            received = pair.pump()
        finally:
            pair.close()
        body = received.split(b"\r\n\r\n", 1)[1]
        sizes = []
        while body:
            line, _, body = body.partition(b"\r\n")
            sizes.append(int(line, 16))
            body = body[sizes[-1] + 2 :]
        # The first chunk is the byte that had the headers written; after it,
        # none is a byte handed over as a chunk of its own.
        assert sizes[0] == 1 and 1 not in sizes[1:4]

    def test_noSendfileInChunks(self, pair: Pair, tmp_path: Path) -> None:
        """
        A file streamed to a chunked response is read, not sent with
        C{sendfile()}, whose bytes would go unframed.
        """
        path, content = writeFile(tmp_path, 300_000)
        request = chunkedRequest(pair)
        producer = StreamProducer(source=openFile(path), clock=pair.reactor)
        done = producer.startStreaming(request, requestOutlet(request))
        outcome = results(done)
        done.addCallback(lambda sent: request.finish())
        [response] = parseResponses(pair.pump())
        assert response.body == content
        assert outcome == [len(content)]


class HostUnsentLimitTests:
    @pytest.mark.parametrize(
        ("text", "limit"),
        [("16384\n", 16384), ("4294967295\n", 0), ("0\n", 0), ("junk", 0)],
    )
    def test_sysctl(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, limit: int
    ) -> None:
        """
        The host's limit on unsent bytes is read from its sysctl, once; the
        kernel's default (no limit) and nonsense read as none. An outlet on
        a socket without a limit of its own takes the host's.
        """
        sysctl = tmp_path / "tcp_notsent_lowat"
        sysctl.write_text(text)
        monkeypatch.setattr(_kernel, "_NOTSENT_LOWAT_SYSCTL", str(sysctl))
        monkeypatch.setattr(_kernel, "_hostUnsentLimit", None)
        assert _kernel.hostUnsentLimit() == limit
        sysctl.write_text("1")
        assert _kernel.hostUnsentLimit() == limit
        pair = Pair(tcp=True)
        try:
            outlet = transportOutlet(pair.transport)
            assert outlet is not None and outlet._unsentLimit == limit
            room = outlet.room()
            assert room is not None and (not limit or room <= limit)
        finally:
            pair.close()
