"""
Tests for L{twisted_zero._site} and L{twisted_zero._request}: the site
(its 503, its shutdown, ALPN), and requests (their log event, their
body thrown away, absolute-form targets).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IProtocolFactory,
    IProtocolNegotiationFactory,
)
from twisted.logger import LogEvent, capturedLogs
from twisted.python.failure import Failure

from twisted_zero._protection import ConnectionLimits, Protection
from twisted_zero._resources import makeResource
from twisted_zero._site import StreamSite

from .helpers import PausingTransport, TurnClock, parseResponses
from .webserver import (
    CONTENT,
    Server,
    makeRoot,
    written,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return makeRoot(tmp_path)


class ConnectionTests:
    def test_pipelined(self, root: Path) -> None:
        """
        Pipelined requests on one connection are answered in order.
        """
        server = Server(root)
        server.send(
            b"GET /files/sub/inner.txt HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /zero?bytes=5 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /files/data.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=1-2\r\n\r\n"
        )
        responses = parseResponses(server.pump())
        assert [r.body for r in responses] == [b"inner\n", bytes(5), CONTENT[1:3]]
        assert not server.transport.disconnecting

    def test_log(self, root: Path) -> None:
        """
        Each request ends in one event: method, path, status, range, bytes,
        seconds, reason.
        """
        server = Server(root)
        with capturedLogs() as events:
            server.get("/files/data.bin", "Range: bytes=0-9,20-29")
            server.get("/nothing")
        logged: list[LogEvent] = [e for e in events if "status" in e]
        assert [
            (e["method"], e["path"], e["status"], e["range"], e["reason"])
            for e in logged
        ] == [
            ("GET", "/files/data.bin", 206, "0-9,20-29", "complete"),
            ("GET", "/nothing", 404, "-", "complete"),
        ]
        assert logged[0]["bytes"] > 20
        assert logged[0]["peer"] == "127.0.0.1:4321"


class ShutdownTests:
    def test_closeIdle(self) -> None:
        """
        On shutdown, connections waiting for a request are closed; one with
        a response under way is left to finish.
        """
        busy = Server(None)
        busy.send(b"GET /zero HTTP/1.1\r\nHost: t\r\n\r\n")
        idle = busy.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4322))
        assert idle is not None
        idleTransport = PausingTransport()
        idle.makeConnection(idleTransport)
        assert len(busy.site.channels) == 2
        busy.site.closeIdle()
        assert idleTransport.disconnecting
        assert not busy.transport.disconnecting
        busy.channel.connectionLost(Failure(ConnectionLost()))
        idle.connectionLost(Failure(ConnectionLost()))
        assert busy.site.channels == set()

    def test_noKeepAliveWhenStopping(self, root: Path) -> None:
        """
        Once the server is stopping, a response under way closes its
        connection when it ends.
        """
        # Twisted's HTTP channel resumes its transport after closing it:
        # harmless on a real one, refused by a strict test transport.
        server = Server(root, lenient=True)
        server.send(b"GET /files/data.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        server.site.closeIdle()
        assert not server.transport.disconnecting
        [response] = parseResponses(server.pump())
        assert response.body == CONTENT
        assert server.transport.disconnecting


class BusyTests:
    def test_busy(self) -> None:
        """
        A connection beyond the limits gets a 503 with C{Retry-After}, and is
        closed.
        """
        server = Server(
            None,
            protection=lambda clock: Protection(
                clock, limits=ConnectionLimits(maxConnections=1)
            ),
        )
        refused = server.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9))
        assert refused is not None
        transport = PausingTransport()
        refused.makeConnection(transport)
        [response] = parseResponses(written(transport))
        assert (response.status, response.headers["retry-after"]) == (503, "5")
        assert transport.disconnecting


class RequestTests:
    @pytest.mark.parametrize("framing", ["length", "chunked"])
    def test_bodyDiscarded(
        self, root: Path, monkeypatch: pytest.MonkeyPatch, framing: str
    ) -> None:
        """
        A request body is read and thrown away as it arrives: never spooled
        to a temporary file (Twisted's own requests write a large one to
        disk), and the request is answered as without one.
        """

        def noDisk(*args: object, **kwargs: object) -> None:
            raise AssertionError("a request body went to a temporary file")

        monkeypatch.setattr(tempfile, "TemporaryFile", noDisk)
        monkeypatch.setattr(tempfile, "NamedTemporaryFile", noDisk)
        body = b"x" * 2_000_000
        if framing == "length":
            head = f"Content-Length: {len(body)}\r\n"
            data = body
        else:
            head = "Transfer-Encoding: chunked\r\n"
            data = (
                b"".join(
                    b"%x\r\n%s\r\n" % (len(part), part)
                    for part in (body[:1_000_000], body[1_000_000:])
                )
                + b"0\r\n\r\n"
            )
        server = Server(root, site={"maxBody": len(body)})
        for path, status in [("/zero?bytes=5", 405), ("/files/data.bin", 405)]:
            server.send(
                f"POST {path} HTTP/1.1\r\nHost: t\r\n{head}"
                "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
                + data
            )
            [response] = parseResponses(server.pump())
            assert response.status == status

    @pytest.mark.parametrize(
        ("target", "status", "body"),
        [
            ("http://t/files/a%20b.txt", 200, b"spaces\n"),
            ("HTTPS://t:8080/zero?bytes=3", 200, b"\0\0\0"),
            ("http://t?x=1", 200, None),
            ("http://t", 200, None),
            ("ftp://t/files/a%20b.txt", 404, None),
        ],
    )
    def test_absoluteForm(
        self, root: Path, target: str, status: int, body: bytes | None
    ) -> None:
        """
        A request target in absolute form is served as its path (RFC 9112,
        3.2.2: a server must accept it).
        """
        response = Server(root).get(target)
        assert response.status == status
        if body is not None:
            assert response.body == body


class NegotiationTests:
    def test_noProtocolsOffered(self) -> None:
        """
        A L{StreamSite} offers no protocols to negotiate over TLS (ALPN): it
        speaks HTTP/1.1 only, and Twisted 24.7 set them anew on a TLS
        context for every connection, which pyOpenSSL now refuses. It is
        still a factory as Twisted's sites are.
        """
        site = StreamSite(makeResource(clock=TurnClock()), reactor=TurnClock())
        assert not IProtocolNegotiationFactory.providedBy(site)
        assert IProtocolFactory.providedBy(site)
