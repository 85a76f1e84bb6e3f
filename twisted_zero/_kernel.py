"""
What the kernel tells of a socket: the room in its send buffer (its memory
accounting, its queued and unsent bytes, the limit on those), and what a
failed send means. For L{twisted_zero._outlet} and the send engine.
"""

from __future__ import annotations

import errno
import fcntl
import socket as _socket
import struct
import termios

TCP_NOTSENT_LOWAT: int = getattr(_socket, "TCP_NOTSENT_LOWAT", 25)
"""
The socket option that limits what the kernel holds unsent for a TCP
connection (Linux 3.12; C{socket} names it from Python 3.13 on).
"""

_CONNECTION_ERRNOS = frozenset(
    {
        errno.EPIPE,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ENOTCONN,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENETRESET,
        errno.EHOSTDOWN,
    }
)

_UNSUPPORTED_ERRNOS = frozenset(
    {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", -1)}
)


SO_MEMINFO = 55
"""
C{SO_MEMINFO} (Linux 4.6): a socket's memory accounting, as C{ss -m} shows.
"""

MEMINFO = struct.Struct("9I")
SNDBUF = 3
WMEM_QUEUED = 5
TIOCOUTQ: int = termios.TIOCOUTQ
"""
C{SIOCOUTQ}: the bytes queued in a socket's send buffer, not yet acknowledged.
"""
SIOCOUTQNSD = 0x894B
"""
The bytes queued in a TCP socket's send buffer and not sent yet.
"""
_NOTSENT_LOWAT_SYSCTL = "/proc/sys/net/ipv4/tcp_notsent_lowat"
_NO_LIMIT = 2**31 - 1
_hostUnsentLimit: int | None = None


def hostUnsentLimit() -> int:
    """
    The host's limit on a TCP socket's unsent bytes (the sysctl
    C{net.ipv4.tcp_notsent_lowat}), which applies to every socket without
    one of its own; 0 for none (its default). Read once.
    """
    global _hostUnsentLimit
    if _hostUnsentLimit is None:
        try:
            with open(_NOTSENT_LOWAT_SYSCTL) as f:
                limit = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            limit = 0
        _hostUnsentLimit = limit if 0 < limit < _NO_LIMIT else 0
    return _hostUnsentLimit


def isNoRoom(error: OSError) -> bool:
    """
    Whether a send failed only because the socket has no room now: as
    Twisted's own transports do, C{ENOBUFS} counts as C{EAGAIN}.
    """
    return isinstance(error, BlockingIOError) or error.errno == errno.ENOBUFS


def isConnectionError(error: OSError) -> bool:
    """
    Whether a send failed because the connection is gone.
    """
    return isinstance(error, ConnectionError) or error.errno in _CONNECTION_ERRNOS


def isUnsupported(error: OSError) -> bool:
    """
    Whether C{sendfile()} failed because it cannot send from that file to
    that socket (a file system without it, a kernel without it).
    """
    return error.errno in _UNSUPPORTED_ERRNOS


def unsentLimit(socket: _socket.socket) -> int:
    """
    The socket's limit on its unsent bytes, its own or else the host's;
    0 for none.
    """
    try:
        limit = socket.getsockopt(_socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT)
    except OSError:
        return 0
    if 0 < limit < _NO_LIMIT:
        return limit
    if limit == 0:  # none of its own: the host's applies
        return hostUnsentLimit()
    return 0  # lifted (read as -1)


def queuedBytes(fileno: int, request: int) -> int:
    """
        A count of the queued bytes of the socket C{fileno}, as the C{ioctl}
    C{request}
        (C{SIOCOUTQ}, C{SIOCOUTQNSD}) tells it.
    """
    count: int = struct.unpack("i", fcntl.ioctl(fileno, request, bytes(4)))[0]
    return count
