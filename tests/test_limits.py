"""
Tests for L{twisted_zero._limits}: token buckets, shared turns and
rate-limited streaming, on a task clock.
"""

from __future__ import annotations

from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from twisted_zero import StreamProducer, StreamStopped, ZeroSource
from twisted_zero._limits import (
    MIN_BURST,
    MIN_QUANTUM,
    SharedBucket,
    Throttle,
    TokenBucket,
)
from twisted_zero._protection import Protection

from .helpers import PausingTransport


class Counter(StringTransport):
    """
    A consumer that takes everything and only counts it.
    """

    def __init__(self) -> None:
        StringTransport.__init__(self)
        self.count = 0

    def write(self, data: bytes) -> None:
        self.count += len(data)


def written(transport: StringTransport) -> bytes:
    """
    What C{transport} holds of what was written to it.
    """
    data: bytes = StringTransport.value(transport)
    return data


def streamShared(
    streams: int, seconds: int, rate: int = 1_000_000, step: float = 0.01
) -> tuple[list[int], SharedBucket, Clock]:
    """
    Stream zeros to C{streams} consumers that never pause, all under one
    total C{rate}, for C{seconds} of a task clock advanced C{step} seconds
    at a time; then stop them.

    @return: The bytes each consumer received, the shared bucket, the clock.
    """
    clock = Clock()
    total = SharedBucket(clock=clock, rate=rate)
    consumers = [Counter() for _ in range(streams)]
    producers = [
        StreamProducer(
            source=ZeroSource(), clock=clock, throttle=Throttle(buckets=[total])
        )
        for _ in consumers
    ]
    for producer, consumer in zip(producers, consumers, strict=True):
        producer.startStreaming(consumer).addErrback(lambda f: f.trap(StreamStopped))
    for _ in range(round(seconds / step)):
        clock.advance(step)
    for producer in producers:
        producer.stopProducing()
    return [c.count for c in consumers], total, clock


class TokenBucketTests:
    def test_startsFull(self) -> None:
        """
        A new bucket holds one burst: 50 ms of its rate, at least 16 KiB.
        """
        clock = Clock()
        assert TokenBucket(clock=clock, rate=10_000_000).available() == 500_000
        assert TokenBucket(clock=clock, rate=1000).available() == MIN_BURST
        assert TokenBucket(clock=clock, rate=1000, burst=10).available() == 10

    def test_refill(self) -> None:
        """
        Spent tokens come back at the rate, up to the burst.
        """
        clock = Clock()
        bucket = TokenBucket(clock=clock, rate=1000, burst=5000)
        bucket.take(5000)
        assert bucket.available() == 0
        clock.advance(2)
        assert bucket.available() == 2000
        assert bucket.delay(2500) == pytest.approx(0.5)
        assert bucket.delay(3000) == pytest.approx(0.5)  # half a burst
        clock.advance(100)
        assert bucket.available() == 5000
        assert bucket.delay(100_000) == 0

    def test_badRate(self) -> None:
        """
        A rate must be positive.
        """
        with pytest.raises(ValueError):
            TokenBucket(clock=Clock(), rate=0)


class ThrottleTests:
    def test_allowance(self) -> None:
        """
        A throttle allows what its emptiest bucket allows, and takes it from
        all; a refund gives it back.
        """
        clock = Clock()
        small = TokenBucket(clock=clock, rate=100, burst=300)
        large = TokenBucket(clock=clock, rate=100, burst=1000)
        throttle = Throttle(buckets=[small, large])
        assert throttle.allowance(500) == 300
        assert (small.available(), large.available()) == (0, 700)
        assert throttle.allowance(500) == 0
        throttle.refund(100)
        assert (small.available(), large.available()) == (100, 800)

    def test_delayReported(self) -> None:
        """
        Each wait is reported, with its length.
        """
        clock = Clock()
        waits: list[float] = []
        throttle = Throttle(
            buckets=[TokenBucket(clock=clock, rate=100, burst=100)], onWait=waits.append
        )
        throttle.allowance(100)
        assert throttle.delay(50) == pytest.approx(0.5)
        assert waits == [pytest.approx(0.5)]


