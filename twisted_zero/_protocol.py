"""
The raw-TCP protocol: every connection gets its own stream.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

from attrs import Factory as AttrsFactory
from attrs import define, field
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHalfCloseableDescriptor,
    IHalfCloseableProtocol,
    IHandshakeListener,
    INegotiated,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._connections import LINGER_SECONDS, formatPeer
from ._iopool import IOPool
from ._metrics import Metrics, MetricsObserver
from ._outlet import transportOutlet
from ._producer import ConnectionBroken, StreamProducer, StreamStopped
from ._protection import Protection, StreamGuard
from ._registry import ConnectionRegistry
from ._sources import ISource, SourceError

_log = Logger(namespace="twisted_zero._protocol.StreamProtocol")
"""
The streams' log: a logger of the module's, not bound to each protocol, so
that an event kept by an observer does not keep its connection alive.
"""


class _Refused(Protocol):
    """
    Close a connection the limits refused, at once.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class StreamProtocol(Protocol):
    """
    Stream one source to the peer, then close the connection.

    Whatever the peer sends is read, counted (in L{received}, the stream's
    end event and the metrics: a client can measure its upload) and
    discarded. A peer that shuts down its
    sending side still gets the whole stream. At the end, the connection is
    closed so that no byte is lost: on TCP and UNIX sockets by shutting down
    the sending side and waiting (up to L{LINGER_SECONDS}) for the peer to
    close; over TLS only once the handshake is done (Twisted aborts a TLS
    connection closed before its handshake).

    The protocol builds the stream's outlet (direct sends to its socket,
    where its transport allows them) and alone decides to drop the
    connection: every abort it starts (L{abort}: a stall, the maximum
    duration, a source that fails, the server's shutdown) stops the
    producer first.

    @ivar factory: The L{StreamFactory} that made this protocol.
    @ivar received: How many bytes the peer has sent.
    """

    factory: StreamFactory
    admitted: IAddress | None = None

    def __init__(self) -> None:
        self._producer: StreamProducer | None = None
        self.received = 0
        self._source = "?"
        self._started = 0.0
        self._ending: str | None = None
        self._readClosed = False
        self._handshakeDone = False
        self._lingering: IDelayedCall | None = None
        self._guard: StreamGuard | None = None

    def _connection(self) -> ITCPTransport:
        """
        The transport: a TCP, UNIX or TLS one, each of which has what
        L{ITCPTransport} adds (C{abortConnection}, C{loseWriteConnection}).
        """
        assert self.transport is not None
        return cast(ITCPTransport, self.transport)

    def connectionMade(self) -> None:
        factory = self.factory
        self._started = factory.clock.seconds()
        factory.connectionOpened(self)
        try:
            source = factory.sourceFactory()
        except SourceError as e:
            _log.error("cannot open the source: {error}", error=str(e))
            self.abort("source error")
            return
        self._source = source.description
        protection = factory.protection
        transport = self._connection()
        producer = self._producer = StreamProducer(
            source=source,
            chunkSize=factory.chunkSize,
            limit=factory.limit,
            clock=factory.clock,
            throttle=protection.throttle(),
            observer=protection.observe(
                transport, MetricsObserver(factory.metrics, source.description)
            ),
            sendfile=factory.sendfile,
            ioPool=factory.ioPool,
        )
        self._guard = protection.guard(
            transport,
            producer,
            drop=self._drop,
            stalled=partial(factory.metrics.stallAborted, "tcp"),
            received=self._received,
        )
        # Every stream transport is a consumer (ITCPTransport does not say).
        done = producer.startStreaming(
            cast(IConsumer, transport), transportOutlet(transport)
        )
        done.addCallbacks(self._streamComplete, self._streamFailed)

    def _received(self) -> int:
        return self.received

    def abort(self, why: str) -> None:
        """
        Stop the stream's producer, then abort the connection.

        @param why: The ending logged for the stream (C{"stalled"},
            C{"max duration"}, C{"server shutdown"}), unless it has one
            already (other than having completed).
        """
        if self._guard is not None:
            self._guard.abort(why)
        else:  # no stream: its source would not open
            self._drop(why)

    def _drop(self, why: str) -> None:
        """
        Abort the connection, the stream's producer stopped (see L{abort}).
        """
        if self._ending in (None, "complete"):
            self._ending = why
        self._connection().abortConnection()

    def _streamComplete(self, bytesSent: int) -> None:
        self._ending = "complete"
        transport = self._connection()
        if INegotiated.providedBy(transport):
            if self._handshakeDone:
                transport.loseConnection()
        elif IHalfCloseableDescriptor.providedBy(transport) and not self._readClosed:
            transport.loseWriteConnection()
        else:
            transport.loseConnection()

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done: an empty stream may now be closed.
        """
        self._handshakeDone = True
        if self._ending == "complete":
            self._connection().loseConnection()

    def _streamFailed(self, failure: Failure) -> None:
        if failure.check(StreamStopped):
            return
        if failure.check(ConnectionBroken):
            # A send found the connection gone before the transport did:
            # drop it, for the transport may not notice.
            self._connection().abortConnection()
            return
        if failure.check(SourceError):
            _log.warn(
                "aborting stream to {peer}: {error}",
                peer=formatPeer(self.transport),
                error=str(failure.value),
            )
        else:
            _log.failure(
                "aborting stream to {peer}", failure, peer=formatPeer(self.transport)
            )
        self.abort("aborted: source failed")

    def dataReceived(self, data: bytes) -> None:
        """
        Count what the peer sends, and discard it.
        """
        self.received += len(data)
        self.factory.metrics.bytesReceived("tcp", len(data))

    def readConnectionLost(self) -> None:
        """
        The peer will send no more; keep streaming to it, or, if the stream
        has ended, close.
        """
        self._readClosed = True
        if self._ending is not None:
            self._cancelLinger()
            self._connection().loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Nothing more will be sent: normally once the whole stream has been,
        and then the end of it. Stop the producer (should the sending side
        have been shut down in the middle of the stream), and wait a little
        for the peer to close, reading what it still sends.
        """
        if self._producer is not None:
            self._producer.stopProducing()
        self._lingering = self.factory.clock.callLater(
            LINGER_SECONDS, self._connection().loseConnection
        )

    def _cancelLinger(self) -> None:
        lingering, self._lingering = self._lingering, None
        if lingering is not None and lingering.active():
            lingering.cancel()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        ending = self._reasonFor(reason)
        self._cancelLinger()
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.stop()
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()
        _log.info(
            "stream to {peer} ended ({reason}): {source}, {bytes} bytes "
            "in {seconds:.3f}s, {received} bytes received",
            peer=formatPeer(self.transport),
            source=self._source,
            bytes=0 if producer is None else producer.bytesSent,
            seconds=self.factory.clock.seconds() - self._started,
            received=self.received,
            reason=ending,
        )
        self.factory.connectionClosed(self, ending)

    def _reasonFor(self, reason: Failure) -> str:
        clean = reason.check(ConnectionDone) is not None
        if self._ending == "complete":
            return "complete" if clean else "client reset before the end"
        if self._ending is not None:
            return self._ending
        if self.factory.shuttingDown:
            return "server shutdown"
        if clean or self._readClosed:
            return "client closed"
        if reason.check(ConnectionLost):
            return "client reset"
        return f"connection failed: {reason.getErrorMessage()}"


