"""
The push producer that streams a source to any L{IConsumer}.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._interfaces import StreamObserver
from ._iopool import IOPool, Operation, reactorPool
from ._limits import Throttle
from ._outlet import SocketOutlet
from ._read import State
from ._send import SendEngine, Sent
from ._sources import (
    IBlockingSource,
    IRewindableSource,
    ISendfileSource,
    ISharedChunkSource,
    ISource,
    SourceTruncated,
)

MAX_CHUNKS_PER_TURN = 64
"""
The most chunks written in one reactor turn (enough for L{MAX_BYTES_PER_TURN}
in writes of L{CONSUMER_WRITE_SIZE}). A real transport pauses the
producer long before this; a consumer that never pauses (one that buffers
without bound) gets the rest on later turns instead of an endless loop.
"""

MAX_BYTES_PER_TURN = 4 * 2**20
"""
The most bytes sent or written in one reactor turn (give or take the last
chunk), as nginx's C{sendfile_max_chunk} bounds its own: a client that reads
as fast as loopback can must not hold the reactor for tens of milliseconds
at a time. It is about what a loopback socket's buffer holds, so a fast
stream still fills its socket in one turn.
"""


class StreamStopped(Exception):
    """
    The consumer went away (the connection was lost) before the stream ended.

    @ivar bytesSent: How many bytes were written before that.
    """

    def __init__(self, bytesSent: int) -> None:
        super().__init__(f"stream stopped after {bytesSent} bytes")
        self.bytesSent = bytesSent


class ConnectionBroken(Exception):
    """
    A send straight to the socket found the connection broken (reset, or
    closed by the peer) before its transport did: the stream is over, and
    its owner is to drop the connection, whose transport may not notice.

    @ivar bytesSent: How many bytes were written before that.
    """

    def __init__(self, bytesSent: int) -> None:
        super().__init__(f"connection broken after {bytesSent} bytes")
        self.bytesSent = bytesSent


@implementer(IPushProducer)
@define
class StreamProducer(SendEngine):
    """
    Write a source's chunks to a consumer as fast as the consumer takes them.

    The producer registers itself as a streaming producer and starts at once.
    Every write may pause or stop it before returning, so its state is looked
    at again after each one: while paused nothing is read or written; once
    stopped the source is closed and neither read nor written again. When the
    source is exhausted or the limit reached it unregisters itself; the caller
    may then close the connection.

    Given the socket under its consumer (an outlet, built by the
    consumer's owner: a TCP transport, or an HTTP request on one, its body
    sent as it is or in HTTP/1.1 chunks the outlet frames), the producer
    sends straight to the socket while the transport's buffer is empty, and
    a file's bytes go from the page cache to the socket with C{sendfile()};
    see L{twisted_zero._outlet} and L{twisted_zero._send}. The contract is
    the same:
    when the socket is full the transport pauses the producer (it is handed
    one byte to do so), and nothing is read or sent until it resumes it.
    Without an outlet, everything is written to the consumer;
    C{sendfile=False} reads a file's bytes and sends them.

    A client that stops reading costs no chunk. Shared chunks
    (L{ISharedChunkSource}) cost nothing to hold. New ones are read no
    larger than the socket has room for (L{SocketOutlet.room}); what it did
    not take, beyond L{twisted_zero._send.MAX_HELD}, goes back to a source
    that can take it (L{IRewindableSource}). Writes to a consumer, where
    bytes go through a transport that copies them (TLS), are at most
    L{twisted_zero._send.CONSUMER_WRITE_SIZE}.

    A source whose reads may block (an L{IBlockingSource}: a file) is read in
    a thread of C{ioPool} (by default, the reactor's own thread pool) unless
    its next bytes are in the page cache; C{sendfile()} is only called for
    bytes in the page cache. At most one read is in flight, none is started
    while paused or once stopped, and the source is closed only once no
    thread uses it: if the producer is stopped during a read, the read's
    bytes are dropped and the source closed as soon as it returns.

    @param source: What is streamed.
    @param chunkSize: The most bytes read at once; L{None} for the source's
        own L{ISource.chunkSize}.
    @param limit: End the stream after this many bytes; L{None} for none.
    @param clock: Schedules the next turns and throttle waits; L{None} for
        the global reactor.
    @param throttle: Paces the stream (a rate); L{None} for no pacing.
    @param observer: Told of the bytes written and of pauses (metrics).
    @param sendfile: Whether a file's bytes may go to the socket with
        C{sendfile()}.
    @param ioPool: Where a blocking source is read; L{None} for the
        reactor's own thread pool.
    @ivar bytesSent: How many bytes have been written (or sent) so far.
    @ivar rateWaits: How many times it has waited for its throttle: a
        stream held back by its rate is not stalled.
    """

    _source: ISource = field(alias="source")
    _chunkSizeGiven: int | None = field(default=None, alias="chunkSize")
    _limit: int | None = field(default=None, alias="limit")
    _clock: IReactorTime | None = field(default=None, alias="clock")
    _throttle: Throttle | None = field(default=None, alias="throttle")
    _observer: StreamObserver | None = field(default=None, alias="observer")
    _sendfile: bool = field(default=True, alias="sendfile")
    _ioPool: IOPool | None = field(default=None, alias="ioPool")
    _chunkSize: int = field(default=0, init=False)
    _blocking: bool = field(default=False, init=False)
    _reading: Operation[bytes] | None = field(default=None, init=False)
    _readingWanted: int = field(default=0, init=False)
    _outlet: SocketOutlet | None = field(default=None, init=False)
    _fileSends: bool = field(default=False, init=False)
    _sharedChunks: bool = field(default=False, init=False)
    _rewindable: bool = field(default=False, init=False)
    _handOverFirst: bool = field(default=False, init=False)
    _pending: memoryview | None = field(default=None, init=False)
    _observedPause: bool = field(default=False, init=False)
    bytesSent: int = field(default=0, init=False)
    rateWaits: int = field(default=0, init=False)
    _state: State = field(default=State.IDLE, init=False)
    _consumer: IConsumer | None = field(default=None, init=False)
    _done: Deferred[int] = field(factory=Deferred, init=False)
    _nextTurn: IDelayedCall | None = field(default=None, init=False)
    _log = Logger()

    def __attrs_post_init__(self) -> None:
        self._chunkSize = self._source.chunkSize
        if self._chunkSizeGiven is not None:
            self._chunkSize = self._chunkSizeGiven
        if self._chunkSize < 1:
            raise ValueError("chunkSize must be positive")
        if self._limit is not None and self._limit < 0:
            raise ValueError("limit must not be negative")

    @property
    def chunkSize(self) -> int:
        """
        The most bytes written at once: as given, or the source's own
        L{ISource.chunkSize}.
        """
        return self._chunkSize

    @property
    def state(self) -> str:
        """
        C{"idle"}, C{"producing"}, C{"paused"}, C{"stopped"} or C{"finished"}.
        """
        return self._state.value

    def startStreaming(
        self, consumer: IConsumer, outlet: SocketOutlet | None = None
    ) -> Deferred[int]:
        """
        Register on C{consumer} as a push producer and start writing.

        @param consumer: What the stream is written to.
        @param outlet: The socket under C{consumer}, for sends straight to
            it, as the consumer's owner built it
            (L{transportOutlet<twisted_zero._outlet.transportOutlet>},
            L{requestOutlet<twisted_zero._httpoutlet.requestOutlet>});
            L{None} to write everything to the consumer.
        @return: A L{Deferred} that fires with the number of bytes written
            once the source is exhausted or the limit reached (the producer
            is then unregistered), and fails with L{StreamStopped} if the
            consumer stops the producer first (or its sending side is shut),
            with L{ConnectionBroken} if a send finds the connection broken,
            or with the source's error (such as L{SourceTruncated}) if the
            source fails or ends inside an HTTP chunk already begun. On a
            failure other than L{StreamStopped}, the producer has stopped
            and the owner is to drop the connection.
        @raise RuntimeError: If the producer was started before.
        """
        if self._state is not State.IDLE:
            raise RuntimeError(f"cannot start a {self._state.value} producer")
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        if IBlockingSource.providedBy(self._source):
            if self._ioPool is None:
                self._ioPool = reactorPool(self._clock)
            self._blocking = self._ioPool is not None
        self._consumer = consumer
        self._state = State.PRODUCING
        if self._throttle is not None:
            self._throttle.wakeWith(self._woken)
        consumer.registerProducer(self, True)
        # registerProducer may pause us, or stop us if the consumer is gone.
        if self._state is not State.STOPPED:
            self._outlet = outlet
            self._fileSends = (
                self._sendfile
                and ISendfileSource.providedBy(self._source)
                and not (outlet is not None and outlet.chunked)
            )
            self._sharedChunks = ISharedChunkSource.providedBy(self._source)
            self._rewindable = not self._sharedChunks and (
                IRewindableSource.providedBy(self._source)
            )
        if self._state is State.PRODUCING:
            self._produce()
        return self._done

    def pauseProducing(self) -> None:
        """
        Read and write nothing until L{resumeProducing}. Idempotent.
        """
        if self._state is State.PRODUCING:
            self._state = State.PAUSED
            self._cancelNextTurn()
            if self._throttle is not None:
                # Hold no turn at a shared rate, nor what was reserved for
                # this stream: the others have it. Resumed, it queues again.
                self._throttle.withdraw()
            self._notePause(True)

    def resumeProducing(self) -> None:
        """
        Write chunks until the consumer pauses or stops this producer, the
        source ends or the limit is reached.
        """
        if self._state is State.PAUSED:
            self._state = State.PRODUCING
            self._notePause(False)
            self._produce()

    def stopProducing(self) -> None:
        """
        Close the source and stop for good; the L{Deferred} fails with
        L{StreamStopped}. Idempotent, and never raises: the transport calling
        it would otherwise skip closing its socket.

        A read in a thread that has not started is skipped; one that has is
        left to finish, and the source is closed when it returns.
        """
        self._halt(StreamStopped)

    def _halt(self, error: type[StreamStopped | ConnectionBroken]) -> None:
        """
        Stop for good (see L{stopProducing}); the L{Deferred} fails with
        C{error}, told how many bytes were sent. Never raises.
        """
        if self._state in (State.STOPPED, State.FINISHED):
            return
        self._state = State.STOPPED
        try:
            self._cancelNextTurn()
            if self._throttle is not None:
                self._throttle.release()
            self._notePause(False)
            # Dropped, not kept: an observer may hold the connection (the
            # unsent limit does), and a consumer may keep its producer after
            # the end (Twisted's TLS does): a cycle only the garbage
            # collector would break, late, with the connection's buffers.
            self._consumer = self._outlet = self._pending = self._observer = None
            reading, self._reading = self._reading, None
            if reading is None:
                self._closeSource()
            elif reading.cancel():
                self._refund(self._readingWanted)
                self._closeSource()
            # Else a thread reads it: _readDone closes it once it returns.
            self._done.errback(Failure(error(self.bytesSent)))
        except BaseException:
            self._log.failure("error while stopping a stream")

    def _produce(self) -> None:
        if self._reading is not None:
            return  # It goes on when the read returns.
        budget = self.bytesSent + MAX_BYTES_PER_TURN
        more = Sent.MORE
        for _ in range(MAX_CHUNKS_PER_TURN):
            if self._sendNext() is not more:
                return
            if self._limit is not None and self.bytesSent >= self._limit:
                self._finish(None)
                return
            if self._state is not State.PRODUCING:
                return
            if self.bytesSent >= budget:
                break
        self._waitFor(0)

    def _broken(self) -> None:
        """
        A direct send found the connection gone, before the transport did:
        stop, and fail with L{ConnectionBroken}, for the owner to drop the
        connection.
        """
        self._halt(ConnectionBroken)

    def _waitFor(self, seconds: float) -> None:
        """
        Go on producing after C{seconds}, unless paused or stopped by then.
        """
        assert self._clock is not None
        self._nextTurn = self._clock.callLater(seconds, self._continue)

    def _continue(self) -> None:
        self._nextTurn = None
        if self._state is State.PRODUCING:
            self._produce()

    def _woken(self) -> None:
        """
        The stream's turn at a shared rate has come: send what was reserved
        for it. A paused stream waits for no turn; should one come anyway,
        it goes to the others.
        """
        assert self._throttle is not None
        if self._state is not State.PRODUCING:
            self._throttle.withdraw()
            return
        self._cancelNextTurn()
        self._produce()

    def _notePause(self, paused: bool) -> None:
        if self._observer is not None and paused != self._observedPause:
            self._observedPause = paused
            self._observer.pauseChanged(paused)

    def _cancelNextTurn(self) -> None:
        nextTurn, self._nextTurn = self._nextTurn, None
        if nextTurn is not None:
            nextTurn.cancel()

    def _closeSource(self) -> None:
        try:
            self._source.close()
        except Exception:
            self._log.failure("error while closing {source}", source=self._source)

    def _finish(self, failure: Failure | None) -> None:
        """
        End the stream: close the source, unregister, then fire the result.
        """
        outlet = self._outlet
        if failure is None and outlet is not None and outlet.owed:
            # The source ended inside a chunk already begun on the wire:
            # the body cannot be ended well; the connection must be cut.
            failure = Failure(
                SourceTruncated(
                    f"{self._source.description}: ended {outlet.owed} bytes "
                    "short of a chunk already begun"
                )
            )
        self._state = State.FINISHED
        self._cancelNextTurn()
        if self._throttle is not None:
            self._throttle.release()
        self._notePause(False)
        self._closeSource()
        consumer, self._consumer = self._consumer, None
        self._outlet = self._pending = self._observer = None  # as in _halt
        assert consumer is not None
        consumer.unregisterProducer()
        if failure is None:
            self._done.callback(self.bytesSent)
        else:
            self._done.errback(failure)