def queued(bucket: SharedBucket, count: int) -> tuple[list[Throttle], list[int]]:
    """
    C{count} throttles on C{bucket} that have asked for bytes and wait for
    their turn, and the list their wake-ups append their index to.
    """
    throttles = [Throttle(buckets=[bucket]) for _ in range(count)]
    woken: list[int] = []
    for index, throttle in enumerate(throttles):
        throttle.wakeWith(partial(woken.append, index))
        assert throttle.allowance(10**9) == 0
        assert throttle.delay(10**9) is None
    return throttles, woken


class SharedBucketTests:
    def test_quantum(self) -> None:
        """
        A turn is worth a fair share of a burst, at most an eighth of it, at
        least L{MIN_QUANTUM}, and never more than the burst.
        """
        clock = Clock()
        bucket = SharedBucket(clock=clock, rate=10_000_000)
        assert bucket.burst == 500_000
        assert bucket.quantum() == 500_000 // 8
        throttles = [Throttle(buckets=[bucket]) for _ in range(20)]
        assert bucket.quantum() == 500_000 // 20
        throttles += [Throttle(buckets=[bucket]) for _ in range(1000)]
        assert bucket.quantum() == MIN_QUANTUM
        for throttle in throttles:
            throttle.release()
        assert bucket.users == 0
        assert SharedBucket(clock=clock, rate=1000, burst=1000).quantum() == 1000

    def test_turnsInOrder(self) -> None:
        """
        Streams that wait are woken in the order they came, each with one
        quantum reserved, as the quanta accrue; a stream that asks again
        goes last. One timer serves them all.
        """
        clock = Clock()
        bucket = SharedBucket(clock=clock, rate=100_000, burst=40_000)
        bucket.take(40_000)
        throttles, woken = queued(bucket, 3)
        assert bucket.quantum() == MIN_QUANTUM
        assert len(clock.getDelayedCalls()) == 1
        assert bucket.waiting == 3
        clock.advance(MIN_QUANTUM / 100_000)
        assert woken == [0]
        assert throttles[0].allowance(10**9) == MIN_QUANTUM
        assert throttles[0].allowance(10**9) == 0
        clock.advance(2 * MIN_QUANTUM / 100_000)
        assert woken == [0, 1, 2]
        clock.advance(MIN_QUANTUM / 100_000)
        assert woken == [0, 1, 2, 0]
        assert [t.allowance(10**9) for t in throttles] == [MIN_QUANTUM] * 3
        assert bucket.waiting == 0
        assert clock.getDelayedCalls() == []

    def test_noJumpingTheQueue(self) -> None:
        """
        A stream that asks while others wait gets nothing, even with tokens
        in the bucket (as a stream resumed by its transport would find
        them): they are for those that waited.
        """
        clock = Clock()
        bucket = SharedBucket(clock=clock, rate=100_000, burst=80_000)
        throttles, woken = queued(bucket, 2)
        assert bucket.available() == 80_000
        late = Throttle(buckets=[bucket])
        assert late.allowance(1000) == 0
        assert late.delay(1000) is None
        assert late.allowance(1000) == 0  # queued once
        assert bucket.waiting == 3
        clock.advance(0)
        assert woken == [0, 1]
        assert late.allowance(1000) == 1000
        assert late.allowance(10**9) == MIN_QUANTUM - 1000

    def test_turnsSpaced(self) -> None:
        """
        A stream gets at most one turn per quantum's worth of the rate,
        however many tokens there are (a timer that fires late catches up by
        one turn): alone, it gets the rate, not the burst.
        """
        clock = Clock()
        bucket = SharedBucket(clock=clock, rate=1_000_000, burst=800_000)
        throttle = Throttle(buckets=[bucket])
        grants: list[int] = []

        def wake() -> None:
            while allowed := throttle.allowance(10**9):
                grants.append(allowed)

        throttle.wakeWith(wake)
        assert throttle.allowance(10**9) == 0
        quantum = bucket.quantum()
        assert quantum == 100_000
        clock.advance(0)
        assert grants == [quantum]
        assert bucket.waiting == 1
        clock.advance(0.099)
        assert grants == [quantum]
        clock.advance(0.001)
        assert grants == [quantum] * 2
        clock.advance(0.3)
        assert grants == [quantum] * 4
        throttle.release()
        assert clock.getDelayedCalls() == []

    def test_lone(self) -> None:
        """
        A stream alone gets the whole rate, a quantum at a time, but not
        the burst that accrued before it came.
        """
        sent, total, clock = streamShared(1, 10, rate=10_000_000, step=0.001)
        assert sent[0] == pytest.approx(100_000_000 + total.quantum(), rel=0.001)

    def test_withdraw(self) -> None:
        """
        A stream that withdraws leaves the queue and gives back what was
        reserved for it, and asking again queues it last; once none waits,
        nothing stays scheduled.
        """
        clock = Clock()
        bucket = SharedBucket(clock=clock, rate=100_000, burst=80_000)
        throttles, woken = queued(bucket, 3)
        throttles[1].withdraw()
        assert bucket.waiting == 2
        clock.advance(0)
        assert woken == [0, 2]
        assert bucket.available() == 80_000 - 2 * MIN_QUANTUM
        throttles[0].withdraw()
        assert bucket.available() == 80_000 - MIN_QUANTUM
        assert throttles[0].allowance(10**9) == 0
        throttles[0].withdraw()
        throttles[2].release()
        throttles[2].release()
        assert bucket.available() == 80_000
        assert clock.getDelayedCalls() == []
        assert bucket.users == 2

    def test_ownRateFirst(self) -> None:
        """
        A stream whose own rate holds it back takes no turn at the shared
        one (and gives back a reservation it cannot use): it waits for its
        own bucket, then for its turn.
        """
        clock = Clock()
        shared = SharedBucket(clock=clock, rate=1_000_000)
        own = TokenBucket(clock=clock, rate=20_000, burst=10_000)
        throttle = Throttle(buckets=[own, shared])
        assert throttle.allowance(10**9) == 0
        assert throttle.delay(10**9) is None
        clock.advance(0)
        assert shared.quantum() > 10_000
        assert throttle.allowance(10**9) == 10_000
        assert throttle.allowance(10**9) == 0
        assert throttle.delay(10**9) == pytest.approx(0.25)
        assert shared.waiting == 0
        assert shared.available() == shared.burst - 10_000
        clock.advance(0.25)
        assert throttle.allowance(10**9) == 0
        assert shared.waiting == 1
        throttle.release()
        assert clock.getDelayedCalls() == []

    def test_waitReported(self) -> None:
        """
        How long a stream waited for its turn is reported when it comes.
        """
        clock = Clock()
        waits: list[float] = []
        bucket = SharedBucket(clock=clock, rate=MIN_QUANTUM)
        bucket.take(bucket.burst)
        throttle = Throttle(buckets=[bucket], onWait=waits.append)
        assert throttle.allowance(1) == 0
        assert throttle.delay(1) is None
        assert waits == []
        clock.advance(1)
        assert waits == [pytest.approx(1)]

    def test_oneSharedBucket(self) -> None:
        """
        A throttle draws on one shared bucket at most.
        """
        clock = Clock()
        with pytest.raises(ValueError):
            Throttle(
                buckets=[
                    SharedBucket(clock=clock, rate=1),
                    SharedBucket(clock=clock, rate=1),
                ]
            )

    def test_comeAndGo(self) -> None:
        """
        Thousands of streams that ask for bytes and end at once leave
        nothing behind, and a stream that stays still gets the whole rate.
        """
        clock = Clock()
        bucket = SharedBucket(clock=clock, rate=1_000_000)
        consumer = Counter()
        producer = StreamProducer(
            source=ZeroSource(), clock=clock, throttle=Throttle(buckets=[bucket])
        )
        producer.startStreaming(consumer)
        for _ in range(1000):
            for _ in range(5):
                throttle = Throttle(buckets=[bucket])
                assert throttle.allowance(10**6) == 0
                throttle.release()
            clock.advance(0.01)
        assert consumer.count == pytest.approx(10_000_000 + bucket.burst, rel=0.02)
        producer.stopProducing()
        self.assertNothingLeft(bucket, clock)

    def assertNothingLeft(self, bucket: SharedBucket, clock: Clock) -> None:
        assert bucket.users == 0
        assert bucket.waiting == 0
        assert clock.getDelayedCalls() == []


