"""
The lingering close after an HTTP error answer: what the client still sends
is read and thrown away for a while, so that closing with unread input
does not make the kernel reset the connection under the answer.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport

from ._connections import LINGER_SECONDS

LINGER_BYTES = 8 * 2**20
"""
After an error response that closes the connection (413, 431, 408...), the
most bytes the client may still send, read and thrown away, before the
connection is closed anyway. Closing with unread input makes the kernel
reset the connection, which can destroy the response in flight; so the
server first shuts down its sending side and reads (for at most
L{LINGER_SECONDS} and this many bytes), as nginx's lingering close does.
"""


@define
class LingeringClose:
    """
    Close a connection whose sending side is shut down once its client has
    had L{LINGER_SECONDS} or sent L{LINGER_BYTES} more; abort it if even
    that has not closed it L{LINGER_SECONDS} later (the client reads
    nothing).

    @param clock: Times the lingering.
    @param transport: The connection, its sending side shut down.
    """

    _clock: IReactorTime = field(alias="clock")
    _transport: ITCPTransport = field(alias="transport")
    _discarded: int = field(default=0, init=False)
    _timer: IDelayedCall | None = field(default=None, init=False)
    _closing: bool = field(default=False, init=False)

    def start(self) -> None:
        """
        Start the clock.
        """
        self._timer = self._clock.callLater(LINGER_SECONDS, self._end)

    def discard(self, count: int) -> None:
        """
        The client sent C{count} more bytes, thrown away.
        """
        self._discarded += count
        if (
            self._discarded > LINGER_BYTES
            and self._timer is not None
            and not self._closing
        ):
            self._end()

    def _end(self) -> None:
        # Once: a client sending on must not put off the abort.
        self._closing = True
        self.cancel()
        self._timer = self._clock.callLater(
            LINGER_SECONDS, self._transport.abortConnection
        )
        self._transport.loseConnection()

    def cancel(self) -> None:
        """
        The connection is gone: nothing more is scheduled.
        """
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
