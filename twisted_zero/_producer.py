"""
The push producer that streams a source to any L{IConsumer}.
"""

from __future__ import annotations

import enum
from functools import partial
from typing import Protocol

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

from ._iopool import IOPool, Operation, reactorPool
from ._limits import Throttle
from ._outlet import (
    SocketOutlet,
    isConnectionError,
    isNoRoom,
    isUnsupported,
    socketOutlet,
)
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

CONSUMER_WRITE_SIZE = 64 * 1024
"""
The most bytes written to a consumer at once, rather than sent to its
socket: what a Twisted transport holds before it pauses its producer
(C{FileDescriptor.bufferSize}). A transport copies what it is given into a
buffer of its own, and a TLS connection's holds the ciphertext, so a stalled
client costs about one such write, not a whole chunk.
"""

MAX_HELD = 16 * 1024
"""
The most of a new chunk (not a shared one) a producer keeps while its
socket is full. The kernel may shrink a socket's buffer as the client stops
reading, so that a send takes less than the room it had just reported; the
rest of the chunk, if more than this, is given back to a source that can
take it (L{IRewindableSource}) and read again once there is room.
"""

KERNEL_SEND_SIZE = 2 * 2**20
"""
The most bytes asked of one C{sendfile()} call (nginx's default
C{sendfile_max_chunk}). They go from the page cache to the socket without
being read into memory, so this costs no memory; the socket takes what it
has room for.
"""


def _size(buffer: object) -> int:
    """
    The size of the object a memory view is of.
    """
    return memoryview(buffer).nbytes  # type: ignore[arg-type]


class StreamStopped(Exception):
    """
    The consumer went away (the connection was lost) before the stream ended.

    @ivar bytesSent: How many bytes were written before that.
    """

    def __init__(self, bytesSent: int) -> None:
        super().__init__(f"stream stopped after {bytesSent} bytes")
        self.bytesSent = bytesSent


class StreamObserver(Protocol):
    """
    What a producer tells about itself as it goes, for metrics.
    """

    def chunkWritten(self, count: int) -> None:
        """
        C{count} more bytes were written to the consumer.
        """

    def pauseChanged(self, paused: bool) -> None:
        """
        The consumer paused the producer, or it is producing again (or has
        ended) after a pause.
        """


class _State(enum.Enum):
    IDLE = "idle"
    PRODUCING = "producing"
    PAUSED = "paused"
    STOPPED = "stopped"
    FINISHED = "finished"