class RateLimitedStreamTests:
    @pytest.mark.parametrize("rate", [50_000, 1_000_000, 40_000_000])
    def test_accurate(self, rate: int) -> None:
        """
        A throttled stream keeps to its rate within a few percent over 10
        seconds, and no write is larger than a burst.
        """
        clock = Clock()
        bucket = TokenBucket(clock=clock, rate=rate)
        writes: list[int] = []

        class Recorder(StringTransport):
            def __init__(self) -> None:
                StringTransport.__init__(self)

            def write(self, data: bytes) -> None:
                writes.append(len(data))

        producer = StreamProducer(
            source=ZeroSource(), clock=clock, throttle=Throttle(buckets=[bucket])
        )
        producer.startStreaming(Recorder())
        for _ in range(1000):
            clock.advance(0.01)
        assert sum(writes) == pytest.approx(rate * 10 + bucket.burst, rel=0.03)
        assert max(writes) <= bucket.burst
        producer.stopProducing()

    def test_shared(self) -> None:
        """
        Streams sharing a total rate get that rate between them.
        """
        sent, total, clock = streamShared(streams=4, seconds=10)
        assert sum(sent) == pytest.approx(10_000_000, rel=0.03)
        assert total.users == 0
        assert clock.getDelayedCalls() == []

    def test_pausedWhileWaiting(self) -> None:
        """
        A producer paused while it waits for tokens does not write when they
        come; resumed, it goes on.
        """
        clock = Clock()
        throttle = Throttle(buckets=[TokenBucket(clock=clock, rate=1000, burst=1000)])
        transport = PausingTransport(bufferSize=10**9)
        producer = StreamProducer(source=ZeroSource(), clock=clock, throttle=throttle)
        producer.startStreaming(transport)
        assert len(written(transport)) == 1000
        producer.pauseProducing()
        clock.advance(5)
        assert len(written(transport)) == 1000
        producer.resumeProducing()
        assert len(written(transport)) == 2000
        producer.stopProducing()
        clock.advance(5)
        assert len(written(transport)) == 2000


