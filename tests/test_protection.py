"""
Tests for L{twisted_zero._protection}: admission, the stall watch and what
each connection is given, on a task clock.
"""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from twisted_zero._protection import ConnectionLimits, Protection, StallWatch


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
        limits = ConnectionLimits(maxPerAddress=1)
        protection = Protection(Clock(), limits=limits)
        address = IPv4Address("TCP", "10.0.0.1", 1)
        assert protection.admit(address) is None
        assert protection.admit(IPv4Address("TCP", "10.0.0.1", 2)) == "max-per-ip"
        transport = StringTransport()
        protection.opened(transport)
        assert limits.total == 1
        protection.closed(transport, address)
        assert limits.total == 0
        assert protection.admit(address) is None

    def test_unguarded(self) -> None:
        """
        Without a stall timeout or a maximum duration, a guard schedules
        nothing; its abort still stops the producer before the owner drops
        the connection.
        """
        clock = Clock()
        producer = RecordingProducer()
        guard = Protection(clock).guard(object(), producer, producer.dropped)
        assert guard.watch is None and guard.expiry is None
        assert clock.getDelayedCalls() == []
        guard.abort("server shutdown")
        assert producer.calls == ["stopProducing", "drop: server shutdown"]

    def test_stalled(self) -> None:
        """
        A stream that makes no progress for the stall timeout is aborted:
        the stall is counted, the producer stopped, then the connection
        dropped as stalled; nothing is left scheduled.
        """
        clock = Clock()
        producer = RecordingProducer()
        guard = Protection(clock, stallTimeout=10, maxDuration=60).guard(
            object(),
            producer,
            producer.dropped,
            stalled=lambda: producer.calls.append("counted"),
        )
        for _ in range(16):
            clock.advance(1)
            producer.bytesSent += 1
        for _ in range(9):
            clock.advance(1)
        assert producer.calls == []
        # The watch looks every quarter of the timeout, and counts from the
        # look that saw the last progress.
        for _ in range(6):
            clock.advance(1)
        assert producer.calls == ["counted", "stopProducing", "drop: stalled"]
        assert guard.expiry is None
        assert clock.getDelayedCalls() == []

    def test_maxDuration(self) -> None:
        """
        A stream still running at the maximum duration is aborted, its
        producer stopped first; nothing is left scheduled.
        """
        clock = Clock()
        producer = RecordingProducer()
        Protection(clock, stallTimeout=10, maxDuration=5).guard(
            object(), producer, producer.dropped
        )
        clock.advance(4.9)
        assert producer.calls == []
        clock.advance(0.1)
        assert producer.calls == ["stopProducing", "drop: max duration"]
        assert clock.getDelayedCalls() == []

    def test_stop(self) -> None:
        """
        Once the stream has ended, its guard leaves nothing scheduled and
        never aborts it.
        """
        clock = Clock()
        producer = RecordingProducer()
        guard = Protection(clock, stallTimeout=10, maxDuration=5).guard(
            object(), producer, producer.dropped
        )
        guard.stop()
        guard.stop()
        assert clock.getDelayedCalls() == []
        clock.advance(100)
        assert producer.calls == []


class RecordingProducer:
    """
    A stream's producer that records the guard's calls, and the owner's
    drop, in order.
    """

    def __init__(self) -> None:
        self.bytesSent = 0
        self.rateWaits = 0
        self.calls: list[str] = []

    def stopProducing(self) -> None:
        self.calls.append("stopProducing")

    def dropped(self, why: str) -> None:
        self.calls.append(f"drop: {why}")
