"""
Tests for L{twisted_zero._registry}: the connections open now, and the
drain at shutdown, on a task clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from twisted_zero._registry import ConnectionRegistry

from .helpers import assertNoResult, successResultOf


class Connection:
    """
    An open connection that records why it was aborted; aborting it closes
    it in the registry, as a transport's C{connectionLost} would.
    """

    def __init__(self, registry: ConnectionRegistry | None = None) -> None:
        self.registry = registry
        self.aborted: list[str] = []

    def abort(self, why: str) -> None:
        self.aborted.append(why)
        if self.registry is not None:
            self.registry.closed(self)


class ConnectionRegistryTests:
    def test_count(self) -> None:
        """
        L{ConnectionRegistry.count} is how many connections were opened and
        not yet closed; one closed twice counts once.
        """
        registry = ConnectionRegistry(clock=Clock())
        first, second = Connection(), Connection()
        assert registry.count == 0
        registry.opened(first)
        registry.opened(second)
        assert registry.count == 2
        registry.closed(first)
        registry.closed(first)
        assert registry.count == 1

    def test_closedUnknown(self) -> None:
        """
        Closing a connection that was never opened changes nothing: the
        open ones are still counted, and a drain still waits for them.
        """
        clock = Clock()
        registry = ConnectionRegistry(clock=clock)
        known = Connection()
        registry.opened(known)
        drained = registry.drain(5)
        registry.closed(Connection())
        assert registry.count == 1
        assertNoResult(drained)
        registry.closed(known)
        assert successResultOf(drained) is None

    def test_drainNothingOpen(self) -> None:
        """
        With no connection open, L{ConnectionRegistry.drain} fires at once
        and schedules nothing.
        """
        clock = Clock()
        registry = ConnectionRegistry(clock=clock)
        assert successResultOf(registry.drain(5)) is None
        assert clock.getDelayedCalls() == []

    def test_drainFiresWhenLastCloses(self) -> None:
        """
        A drain fires when the last open connection closes, before the
        timeout, aborts none, and leaves no timer behind.
        """
        clock = Clock()
        registry = ConnectionRegistry(clock=clock)
        first, second = Connection(), Connection()
        registry.opened(first)
        registry.opened(second)
        drained = registry.drain(5)
        registry.closed(first)
        clock.advance(4)
        assertNoResult(drained)
        registry.closed(second)
        assert successResultOf(drained) is None
        assert clock.getDelayedCalls() == []
        clock.advance(10)
        assert first.aborted == second.aborted == []

    def test_drainAbortsAtTimeout(self) -> None:
        """
        At the timeout, every connection still open gets
        C{abort("server shutdown")}, once, and nothing else; those closed
        before are left alone. The drain fires once they have closed.
        """
        clock = Clock()
        registry = ConnectionRegistry(clock=clock)
        closed = Connection(registry)
        stuck = [Connection(registry) for _ in range(3)]
        for connection in [closed, *stuck]:
            registry.opened(connection)
        drained = registry.drain(5)
        registry.closed(closed)
        clock.advance(4.9)
        assertNoResult(drained)
        assert [c.aborted for c in stuck] == [[], [], []]
        clock.advance(0.1)
        assert [c.aborted for c in stuck] == [["server shutdown"]] * 3
        assert closed.aborted == []
        assert successResultOf(drained) is None
        assert registry.count == 0
        assert clock.getDelayedCalls() == []

    def test_drainWaitsForAbortedToClose(self) -> None:
        """
        A connection aborted at the timeout is waited for until it closes
        (its transport tells of the abort later).
        """
        clock = Clock()
        registry = ConnectionRegistry(clock=clock)
        connection = Connection()
        registry.opened(connection)
        drained = registry.drain(1)
        clock.advance(1)
        assert connection.aborted == ["server shutdown"]
        assertNoResult(drained)
        registry.closed(connection)
        assert successResultOf(drained) is None
