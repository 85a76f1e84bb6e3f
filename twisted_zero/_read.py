"""
The producer's reads of its source: how many bytes to read next (the
limit, the throttle), reading them now or in a thread of its I/O pool, and
counting them. L{twisted_zero._send} sends what is read.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from functools import partial

from twisted.python.failure import Failure

from ._interfaces import StreamObserver
from ._iopool import IOPool, Operation
from ._limits import Throttle
from ._sources import IBlockingSource, ISource


class State(enum.Enum):
    """
    A producer's states, which the engine looks at again after every write:
    a write may pause or stop the producer before it returns.
    """

    IDLE = "idle"
    PRODUCING = "producing"
    PAUSED = "paused"
    STOPPED = "stopped"
    FINISHED = "finished"


class ReadEngine:
    """
    The reads of a L{StreamProducer<twisted_zero._producer.StreamProducer>},
    which holds the state they work on and supplies the transitions they
    call.
    """

    # The producer's state, which the reads look at and update.
    _state: State
    _source: ISource
    _limit: int | None
    _throttle: Throttle | None
    _observer: StreamObserver | None
    _ioPool: IOPool | None
    _blocking: bool
    _reading: Operation[bytes] | None
    _readingWanted: int
    _pending: memoryview | None
    bytesSent: int
    rateWaits: int

    # The producer's transitions, which the reads call.
    _produce: Callable[[], None]
    _finish: Callable[[Failure | None], None]
    _waitFor: Callable[[float], None]
    _closeSource: Callable[[], None]

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
        if self._state is State.STOPPED:
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
        if self._state is State.PRODUCING:
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

    def _refund(self, count: int) -> None:
        """
        Give back to the throttle what was allowed but not sent.
        """
        if self._throttle is not None and count > 0:
            self._throttle.refund(count)
