"""
Real socket pairs in Twisted's own socket transport, on a memory reactor,
driven by hand: the production write path without a real reactor.
"""

from __future__ import annotations

import os
import socket

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Server
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from twisted_zero._site import StreamSite

from .helpers import parseResponses

BUFFER = 64 * 1024
"""
The socket pair's buffer sizes: the tests stream several times as much.
"""


class Pair:
    """
    A connected pair of stream sockets (UNIX, or with C{tcp} a TCP
    connection on the loopback interface): the server's end in Twisted's
    own TCP transport (L{Server}, a type direct sends are allowed on) on a
    L{MemoryReactorClock}, the client's end read by hand, without blocking.
    """

    def __init__(
        self,
        protocol: Protocol | None = None,
        reactor: MemoryReactorClock | None = None,
        tcp: bool = False,
        transportType: type[Server] = Server,
    ) -> None:
        """
        @param protocol: The server's protocol; by default one that does
            nothing.
        @param reactor: The reactor the transport is on; by default a new
            L{MemoryReactorClock}.
        @param tcp: Whether the sockets are a TCP connection on the loopback
            interface rather than a UNIX socket pair.
        @param transportType: The class of the server's transport:
            L{Server}, or one that takes the same arguments (to try direct
            sends on a transport not allowed them).
        """
        self.reactor = MemoryReactorClock() if reactor is None else reactor
        if tcp:
            self.server, self.client = _tcpPair()
        else:
            self.server, self.client = socket.socketpair()
        for end in (self.server, self.client):  # whatever the host's defaults
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        self.client.setblocking(False)
        self.protocol = Protocol() if protocol is None else protocol
        self.transport = transportType(
            self.server,
            self.protocol,
            ("127.0.0.1", 4321),
            None,  # type: ignore[arg-type]  # no listening port
            1,
            self.reactor,
        )
        self.transport.repstr = f"<{type(self.protocol).__name__} on a Pair>"
        if not tcp:  # the addresses of a TCP connection, on a UNIX socket
            self.transport.getHost = lambda: IPv4Address(  # type: ignore[method-assign]  # a TCP host address on a UNIX socket
                "TCP", "127.0.0.1", 8080
            )
        self.protocol.makeConnection(self.transport)

    def receive(self) -> bytes:
        """
        All the client can read now.
        """
        data = []
        while True:
            try:
                chunk = self.client.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            data.append(chunk)
        return b"".join(data)

    def turn(self) -> bool:
        """
        One reactor turn: the transport writes if it waits to, then what is
        due on the clock runs. Whether anything happened.
        """
        busy = False
        if self.transport in self.reactor.getWriters():
            why = self.transport.doWrite()
            if why is not None:  # as the reactor does
                self.transport.connectionLost(Failure(why))
            busy = True
        now = self.reactor.seconds()
        if any(call.getTime() <= now for call in self.reactor.getDelayedCalls()):
            self.reactor.advance(0)
            busy = True
        return busy

    def pump(self, turns: int = 100_000) -> bytes:
        """
        Read as fast as a client can, until nothing more happens (or for so
        many turns).
        """
        received = []
        for _ in range(turns):
            received.append(self.receive())
            busy = self.turn()
            if not busy and not received[-1]:
                break
        return b"".join(received)

    def close(self) -> None:
        """
        Close both ends; a connection still open is lost, which stops its
        producer and closes its file.
        """
        if self.transport.connected:
            self.transport.connectionLost(Failure(ConnectionDone()))
        self.client.close()
        self.server.close()


def _tcpPair() -> tuple[socket.socket, socket.socket]:
    """
    Both ends of a TCP connection on the loopback interface.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


def countSendfiles(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """
    Count the calls of C{os.sendfile}, by the bytes asked for.
    """
    counts: list[int] = []
    realSendfile = os.sendfile

    def sendfile(out: int, in_: int, offset: int | None, count: int) -> int:
        counts.append(count)
        return realSendfile(out, in_, offset, count)

    monkeypatch.setattr(os, "sendfile", sendfile)
    return counts


def getFile(site: StreamSite, reactor: MemoryReactorClock) -> bytes:
    """
    The response to C{GET /files/data.bin} from C{site}, over a socket pair.
    """
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
    assert channel is not None
    pair = Pair(channel, reactor)
    try:
        channel.dataReceived(b"GET /files/data.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        [response] = parseResponses(pair.pump())
    finally:
        pair.close()
    return response.body
