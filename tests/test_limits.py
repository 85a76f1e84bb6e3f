"""
Tests for L{twisted_zero._limits} and rate-limited streaming, on a task
clock.
"""

from __future__ import annotations

import socket
import time

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from twisted_zero import StreamProducer, ZeroSource
from twisted_zero._limits import (
    MIN_BURST,
    TCP_NOTSENT_LOWAT,
    ConnectionLimits,
    Protection,
    StallWatch,
    Throttle,
    TokenBucket,
    limitUnsent,
    tcpBytesAcked,
)

from .helpers import PausingTransport


def streamShared(streams: int, seconds: int) -> tuple[list[int], TokenBucket]:
    """
    Stream zeros to C{streams} consumers that never pause, all under one
    total rate of 1 MB/s, for C{seconds} of a task clock; then stop them.

    @return: The bytes each consumer received, and the shared bucket.
    """
    clock = Clock()
    total = TokenBucket(clock=clock, rate=1_000_000)
    transports = [StringTransport() for _ in range(streams)]
    producers = [
        StreamProducer(
            source=ZeroSource(), clock=clock, throttle=Throttle(buckets=[total])
        )
        for _ in transports
    ]
    for producer, transport in zip(producers, transports, strict=True):
        producer.startStreaming(transport)
    for _ in range(seconds * 100):
        clock.advance(0.01)
    for producer in producers:
        producer.stopProducing()
    return [len(t.value()) for t in transports], total


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
        sent, total = streamShared(streams=4, seconds=10)
        assert sum(sent) == pytest.approx(10_000_000, rel=0.03)
        assert total.users == 0

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


class StallWatchTests:
    def test_stall(self) -> None:
        """
        No change in progress for the timeout calls C{onStall}, once.
        """
        clock = Clock()
        stalls: list[float] = []
        progress = [0]
        watch = StallWatch(
            clock=clock,
            timeout=10,
            progress=lambda: progress[0],
            onStall=lambda: stalls.append(clock.seconds()),
        )
        watch.start()
        for _ in range(8):
            clock.advance(2.5)
            progress[0] += 1
        assert stalls == []
        for _ in range(12):
            clock.advance(2.5)
        assert stalls == [32.5]
        assert clock.getDelayedCalls() == []

    def test_stop(self) -> None:
        """
        A stopped watch leaves nothing scheduled and never fires.
        """
        clock = Clock()
        watch = StallWatch(
            clock=clock, timeout=1, progress=lambda: 0, onStall=pytest.fail
        )
        watch.start()
        watch.stop()
        watch.stop()
        assert clock.getDelayedCalls() == []


class TCPBytesAckedTests:
    def test_socket(self) -> None:
        """
        For a TCP socket (through wrappers with C{getHandle} or a
        C{transport}), the kernel's count of acknowledged bytes grows as the
        peer takes data.
        """
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            client = socket.create_connection(server.getsockname())
            accepted, _ = server.accept()
            with client, accepted:

                class Transport:
                    def getHandle(self) -> socket.socket:
                        return accepted

                class Wrapper:
                    transport = Transport()

                before = tcpBytesAcked(Wrapper())
                assert before is not None
                accepted.sendall(b"x" * 1000)
                client.recv(1000)
                for _ in range(100):
                    if tcpBytesAcked(Wrapper()) == before + 1000:
                        break
                    time.sleep(0.01)
                assert tcpBytesAcked(Wrapper()) == before + 1000

    def test_notTCP(self) -> None:
        """
        Anything else says nothing.
        """
        assert tcpBytesAcked(StringTransport()) is None
        assert tcpBytesAcked(object()) is None
        left, right = socket.socketpair()
        with left, right:

            class Transport:
                def getHandle(self) -> socket.socket:
                    return left

            assert tcpBytesAcked(Transport()) is None


