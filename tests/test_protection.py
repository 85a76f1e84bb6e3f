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
