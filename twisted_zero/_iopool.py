"""
A bounded pool of threads for the file-system calls made for clients, so
that the reactor thread never waits for a disk or a network mount.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

T = TypeVar("T")


class ThreadRunner(Protocol):
    """
    What L{IOPool} needs of a thread pool: Twisted's
    L{twisted.python.threadpool.ThreadPool} is one.
    """

    def callInThread(
        self, func: Callable[..., object], *args: object, **kw: object
    ) -> None:
        """
        Call C{func} in one of the pool's threads.
        """


class _Stage(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SKIPPED = "skipped"


@define(eq=False)
class Operation(Generic[T]):
    """
    One call submitted to an L{IOPool}: queued, then running in a thread,
    then done, when its result is handed to the reactor thread.

    @param pool: The pool it was submitted to.
    @param work: The call.
    @param done: What is called with its result, in the reactor thread.
    """

    _pool: IOPool
    _work: Callable[[], T] | None
    _done: Callable[[T | Failure], None] | None
    _stage: _Stage = field(default=_Stage.QUEUED, init=False)
    _lock: threading.Lock = field(factory=threading.Lock, init=False)

    def cancel(self) -> bool:
        """
        Skip the call if no thread has started it yet. Call this in the
        reactor thread.

        @return: C{True} if it will never run (its completion is then never
            called either); C{False} if it is running or has run: its
            completion is called, in the reactor thread, as always.
        """
        with self._lock:
            if self._stage is not _Stage.QUEUED:
                return False
            self._stage = _Stage.SKIPPED
        self._work = self._done = None
        self._pool._ended()
        return True

    def _run(self) -> None:
        """
        In a thread: run the call unless it was cancelled, and hand its
        result (or failure) to the reactor thread.
        """
        with self._lock:
            if self._stage is _Stage.SKIPPED:
                return
            self._stage = _Stage.RUNNING
        work, self._work = self._work, None
        assert work is not None
        result: T | Failure
        try:
            result = work()
        except BaseException:
            result = Failure()
        self._pool._reactor.callFromThread(self._complete, result)

    def _complete(self, result: T | Failure) -> None:
        done, self._done = self._done, None  # what it holds is not kept
        assert done is not None
        try:
            done(result)
        finally:
            # Only now: the completion may close what the call used.
            self._pool._ended()


def _close(result: object) -> None:
    """
    Close the result of a call whose caller went away, if it can be closed:
    an opened file or source.
    """
    close = getattr(result, "close", None)
    if callable(close):
        close()


@define
class IOPool:
    """
    Run blocking calls (open, stat, read, list a directory) in a bounded pool
    of threads and hand their results back to the reactor thread.

    It counts the calls in flight so that a service may wait, at shutdown,
    until no thread uses a file any more (L{whenIdle}).

    @param reactor: Where results are handed back.
    @param threads: The threads that run the calls.
    @ivar inFlight: How many calls are queued or running.
    """

    _reactor: IReactorFromThreads = field(alias="reactor")
    _threads: ThreadRunner = field(alias="threads")
    inFlight: int = field(default=0, init=False)
    _idle: list[Deferred[None]] = field(factory=list, init=False)
    _log = Logger()

    def submit(
        self, work: Callable[[], T], done: Callable[[T | Failure], None]
    ) -> Operation[T]:
        """
        Call C{work()} in a thread, then C{done} with its result, or a
        L{Failure} of what it raised, in the reactor thread.

        @return: The L{Operation}, which may be cancelled while still queued.
        """
        operation = Operation(self, work, done)
        self.inFlight += 1
        self._threads.callInThread(operation._run)
        return operation

    def run(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """
        Call C{work(*args, **kwargs)} in a thread.

        @return: A L{Deferred} firing with the result in the reactor thread.
            Cancelling it skips the call if it has not started; if it has,
            the L{Deferred} fails with L{CancelledError} at once, and the
            result, when it comes, is closed if it has a C{close()} method
            (an opened file is not leaked).
        """
        operation: Operation[T]

        def cancel(d: Deferred[T]) -> None:
            operation.cancel()
            # The default: fail with CancelledError.

        result: Deferred[T] = Deferred(cancel)

        def done(outcome: T | Failure) -> None:
            if result.called:
                # Cancelled while it ran.
                if isinstance(outcome, Failure):
                    if not outcome.check(CancelledError):
                        self._log.failure("error in a cancelled call", outcome)
                else:
                    _close(outcome)
                return
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

        operation = self.submit(lambda: work(*args, **kwargs), done)
        return result

    def whenIdle(self) -> Deferred[None]:
        """
        @return: A L{Deferred} that fires once no call is queued or running.
        """
        if not self.inFlight:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle.append(waiter)
        return waiter

    def _ended(self) -> None:
        self.inFlight -= 1
        if not self.inFlight:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                if not waiter.called:  # not given up on (cancelled)
                    waiter.callback(None)


def reactorPool(reactor: object) -> IOPool | None:
    """
    An L{IOPool} on C{reactor}'s own thread pool (which the reactor starts
    and stops), if the reactor has one; L{None} otherwise (a test clock).
    """
    from twisted.internet.interfaces import IReactorThreads

    if IReactorThreads.providedBy(reactor) and IReactorFromThreads.providedBy(reactor):
        return IOPool(reactor=reactor, threads=reactor.getThreadPool())
    return None
