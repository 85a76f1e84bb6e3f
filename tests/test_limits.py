"""
Tests for L{twisted_zero._limits} and rate-limited streaming, on a task
clock.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from twisted_zero import StreamProducer, ZeroSource
from twisted_zero._limits import (
    MIN_BURST,
    ConnectionLimits,
    Throttle,
    TokenBucket,
)

from .helpers import PausingTransport


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
        clock = Clock()
        total = TokenBucket(clock=clock, rate=1_000_000)
        transports = [StringTransport() for _ in range(4)]
        producers = [
            StreamProducer(
                source=ZeroSource(), clock=clock, throttle=Throttle(buckets=[total])
            )
            for _ in transports
        ]
        for producer, transport in zip(producers, transports, strict=True):
            producer.startStreaming(transport)
        for _ in range(1000):
            clock.advance(0.01)
        sent = sum(len(t.value()) for t in transports)
        assert sent == pytest.approx(10_000_000, rel=0.03)
        for producer in producers:
            producer.stopProducing()

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
        assert len(transport.value()) == 1000
        producer.pauseProducing()
        clock.advance(5)
        assert len(transport.value()) == 1000
        producer.resumeProducing()
        assert len(transport.value()) == 2000
        producer.stopProducing()
        clock.advance(5)
        assert len(transport.value()) == 2000


class ConnectionLimitsTests:
    def test_total(self) -> None:
        """
        At most C{maxConnections} are admitted at once.
        """
        limits = ConnectionLimits(maxConnections=2)
        assert [limits.admit(a) for a in ("a", "b", "c")] == [
            None,
            None,
            "max-connections",
        ]
        limits.release("a")
        assert limits.admit("c") is None
        assert limits.total == 2

    def test_perAddress(self) -> None:
        """
        At most C{maxPerAddress} from one address; others still get in.
        """
        limits = ConnectionLimits(maxPerAddress=1)
        assert [limits.admit(a) for a in ("a", "a", "b")] == [None, "max-per-ip", None]
        limits.release("a")
        limits.release("b")
        assert limits.total == 0
        assert limits.admit("a") is None

    def test_unlimited(self) -> None:
        """
        Without limits everyone gets in.
        """
        limits = ConnectionLimits()
        assert {limits.admit("a") for _ in range(1000)} == {None}
