"""
The connections open now, and the wait for them to end at shutdown.
"""

from __future__ import annotations

from typing import Protocol

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

SHUTDOWN = "server shutdown"
"""
Why a connection still open at the end of the shutdown timeout is aborted.
"""


class Abortable(Protocol):
    """
    An open connection the daemon may end: a raw stream or an HTTP channel.
    """

    def abort(self, why: str) -> None:
        """
        Stop the stream's producer, then abort the connection.

        @param why: The ending logged for it (C{"server shutdown"},
            C{"stalled"}, C{"max duration"}).
        """


@define
class ConnectionRegistry:
    """
    The connections open now, of every listener: counted for systemd's
    status, waited for and then aborted at shutdown (L{drain}).

    @param clock: Times the wait of L{drain}.
    """

    _clock: IReactorTime = field(alias="clock")
    _open: set[Abortable] = field(factory=set, init=False)
    _drained: list[Deferred[None]] = field(factory=list, init=False)

    def opened(self, connection: Abortable) -> None:
        """
        C{connection} is open: count it until it is L{closed}.
        """
        self._open.add(connection)

    def closed(self, connection: Abortable) -> None:
        """
        C{connection} is closed (nothing happens if it was not counted);
        once none is open, every L{drain} in progress fires.
        """
        self._open.discard(connection)
        if not self._open:
            drained, self._drained = self._drained, []
            for waiting in drained:
                waiting.callback(None)

    @property
    def count(self) -> int:
        """
        How many connections are open now.
        """
        return len(self._open)

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Wait for the open connections to close, for C{timeout} seconds at
        most; then abort those still open (C{abort("server shutdown")}).

        @return: A L{Deferred} that fires once no connection is open: at
            once if none is, else when the last one closes (the aborted ones
            too).
        """
        if not self._open:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._drained.append(waiting)
        abort = self._clock.callLater(timeout, self._abortAll)
        waiting.addBoth(lambda result: abort.cancel() if abort.active() else None)
        return waiting

    def _abortAll(self) -> None:
        for connection in list(self._open):
            connection.abort(SHUTDOWN)
