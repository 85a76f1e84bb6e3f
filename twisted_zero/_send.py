"""
The send engine: how a L{StreamProducer<twisted_zero._producer.StreamProducer>}
moves its source's bytes, one step at a time, to its consumer or straight
to the socket under it (an L{outlet<twisted_zero._outlet.SocketOutlet>}).

Each step sends or writes the next bytes and answers with a L{Sent}: what
the producer does next. How those bytes are read from the source is in
L{twisted_zero._read}; the producer's state machine (pause, resume, stop,
finish, turns) in L{twisted_zero._producer}.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure

from ._kernel import isConnectionError, isNoRoom, isUnsupported
from ._outlet import SocketOutlet
from ._read import ReadEngine, State
from ._sources import IRewindableSource, ISendfileSource

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


class Sent(enum.Enum):
    """
    What the producer does after a step of the send engine.

    @cvar MORE: Go on with the next step in this turn, once the limit and
        the producer's state have been looked at (the step may have paused
        it: a write that fills the transport's buffer does).
    @cvar WAIT: End this turn; something calls the producer back: the
        transport (L{resumeProducing
        <twisted_zero._producer.StreamProducer.resumeProducing>} once the
        socket has room), the throttle, a read in a thread as it returns.
    @cvar DONE: End this turn; the stream has ended (it finished, or was
        stopped) and nothing calls the producer back.
    @cvar READ: Only from C{_sendFromFile}: the next bytes cannot be sent
        from the source's file; read them instead.
    """

    MORE = "more"
    WAIT = "wait"
    DONE = "done"
    READ = "read"


class SendEngine(ReadEngine):
    """
    The steps that send and write a stream's bytes, for
    L{StreamProducer<twisted_zero._producer.StreamProducer>}, which holds
    the state they work on and supplies the transitions they call.
    """

    # The producer's state, which the steps read and update, besides what
    # ReadEngine declares.
    _consumer: IConsumer | None
    _outlet: SocketOutlet | None
    _fileSends: bool
    _sharedChunks: bool
    _rewindable: bool
    _handOverFirst: bool
    _chunkSize: int

    # The producer's transitions, which the steps call.
    _broken: Callable[[], None]
    stopProducing: Callable[[], None]

    def _ended(self) -> Sent:
        """
        The answer of a step that cannot go on: L{Sent.DONE} once the
        producer is stopped or finished, else L{Sent.WAIT}.
        """
        if self._state is State.STOPPED or self._state is State.FINISHED:
            return Sent.DONE
        return Sent.WAIT

    def _sendNext(self) -> Sent:
        """
        Send or write the next bytes: the rest of the chunk in hand, bytes
        straight from the source's file, or a chunk read from the source.
        """
        if self._pending is not None:
            return self._sendPending()
        # An outlet no longer usable is kept for writes: a chunk it began
        # must be ended before any other.
        outlet = self._outlet
        if outlet is not None and not outlet.usable():
            if outlet.shut():
                # Nothing written will be sent: read nothing more.
                self.stopProducing()
                return Sent.DONE
            outlet = None
        if outlet is not None:
            if not outlet.ready():
                # The transport still holds bytes: send directly once it
                # has sent them. Only an HTTP response's headers leave the
                # socket room for a whole chunk meanwhile.
                return self._waitForRoom(outlet, hop=outlet.awaitingHeaders())
            if self._fileSends:
                sent = self._sendFromFile(outlet)
                if sent is not Sent.READ:
                    return sent
                # Not from the file this time: read instead.
        size = self._chunkSize
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
            return self._ended()
        chunk = self._read(wanted)
        if chunk is None:
            return self._ended()
        self._pending = memoryview(chunk)
        if outlet is not None:
            return self._sendPending()
        return self._writeRest()

    def _sendPending(self) -> Sent:
        """
        Send the rest of the chunk in hand straight to the socket.
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
            self._broken()
            return Sent.DONE
        self._written(sent)
        outlet.countSent(sent)
        if sent == len(view):
            self._pending = None
            return Sent.MORE
        # The socket is full.
        rest = view[sent + 1 :] if len(view) > sent + 1 else None
        if rest is not None and not self._sharedChunks:
            if len(rest) > MAX_HELD and self._rewindable:
                try:
                    IRewindableSource(self._source).rewind(len(rest))
                except Exception:
                    self._finish(Failure())
                    return Sent.DONE
                self._refund(len(rest))
                rest = None
            elif len(rest) < memoryview(rest.obj).nbytes // 2:
                # A view keeps its whole chunk alive: keep a copy of the rest.
                rest = memoryview(bytes(rest))
        self._pending = rest
        return self._handOver(outlet, bytes(view[sent : sent + 1]))

    def _writeRest(self) -> Sent:
        """
        Write the next bytes of the chunk in hand to the consumer, as any
        producer does, at most L{CONSUMER_WRITE_SIZE} of them: a transport
        copies what it is given.
        """
        view = self._pending
        if view is None:
            return Sent.DONE if self._state is State.STOPPED else Sent.MORE
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
        return Sent.DONE if self._state is State.STOPPED else Sent.MORE

    def _sendFromFile(self, outlet: SocketOutlet) -> Sent:
        """
        Send bytes from the source's file straight to the socket with
        C{sendfile()}; L{Sent.READ} if the source cannot send its next bytes
        this way.
        """
        wanted = self._wanted(KERNEL_SEND_SIZE)
        if wanted is None:
            return self._ended()
        source = self._source
        assert ISendfileSource.providedBy(source)
        try:
            sent = source.sendTo(outlet.fileno, wanted)
        except OSError as e:
            self._refund(wanted)
            if isNoRoom(e):
                return self._waitForRoom(outlet)
            if isConnectionError(e):
                self._broken()
                return Sent.DONE
            if isUnsupported(e):
                self._fileSends = False
                return Sent.READ
            self._finish(Failure())
            return Sent.DONE
        except Exception:
            self._refund(wanted)
            self._finish(Failure())
            return Sent.DONE
        if not sent:  # None: cannot; 0: exhausted
            self._refund(wanted)
            if sent is None:
                return Sent.READ
            self._finish(None)
            return Sent.DONE
        self._refund(wanted - sent)
        self._written(sent)
        outlet.countSent(sent)
        return Sent.MORE

    def _waitForRoom(self, outlet: SocketOutlet, hop: bool = False) -> Sent:
        """
        Read the next byte of the stream and hand it over (L{_handOver}).

        @param hop: If that byte must be read in a thread, read a whole
            chunk there instead: the socket has room, and only the bytes the
            transport holds (an HTTP response's headers) go first.
        """
        if self._wanted(1) is None:
            return self._ended()
        chunk = None
        if hop:
            chunk = self._chunkSize
            if self._limit is not None:
                chunk = min(chunk, self._limit - self.bytesSent)
        byte = self._read(1, chunk)
        if byte is None:
            # Read in a thread: its first byte is handed over once in hand.
            self._handOverFirst = self._reading is not None
            return self._ended()
        return self._handOver(outlet, byte)

    def _handOver(self, outlet: SocketOutlet, byte: bytes) -> Sent:
        """
        Hand the consumer the next byte of the stream so that the transport
        pauses the producer, and resumes it once it has sent that byte and
        everything before it.
        """
        self._written(1)
        outlet.waitForRoom(byte)
        if self._state is State.PRODUCING:
            # The transport did not pause us: it is not one this was written
            # for. Write to it as to any consumer from now on.
            outlet.stopSending()
            return self._writeRest()
        return Sent.DONE if self._state is State.STOPPED else Sent.MORE