if TYPE_CHECKING:
    _Factory = Factory[Protocol]
else:  # Factory is generic from Twisted 26.4 on only.
    _Factory = Factory


def _defaultProtection(factory: StreamFactory) -> Protection:
    """
    No limits but the stall watch's, for a factory given none.
    """
    return Protection(factory.clock)


@define(slots=False, eq=False)  # as any factory: compared and hashed by identity
class StreamFactory(_Factory):
    """
    Make a L{StreamProtocol} per connection, each streaming a fresh source.
    Each constructor argument is kept as the attribute of its name.

    @param sourceFactory: Called once per connection for its L{ISource}.
    @param clock: Times the streams for the log, and their limits.
    @param chunkSize: Bytes asked of the source per write; L{None} for the
        source's own L{ISource.chunkSize}.
    @param limit: End each stream after this many bytes; L{None} for no
        limit.
    @param protection: Limits on connections, rates, stalls and durations,
        shared with the other listeners; by default, none.
    @param metrics: Where the streams are counted; by default, a registry
        of its own.
    @param sendfile: Whether a file's bytes may go to the socket with
        C{sendfile()}; if not, they are read and sent.
    @param ioPool: Where a file is opened and read when that may block;
        L{None} for the reactor's own thread pool.
    @param registry: Where each connection is counted while it is open, to
        be drained at shutdown; L{None} for nowhere.
    @ivar shuttingDown: Set when the server is stopping, so streams it ends
        are logged as such.
    """

    sourceFactory: Callable[[], ISource]
    clock: IReactorTime
    chunkSize: int | None = None
    limit: int | None = None
    protection: Protection = field(
        default=AttrsFactory(_defaultProtection, takes_self=True)
    )
    metrics: Metrics = field(factory=Metrics)
    sendfile: bool = True
    ioPool: IOPool | None = None
    registry: ConnectionRegistry | None = None
    shuttingDown: bool = field(default=False, init=False)

    noisy = False

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        """
        A protocol for the connection, or one that closes it at once when
        the connection limits say no.
        """
        if not self.protection.admitFrom(addr, "tcp", self.metrics):
            # A protocol, not None: a wrapping factory (TLS) would wrap None.
            return _Refused()
        protocol = StreamProtocol()
        protocol.factory = self
        protocol.admitted = addr
        return protocol

    def connectionOpened(self, protocol: StreamProtocol) -> None:
        self.metrics.connectionOpened("tcp")
        self.protection.opened(protocol.transport)
        if self.registry is not None:
            self.registry.opened(protocol)

    def connectionClosed(self, protocol: StreamProtocol, reason: str) -> None:
        self.metrics.connectionClosed("tcp", reason)
        self.protection.closed(protocol.transport, protocol.admitted)
        if self.registry is not None:
            self.registry.closed(protocol)