def startShared(
    consumer: StringTransport, bucket: TokenBucket, clock: Clock
) -> StreamProducer:
    """
    Start a stream of zeros to C{consumer} that draws on C{bucket}, its
    end (stopped) expected.
    """
    producer = StreamProducer(
        source=ZeroSource(), clock=clock, throttle=Throttle(buckets=[bucket])
    )
    producer.startStreaming(consumer).addErrback(lambda f: f.trap(StreamStopped))
    return producer


class FairShareTests:
    def test_sharedTotal(self) -> None:
        """
        Fifty streams under one total rate each get about a fiftieth of it;
        none is starved.
        """
        sent, total, clock = streamShared(streams=50, seconds=20)
        assert sum(sent) == pytest.approx(20_000_000, rel=0.05)
        assert min(sent) > 0.5 * 20_000_000 / 50
        assert total.users == 0
        assert clock.getDelayedCalls() == []

    def test_fifty(self) -> None:
        """
        Fifty streams under a total of 50 MiB/s, for 10 seconds, each get
        their fair share within a few percent (the requirement: 25%).
        """
        rate = 50 * 2**20
        sent, total, clock = streamShared(streams=50, seconds=10, rate=rate)
        fair = rate * 10 / 50
        assert [x for x in sent if abs(x - fair) > 0.25 * fair] == []
        assert min(sent) > 0.97 * fair
        assert max(sent) < 1.03 * fair
        assert sum(sent) == pytest.approx(rate * 10, rel=0.01)
        assert total.waiting == 0
        assert clock.getDelayedCalls() == []

    def test_pauseGivesBack(self) -> None:
        """
        A stream its consumer pauses gives back what was reserved for it and
        did not send, and waits for no turn: with nothing else to serve,
        nothing is scheduled. Resumed, it waits for its turn again.
        """
        clock = Clock()
        bucket = SharedBucket(clock=clock, rate=10_000_000)
        throttle = Throttle(buckets=[bucket])
        transport = PausingTransport(bufferSize=15_000)
        producer = StreamProducer(
            source=ZeroSource(), chunkSize=10_000, clock=clock, throttle=throttle
        )
        producer.startStreaming(transport)
        assert len(written(transport)) == 0
        assert bucket.waiting == 1
        clock.advance(0)
        assert bucket.quantum() > 20_000
        assert producer.state == "paused"
        assert len(written(transport)) == 20_000
        assert bucket.available() == bucket.burst - 20_000
        assert bucket.waiting == 0
        assert clock.getDelayedCalls() == []
        transport.drain()
        assert producer.state == "producing"
        assert len(written(transport)) == 0
        assert bucket.waiting == 1
        clock.advance(bucket.quantum() / 10_000_000)
        assert len(written(transport)) == 20_000
        producer.stopProducing()
        assert clock.getDelayedCalls() == []

    def test_stopGivesBack(self) -> None:
        """
        A stream stopped by its consumer, even inside a write, gives back
        what was reserved for it and did not send, and leaves the queue.
        """
        clock = Clock()
        bucket = SharedBucket(clock=clock, rate=10_000_000)
        waiting = StreamProducer(
            source=ZeroSource(), clock=clock, throttle=Throttle(buckets=[bucket])
        )
        waiting.startStreaming(StringTransport()).addErrback(
            lambda f: f.trap(StreamStopped)
        )

        class Stopping(StringTransport):
            def __init__(self) -> None:
                StringTransport.__init__(self)

            def write(self, data: bytes) -> None:
                StringTransport.write(self, data)
                assert self.producer is not None
                self.producer.stopProducing()

        stopping = StreamProducer(
            source=ZeroSource(),
            chunkSize=10_000,
            clock=clock,
            throttle=Throttle(buckets=[bucket]),
        )
        stopping.startStreaming(Stopping()).addErrback(lambda f: f.trap(StreamStopped))
        waiting.stopProducing()
        assert bucket.waiting == 1
        clock.advance(0)
        assert stopping.state == "stopped"
        assert bucket.available() == bucket.burst - 10_000
        assert (bucket.users, bucket.waiting) == (0, 0)
        assert clock.getDelayedCalls() == []

    def test_finishedLeavesNothing(self) -> None:
        """
        Streams that reach their limit leave the buckets as they found
        them, with nothing scheduled.
        """
        clock = Clock()
        bucket = SharedBucket(clock=clock, rate=1_000_000)
        results = [
            StreamProducer(
                source=ZeroSource(),
                limit=limit,
                clock=clock,
                throttle=Throttle(buckets=[bucket]),
            ).startStreaming(StringTransport())
            for limit in (1, 30_000, 100_000)
        ]
        for _ in range(100):
            clock.advance(0.01)
        assert [r.result for r in results] == [1, 30_000, 100_000]
        assert (bucket.users, bucket.waiting) == (0, 0)
        assert clock.getDelayedCalls() == []

    def test_wokenWhilePaused(self) -> None:
        """
        A turn that comes to a paused stream (which waits for none) goes to
        the others: it is given back at once, and nothing is written.
        """
        clock = Clock()
        bucket = SharedBucket(clock=clock, rate=1_000_000)
        throttle = Throttle(buckets=[bucket])
        transport = StringTransport()
        producer = StreamProducer(source=ZeroSource(), clock=clock, throttle=throttle)
        producer.startStreaming(transport)
        producer.pauseProducing()
        before = bucket.available()
        bucket.take(1000)
        throttle.granted(1000)
        assert bucket.available() == before
        assert written(transport) == b""
        producer.stopProducing()

    def test_stalledCostOthersNothing(self) -> None:
        """
        Clients that stop reading (their transports pause their streams for
        good) hold no turn: once their buffers are full, the others share
        the whole rate.
        """
        clock = Clock()
        bucket = SharedBucket(clock=clock, rate=1_000_000)

        def start(consumer: StringTransport) -> StreamProducer:
            return startShared(consumer, bucket, clock)

        stalled = [start(PausingTransport()) for _ in range(20)]
        readers = [Counter() for _ in range(5)]
        producers = [start(reader) for reader in readers]
        for _ in range(500):
            clock.advance(0.01)
        assert {p.state for p in stalled} == {"paused"}
        before = [reader.count for reader in readers]
        for _ in range(1000):
            clock.advance(0.01)
        for reader, earlier in zip(readers, before, strict=True):
            assert reader.count - earlier == pytest.approx(2_000_000, rel=0.05)
        assert bucket.waiting <= len(readers)
        for producer in stalled + producers:
            producer.stopProducing()
        assert clock.getDelayedCalls() == []

    def test_withOwnRate(self) -> None:
        """
        A stream's own rate holds it below its share; the others share the
        rest of the total.
        """
        clock = Clock()
        total = SharedBucket(clock=clock, rate=1_000_000)
        own = TokenBucket(clock=clock, rate=100_000)
        consumers = [Counter() for _ in range(3)]
        producers = [
            StreamProducer(
                source=ZeroSource(),
                clock=clock,
                throttle=Throttle(buckets=[own, total] if i == 0 else [total]),
            )
            for i in range(3)
        ]
        for producer, consumer in zip(producers, consumers, strict=True):
            producer.startStreaming(consumer).addErrback(
                lambda f: f.trap(StreamStopped)
            )
        for _ in range(1000):
            clock.advance(0.01)
        slow, *others = (c.count for c in consumers)
        assert slow == pytest.approx(1_000_000 + own.burst, rel=0.02)
        assert others == [pytest.approx(4_500_000, rel=0.03)] * 2
        for producer in producers:
            producer.stopProducing()
        assert clock.getDelayedCalls() == []

    @settings(max_examples=40)
    @given(
        steady=st.integers(min_value=1, max_value=8),
        erratic=st.lists(
            st.tuples(
                st.integers(min_value=1, max_value=20),  # pause every N writes
                st.floats(min_value=0.0, max_value=2.0),  # for this long
                st.one_of(st.none(), st.floats(min_value=0.0, max_value=10.0)),
            ),
            max_size=12,
        ),
    )
    def test_erraticOthers(
        self, steady: int, erratic: list[tuple[int, float, float | None]]
    ) -> None:
        """
        Streams paused, resumed and stopped at random (inside their writes
        or not) do not break the fair share of those that read steadily,
        nor leave anything behind.
        """
        clock = Clock()
        bucket = SharedBucket(clock=clock, rate=1_000_000)
        ours: list[IDelayedCall] = []

        class Erratic(StringTransport):
            def __init__(self, every: int, pause: float) -> None:
                StringTransport.__init__(self)
                self.writes = 0
                self.every, self.pause = every, pause

            def write(self, data: bytes) -> None:
                self.writes += 1
                if self.writes % self.every == 0 and self.producer is not None:
                    self.producer.pauseProducing()
                    ours.append(
                        clock.callLater(self.pause, self.producer.resumeProducing)
                    )

        def start(consumer: StringTransport) -> StreamProducer:
            return startShared(consumer, bucket, clock)

        counters = [Counter() for _ in range(steady)]
        producers = [start(counter) for counter in counters]
        for every, pause, stopAt in erratic:
            producer = start(Erratic(every, pause))
            producers.append(producer)
            if stopAt is not None:
                ours.append(clock.callLater(stopAt, producer.stopProducing))
        for _ in range(1000):
            clock.advance(0.01)
        counts = [counter.count for counter in counters]
        mean = sum(counts) / len(counts)
        assert min(counts) > 0.75 * mean
        assert max(counts) < 1.25 * mean
        for producer in producers:
            producer.stopProducing()
        for call in ours:
            if call.active():
                call.cancel()
        assert (bucket.users, bucket.waiting) == (0, 0)
        assert clock.getDelayedCalls() == []

    def test_slowRateIsNotAStall(self) -> None:
        """
        A stream held back by a very low rate shows progress to a stall
        watch, though it writes rarely.
        """
        clock = Clock()
        throttle = Throttle(buckets=[TokenBucket(clock=clock, rate=100, burst=1000)])
        producer = StreamProducer(source=ZeroSource(), clock=clock, throttle=throttle)
        producer.startStreaming(StringTransport())
        stalls: list[str] = []
        guard = Protection(clock, stallTimeout=30).guard(
            object(), producer, stalls.append
        )
        for _ in range(1200):
            clock.advance(0.1)
        assert stalls == []
        producer.stopProducing()
        guard.stop()
