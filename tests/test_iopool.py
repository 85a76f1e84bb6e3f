"""
Tests for L{twisted_zero.IOPool}: calls in threads, driven by hand, and one
real thread pool.
"""

from __future__ import annotations

import threading
from typing import cast

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from twisted_zero import IOPool

from .helpers import (
    assertNoResult,
    ensureDeferred,
    failureResultOf,
    manualPool,
    successResultOf,
)


class Closeable:
    closed = False

    def close(self) -> None:
        self.closed = True


class IOPoolTests:
    def test_submit(self) -> None:
        """
        L{IOPool.submit} runs the call in a thread, then hands its result to
        the reactor thread; it is in flight until then.
        """
        pool, threads = manualPool()
        results: list[object] = []
        pool.submit(lambda: 42, results.append)
        assert (pool.inFlight, results) == (1, [])
        threads.runThread()
        assert (pool.inFlight, results) == (1, [])
        threads.deliver()
        assert (pool.inFlight, results) == (0, [42])

    def test_submitError(self) -> None:
        """
        What the call raises is handed over as a L{Failure}.
        """
        pool, threads = manualPool()
        results: list[object] = []
        pool.submit(lambda: 1 // 0, results.append)
        threads.runAll()
        [failure] = results
        assert isinstance(failure, Failure)
        assert failure.check(ZeroDivisionError)

    def test_cancelQueued(self) -> None:
        """
        A call cancelled before a thread starts it never runs, and its
        completion is never called.
        """
        pool, threads = manualPool()
        ran: list[str] = []
        operation = pool.submit(
            lambda: ran.append("work"), lambda result: ran.append("completed")
        )
        assert operation.cancel()
        assert pool.inFlight == 0
        threads.runAll()
        assert ran == []
        assert not operation.cancel()

    def test_cancelRunning(self) -> None:
        """
        A call that a thread has started cannot be cancelled: its completion
        is called as always.
        """
        pool, threads = manualPool()
        results: list[object] = []
        operation = pool.submit(lambda: "read", results.append)
        threads.runThread()
        assert not operation.cancel()
        threads.deliver()
        assert results == ["read"]

    def test_run(self) -> None:
        """
        L{IOPool.run} calls a function with arguments in a thread and fires
        a L{Deferred} with its result, or its error.
        """
        pool, threads = manualPool()
        good = pool.run(divmod, 7, 2)
        bad = pool.run(divmod, 7, 0)
        assertNoResult(good)
        threads.runAll()
        assert successResultOf(good) == (3, 1)
        failureResultOf(bad, ZeroDivisionError)

    def test_runCancelledQueued(self) -> None:
        """
        Cancelling the L{Deferred} of a queued call skips the call.
        """
        pool, threads = manualPool()
        ran: list[int] = []
        d = pool.run(ran.append, 1)
        d.cancel()
        failureResultOf(d, CancelledError)
        threads.runAll()
        assert ran == []

    def test_runCancelledRunningClosesResult(self) -> None:
        """
        Cancelling the L{Deferred} of a call a thread has started fails it
        at once; the result, when it comes, is closed.
        """
        pool, threads = manualPool()
        opened = Closeable()
        d = pool.run(lambda: opened)
        threads.runThread()
        d.cancel()
        failureResultOf(d, CancelledError)
        assert not opened.closed
        threads.deliver()
        assert opened.closed
        assert pool.inFlight == 0

    def test_runCancelledRunningFails(self) -> None:
        """
        An error from a call cancelled while it ran is logged, not raised.
        """
        pool, threads = manualPool()
        d = pool.run(divmod, 1, 0)
        threads.runThread()
        d.cancel()
        failureResultOf(d, CancelledError)
        with capturedLogs() as events:
            threads.deliver()
        [event] = events
        assert event["log_failure"].check(ZeroDivisionError)

    def test_idleAfterCompletion(self) -> None:
        """
        L{IOPool.whenIdle} fires only once the completion has run, which may
        close what the call used.
        """
        pool, threads = manualPool()
        order: list[str] = []
        pool.submit(lambda: 1, lambda result: order.append("done"))
        pool.whenIdle().addCallback(lambda _: order.append("idle"))
        threads.runAll()
        assert order == ["done", "idle"]

    def test_whenIdle(self) -> None:
        """
        L{IOPool.whenIdle} fires at once with nothing in flight, else once
        the last call in flight is done or skipped.
        """
        pool, threads = manualPool()
        successResultOf(pool.whenIdle())
        pool.submit(lambda: 1, lambda result: None)
        skipped = pool.submit(lambda: 2, lambda result: None)
        idle = pool.whenIdle()
        threads.runThread()
        threads.deliver()
        assertNoResult(idle)
        skipped.cancel()
        successResultOf(idle)


@ensureDeferred
async def test_realThreads() -> None:
    """
    With Twisted's L{ThreadPool}, the call runs in another thread and its
    result comes back in the reactor thread.
    """
    from twisted.internet import reactor

    threads = ThreadPool(minthreads=0, maxthreads=2, name="test-io")
    threads.start()
    try:
        pool = IOPool(reactor=cast(IReactorFromThreads, reactor), threads=threads)
        where = await pool.run(threading.get_ident)
        assert where != threading.get_ident()
        with pytest.raises(ZeroDivisionError):
            await pool.run(divmod, 1, 0)
        await pool.whenIdle()
        assert pool.inFlight == 0
    finally:
        threads.stop()
