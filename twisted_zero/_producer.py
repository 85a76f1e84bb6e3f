"""
The push producer that streams a source to any L{IConsumer}.
"""

from __future__ import annotations

import enum
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

from ._limits import Throttle
from ._sources import ISource

MAX_CHUNKS_PER_TURN = 16
"""
The most chunks written in one reactor turn. A real transport pauses the
producer long before this; a consumer that never pauses (one that buffers
without bound) gets the rest on later turns instead of an endless loop.
"""


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

    @ivar bytesSent: How many bytes have been written so far.
    @ivar rateWaits: How many times it has waited for its throttle: a
        stream held back by its rate is not stalled.
    """

    _source: ISource = field(alias="source")
    _chunkSize: int | None = field(default=None, alias="chunkSize")
    _limit: int | None = field(default=None, alias="limit")
    _clock: IReactorTime | None = field(default=None, alias="clock")
    _throttle: Throttle | None = field(default=None, alias="throttle")
    _observer: StreamObserver | None = field(default=None, alias="observer")
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
        self._consumer = consumer
        self._state = _State.PRODUCING
        consumer.registerProducer(self, True)
        # registerProducer may pause us, or stop us if the consumer is gone.
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
        """
        if self._state in (_State.STOPPED, _State.FINISHED):
            return
        self._state = _State.STOPPED
        try:
            self._cancelNextTurn()
            if self._throttle is not None:
                self._throttle.release()
            self._notePause(False)
            self._consumer = None
            self._closeSource()
            self._done.errback(Failure(StreamStopped(self.bytesSent)))
        except BaseException:
            self._log.failure("error while stopping a stream")

    def _produce(self) -> None:
        for _ in range(MAX_CHUNKS_PER_TURN):
            if self._limit is None:
                wanted = self.chunkSize
            else:
                wanted = min(self.chunkSize, self._limit - self.bytesSent)
                if wanted <= 0:
                    self._finish(None)
                    return
            if self._throttle is not None:
                allowed = self._throttle.allowance(wanted)
                if not allowed:
                    self.rateWaits += 1
                    self._waitFor(self._throttle.delay(wanted))
                    return
                wanted = allowed
            try:
                chunk = self._source.read(wanted)
            except Exception:
                self._finish(Failure())
                return
            if self._throttle is not None and len(chunk) < wanted:
                self._throttle.refund(wanted - len(chunk))
            if not chunk:
                self._finish(None)
                return
            self.bytesSent += len(chunk)
            if self._observer is not None:
                self._observer.chunkWritten(len(chunk))
            assert self._consumer is not None
            self._consumer.write(chunk)
            # The write may have paused or stopped us.
            if self._state is _State.STOPPED:
                return
            if self._limit is not None and self.bytesSent >= self._limit:
                self._finish(None)
                return
            if self._state is not _State.PRODUCING:
                return
            if self._throttle is not None and self._throttle.contended():
                # Sharing a rate: let the others have their turn first.
                self._waitFor(0)
                return
        self._waitFor(0)

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
        self._state = _State.FINISHED
        self._cancelNextTurn()
        if self._throttle is not None:
            self._throttle.release()
        self._notePause(False)
        self._closeSource()
        consumer, self._consumer = self._consumer, None
        assert consumer is not None
        consumer.unregisterProducer()
        if failure is None:
            self._done.callback(self.bytesSent)
        else:
            self._done.errback(failure)
