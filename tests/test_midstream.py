"""
Tests for a transport that changes under a stream sent straight to its
socket: TLS started in the middle of the stream, and the sending side shut
down in the middle of it. Over a real loopback TCP connection in Twisted's
own transport (L{tests.sockets.Pair}).
"""

from __future__ import annotations

import select
import ssl
from pathlib import Path

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_zero._connections import LINGER_SECONDS
from twisted_zero._outlet import transportOutlet
from twisted_zero._producer import StreamProducer, StreamStopped
from twisted_zero._protocol import StreamFactory
from twisted_zero._sources import CHARGEN_PERIOD, ChargenSource, ISource

from .helpers import TLSFiles, failureResultOf, successResultOf, writeTLSFiles
from .sockets import Pair

SIZE = 3 * 2**20
EXPECTED = (CHARGEN_PERIOD * (SIZE // len(CHARGEN_PERIOD) + 1))[:SIZE]


@implementer(ISource)
class CountingChargen:
    """
    Chargen that counts its reads and remembers being closed.
    """

    def __init__(self) -> None:
        self._source = ChargenSource()
        self.description = "chargen"
        self.chunkSize = 64  # a turn sends little: the socket is not full
        self.reads = 0
        self.closed = False

    def read(self, maxBytes: int) -> bytes:
        assert not self.closed, "read after close"
        self.reads += 1
        return self._source.read(maxBytes)

    def close(self) -> None:
        self.closed = True


@implementer(IOpenSSLContextFactory)
class ServerContext:
    """
    The server's side of TLS, with the certificate and key of C{files}.
    """

    def __init__(self, files: TLSFiles) -> None:
        self._context = SSL.Context(SSL.TLS_METHOD)
        self._context.use_certificate_file(str(files.certPath))
        self._context.use_privatekey_file(str(files.keyPath))

    def getContext(self) -> SSL.Context:
        return self._context


def serverReads(pair: Pair) -> None:
    """
    Have the server's transport read what the client sent, as the reactor
    would once its socket is readable.
    """
    for _ in range(100):
        if pair.transport not in pair.reactor.getReaders():
            return
        if not select.select([pair.server], [], [], 0)[0]:
            return
        why = pair.transport.doRead()
        if why is not None:  # as the reactor does
            pair.transport.connectionLost(Failure(why))


class StartTLSTests:
    def test_startTLSMidStream(self, tmp_path: Path) -> None:
        """
        When the transport starts TLS in the middle of a stream sent
        straight to its socket, the producer sends nothing more to the
        socket itself: the client gets the bytes before the switch in
        plain, and the rest, once the handshake is done, in TLS records
        that decrypt to exactly the rest of the stream.
        """
        files = writeTLSFiles(tmp_path)
        serverOptions = ServerContext(files)
        pair = Pair(tcp=True)
        try:
            producer = StreamProducer(
                source=ChargenSource(), clock=pair.reactor, limit=SIZE
            )
            outlet = transportOutlet(pair.transport)
            assert outlet is not None
            done = producer.startStreaming(pair.transport, outlet)
            plain = pair.receive()
            for _ in range(3):
                pair.turn()
                plain += pair.receive()
            assert 0 < producer.bytesSent < SIZE
            assert producer.state == "paused"  # the socket is full
            pair.transport.startTLS(serverOptions)
            switched = producer.bytesSent
            assert not outlet.usable()
            # startTLS registers the producer anew, forgetting that the
            # transport paused it: whoever starts TLS resumes it.
            producer.resumeProducing()
            assert producer.bytesSent > switched  # written, to be encrypted
            for _ in range(100):  # what was sent or buffered before the switch
                if len(plain) >= switched:
                    break
                pair.turn()
                plain += pair.receive()
            assert plain == EXPECTED[:switched]

            context = ssl.create_default_context(cadata=files.certPEM.decode())
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            client = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
            handshaken = False
            closing = ended = False
            decrypted = bytearray()
            for _ in range(10_000):
                try:
                    if not handshaken:
                        client.do_handshake()
                        handshaken = True
                    while True:
                        data = client.read(2**20)
                        if not data:  # the end of TLS
                            ended = True
                            break
                        decrypted += data
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:
                    ended = True
                if ended:
                    break
                if done.called and not closing:
                    # As the stream's owner does at its end: TLS flushes
                    # and ends its records.
                    closing = True
                    pair.transport.loseConnection()
                sending = outgoing.read()
                if sending:
                    pair.client.sendall(sending)
                serverReads(pair)
                pair.turn()
                incoming.write(pair.receive())
            assert bytes(decrypted) == EXPECTED[switched:]
            assert successResultOf(done) == SIZE
        finally:
            pair.close()


class LoseWriteConnectionTests:
    def test_producerStops(self) -> None:
        """
        When the transport's sending side is shut down in the middle of a
        stream sent straight to its socket, the producer stops: its result
        is L{StreamStopped}, its source is closed and read no more, and the
        client reads what was sent, then the end of the stream.
        """
        pair = Pair(tcp=True)
        try:
            source = CountingChargen()
            producer = StreamProducer(source=source, clock=pair.reactor)
            done = producer.startStreaming(
                pair.transport, transportOutlet(pair.transport)
            )
            received = pair.receive()  # what the first turn sent
            assert producer.state == "producing" and source.reads and received
            pair.transport.loseWriteConnection()
            for _ in range(3):
                pair.turn()
                received += pair.receive()
            failure = failureResultOf(done, StreamStopped)
            assert isinstance(failure.value, StreamStopped)
            assert failure.value.bytesSent == producer.bytesSent
            assert source.closed
            assert pair.transport._writeDisconnected
            reads = source.reads
            for _ in range(3):
                pair.turn()
            assert source.reads == reads
            assert (
                received
                == (CHARGEN_PERIOD * (len(received) // 95 + 1))[: len(received)]
            )
            assert len(received) == producer.bytesSent
            assert pair.client.recv(1) == b""  # the end of the stream
        finally:
            pair.close()

    def test_protocolStopsProducer(self) -> None:
        """
        The raw protocol, told that its sending side is shut in the middle
        of the stream, stops its producer (the source is closed) and closes
        the connection after lingering.
        """
        reactor = MemoryReactorClock()
        source = CountingChargen()
        factory = StreamFactory(sourceFactory=lambda: source, clock=reactor)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        pair = Pair(protocol, reactor, tcp=True)
        try:
            assert pair.receive() and source.reads and not source.closed
            with capturedLogs() as events:
                pair.transport.loseWriteConnection()
                for _ in range(3):
                    pair.receive()
                    pair.turn()
                assert source.closed and pair.transport._writeDisconnected
                reads = source.reads
                reactor.advance(LINGER_SECONDS)
                assert source.reads == reads
                assert not pair.transport.connected
        finally:
            pair.close()
        [ended] = [event for event in events if "reason" in event]
        assert ended["bytes"] > 0
