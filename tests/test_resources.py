"""
Tests for L{twisted_zero._resources}: the index, the generated streams
and the 404s, served by a L{StreamSite} over an in-memory transport.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from twisted_zero._sources import CHARGEN_PERIOD

from .helpers import parseResponses
from .webserver import (
    CHUNK,
    Server,
    makeRoot,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return makeRoot(tmp_path)


class IndexTests:
    def test_index(self) -> None:
        """
        C{GET /} describes the endpoints in plain text.
        """
        response = Server(None).get("/")
        assert response.status == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert b"/zero" in response.body and b"?bytes=N" in response.body
        assert b"/files/" not in response.body

    def test_head(self) -> None:
        """
        C{HEAD /} has the headers and no body.
        """
        response = Server(None).get("/", method="HEAD")
        assert response.status == 200
        assert int(response.headers["content-length"]) > 0
        assert response.body == b""

    @pytest.mark.parametrize("path", ["/", "/zero", "/files/data.bin"])
    def test_otherMethods(self, root: Path, path: str) -> None:
        """
        Other methods than GET and HEAD get 405 with an C{Allow} header.
        """
        response = Server(root).get(path, method="POST")
        assert response.status == 405
        assert response.headers["allow"] == "GET, HEAD"

    @pytest.mark.parametrize("path", ["/nothing", "/zero/more", "/files/nope", "/x/"])
    def test_notFound(self, root: Path, path: str) -> None:
        """
        Unknown paths are 404.
        """
        assert Server(root).get(path).status == 404

    def test_noRoot(self) -> None:
        """
        Without a root there is no C{/files/}.
        """
        assert Server(None).get("/files/data.bin").status == 404


class GeneratedTests:
    @pytest.mark.parametrize(
        ("path", "expected", "contentType"),
        [
            ("/zero?bytes=10000", bytes(10_000), "application/octet-stream"),
            ("/zero?bytes=10K", bytes(10_240), "application/octet-stream"),
            (
                "/chargen?bytes=20000",
                (CHARGEN_PERIOD * 3)[:20_000],
                "text/plain; charset=us-ascii",
            ),
            ("/zero?bytes=0", b"", "application/octet-stream"),
        ],
    )
    def test_sized(self, path: str, expected: bytes, contentType: str) -> None:
        """
        C{?bytes=N} sends exactly N bytes with a C{Content-Length}, never
        cached.
        """
        response = Server(None).get(path)
        assert response.status == 200
        assert response.body == expected
        assert response.headers["content-length"] == str(len(expected))
        assert response.headers["content-type"] == contentType
        assert response.headers["cache-control"] == "no-store"
        assert "content-encoding" not in response.headers

    def test_random(self) -> None:
        """
        C{/random} sends the bytes asked for, all different.
        """
        server = Server(None)
        first, second = (
            server.get("/random?bytes=8192"),
            server.get("/random?bytes=8192"),
        )
        assert len(first.body) == len(second.body) == 8192
        assert first.body != second.body

    def test_head(self) -> None:
        """
        C{HEAD} gives the length that C{GET} would send, and no body.
        """
        response = Server(None).get("/zero?bytes=5M", method="HEAD")
        assert response.headers["content-length"] == str(5 * 2**20)
        assert response.body == b""

    def test_endless(self) -> None:
        """
        Without C{bytes} or C{seconds} the stream is chunked and does not
        end; a client that leaves stops it.
        """
        server = Server(None)
        server.send(b"GET /zero HTTP/1.1\r\nHost: t\r\n\r\n")
        head = server.transport.drain()
        assert b"\r\ntransfer-encoding: chunked\r\n" in head.lower()
        received = sum(len(server.transport.drain()) for _ in range(20))
        assert received >= 20 * CHUNK
        assert server.transport.producer is not None
        server.channel.connectionLost(Failure(ConnectionLost()))
        assert server.clock.runTurn() == 0

    def test_seconds(self) -> None:
        """
        C{?seconds=T} streams, chunked, until T seconds have passed.
        """
        server = Server(None)
        server.send(b"GET /chargen?seconds=2 HTTP/1.1\r\nHost: t\r\n\r\n")
        received = server.transport.drain()
        for _ in range(5):
            received += server.transport.drain()
        server.clock.advance(2)
        received += server.pump()
        [response] = parseResponses(received)
        assert response.headers["transfer-encoding"] == "chunked"
        assert len(response.body) > 0
        assert response.body == (CHARGEN_PERIOD * 100)[: len(response.body)]

    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ("bytes=lots", "bytes=lots: not a size"),
            ("seconds=-1", "seconds=-1: not a positive number"),
            ("seconds=soon", "seconds=soon: not a positive number"),
            ("bytes=1&seconds=1", "ask for bytes= or seconds=, not both"),
            (
                "bytes=99999999999999999999999G",
                "bytes=99999999999999999999999G: more than a Content-Length "
                "may say (9223372036854775807)",
            ),
            (
                "bytes=9223372036854775808",
                "bytes=9223372036854775808: more than a Content-Length "
                "may say (9223372036854775807)",
            ),
        ],
    )
    def test_badQuery(self, query: str, message: str) -> None:
        """
        A malformed query is a 400 that says what is wrong.
        """
        response = Server(None).get(f"/zero?{query}")
        assert response.status == 400
        assert response.body == f"400 Bad Request: {message}\n".encode()

    @pytest.mark.parametrize(
        ("query", "status"),
        [("bytes=1M", 200), ("bytes=1025K", 400), ("", 400), ("seconds=1", 400)],
    )
    def test_maxBytes(self, query: str, status: int) -> None:
        """
        With a cap, larger, endless and timed requests are refused with a
        400, never silently truncated.
        """
        response = Server(None, maxBytes=2**20).get(f"/zero?{query}")
        assert response.status == status
        if status == 200:
            assert len(response.body) == 2**20
