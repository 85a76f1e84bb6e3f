"""
The kernel's share of a connection: what it holds unsent for one TCP
connection (C{TCP_NOTSENT_LOWAT}), and what the peer has acknowledged
(C{TCP_INFO}), looked up through wrapping transports (TLS).
"""

from __future__ import annotations

import socket
import struct

from attrs import define, field

from ._interfaces import StreamObserver
from ._kernel import TCP_NOTSENT_LOWAT


def tcpSocket(transport: object) -> socket.socket | None:
    """
    The TCP socket under C{transport}, looking through wrapping transports
    (TLS); L{None} if there is none.
    """
    for _ in range(4):
        getHandle = getattr(transport, "getHandle", None)
        handle = getHandle() if getHandle is not None else None
        if isinstance(handle, socket.socket) and handle.family in _TCP_FAMILIES:
            return handle
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


def tcpBytesAcked(transport: object) -> int | None:
    """
    How many bytes the peer's kernel has acknowledged on this connection (a
    count that grows while a client reads, however slowly, and stops when it
    does not), or L{None} where the kernel does not say: not TCP, not
    Linux. Wrapping transports (TLS) are looked through.
    """
    handle = tcpSocket(transport)
    if handle is None:
        return None
    try:
        info = handle.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
    except OSError:
        return None
    if len(info) < _BYTES_ACKED_OFFSET + 8:
        return None
    acked: int = struct.unpack_from("Q", info, _BYTES_ACKED_OFFSET)[0]
    return acked


def limitUnsent(transport: object, size: int) -> bool:
    """
    Have the kernel hold at most about C{size} bytes of this connection that
    it has not sent yet (C{TCP_NOTSENT_LOWAT}): a send takes no more, and
    the socket is writable only below it. What is in flight is not limited,
    so a fast or distant client keeps its speed; but a client that reads
    nothing no longer gets the whole send buffer, which on Linux grows to
    4 MiB (C{tcp_wmem}) of the kernel's memory for TCP, shared by every
    connection of the host.

    @return: Whether the limit was set: not on a transport without a TCP
        socket, nor where the kernel lacks the option.
    """
    handle = tcpSocket(transport)
    if handle is None:
        return False
    try:
        handle.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, size)
    except OSError:
        return False
    return True


NO_UNSENT_LIMIT = -1
"""
What L{limitUnsent} is given to lift a limit (the kernel reads it as the
largest unsigned value, its own default).
"""

UNSENT_EARNED = 4 * 2**20
"""
How many bytes a client must have taken (acknowledged) for its
connection's limit on unsent bytes to be lifted (L{UnsentLimit}).
"""


@define(eq=False)
class UnsentLimit:
    """
    A limit on what the kernel holds unsent for one connection (see
    L{limitUnsent}) until its client has taken C{earned} bytes: a client
    that reads earns the send buffer the kernel would give it (and the
    speed that comes with it), one that reads nothing never pins more than
    C{limit} of the host's TCP memory. Told of what is sent (L{sent}), it
    asks the kernel what the client has taken after every C{limit} bytes.

    @param transport: The connection (a TCP one, perhaps under TLS).
    @param limit: The most bytes the kernel holds unsent for it.
    @param earned: How many bytes the client must have taken for the limit
        to be lifted.
    @ivar lifted: Whether the limit is lifted (or was never set: not TCP,
        or no such option).
    """

    _transport: object = field(alias="transport")
    _limit: int = field(alias="limit")
    _earned: int = field(default=UNSENT_EARNED, alias="earned")
    lifted: bool = field(default=False, init=False)
    _sent: int = field(default=0, init=False)
    _next: int = field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        if not limitUnsent(self._transport, self._limit):
            self.lifted = True  # nothing to lift: not TCP, or no such option

    def sent(self, count: int) -> None:
        """
        C{count} more bytes were sent (or written) on the connection.
        """
        if self.lifted:
            return
        self._sent += count
        if self._sent < self._next:
            return
        self._next = self._sent + self._limit
        acked = tcpBytesAcked(self._transport)
        if acked is not None and acked >= self._earned:
            self.lifted = limitUnsent(self._transport, NO_UNSENT_LIMIT) or True


@define
class LiftingObserver:
    """
    A stream's observer that also tells its connection's L{UnsentLimit} what
    is sent.
    """

    _limit: UnsentLimit
    _observer: StreamObserver | None

    def chunkWritten(self, count: int) -> None:
        self._limit.sent(count)
        if self._observer is not None:
            self._observer.chunkWritten(count)

    def pauseChanged(self, paused: bool) -> None:
        if self._observer is not None:
            self._observer.pauseChanged(paused)


_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_TCP_INFO = getattr(socket, "TCP_INFO", 11)
_BYTES_ACKED_OFFSET = 120
"""
Where C{tcpi_bytes_acked} lies in Linux's C{struct tcp_info} (since 4.1).
"""