class LimitUnsentTests:
    def test_socket(self) -> None:
        """
        On a TCP socket (through wrappers), the kernel is told the most
        bytes to hold unsent; a connection opened with a protection that
        says so gets it; anything else is left alone.
        """
        with socket.create_server(("127.0.0.1", 0)) as server:
            client = socket.create_connection(server.getsockname())
            accepted, _ = server.accept()
            with client, accepted:

                class Transport:
                    def getHandle(self) -> socket.socket:
                        return accepted

                class Wrapper:
                    transport = Transport()

                assert limitUnsent(Wrapper(), 128 * 1024)
                option = accepted.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT)
                assert option == 128 * 1024
                Protection(Clock(), maxUnsent=4096).opened(Transport())
                option = accepted.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT)
                assert option == 4096
        assert not limitUnsent(StringTransport(), 4096)
        left, right = socket.socketpair()
        with left, right:

            class Unix:
                def getHandle(self) -> socket.socket:
                    return left

            assert not limitUnsent(Unix(), 4096)


class ProtectionTests:
    def test_throttle(self) -> None:
        """
        A stream's throttle has the lower of the server's and the client's
        rate, and the shared total; with no rates there is none.
        """
        clock = Clock()
        assert Protection(clock).throttle() is None
        protection = Protection(clock, rate=1000, totalRate=5000)
        throttle = protection.throttle(requested=100_000)
        assert throttle is not None
        assert [b.rate for b in throttle._buckets] == [1000, 5000]
        throttle = protection.throttle(requested=10)
        assert throttle is not None
        assert [b.rate for b in throttle._buckets] == [10, 5000]
        assert Protection(clock).throttle(requested=10) is not None

    def test_admission(self) -> None:
        """
        Connections are admitted by address and released when closed.
        """
        protection = Protection(Clock(), limits=ConnectionLimits(maxPerAddress=1))
        address = IPv4Address("TCP", "10.0.0.1", 1)
        assert protection.admit(address) is None
        assert protection.admit(IPv4Address("TCP", "10.0.0.1", 2)) == "max-per-ip"
        transport = StringTransport()
        protection.opened(transport)
        assert protection.openConnections == 1
        protection.closed(transport, address)
        assert protection.openConnections == 0
        assert protection.admit(address) is None

    def test_drain(self) -> None:
        """
        Draining waits for open connections to close, and aborts those still
        open after the timeout.
        """
        clock = Clock()
        protection = Protection(clock)
        assert protection.drain(5).called
        aborted: list[str] = []

        class Transport:
            def __init__(self, name: str) -> None:
                self.name = name

            def abortConnection(self) -> None:
                aborted.append(self.name)

        first, second = Transport("first"), Transport("second")
        protection.opened(first)
        protection.opened(second)
        drained = protection.drain(5)
        protection.closed(first, None)
        clock.advance(4.9)
        assert not drained.called and aborted == []
        clock.advance(0.1)
        assert aborted == ["second"]
        protection.closed(second, None)
        assert drained.called
        assert clock.getDelayedCalls() == []

    def test_watch(self) -> None:
        """
        With a stall timeout, a watch starts; without, none.
        """
        clock = Clock()
        assert Protection(clock).watch(object(), lambda: 0, pytest.fail) is None
        stalled: list[bool] = []
        watch = Protection(clock, stallTimeout=1).watch(
            object(), lambda: 0, lambda: stalled.append(True)
        )
        assert watch is not None
        clock.advance(2)
        assert stalled == [True]


class FairShareTests:
    def test_sharedTotal(self) -> None:
        """
        Fifty streams under one total rate each get about a fiftieth of it;
        none is starved.
        """
        sent, total = streamShared(streams=50, seconds=20)
        assert sum(sent) == pytest.approx(20_000_000, rel=0.05)
        assert min(sent) > 0.5 * 20_000_000 / 50
        assert total.users == 0

    def test_slowRateIsNotAStall(self) -> None:
        """
        A stream held back by a very low rate shows progress to a stall
        watch, though it writes rarely.
        """
        clock = Clock()
        throttle = Throttle(buckets=[TokenBucket(clock=clock, rate=100, burst=1000)])
        producer = StreamProducer(source=ZeroSource(), clock=clock, throttle=throttle)
        producer.startStreaming(StringTransport())
        stalls: list[bool] = []
        watch = Protection(clock, stallTimeout=30).watch(
            object(),
            lambda: (producer.bytesSent, producer.rateWaits),
            lambda: stalls.append(True),
        )
        assert watch is not None
        for _ in range(1200):
            clock.advance(0.1)
        assert stalls == []
        producer.stopProducing()
        watch.stop()