@implementer(IPushProducer)
@define
class StreamProducer:
    """
    Write a source's chunks to a consumer as fast as the consumer takes them.

    The producer registers itself as a streaming producer and starts at once.
    Every write may pause or stop it before returning, so its state is looked
    at again after each one: while paused nothing is read or written; once
    stopped the source is closed and neither read nor written again. When the
    source is exhausted or the limit reached it unregisters itself; the caller
    may then close the connection.

    On a plain TCP or UNIX socket transport (or an HTTP request on one, its
    body sent as it is or in HTTP/1.1 chunks the outlet frames), the
    producer sends straight to the socket while the transport's buffer is
    empty, and a file's bytes go from the page cache to the socket with
    C{sendfile()}; see L{twisted_zero._outlet}. The contract is the same:
    when the socket is full the transport pauses the producer (it is handed
    one byte to do so), and nothing is read or sent until it resumes it.
    C{directSends=False} writes everything to the consumer instead;
    C{sendfile=False} reads a file's bytes and sends them.

    A client that stops reading costs no chunk. Shared chunks
    (L{ISharedChunkSource}) cost nothing to hold. New ones are read no
    larger than the socket has room for (L{SocketOutlet.room}); what it did
    not take, beyond L{MAX_HELD}, goes back to a source that can take it
    (L{IRewindableSource}). Writes to a consumer, where bytes go through a
    transport that copies them (TLS), are at most L{CONSUMER_WRITE_SIZE}.

    A source whose reads may block (an L{IBlockingSource}: a file) is read in
    a thread of C{ioPool} (by default, the reactor's own thread pool) unless
    its next bytes are in the page cache; C{sendfile()} is only called for
    bytes in the page cache. At most one read is in flight, none is started
    while paused or once stopped, and the source is closed only once no
    thread uses it: if the producer is stopped during a read, the read's
    bytes are dropped and the source closed as soon as it returns.

    @ivar bytesSent: How many bytes have been written (or sent) so far.
    @ivar rateWaits: How many times it has waited for its throttle: a
        stream held back by its rate is not stalled.
    """

    _source: ISource = field(alias="source")
    _chunkSize: int | None = field(default=None, alias="chunkSize")
    _limit: int | None = field(default=None, alias="limit")
    _clock: IReactorTime | None = field(default=None, alias="clock")
    _throttle: Throttle | None = field(default=None, alias="throttle")
    _observer: StreamObserver | None = field(default=None, alias="observer")
    _directSends: bool = field(default=True, alias="directSends")
    _sendfile: bool = field(default=True, alias="sendfile")
    _ioPool: IOPool | None = field(default=None, alias="ioPool")
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
    _state: _State = field(default=_State.IDLE, init=False)
    _consumer: IConsumer | None = field(default=None, init=False)
    _done: Deferred[int] = field(factory=Deferred, init=False)
    _nextTurn: IDelayedCall | None = field(default=None, init=False)
    _log = Logger()

    def __attrs_post_init__(self) -> None:
        if self._chunkSize is None:
            self._chunkSize = self._source.chunkSize
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
        assert self._chunkSize is not None
        return self._chunkSize

    @property
    def state(self) -> str:
        """
        C{"idle"}, C{"producing"}, C{"paused"}, C{"stopped"} or C{"finished"}.
        """
        return self._state.value

    def startStreaming(self, consumer: IConsumer) -> Deferred[int]:
        """
        Register on C{consumer} as a push producer and start writing.

        @return: A L{Deferred} that fires with the number of bytes written
            once the source is exhausted or the limit reached (the producer
            is then unregistered), and fails with L{StreamStopped} if the
            consumer stops the producer first, or with the source's error
            (such as L{SourceTruncated}) if the source fails.
        @raise RuntimeError: If the producer was started before.
        """
        if self._state is not _State.IDLE:
            raise RuntimeError(f"cannot start a {self._state.value} producer")
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        if IBlockingSource.providedBy(self._source):
            if self._ioPool is None:
                self._ioPool = reactorPool(self._clock)
            self._blocking = self._ioPool is not None
        self._consumer = consumer
        self._state = _State.PRODUCING
        if self._throttle is not None:
            self._throttle.wakeWith(self._woken)
        consumer.registerProducer(self, True)
        # registerProducer may pause us, or stop us if the consumer is gone.
        if self._state is not _State.STOPPED and self._directSends:
            self._outlet = socketOutlet(consumer)
            self._fileSends = (
                self._sendfile
                and ISendfileSource.providedBy(self._source)
                and not (self._outlet is not None and self._outlet.chunked)
            )
            self._sharedChunks = ISharedChunkSource.providedBy(self._source)
            self._rewindable = not self._sharedChunks and (
                IRewindableSource.providedBy(self._source)
            )
        if self._state is _State.PRODUCING:
            self._produce()
        return self._done

    def pauseProducing(self) -> None:
        """
        Read and write nothing until L{resumeProducing}. Idempotent.
        """
        if self._state is _State.PRODUCING:
            self._state = _State.PAUSED
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
        if self._state is _State.PAUSED:
            self._state = _State.PRODUCING
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
        if self._state in (_State.STOPPED, _State.FINISHED):
            return
        self._state = _State.STOPPED
        try:
            self._cancelNextTurn()
            if self._throttle is not None:
                self._throttle.release()
            self._notePause(False)
            self._consumer = self._outlet = self._pending = None
            reading, self._reading = self._reading, None
            if reading is None:
                self._closeSource()
            elif reading.cancel():
                self._refund(self._readingWanted)
                self._closeSource()
            # Else a thread reads it: _readDone closes it once it returns.
            self._done.errback(Failure(StreamStopped(self.bytesSent)))
        except BaseException:
            self._log.failure("error while stopping a stream")

    def _produce(self) -> None:
        if self._reading is not None:
            return  # It goes on when the read returns.
        budget = self.bytesSent + MAX_BYTES_PER_TURN
        for _ in range(MAX_CHUNKS_PER_TURN):
            if not self._sendNext():
                return
            if self._limit is not None and self.bytesSent >= self._limit:
                self._finish(None)
                return
            if self._state is not _State.PRODUCING:
                return
            if self.bytesSent >= budget:
                break
        self._waitFor(0)

    def _sendNext(self) -> bool:
        """
        Send or write the next bytes: the rest of the chunk in hand, bytes
        straight from the source's file, or a chunk read from the source.

        @return: Whether the producer may go on in this turn, once the limit
            and its state have been looked at; C{False} when it has finished,
            stopped, or waits for its throttle or for room in the socket.
        """
        if self._pending is not None:
            return self._sendPending()
        # An outlet no longer usable is kept for writes: a chunk it began
        # must be ended before any other.
        outlet = self._outlet
        if outlet is not None and not outlet.usable():
            outlet = None
        if outlet is not None:
            if not outlet.ready():
                # The transport still holds bytes: send directly once it
                # has sent them. Only an HTTP response's headers leave the
                # socket room for a whole chunk meanwhile.
                return self._waitForRoom(outlet, hop=outlet.awaitingHeaders())
            if self._fileSends:
                sent = self._sendFromFile(outlet)
                if sent is not None:
                    return sent
                # Not from the file this time: read instead.
        size = self.chunkSize
        if outlet is None:
            size = min(size, CONSUMER_WRITE_SIZE)
        elif not self._sharedChunks:
            # A new chunk of which the socket takes only part is held until
            # it takes the rest: make it no larger than what fits.
            room = outlet.room()
            if room == 0:
                return self._waitForRoom(outlet)
            size = min(size, CONSUMER_WRITE_SIZE if room is None else room)
        wanted = self._wanted(size)
        if wanted is None:
            return False
        chunk = self._read(wanted)
        if chunk is None:
            return False
        self._pending = memoryview(chunk)
        if outlet is not None:
            return self._sendPending()
        return self._writeRest()

    def _wanted(self, size: int) -> int | None:
        """
        How many bytes to send next, at most C{size}: fewer near the limit or
        when the throttle allows fewer. L{None} when there is nothing to send
        now: the limit was reached (the stream is then finished) or the
        throttle says to wait (the producer then goes on later).
        """
        if self._limit is not None:
            size = min(size, self._limit - self.bytesSent)
            if size <= 0:
                self._finish(None)
                return None
        if self._throttle is not None:
            allowed = self._throttle.allowance(size)
            if not allowed:
                self.rateWaits += 1
                seconds = self._throttle.delay(size)
                if seconds is not None:
                    self._waitFor(seconds)
                # Else it waits for its turn at a shared rate: _woken.
                return None
            size = allowed
        return size

    def _read(self, wanted: int, hop: int | None = None) -> bytes | None:
        """
        Read up to C{wanted} bytes of the source, giving back to the throttle
        what it did not hand out; up to C{hop} bytes instead (more than
        C{wanted}) if they must be read in a thread.

        @return: The bytes; L{None} if the stream has ended instead (the
            source is exhausted, or failed), or if they are being read in a
            thread (the producer goes on once they are in hand).
        """
        try:
            if self._blocking:
                source = IBlockingSource(self._source)
                chunk = source.readNowait(wanted)
                if chunk is None:
                    if hop is not None and self._throttle is None:
                        wanted = max(wanted, hop)
                    assert self._ioPool is not None
                    self._readingWanted = wanted
                    self._reading = self._ioPool.submit(
                        partial(source.read, wanted), partial(self._readDone, wanted)
                    )
                    return None
            else:
                chunk = self._source.read(wanted)
        except Exception:
            self._finish(Failure())
            return None
        return self._took(wanted, chunk)

    def _readDone(self, wanted: int, result: bytes | Failure) -> None:
        """
        A read in a thread returned: keep its bytes as the chunk in hand and
        go on, unless stopped meanwhile (then close the source, which no
        thread uses any more, and drop them).
        """
        self._reading = None
        if self._state is _State.STOPPED:
            self._refund(wanted)
            self._closeSource()
            return
        if isinstance(result, Failure):
            self._finish(result)
            return
        chunk = self._took(wanted, result)
        if chunk is None:
            return
        self._pending = memoryview(chunk)
        if self._state is _State.PRODUCING:
            self._produce()

    def _took(self, wanted: int, chunk: bytes) -> bytes | None:
        """
        Account for a chunk read for C{wanted} bytes.

        @return: The chunk; L{None} if it is empty: the stream has ended.
        """
        self._refund(wanted - len(chunk))
        if not chunk:
            self._finish(None)
            return None
        return chunk

    def _written(self, count: int) -> None:
        """
        Count C{count} bytes given to the consumer or sent past it. Bytes
        for the consumer are counted before they are written to it, since
        the write may stop the producer, whose result then tells how many
        bytes were sent.
        """
        self.bytesSent += count
        if self._observer is not None:
            self._observer.chunkWritten(count)

    def _sendPending(self) -> bool:
        """
        Send the rest of the chunk in hand straight to the socket.

        @return: As L{_sendNext}.
        """
        outlet, view = self._outlet, self._pending
        assert view is not None
        assert self._consumer is not None
        if self._handOverFirst:
            # Read for want of room: its first byte waits in the transport
            # for room, as any byte handed over does; the rest goes after.
            self._handOverFirst = False
            if outlet is not None and outlet.usable():
                self._pending = view[1:] if len(view) > 1 else None
                return self._handOver(outlet, bytes(view[:1]))
        if outlet is None or not (outlet.usable() and outlet.ready()):
            # No direct sends, closing, or resumed while the transport still
            # holds bytes (which Twisted's transports never do): hand it the
            # rest, after those bytes.
            return self._writeRest()
        try:
            sent = outlet.send(view)
        except OSError:
            self._broken(outlet)
            return False
        self._written(sent)
        outlet.countSent(sent)
        if sent == len(view):
            self._pending = None
            return True
        # The socket is full.
        rest = view[sent + 1 :] if len(view) > sent + 1 else None
        if rest is not None and not self._sharedChunks:
            if len(rest) > MAX_HELD and self._rewindable:
                try:
                    IRewindableSource(self._source).rewind(len(rest))
                except Exception:
                    self._finish(Failure())
                    return False
                self._refund(len(rest))
                rest = None
            elif len(rest) < _size(rest.obj) // 2:
                # A view keeps its whole chunk alive: keep a copy of the rest.
                rest = memoryview(bytes(rest))
        self._pending = rest
        return self._handOver(outlet, bytes(view[sent : sent + 1]))

    def _writeRest(self) -> bool:
        """
        Write the next bytes of the chunk in hand to the consumer, as any
        producer does, at most L{CONSUMER_WRITE_SIZE} of them: a transport
        copies what it is given.

        @return: As L{_sendNext}.
        """
        view = self._pending
        if view is None:
            return self._state is not _State.STOPPED
        piece = view[:CONSUMER_WRITE_SIZE]
        self._pending = view[len(piece) :] if len(view) > len(piece) else None
        self._written(len(piece))
        whole = piece.obj
        data = (
            whole
            if isinstance(whole, bytes) and len(whole) == len(piece)
            else bytes(piece)
        )
        if self._outlet is not None:
            self._outlet.write(data)  # after the rest of a chunk it frames
        else:
            assert self._consumer is not None
            self._consumer.write(data)
        return self._state is not _State.STOPPED

    def _sendFromFile(self, outlet: SocketOutlet) -> bool | None:
        """
        Send bytes from the source's file straight to the socket with
        C{sendfile()}.

        @return: As L{_sendNext}; or L{None} if the source cannot send its
            next bytes this way, so they are to be read instead.
        """
        wanted = self._wanted(KERNEL_SEND_SIZE)
        if wanted is None:
            return False
        source = self._source
        assert ISendfileSource.providedBy(source)
        try:
            sent = source.sendTo(outlet.fileno, wanted)
        except OSError as e:
            self._refund(wanted)
            if isNoRoom(e):
                return self._waitForRoom(outlet)
            if isConnectionError(e):
                self._broken(outlet)
                return False
            if isUnsupported(e):
                self._fileSends = False
                return None
            self._finish(Failure())
            return False
        except Exception:
            self._refund(wanted)
            self._finish(Failure())
            return False
        if not sent:  # None: cannot; 0: exhausted
            self._refund(wanted)
            if sent is None:
                return None
            self._finish(None)
            return False
        self._refund(wanted - sent)
        self._written(sent)
        outlet.countSent(sent)
        return True

    def _waitForRoom(self, outlet: SocketOutlet, hop: bool = False) -> bool:
        """
        Read the next byte of the stream and hand it over (L{_handOver}).

        @param hop: If that byte must be read in a thread, read a whole
            chunk there instead: the socket has room, and only the bytes the
            transport holds (an HTTP response's headers) go first.
        @return: As L{_sendNext}.
        """
        if self._wanted(1) is None:
            return False
        chunk = None
        if hop:
            chunk = self.chunkSize
            if self._limit is not None:
                chunk = min(chunk, self._limit - self.bytesSent)
        byte = self._read(1, chunk)
        if byte is None:
            # Read in a thread: its first byte is handed over once in hand.
            self._handOverFirst = self._reading is not None
            return False
        return self._handOver(outlet, byte)

    def _handOver(self, outlet: SocketOutlet, byte: bytes) -> bool:
        """
        Hand the consumer the next byte of the stream so that the transport
        pauses the producer, and resumes it once it has sent that byte and
        everything before it.

        @return: As L{_sendNext}.
        """
        self._written(1)
        outlet.waitForRoom(byte)
        if self._state is _State.PRODUCING:
            # The transport did not pause us: it is not one this was written
            # for. Write to it as to any consumer from now on.
            outlet.stopSending()
            return self._writeRest()
        return self._state is not _State.STOPPED

    def _refund(self, count: int) -> None:
        """
        Give back to the throttle what was allowed but not sent.
        """
        if self._throttle is not None and count > 0:
            self._throttle.refund(count)

    def _broken(self, outlet: SocketOutlet) -> None:
        """
        A direct send found the connection gone, before the transport did:
        produce nothing more, and have the transport drop the connection,
        which stops the producer.
        """
        self._pending = None
        self.pauseProducing()
        outlet.broken()

    def _waitFor(self, seconds: float) -> None:
        """
        Go on producing after C{seconds}, unless paused or stopped by then.
        """
        assert self._clock is not None
        self._nextTurn = self._clock.callLater(seconds, self._continue)

    def _continue(self) -> None:
        self._nextTurn = None
        if self._state is _State.PRODUCING:
            self._produce()

    def _woken(self) -> None:
        """
        The stream's turn at a shared rate has come: send what was reserved
        for it. A paused stream waits for no turn; should one come anyway,
        it goes to the others.
        """
        assert self._throttle is not None
        if self._state is not _State.PRODUCING:
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
        self._state = _State.FINISHED
        self._cancelNextTurn()
        if self._throttle is not None:
            self._throttle.release()
        self._notePause(False)
        self._closeSource()
        consumer, self._consumer = self._consumer, None
        self._outlet = self._pending = None
        assert consumer is not None
        consumer.unregisterProducer()
        if failure is None:
            self._done.callback(self.bytesSent)
        else:
            self._done.errback(failure)
