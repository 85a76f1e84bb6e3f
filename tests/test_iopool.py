"""
Tests for L{twisted_zero.IOPool}: calls in threads, driven by hand, and one
real thread pool.
"""

from __future__ import annotations

import threading

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from twisted_zero import IOPool

from .helpers import manualPool


class Closeable:
    closed = False

    def close(self) -> None:
        self.closed = True


class IOPoolTests(SynchronousTestCase):
    def test_submit(self) -> None:
        """
        L{IOPool.submit} runs the call in a thread, then hands its result to
        the reactor thread; it is in flight until then.
        """
        pool, threads = manualPool()
        results: list[object] = []
        pool.submit(lambda: 42, results.append)
        self.assertEqual((pool.inFlight, results), (1, []))
        threads.runThread()
        self.assertEqual((pool.inFlight, results), (1, []))
        threads.deliver()
        self.assertEqual((pool.inFlight, results), (0, [42]))

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
        self.assertTrue(failure.check(ZeroDivisionError))

    def test_cancelQueued(self) -> None:
        """
        A call cancelled before a thread starts it never runs, and its
        completion is never called.
        """
        pool, threads = manualPool()
        ran: list[str] = []
        operation = pool.submit(lambda: ran.append("work"), ran.append)
        self.assertTrue(operation.cancel())
        self.assertEqual(pool.inFlight, 0)
        threads.runAll()
        self.assertEqual(ran, [])
        self.assertFalse(operation.cancel())

    def test_cancelRunning(self) -> None:
        """
        A call that a thread has started cannot be cancelled: its completion
        is called as always.
        """
        pool, threads = manualPool()
        results: list[object] = []
        operation = pool.submit(lambda: "read", results.append)
        threads.runThread()
        self.assertFalse(operation.cancel())
        threads.deliver()
        self.assertEqual(results, ["read"])

    def test_run(self) -> None:
        """
        L{IOPool.run} calls a function with arguments in a thread and fires
        a L{Deferred} with its result, or its error.
        """
        pool, threads = manualPool()
        good = pool.run(divmod, 7, 2)
        bad = pool.run(divmod, 7, 0)
        self.assertNoResult(good)
        threads.runAll()
        self.assertEqual(self.successResultOf(good), (3, 1))
        self.failureResultOf(bad, ZeroDivisionError)

    def test_runCancelledQueued(self) -> None:
        """
        Cancelling the L{Deferred} of a queued call skips the call.
        """
        pool, threads = manualPool()
        ran: list[int] = []
        d = pool.run(ran.append, 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        threads.runAll()
        self.assertEqual(ran, [])

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
        self.failureResultOf(d, CancelledError)
        self.assertFalse(opened.closed)
        threads.deliver()
        self.assertTrue(opened.closed)
        self.assertEqual(pool.inFlight, 0)

    def test_runCancelledRunningFails(self) -> None:
        """
        An error from a call cancelled while it ran is logged, not raised.
        """
        pool, threads = manualPool()
        d = pool.run(divmod, 1, 0)
        threads.runThread()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        threads.deliver()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

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
        self.successResultOf(pool.whenIdle())
        pool.submit(lambda: 1, lambda result: None)
        skipped = pool.submit(lambda: 2, lambda result: None)
        idle = pool.whenIdle()
        threads.runThread()
        threads.deliver()
        self.assertNoResult(idle)
        skipped.cancel()
        self.successResultOf(idle)


@pytest_twisted.ensureDeferred
async def test_realThreads() -> None:
    """
    With Twisted's L{ThreadPool}, the call runs in another thread and its
    result comes back in the reactor thread.
    """
    from twisted.internet import reactor

    threads = ThreadPool(minthreads=0, maxthreads=2, name="test-io")
    threads.start()
    try:
        pool = IOPool(reactor=reactor, threads=threads)
        where = await pool.run(threading.get_ident)
        assert where != threading.get_ident()
        with pytest.raises(ZeroDivisionError):
            await pool.run(divmod, 1, 0)
        await pool.whenIdle()
        assert pool.inFlight == 0
    finally:
        threads.stop()
