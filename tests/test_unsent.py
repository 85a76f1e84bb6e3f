"""
Tests for L{twisted_zero._unsent}: what the kernel holds unsent for a TCP
connection, and what its peer has acknowledged, on loopback sockets.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from twisted_zero._kernel import TCP_NOTSENT_LOWAT
from twisted_zero._protection import Protection
from twisted_zero._unsent import (
    NO_UNSENT_LIMIT,
    UnsentLimit,
    limitUnsent,
    tcpBytesAcked,
)


class Observer:
    """
    A stream's observer that records what it is told.
    """

    def __init__(self, seen: list[object]) -> None:
        self.seen = seen

    def chunkWritten(self, count: int) -> None:
        self.seen.append(count)

    def pauseChanged(self, paused: bool) -> None:
        self.seen.append(paused)


class Handle:
    """
    What the limits look for in a transport: the socket under it.
    """

    def __init__(self, socket: socket.socket) -> None:
        self._socket = socket

    def getHandle(self) -> socket.socket:
        return self._socket


@contextmanager
def tcpConnection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """
    Both ends of a loopback TCP connection, the accepted one first, closed
    on the way out.
    """
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    with client, accepted:
        yield accepted, client


def lowat(connection: socket.socket) -> int:
    return connection.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT)


class TCPBytesAckedTests:
    def test_socket(self) -> None:
        """
        For a TCP socket (through wrappers with C{getHandle} or a
        C{transport}), the kernel's count of acknowledged bytes grows as the
        peer takes data.
        """
        with tcpConnection() as (accepted, client):

            class Wrapper:
                transport = Handle(accepted)

            before = tcpBytesAcked(Wrapper())
            assert before is not None
            accepted.sendall(b"x" * 1000)
            client.recv(1000)
            for _ in range(100):
                if tcpBytesAcked(Wrapper()) == before + 1000:
                    break
                time.sleep(0.01)
            assert tcpBytesAcked(Wrapper()) == before + 1000

    def test_notTCP(self) -> None:
        """
        Anything else says nothing.
        """
        assert tcpBytesAcked(StringTransport()) is None
        assert tcpBytesAcked(object()) is None
        left, right = socket.socketpair()
        with left, right:
            assert tcpBytesAcked(Handle(left)) is None


class LimitUnsentTests:
    def test_socket(self) -> None:
        """
        On a TCP socket (through wrappers), the kernel is told the most
        bytes to hold unsent; a connection opened with a protection that
        says so gets it; anything else is left alone.
        """
        with tcpConnection() as (accepted, _):

            class Wrapper:
                transport = Handle(accepted)

            assert limitUnsent(Wrapper(), 128 * 1024)
            assert lowat(accepted) == 128 * 1024
            Protection(Clock(), maxUnsent=4096).opened(Handle(accepted))
            assert lowat(accepted) == 4096
        assert not limitUnsent(StringTransport(), 4096)
        left, right = socket.socketpair()
        with left, right:
            assert not limitUnsent(Handle(left), 4096)


class UnsentLimitTests:
    def test_liftedOnceEarned(self) -> None:
        """
        A connection's unsent bytes are limited until its client has taken
        (acknowledged) the bytes it must earn; then the limit is lifted.
        Until then, the kernel is asked only after every limit's worth sent.
        """
        with tcpConnection() as (accepted, client):
            transport = Handle(accepted)
            limit = UnsentLimit(transport=transport, limit=16384, earned=65536)
            assert lowat(accepted) == 16384 and not limit.lifted
            limit.sent(100_000)  # sent, not taken
            assert lowat(accepted) == 16384 and not limit.lifted
            accepted.sendall(b"x" * 70_000)
            taken = 0
            while taken < 70_000:
                taken += len(client.recv(70_000))
            for _ in range(100):
                if (tcpBytesAcked(transport) or 0) >= 70_000:
                    break
                time.sleep(0.01)
            limit.sent(1000)  # within a limit's worth of the last look
            assert not limit.lifted
            limit.sent(16384)
            assert limit.lifted and lowat(accepted) == NO_UNSENT_LIMIT

    def test_observe(self) -> None:
        """
        With C{maxUnsent}, a stream's observer also tells its connection's
        limit what is sent; without, or for a connection that is not TCP,
        it is the observer given.
        """
        clock = Clock()
        seen: list[object] = []
        observer = Observer(seen)
        assert Protection(clock).observe(StringTransport(), observer) is observer
        protection = Protection(clock, maxUnsent=4096)
        transport = StringTransport()
        protection.opened(transport)
        assert protection.observe(transport, observer) is observer
        with tcpConnection() as (accepted, _):
            tcp = Handle(accepted)
            protection.opened(tcp)
            lifting = protection.observe(tcp, observer)
            assert lifting is not None and lifting is not observer
            lifting.chunkWritten(10)
            lifting.pauseChanged(True)
            assert seen == [10, True]
            protection.closed(tcp, None)
            assert protection.observe(tcp, observer) is observer
