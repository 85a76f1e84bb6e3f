"""
Tests for L{twisted_zero.StreamProducer}: every state transition, driven by
deterministic transports and a counting file.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, cast

import pytest
from twisted.internet.interfaces import (
    IPushProducer,
    IReactorFromThreads,
    IReactorThreads,
    IReactorTime,
)
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted_zero import (
    ChargenSource,
    FileSource,
    ISource,
    SourceTruncated,
    StreamProducer,
    StreamStopped,
    ZeroSource,
)
from twisted_zero._limits import Throttle, TokenBucket
from twisted_zero._producer import MAX_BYTES_PER_TURN, MAX_CHUNKS_PER_TURN
from twisted_zero._sources import CHARGEN_PERIOD, FILE_CHUNK_SIZE, SHARED_CHUNK_SIZE

from .helpers import (
    CountingFile,
    ManualThreads,
    PausingTransport,
    SlowSource,
    TurnClock,
    assertNoResult,
    failureResultOf,
    manualPool,
    successResultOf,
)

CONTENT = bytes(range(256)) * 1000  # 256000 bytes


def fileProducer(
    content: bytes = CONTENT, chunkSize: int = 10_000, limit: int | None = None
) -> tuple[StreamProducer, CountingFile]:
    file = CountingFile(content)
    source = FileSource(file=file, length=len(content))
    producer = StreamProducer(
        source=source,
        chunkSize=chunkSize,
        clock=Clock(),
        limit=limit,
    )
    return producer, file


class StreamProducerTests:
    def test_interface(self) -> None:
        """
        L{StreamProducer} provides L{IPushProducer}.
        """
        assert verifyObject(IPushProducer, StreamProducer(source=ZeroSource()))

    def test_registersAsPushProducer(self) -> None:
        """
        L{StreamProducer.startStreaming} registers the producer as a streaming
        producer and starts writing without being asked.
        """
        transport = PausingTransport()
        producer, file = fileProducer()
        producer.startStreaming(transport)
        assert transport.producer is producer
        assert transport.streaming
        assert producer.state == "paused"
        assert transport.value()
        assert transport.value() == CONTENT[: len(transport.value())]

    def test_writesUntilPaused(self) -> None:
        """
        Writing stops inside the write that makes the transport pause the
        producer: no chunk is read beyond it.
        """
        transport = PausingTransport(bufferSize=25_000)
        producer, file = fileProducer()
        producer.startStreaming(transport)
        assert len(transport.value()) == 30_000
        assert file.reads == 3

    def test_noReadWhilePaused(self) -> None:
        """
        While paused, nothing is read or written; pausing again changes
        nothing.
        """
        transport = PausingTransport(bufferSize=25_000)
        producer, file = fileProducer()
        producer.startStreaming(transport)
        reads, written = file.reads, transport.value()
        producer.pauseProducing()
        producer.pauseProducing()
        assert producer.state == "paused"
        assert (file.reads, transport.value()) == (reads, written)

    def test_resume(self) -> None:
        """
        L{StreamProducer.resumeProducing} continues where the stream was
        paused.
        """
        transport = PausingTransport(bufferSize=25_000)
        producer, file = fileProducer()
        producer.startStreaming(transport)
        assert transport.drain() == CONTENT[:30_000]
        assert transport.value() == CONTENT[30_000:60_000]
        assert producer.state == "paused"
        reads = file.reads
        producer.resumeProducing()
        assert file.reads == reads + 1
        assert transport.value() == CONTENT[30_000:70_000]

    def test_reentrantResumeIgnored(self) -> None:
        """
        A consumer that calls C{resumeProducing} from inside C{write} does not
        start a second writing loop.
        """
        producer: StreamProducer

        class ResumingTransport(PausingTransport):
            def write(self, data: bytes) -> None:
                StringTransport.write(self, data)
                producer.resumeProducing()
                if len(self.value()) >= 30:
                    producer.pauseProducing()

        producer = StreamProducer(source=ZeroSource(), chunkSize=10, clock=Clock())
        transport = ResumingTransport()
        producer.startStreaming(transport)
        assert len(transport.value()) == 30

    def test_wholeFile(self) -> None:
        """
        The whole file arrives byte for byte; the producer then closes the
        file, unregisters and fires its L{Deferred} with the byte count,
        without the caller closing anything.
        """
        transport = PausingTransport(bufferSize=25_000)
        producer, file = fileProducer()
        done = producer.startStreaming(transport)
        received = b""
        while transport.producer is not None:
            assertNoResult(done)
            received += transport.drain()
        received += transport.drain()
        assert received == CONTENT
        assert successResultOf(done) == len(CONTENT)
        assert producer.state == "finished"
        assert file.closeCount == 1
        assert transport.calls[-1] == "unregisterProducer"
        assert not transport.disconnecting

    def test_stop(self) -> None:
        """
        L{StreamProducer.stopProducing} closes the file at once, fails the
        L{Deferred} with L{StreamStopped} carrying the byte count, and
        nothing is read or written after it, whatever is called later.
        """
        transport = PausingTransport(bufferSize=25_000)
        producer, file = fileProducer()
        done = producer.startStreaming(transport)
        producer.stopProducing()
        assert file.closeCount == 1
        assert producer.state == "stopped"
        failure = failureResultOf(done, StreamStopped)
        assert isinstance(failure.value, StreamStopped)
        assert failure.value.bytesSent == 30_000
        reads, written = file.reads, transport.value()
        producer.resumeProducing()
        producer.pauseProducing()
        producer.resumeProducing()
        producer.stopProducing()
        assert (file.reads, transport.value()) == (reads, written)
        assert file.closeCount == 1
        assert producer.state == "stopped"

    def test_stopWhilePaused(self) -> None:
        """
        A paused producer stops just the same.
        """
        transport = PausingTransport(bufferSize=25_000)
        producer, file = fileProducer()
        done = producer.startStreaming(transport)
        producer.pauseProducing()
        producer.stopProducing()
        failureResultOf(done, StreamStopped)
        assert file.closeCount == 1

    def test_stopInsideWrite(self) -> None:
        """
        A consumer that stops the producer inside C{write} (the connection
        was lost while writing) gets no further write and the file no
        further read.
        """
        producer: StreamProducer

        class DyingTransport(PausingTransport):
            def write(self, data: bytes) -> None:
                StringTransport.write(self, data)
                producer.stopProducing()

        producer, file = fileProducer()
        transport = DyingTransport()
        done = producer.startStreaming(transport)
        assert transport.value() == CONTENT[:10_000]
        assert file.reads == 1
        assert file.closeCount == 1
        failureResultOf(done, StreamStopped)

    def test_stopAfterFinish(self) -> None:
        """
        C{stopProducing} after the stream finished does nothing and does not
        raise.
        """
        transport = StringTransport()
        producer, file = fileProducer(content=b"abc")
        done = producer.startStreaming(transport)
        assert successResultOf(done) == 3
        producer.stopProducing()
        assert producer.state == "finished"

    def test_stopNeverRaises(self) -> None:
        """
        If the source fails to close, C{stopProducing} logs the error and
        still does not raise.
        """

        @implementer(ISource)
        class BadSource:
            description = "bad"
            chunkSize = 1

            def read(self, maxBytes: int) -> bytes:
                return b"x"

            def close(self) -> None:
                raise OSError("cannot close")

        producer = StreamProducer(source=BadSource(), clock=Clock())
        transport = PausingTransport(bufferSize=0)
        done = producer.startStreaming(transport)
        with capturedLogs() as events:
            producer.stopProducing()
        failureResultOf(done, StreamStopped)
        [event] = events
        assert event["log_failure"].check(OSError)

    def test_registerOnDisconnectedConsumer(self) -> None:
        """
        A consumer that is already gone stops the producer while it
        registers; nothing is read and the L{Deferred} fails.
        """

        class GoneTransport(PausingTransport):
            def registerProducer(
                self, producer: IPushProducer, streaming: bool
            ) -> None:
                producer.stopProducing()

        producer, file = fileProducer()
        done = producer.startStreaming(GoneTransport())
        failureResultOf(done, StreamStopped)
        assert file.reads == 0
        assert file.closeCount == 1

    def test_sourceChunkSize(self) -> None:
        """
        Without a chunk size, the producer asks the source for its own.
        """
        assert StreamProducer(source=ZeroSource()).chunkSize == SHARED_CHUNK_SIZE
        source = FileSource(file=CountingFile(b""), length=0)
        assert StreamProducer(source=source).chunkSize == FILE_CHUNK_SIZE
        assert StreamProducer(source=source, chunkSize=5).chunkSize == 5

    def test_pausedWhileRegistering(self) -> None:
        """
        A consumer that pauses the producer as it registers it gets nothing
        until it resumes it.
        """

        class Busy(PausingTransport):
            def registerProducer(
                self, producer: IPushProducer, streaming: bool
            ) -> None:
                StringTransport.registerProducer(self, producer, streaming)
                producer.pauseProducing()

        transport = Busy()
        producer, file = fileProducer()
        producer.startStreaming(transport)
        assert (transport.value(), file.reads) == (b"", 0)
        producer.resumeProducing()
        assert transport.value()

    def test_startTwice(self) -> None:
        """
        A producer streams once.
        """
        producer, file = fileProducer(content=b"abc")
        producer.startStreaming(StringTransport())
        with pytest.raises(RuntimeError):
            producer.startStreaming(StringTransport())

    def test_badParameters(self) -> None:
        """
        A chunk size below one or a negative limit is refused.
        """
        with pytest.raises(ValueError):
            StreamProducer(source=ZeroSource(), chunkSize=0)
        with pytest.raises(ValueError):
            StreamProducer(source=ZeroSource(), limit=-1)

    def test_truncatedFile(self) -> None:
        """
        A file that is shorter than promised ends the stream: the file is
        closed, the producer unregistered and the L{Deferred} fails with
        L{SourceTruncated}; nothing is padded.
        """
        file = CountingFile(b"x" * 15_000)
        producer = StreamProducer(
            source=FileSource(file=file, length=50_000), chunkSize=10_000, clock=Clock()
        )
        transport = PausingTransport()
        done = producer.startStreaming(transport)
        failureResultOf(done, SourceTruncated)
        assert transport.value() == b"x" * 15_000
        assert transport.producer is None
        assert file.closeCount == 1
        assert producer.state == "finished"


class LimitTests:
    def drainAll(self, producer: StreamProducer) -> tuple[bytes, int]:
        transport = PausingTransport()
        done = producer.startStreaming(transport)
        received = b""
        for _ in range(10_000):
            if transport.producer is None:
                break
            received += transport.drain()
        received += transport.drain()
        return received, successResultOf(done)

    def test_exactLimit(self) -> None:
        """
        With a limit, exactly that many bytes are written, whatever the
        chunk size, and the producer unregisters.
        """
        for limit, chunkSize in [(1, 7), (100_000, 65536), (65536, 65536), (7, 100)]:
            received, count = self.drainAll(
                StreamProducer(
                    source=ChargenSource(),
                    chunkSize=chunkSize,
                    limit=limit,
                    clock=Clock(),
                )
            )
            assert (len(received), count) == (limit, limit)
            pattern = CHARGEN_PERIOD * (limit // len(CHARGEN_PERIOD) + 1)
            assert received == pattern[:limit]

    def test_zeroLimit(self) -> None:
        """
        A limit of zero sends nothing, reads nothing and finishes at once.
        """
        producer, file = fileProducer(limit=0)
        transport = StringTransport()
        done = producer.startStreaming(transport)
        assert successResultOf(done) == 0
        assert (transport.value(), file.reads) == (b"", 0)
        assert transport.producer is None

    def test_limitShorterThanFile(self) -> None:
        """
        A limit below the file's size sends the file's first bytes only.
        """
        received, count = self.drainAll(fileProducer(limit=12_345)[0])
        assert received == CONTENT[:12_345]

    def test_limitLongerThanFile(self) -> None:
        """
        A limit beyond the file's size sends the whole file, no padding.
        """
        received, count = self.drainAll(fileProducer(limit=10**9)[0])
        assert received == CONTENT

    def test_finishesWhilePaused(self) -> None:
        """
        The write that reaches the limit ends the stream even if it also
        paused the producer: the caller can close the connection without
        another turn.
        """
        transport = PausingTransport(bufferSize=10)
        producer = StreamProducer(
            source=ZeroSource(), chunkSize=100, limit=100, clock=Clock()
        )
        done = producer.startStreaming(transport)
        assert successResultOf(done) == 100
        assert transport.producer is None


class TurnTests:
    def test_consumerThatNeverPauses(self) -> None:
        """
        A consumer that never pauses gets at most L{MAX_CHUNKS_PER_TURN}
        chunks per reactor turn; the rest come on later turns.
        """
        clock = TurnClock()
        transport = StringTransport()
        producer = StreamProducer(source=ZeroSource(), chunkSize=10, clock=clock)
        done = producer.startStreaming(transport)
        assert len(transport.value()) == 10 * MAX_CHUNKS_PER_TURN
        assert clock.runTurn() == 1
        assert len(transport.value()) == 20 * MAX_CHUNKS_PER_TURN
        producer.stopProducing()
        assert clock.runTurn() == 0
        failureResultOf(done, StreamStopped)

    def test_bytesPerTurn(self) -> None:
        """
        A consumer that never pauses gets at most about
        L{MAX_BYTES_PER_TURN} bytes per reactor turn: the turn ends after
        the write that reaches it.
        """
        clock = TurnClock()
        transport = StringTransport()
        producer = StreamProducer(source=ZeroSource(), chunkSize=1_500_000, clock=clock)
        done = producer.startStreaming(transport)
        perTurn = MAX_BYTES_PER_TURN
        assert len(transport.value()) == perTurn
        assert clock.runTurn() == 1
        assert len(transport.value()) == 2 * perTurn
        producer.stopProducing()
        failureResultOf(done, StreamStopped)

    def test_pauseCancelsNextTurn(self) -> None:
        """
        Pausing or stopping cancels the pending turn.
        """
        clock = Clock()
        producer = StreamProducer(source=ZeroSource(), chunkSize=10, clock=clock)
        transport = StringTransport()
        done = producer.startStreaming(transport)
        producer.pauseProducing()
        assert clock.getDelayedCalls() == []
        producer.resumeProducing()
        assert len(transport.value()) == 20 * MAX_CHUNKS_PER_TURN
        producer.stopProducing()
        assert clock.getDelayedCalls() == []
        failureResultOf(done, StreamStopped)

    def test_defaultClock(self) -> None:
        """
        Without a clock, the producer uses the global reactor.
        """
        from twisted.internet import reactor

        producer = StreamProducer(source=ZeroSource(), chunkSize=10)
        done = producer.startStreaming(StringTransport())
        assert producer._clock is reactor
        producer.stopProducing()
        failureResultOf(done, StreamStopped)
        assert not [
            call
            for call in cast(IReactorTime, reactor).getDelayedCalls()
            if call.active()
        ]


class SharedChunkTests:
    """
    Shared chunks are handed out as they are.
    """

    @pytest.mark.parametrize("chunkSize", [1, 10, 4096])
    def test_noCopiesOfSharedChunks(self, chunkSize: int) -> None:
        """
        The transport receives the source's shared objects, not copies.
        """
        chunks: list[bytes] = []

        class Recorder(PausingTransport):
            def write(self, data: bytes) -> None:
                chunks.append(data)
                assert self.producer is not None
                self.producer.pauseProducing()

        StreamProducer(
            source=ZeroSource(), chunkSize=chunkSize, clock=Clock()
        ).startStreaming(Recorder())
        assert chunks[0] is ZeroSource().read(chunkSize)


def slowProducer(
    content: bytes = CONTENT,
    cached: bool = False,
    limit: int | None = None,
    throttle: Throttle | None = None,
) -> tuple[StreamProducer, SlowSource, ManualThreads]:
    pool, threads = manualPool()
    source = SlowSource(content, cached=cached)
    producer = StreamProducer(
        source=source,
        chunkSize=10_000,
        clock=Clock(),
        ioPool=pool,
        limit=limit,
        throttle=throttle,
    )
    return producer, source, threads


class ThreadedReadTests:
    """
    A source whose reads may block is read in a thread of the producer's
    pool, driven here by hand.
    """

    def test_missReadsInThread(self) -> None:
        """
        Bytes not known to be in memory are read in a thread: nothing is
        written until the read returns; then its chunk is written and the
        next read is submitted, one at a time.
        """
        transport = PausingTransport(bufferSize=10**9)
        producer, source, threads = slowProducer()
        producer.startStreaming(transport)
        assert (len(threads.queued), source.reads) == (1, 0)
        assert transport.value() == b""
        threads.runThread()
        assert source.reads == 1
        assert threads.queued == []
        threads.deliver()
        assert transport.value() == CONTENT[:10_000]
        assert len(threads.queued) == 1

    def test_oneReadInFlight(self) -> None:
        """
        Never more than one read is queued or running, however often the
        producer is resumed or its turn comes while one is.
        """
        transport = PausingTransport(bufferSize=10**9)
        clock = Clock()
        pool, threads = manualPool()
        source = SlowSource(CONTENT)
        producer = StreamProducer(
            source=source, chunkSize=10_000, clock=clock, ioPool=pool
        )
        done = producer.startStreaming(transport)
        while threads.queued:
            producer.pauseProducing()
            producer.resumeProducing()
            producer.resumeProducing()
            clock.advance(0)
            assert len(threads.queued) == 1
            assert pool.inFlight == 1
            threads.runThread()
            producer.resumeProducing()
            assert threads.queued == []
            threads.deliver()
            clock.advance(0)
        assert successResultOf(done) == len(CONTENT)
        assert transport.value() == CONTENT
        assert pool.inFlight == 0
        assert source.closed

    def test_hitReadsInline(self) -> None:
        """
        Bytes in memory are read at once, with no thread.
        """
        transport = PausingTransport(bufferSize=25_000)
        producer, source, threads = slowProducer(cached=True)
        producer.startStreaming(transport)
        assert threads.queued == []
        assert source.nowaitHits == 3
        assert transport.value() == CONTENT[:30_000]

    def test_pausedDuringRead(self) -> None:
        """
        A read that returns while the producer is paused is held: nothing is
        written or read until it is resumed, which writes that chunk first.
        """
        transport = PausingTransport(bufferSize=10**9)
        producer, source, threads = slowProducer()
        producer.startStreaming(transport)
        producer.pauseProducing()
        threads.runThread()
        threads.deliver()
        assert transport.value() == b""
        assert (threads.queued, source.reads) == ([], 1)
        producer.resumeProducing()
        assert transport.value() == CONTENT[:10_000]
        assert (len(threads.queued), source.reads) == (1, 1)

    def test_stopWhileQueued(self) -> None:
        """
        Stopped while its read waits for a thread, the producer skips that
        read and closes the source at once.
        """
        transport = PausingTransport(bufferSize=10**9)
        producer, source, threads = slowProducer()
        done = producer.startStreaming(transport)
        producer.stopProducing()
        assert source.closed
        failureResultOf(done, StreamStopped)
        threads.runAll()
        assert source.reads == 0
        assert transport.value() == b""

    def test_stopWhileRunning(self) -> None:
        """
        Stopped while a thread reads, the producer leaves the source open
        until that read returns, then drops its bytes, closes the source and
        reads nothing more.
        """
        transport = PausingTransport(bufferSize=10**9)
        pool, threads = manualPool()
        source = SlowSource(CONTENT)
        producer = StreamProducer(
            source=source, chunkSize=10_000, clock=Clock(), ioPool=pool
        )
        done = producer.startStreaming(transport)
        threads.runThread()  # the read ran; its result is on its way
        producer.stopProducing()
        failureResultOf(done, StreamStopped)
        assert not source.closed
        assert pool.inFlight == 1
        threads.deliver()
        assert source.closed
        assert pool.inFlight == 0
        threads.runAll()
        assert source.reads == 1
        assert transport.value() == b""

    def test_stopThenResume(self) -> None:
        """
        Resuming a producer stopped during a read starts no read.
        """
        transport = PausingTransport(bufferSize=10**9)
        producer, source, threads = slowProducer()
        done = producer.startStreaming(transport)
        threads.runThread()
        producer.stopProducing()
        producer.resumeProducing()
        threads.runAll()
        assert source.reads == 1
        failureResultOf(done, StreamStopped)

    def test_errorInThread(self) -> None:
        """
        An error raised by a read in a thread ends the stream as one raised
        at once does: the producer is unregistered, the source closed, and
        the result fails with it.
        """
        transport = PausingTransport(bufferSize=10**9)
        producer, source, threads = slowProducer()
        source.failWith = SourceTruncated("file shrank")
        done = producer.startStreaming(transport)
        threads.runAll()
        failureResultOf(done, SourceTruncated)
        assert source.closed
        assert transport.producer is None
        assert producer.state == "finished"

    def test_throttleRefundedOnStop(self) -> None:
        """
        What a read in flight was allowed by the throttle is given back when
        the producer is stopped, whether the read is skipped or dropped.
        """
        for runFirst in (False, True):
            throttle = Throttle(buckets=[TokenBucket(clock=Clock(), rate=10**6)])
            transport = PausingTransport(bufferSize=10**9)
            producer, source, threads = slowProducer(throttle=throttle)
            done = producer.startStreaming(transport)
            available = throttle.allowance(10**9)
            throttle.refund(available)
            if runFirst:
                threads.runThread()
            producer.stopProducing()
            threads.runAll()
            failureResultOf(done, StreamStopped)
            assert throttle.allowance(10**9) == available + 10_000

    def test_errorAfterStop(self) -> None:
        """
        An error from a read that returns after the producer was stopped is
        dropped with its bytes: the stream had already ended.
        """
        transport = PausingTransport(bufferSize=10**9)
        producer, source, threads = slowProducer()
        source.failWith = OSError("I/O error")
        done = producer.startStreaming(transport)
        threads.runThread()
        producer.stopProducing()
        threads.deliver()
        failureResultOf(done, StreamStopped)
        assert source.closed

    def test_endInThread(self) -> None:
        """
        A read in a thread that finds the source exhausted finishes the
        stream with the bytes written.
        """
        transport = PausingTransport(bufferSize=10**9)
        producer, source, threads = slowProducer(content=b"x" * 15_000)
        done = producer.startStreaming(transport)
        threads.runAll()
        assert successResultOf(done) == 15_000
        assert source.reads == 3
        assert source.closed

    def test_limitWithThreads(self) -> None:
        """
        The limit holds for reads in threads: none asks for more than is
        left, and none is made once it is reached.
        """
        transport = PausingTransport(bufferSize=10**9)
        producer, source, threads = slowProducer(limit=12_345)
        done = producer.startStreaming(transport)
        threads.runAll()
        assert successResultOf(done) == 12_345
        assert transport.value() == CONTENT[:12_345]
        assert source.asked == [10_000, 2_345]

    def test_slowReaderBoundedWithThreads(self) -> None:
        """
        A consumer that stops taking bytes pauses the producer: at most one
        chunk is then in hand and no further read is made, however long the
        threads run.
        """
        transport = PausingTransport(bufferSize=15_000)
        producer, source, threads = slowProducer()
        producer.startStreaming(transport)
        threads.runAll()
        assert producer.state == "paused"
        assert source.reads == 2
        assert len(transport.value()) == 20_000
        transport.drain()
        threads.runAll()
        assert producer.state == "paused"
        assert source.reads == 4

    def test_noPoolReadsInline(self) -> None:
        """
        With no pool and a clock that has no threads, a source whose reads
        may block is read at once, as any other.
        """
        transport = PausingTransport(bufferSize=25_000)
        source = SlowSource(CONTENT)
        producer = StreamProducer(source=source, chunkSize=10_000, clock=Clock())
        producer.startStreaming(transport)
        assert source.reads == 3
        assert source.nowaitHits == 0

    def test_reactorPoolByDefault(self) -> None:
        """
        With no pool given, a producer whose clock is a reactor with threads
        uses the reactor's own thread pool.
        """
        threads = ManualThreads()

        @implementer(IReactorThreads, IReactorFromThreads)
        class ThreadedClock(Clock):
            def getThreadPool(self) -> ThreadPool:
                return cast(ThreadPool, threads)  # runs its threads by hand

            def callInThread(
                self, callable: Callable[..., Any], *args: object, **kwargs: object
            ) -> None:
                threads.callInThread(callable, *args, **kwargs)

            def callFromThread(
                self, callable: Callable[..., Any], *args: object, **kwargs: object
            ) -> None:
                threads.callFromThread(callable, *args, **kwargs)

            def suggestThreadPoolSize(self, size: int) -> None:
                pass

        source = SlowSource(CONTENT)
        producer = StreamProducer(
            source=source, chunkSize=10_000, clock=ThreadedClock()
        )
        transport = PausingTransport(bufferSize=10**9)
        producer.startStreaming(transport)
        assert (len(threads.queued), source.reads) == (1, 0)
        threads.runThread()
        threads.deliver()
        assert transport.value() == CONTENT[:10_000]


class NullObserver:
    """
    A stream's observer that is told everything and keeps nothing.
    """

    def chunkWritten(self, count: int) -> None:
        pass

    def pauseChanged(self, paused: bool) -> None:
        pass


class ReleaseTests:
    """
    A producer that has ended holds nothing that could hold its connection.
    """

    @pytest.mark.parametrize("ending", ["stopped", "finished"])
    def test_observerReleased(self, ending: str) -> None:
        """
        Once stopped or finished, the producer no longer holds its observer:
        an observer that holds the connection (the unsent limit's does)
        would otherwise make a cycle with a consumer that keeps its producer
        after the end (Twisted's TLS transport does), freed only by the
        garbage collector, late, with the connection's buffers.
        """
        observer = NullObserver()
        released = weakref.ref(observer)
        producer = StreamProducer(
            source=ZeroSource(),
            chunkSize=10,
            limit=100 if ending == "finished" else None,
            clock=Clock(),
            observer=observer,
        )
        transport = PausingTransport(bufferSize=50)
        producer.startStreaming(transport)
        if ending == "stopped":
            producer.stopProducing()
        else:
            while transport.producer is not None:
                transport.drain()
        del observer
        assert released() is None
