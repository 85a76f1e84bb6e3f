"""
Tests for L{twisted_zero._web}: the HTTP front end driven through a real
L{twisted.web.server.Site} over in-memory transports.
"""

from __future__ import annotations

import gc
import os
import re
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IHalfCloseableDescriptor,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IReactorTime,
)
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, capturedLogs
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from zope.interface import implementer

from twisted_zero import _paths
from twisted_zero._paths import NotFound, listUnderRoot, resolveUnderRoot
from twisted_zero._protection import ConnectionLimits, Protection
from twisted_zero._sources import CHARGEN_PERIOD, openRegularFile
from twisted_zero._web import (
    _CHANNEL_DETAILS,
    LINGER_BYTES,
    LINGER_SECONDS,
    StreamSite,
    makeResource,
)

from .helpers import PausingTransport, Response, TurnClock, manualPool, parseResponses

CONTENT = bytes(range(256)) * 400  # 102400 bytes
CHUNK = 4096


class CountingReader:
    """
    A real file that counts its reads and closes.
    """

    def __init__(self, file: BinaryIO, log: list[CountingReader]) -> None:
        self._file = file
        self.reads = 0
        self.closed = False
        log.append(self)

    def read(self, size: int = -1) -> bytes:
        assert not self.closed, "read after close"
        self.reads += 1
        return self._file.read(size)

    def seek(self, offset: int) -> int:
        return self._file.seek(offset)

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self.closed = True
        self._file.close()


class Server:
    """
    A L{StreamSite} with one client connection over a L{PausingTransport}.
    """

    def __init__(
        self,
        root: Path | None,
        lenient: bool = False,
        protection: Callable[[IReactorTime], Protection] | None = None,
        transport: PausingTransport | None = None,
        site: dict[str, object] | None = None,
        **options: object,
    ) -> None:
        self.clock = TurnClock()
        self.files: list[CountingReader] = []

        def opener(path: str) -> tuple[BinaryIO, os.stat_result]:
            file, info = openRegularFile(path)
            return CountingReader(file, self.files), info  # type: ignore[return-value]

        options.setdefault("opener", opener)
        resource = makeResource(
            clock=self.clock,
            root=None if root is None else os.path.realpath(root),
            chunkSize=CHUNK,
            **options,  # type: ignore[arg-type]
        )
        self.site = StreamSite(
            resource,
            reactor=self.clock,
            protection=None if protection is None else protection(self.clock),
            **(site or {}),  # type: ignore[arg-type]
        )
        self.transport = (
            PausingTransport(bufferSize=3 * CHUNK, lenient=lenient)
            if transport is None
            else transport
        )
        self.transport.peerAddr = IPv4Address("TCP", "127.0.0.1", 4321)
        self.channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        assert self.channel is not None
        self.channel.makeConnection(self.transport)

    def send(self, request: bytes) -> None:
        self.channel.dataReceived(request)

    def pump(self) -> bytes:
        """
        Take everything, as a client reading as fast as it can would.
        """
        received = b""
        for _ in range(100_000):
            received += self.transport.drain()
            idle = not self.clock.runTurn() and (
                self.transport.producer is None
                or self.transport.producerState != "paused"
            )
            if idle and not self.transport.value():
                break
        return received

    def get(self, path: str, *headers: str, method: str = "GET") -> Response:
        lines = [f"{method} {path} HTTP/1.1", "Host: test", *headers]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        [response] = parseResponses(self.pump(), head=method == "HEAD")
        return response


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "data.bin").write_bytes(CONTENT)
    (root / "a b.txt").write_bytes(b"spaces\n")
    (root / "<script>.txt").write_bytes(b"x")
    (root / ".secret").write_bytes(b"hidden")
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_bytes(b"inner\n")
    (root / "empty").write_bytes(b"")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"OUTSIDE-SECRET")
    (root / "escape").symlink_to(outside / "secret.txt")
    (root / "escape-dir").symlink_to(outside)
    os.mkfifo(root / "fifo")
    yield root


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


def multipart(response: Response) -> list[tuple[str, bytes]]:
    boundary = re.fullmatch(
        r"multipart/byteranges; boundary=(\S+)", response.headers["content-type"]
    )
    assert boundary is not None
    marker = b"--" + boundary.group(1).encode()
    assert response.body.endswith(b"\r\n" + marker + b"--\r\n")
    parts = []
    for part in response.body.split(marker)[1:-1]:
        head, _, body = part.partition(b"\r\n\r\n")
        assert body.endswith(b"\r\n")
        fields = dict(
            line.split(": ", 1) for line in head.decode().strip("\r\n").split("\r\n")
        )
        assert fields["Content-Type"] == "application/octet-stream"
        parts.append((fields["Content-Range"], body[:-2]))
    return parts


SIZE = len(CONTENT)


class RangeTests:
    @pytest.mark.parametrize(
        ("range_", "status", "contentRange", "body"),
        [
            ("bytes=0-499", 206, f"bytes 0-499/{SIZE}", CONTENT[:500]),
            ("bytes=500-999", 206, f"bytes 500-999/{SIZE}", CONTENT[500:1000]),
            ("bytes=-500", 206, f"bytes {SIZE - 500}-{SIZE - 1}/{SIZE}", CONTENT[-500:]),
            ("bytes=-999999", 206, f"bytes 0-{SIZE - 1}/{SIZE}", CONTENT),
            ("bytes=100000-", 206, f"bytes 100000-{SIZE - 1}/{SIZE}", CONTENT[100000:]),
            ("bytes=0-0", 206, f"bytes 0-0/{SIZE}", CONTENT[:1]),
            ("bytes=100-999999", 206, f"bytes 100-{SIZE - 1}/{SIZE}", CONTENT[100:]),
            ("bytes=102400-", 416, f"bytes */{SIZE}", None),
            ("bytes=-0", 416, f"bytes */{SIZE}", None),
            ("bytes=abc", 200, None, CONTENT),
            ("bytes=5-1", 200, None, CONTENT),
            ("items=0-1", 200, None, CONTENT),
            ("bytes=" + ",".join(["0-1"] * 17), 200, None, CONTENT),
        ],
    )  # fmt: skip
    def test_single(
        self,
        root: Path,
        range_: str,
        status: int,
        contentRange: str | None,
        body: bytes | None,
    ) -> None:
        """
        One range gives a 206 with its C{Content-Range} and exactly those
        bytes; an unsatisfiable one a 416 naming the size; a malformed or
        unsupported one is ignored.
        """
        response = Server(root).get("/files/data.bin", f"Range: {range_}")
        assert response.status == status
        assert response.headers.get("content-range") == contentRange
        if body is not None:
            assert response.body == body
            assert response.headers["content-length"] == str(len(body))
        assert response.headers["accept-ranges"] == "bytes"

    @pytest.mark.parametrize(
        ("range_", "expected"),
        [
            ("bytes=0-9,20-29", [(0, 10), (20, 30)]),
            ("bytes=0-0,-1", [(0, 1), (SIZE - 1, SIZE)]),
            ("bytes=0-5,3-8", [(0, 6), (3, 9)]),
            ("bytes=50-59, 10-19", [(50, 60), (10, 20)]),
            ("bytes=0-9,999999-", [(0, 10)]),
        ],
    )
    def test_multiple(
        self, root: Path, range_: str, expected: list[tuple[int, int]]
    ) -> None:
        """
        Several ranges give a C{multipart/byteranges} 206 whose parts hold
        exactly those bytes, in the order asked; unsatisfiable ones are
        dropped.
        """
        response = Server(root).get("/files/data.bin", f"Range: {range_}")
        assert response.status == 206
        if len(expected) == 1:
            [(start, stop)] = expected
            assert response.body == CONTENT[start:stop]
            return
        assert int(response.headers["content-length"]) == len(response.body)
        assert multipart(response) == [
            (f"bytes {start}-{stop - 1}/{SIZE}", CONTENT[start:stop])
            for start, stop in expected
        ]

    def test_rangesLargerThanFile(self, root: Path) -> None:
        """
        Ranges adding up to more than the file get the plain whole file.
        """
        header = "Range: bytes=" + ",".join(["0-60000"] * 3)
        response = Server(root).get("/files/data.bin", header)
        assert (response.status, response.body) == (200, CONTENT)

    def test_ifRange(self, root: Path) -> None:
        """
        C{If-Range} with the current strong ETag or exact date keeps the
        range; anything else gets the whole file.
        """
        server = Server(root)
        validators = server.get("/files/data.bin", method="HEAD").headers
        for ifRange, status in [
            (validators["etag"], 206),
            (validators["last-modified"], 206),
            ('"other"', 200),
            ("W/" + validators["etag"], 200),
            ("Sun, 06 Nov 1994 08:49:37 GMT", 200),
        ]:
            response = server.get(
                "/files/data.bin", "Range: bytes=0-9", f"If-Range: {ifRange}"
            )
            assert response.status == status, ifRange
            assert response.body == (CONTENT[:10] if status == 206 else CONTENT)

    def test_headRange(self, root: Path) -> None:
        """
        C{HEAD} ignores a range (ranges are defined for GET only): the 200
        headers, no body, nothing read.
        """
        server = Server(root)
        response = server.get("/files/data.bin", "Range: bytes=10-19", method="HEAD")
        assert response.status == 200
        assert response.headers["content-length"] == str(SIZE)
        assert "content-range" not in response.headers
        assert [(f.reads, f.closed) for f in server.files] == [(0, True)]

    def test_empty(self, root: Path) -> None:
        """
        An empty file is sent as such; any range of it is unsatisfiable.
        """
        server = Server(root)
        assert server.get("/files/empty").body == b""
        response = server.get("/files/empty", "Range: bytes=0-")
        assert (response.status, response.headers["content-range"]) == (
            416,
            "bytes */0",
        )


class ValidatorTests:
    def test_headers(self, root: Path) -> None:
        """
        Files carry a strong ETag, C{Last-Modified} and a type from the name.
        """
        server = Server(root)
        response = server.get("/files/data.bin")
        assert re.fullmatch(r'"[^"]+"', response.headers["etag"])
        assert response.headers["last-modified"].endswith(" GMT")
        assert response.headers["content-type"] == "application/octet-stream"
        assert (
            server.get("/files/a%20b.txt")
            .headers["content-type"]
            .startswith("text/plain")
        )

    def test_notModified(self, root: Path) -> None:
        """
        A matching C{If-None-Match} or a recent enough C{If-Modified-Since}
        gives a 304 without a body, and the file is not read.
        """
        server = Server(root)
        validators = server.get("/files/data.bin", method="HEAD").headers
        for header in [
            f"If-None-Match: {validators['etag']}",
            f'If-None-Match: "x", {validators["etag"]}',
            "If-None-Match: *",
            f"If-Modified-Since: {validators['last-modified']}",
        ]:
            response = server.get("/files/data.bin", header)
            assert (response.status, response.body) == (304, b""), header
            assert response.headers["etag"] == validators["etag"]
            assert "content-length" not in response.headers
        assert all(f.reads == 0 and f.closed for f in server.files)

    def test_preconditionFailed(self, root: Path) -> None:
        """
        A failing C{If-Match} or C{If-Unmodified-Since} gives a 412.
        """
        server = Server(root)
        assert server.get("/files/data.bin", 'If-Match: "nope"').status == 412
        header = "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT"
        assert server.get("/files/data.bin", header).status == 412
        etag = server.get("/files/data.bin", method="HEAD").headers["etag"]
        assert server.get("/files/data.bin", f"If-Match: {etag}").status == 200


class DirectoryTests:
    def test_noListing(self, root: Path) -> None:
        """
        Without C{--listing} a directory is 404.
        """
        server = Server(root)
        assert server.get("/files/").status == 404
        assert server.get("/files/sub/").status == 404

    def test_listing(self, root: Path) -> None:
        """
        With C{--listing}, a directory is an HTML index with names escaped,
        links encoded, dotfiles and escaping links left out.
        """
        response = Server(root, listing=True).get("/files/")
        assert response.status == 200
        page = response.body.decode()
        assert '<a href="a%20b.txt">a b.txt</a>' in page
        assert '<a href="%3Cscript%3E.txt">&lt;script&gt;.txt</a>' in page
        assert '<a href="sub/">sub/</a>' in page
        assert "<script>" not in page
        for hidden in (".secret", "escape", "fifo"):
            assert f">{hidden}<" not in page

    def test_redirect(self, root: Path) -> None:
        """
        A directory asked for without its slash is redirected to it.
        """
        response = Server(root, listing=True).get("/files/sub")
        assert response.status == 301
        assert response.headers["location"] == "/files/sub/"

    def test_fileWithSlash(self, root: Path) -> None:
        """
        A file asked for as a directory (a trailing slash) is not found.
        """
        server = Server(root, listing=True)
        assert server.get("/files/data.bin/").status == 404
        assert server.get("/files/sub/inner.txt/").status == 404
        assert server.get("/files/data.bin").status == 200

    def test_dotfiles(self, root: Path) -> None:
        """
        Dotfiles are served only with C{--dotfiles}.
        """
        assert Server(root).get("/files/.secret").status == 404
        assert Server(root, dotfiles=True).get("/files/.secret").body == b"hidden"


HOSTILE = [
    "/files/..", "/files/../", "/files/../outside/secret.txt", "/files/%2e%2e/outside/secret.txt",
    "/files/%2E%2E%2Foutside%2Fsecret.txt", "/files/..%2foutside%2fsecret.txt",
    "/files/..%5coutside%5csecret.txt", "/files/%2e%2e%5coutside%5csecret.txt",
    "/files/.%2e/outside/secret.txt", "/files/%2e./outside/secret.txt", "/files/....//outside/secret.txt",
    "/files/..;/outside/secret.txt", "/files/sub/../../outside/secret.txt",
    "/files/sub/%2e%2e/%2e%2e/outside/secret.txt", "/files/%252e%252e/outside/secret.txt",
    "/files/%00", "/files/data.bin%00.txt", "/files/\\..\\outside\\secret.txt",
    "/files/..\\..\\outside\\secret.txt", "/files/C:/Windows", "/files//etc/passwd",
    "/files/%2Fetc%2Fpasswd", "/files/escape", "/files/escape-dir/secret.txt", "/files/.secret",
    "/files/sub/.", "/files/./data.bin", "/files/fifo", "/files/..%2f..%2f..%2fetc%2fpasswd",
    "/files/%2e%2E/outside/secret.txt", "/files/sub//inner.txt", "/files/%ff%fe",
    "/files/" + "a" * 300, "/files/%c0%ae%c0%ae/outside/secret.txt", "/files/sub/..%00/",
]  # fmt: skip


class TraversalTests:
    @pytest.mark.parametrize("path", HOSTILE)
    def test_hostile(self, root: Path, path: str) -> None:
        """
        No hostile path gets a byte from outside the root, or reveals a
        filesystem path; FIFOs are never opened (this would hang).
        """
        server = Server(root, listing=True)
        response = server.get(path)
        assert response.status in (404, 400), response
        assert b"OUTSIDE-SECRET" not in response.body
        assert str(root).encode() not in response.body
        assert str(root.parent).encode() not in response.body


class BackpressureTests:
    def start(self, root: Path, *headers: str) -> Server:
        server = Server(root)
        lines = ["GET /files/data.bin HTTP/1.1", "Host: t", *headers]
        server.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        return server

    def test_pausedTransport(self, root: Path) -> None:
        """
        While the transport has the HTTP channel paused, the file is not
        read further; once resumed, it is read to the end.
        """
        server = self.start(root)
        [file] = server.files
        assert server.transport.producerState == "paused"
        reads = file.reads
        for _ in range(10):
            server.clock.runTurn()
        assert file.reads == reads
        [response] = parseResponses(server.pump())
        assert response.body == CONTENT
        assert file.closed

    @pytest.mark.parametrize(
        "range_", [None, "Range: bytes=10-60000", "Range: bytes=0-9,20000-90000"]
    )
    def test_disconnect(self, root: Path, range_: str | None) -> None:
        """
        A client that leaves mid-body (mid-range, mid-multipart) closes the
        file at once; it is never read again.
        """
        server = self.start(root, *([range_] if range_ else []))
        [file] = server.files
        assert not file.closed
        reads = file.reads
        with capturedLogs() as events:
            server.channel.connectionLost(Failure(ConnectionLost()))
        assert file.closed
        server.transport.drain()
        server.clock.runTurn()
        assert file.reads == reads
        [event] = [e for e in events if "status" in e]
        assert event["reason"] == "client reset"

    def test_truncated(self, root: Path) -> None:
        """
        A file that shrinks while being sent aborts the connection, so the
        client can tell; nothing is padded.
        """
        server = self.start(root)
        os.truncate(root / "data.bin", 20_000)
        with capturedLogs() as events:
            received = server.pump()
            assert "abortConnection" in server.transport.calls
            server.channel.connectionLost(Failure(ConnectionLost()))
        assert len(received) < SIZE
        [event] = [e for e in events if "status" in e]
        assert event["reason"] == "aborted: source failed"


class PrefixTests:
    def test_encodedPrefix(self, root: Path) -> None:
        """
        C{/%66iles/...} names the files resource only once decoded: it is a
        404, not another file.
        """
        (root / "es").mkdir()
        (root / "es" / "data.bin").write_bytes(b"wrong file")
        assert Server(root).get("/%66iles/data.bin").status == 404

    def test_swappedPath(self, root: Path, tmp_path: Path) -> None:
        """
        A file that turns out, once opened, to lie outside the root (a
        directory on the way swapped for a symlink after the check) is not
        served.
        """
        server = Server(root)
        outside = tmp_path / "outside" / "secret.txt"

        def swapped(path: str) -> tuple[BinaryIO, os.stat_result]:
            return openRegularFile(str(outside))

        server.site.resource.children[b"files"]._open = swapped  # type: ignore[attr-defined]
        response = server.get("/files/data.bin")
        assert response.status == 404
        assert b"OUTSIDE-SECRET" not in response.body

    def test_undecodableName(self, root: Path) -> None:
        """
        A name that is not UTF-8 is left out of a listing, which still
        works.
        """
        os.close(
            os.open(os.fsencode(root) + b"/\xff\xfe.bin", os.O_CREAT | os.O_WRONLY)
        )
        response = Server(root, listing=True).get("/files/")
        assert response.status == 200
        assert b"data.bin" in response.body


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


class ProtectionTests:
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
        [response] = parseResponses(transport.value())
        assert (response.status, response.headers["retry-after"]) == (503, "5")
        assert transport.disconnecting

    @pytest.mark.parametrize(
        ("rate", "status"), [("1M", 200), ("0", 400), ("fast", 400)]
    )
    def test_rate(self, rate: str, status: int) -> None:
        """
        C{?rate=} takes a positive size; anything else is a 400.
        """
        assert Server(None).get(f"/zero?bytes=100&rate={rate}").status == status

    @pytest.mark.parametrize(
        "path", ["/files/empty", "/zero?bytes=0", "/zero?bytes=10", "/files/data.bin"]
    )
    def test_nothingLeftScheduled(self, root: Path, path: str) -> None:
        """
        However a response ends, inside C{startStreaming} too (an empty
        body, or one that fits in the first send), its stall watch and its
        deadline end with it: nothing is left scheduled.
        """
        server = Server(
            root,
            protection=lambda clock: Protection(clock, stallTimeout=10, maxDuration=3),
        )
        for _ in range(2):  # two on the same keep-alive connection
            response = server.get(path)
            assert response.status == 200
        # The connection's own idle timeout ends with the connection.
        server.channel.connectionLost(Failure(ConnectionDone()))
        assert server.clock.getDelayedCalls() == []

    def test_stalledBody(self, root: Path) -> None:
        """
        A response whose client stops reading is aborted after the stall
        timeout, and logged as such.
        """
        server = Server(
            root, protection=lambda clock: Protection(clock, stallTimeout=10)
        )
        with capturedLogs() as events:
            server.send(b"GET /files/data.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            for _ in range(20):
                server.clock.advance(1)
            assert "abortConnection" in server.transport.calls
            server.channel.connectionLost(Failure(ConnectionLost()))
        [event] = [e for e in events if "status" in e]
        assert event["reason"] == "stalled"

    def test_maxDuration(self) -> None:
        """
        No response outlives the maximum duration.
        """
        server = Server(None, protection=lambda clock: Protection(clock, maxDuration=5))
        with capturedLogs() as events:
            server.send(b"GET /zero HTTP/1.1\r\nHost: t\r\n\r\n")
            server.clock.advance(4.9)
            assert "abortConnection" not in server.transport.calls
            server.clock.advance(0.1)
            assert "abortConnection" in server.transport.calls
            server.channel.connectionLost(Failure(ConnectionLost()))
        [event] = [e for e in events if "status" in e]
        assert event["reason"] == "max duration"


class ThreadedFilesTests:
    """
    With an I/O pool (driven by hand here), C{/files/} does its file-system
    work in a thread and responds once it is done.
    """

    def start(self, root: Path, path: str, method: str = "GET") -> ServerInThreads:
        server = ServerInThreads(root)
        server.send(f"{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        return server

    def test_fileInThread(self, root: Path) -> None:
        """
        The file is opened in a thread: nothing is opened or answered before
        that; then the body is streamed as usual.
        """
        server = self.start(root, "/files/data.bin")
        assert (server.files, server.transport.value()) == ([], b"")
        server.threads.runThread()
        assert len(server.files) == 1
        server.threads.deliver()
        [response] = parseResponses(server.pump())
        assert response.status == 200
        assert response.body == CONTENT
        assert server.files[0].closed
        assert server.pool.inFlight == 0

    @pytest.mark.parametrize(
        ("path", "method", "status", "body"),
        [
            ("/files/nope", "GET", 404, b"404 Not Found\n"),
            ("/files/sub", "GET", 301, b"301 Moved Permanently\n"),
            ("/files/sub/", "GET", 200, b'<a href="inner.txt">inner.txt</a>'),
            ("/files/data.bin", "HEAD", 200, b""),
            ("/files/sub/", "HEAD", 200, b""),
            ("/files/nope", "HEAD", 404, b""),
        ],
    )
    def test_answers(
        self, root: Path, path: str, method: str, status: int, body: bytes
    ) -> None:
        """
        Every answer found in a thread is the one found at once.
        """
        threaded = self.start(root, path, method)
        threaded.threads.runAll()
        [response] = parseResponses(threaded.pump(), head=method == "HEAD")
        inline = Server(root, listing=True).get(path, method=method)
        assert response.status == inline.status == status
        assert body in response.body
        assert response.body == inline.body
        for name in ("content-length", "content-type", "location", "etag"):
            assert response.headers.get(name) == inline.headers.get(name)

    def test_goneWhileQueued(self, root: Path) -> None:
        """
        A client that leaves before a thread looks for its file costs no
        file-system call: the lookup is skipped.
        """
        server = self.start(root, "/files/data.bin")
        server.channel.connectionLost(Failure(ConnectionLost()))
        assert server.pool.inFlight == 0
        server.threads.runAll()
        assert server.files == []

    def test_goneWhileRunning(self, root: Path) -> None:
        """
        A client that leaves while a thread opens its file has it closed as
        soon as the thread is done, unread; nothing is written.
        """
        server = self.start(root, "/files/data.bin")
        server.threads.runThread()
        [file] = server.files
        server.channel.connectionLost(Failure(ConnectionLost()))
        assert not file.closed
        server.threads.deliver()
        assert file.closed
        assert file.reads == 0
        assert server.transport.value() == b""

    def test_errorInThread(self, root: Path) -> None:
        """
        An unexpected error in the lookup is a 500, logged once.
        """

        def broken(path: str) -> tuple[BinaryIO, os.stat_result]:
            raise RuntimeError("disk on fire")

        server = ServerInThreads(root, opener=broken)
        with capturedLogs() as events:
            server.send(b"GET /files/data.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            server.threads.runAll()
            [response] = parseResponses(server.pump())
        assert response.status == 500
        assert b"disk on fire" not in response.body
        assert [e for e in events if e.get("log_failure") is not None]


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


class ServerInThreads(Server):
    """
    A L{Server} whose file root uses an I/O pool driven by hand.
    """

    def __init__(self, root: Path, **options: object) -> None:
        self.pool, self.threads = manualPool()
        options.setdefault("listing", True)
        super().__init__(root, ioPool=self.pool, **options)


class ListingTests:
    def test_bounded(self, tmp_path: Path) -> None:
        """
        A listing reads the directory only until it has the most entries it
        shows, and says there are more.
        """
        for index in range(30):
            (tmp_path / f"f{index:02}").write_bytes(b"")
        directory = resolveUnderRoot(str(tmp_path), b"/")
        listing = listUnderRoot(str(tmp_path), directory, limit=10)
        assert len(listing.entries) == 10
        assert listing.truncated
        assert listing.entries == sorted(listing.entries)
        whole = listUnderRoot(str(tmp_path), directory, limit=30)
        assert (len(whole.entries), whole.truncated) == (30, False)

    def test_truncatedNote(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        A listing cut short says so on the page.
        """
        monkeypatch.setattr(_paths, "MAX_LISTING", 2)
        page = Server(root, listing=True).get("/files/").body.decode()
        assert page.count("<li><a ") == 2
        assert "(the first 2 entries found; there are more)" in page

    def test_symlinks(self, tmp_path: Path) -> None:
        """
        Symlinks are listed where they lead inside the root, as what they
        lead to; names a request cannot spell are left out.
        """
        root = tmp_path / "root"
        (root / "dir").mkdir(parents=True)
        (root / "file").write_bytes(b"")
        (root / "to-dir").symlink_to(root / "dir")
        (root / "to-file").symlink_to(root / "file")
        (root / "dangling").symlink_to(root / "nope")
        (root / "out").symlink_to(tmp_path)
        (root / "back\\slash").write_bytes(b"")
        (root / "%41").write_bytes(b"")
        listing = listUnderRoot(str(root), resolveUnderRoot(str(root), b""))
        assert listing.entries == [
            ("%41", False),
            ("dir", True),
            ("file", False),
            ("to-dir", True),
            ("to-file", False),
        ]

    def test_unreadable(self, tmp_path: Path) -> None:
        """
        A directory that cannot be read is not found.
        """
        directory = resolveUnderRoot(str(tmp_path), b"")
        os.rmdir(tmp_path)
        with pytest.raises(NotFound):
            listUnderRoot(str(tmp_path), directory)


@implementer(IHalfCloseableDescriptor)
class ClientTransport(PausingTransport):
    """
    The socket to a client that reads its responses only when told to.

    Unlike L{PausingTransport}, it keeps apart the two ways of pausing: the
    channel pausing the transport (L{reading}: the client's requests stay in
    its socket) and the transport pausing the channel, its producer, once
    more than C{bufferSize} bytes wait unread (L{producerPaused}), until the
    client has read them all (L{read}).
    """

    def __init__(self, bufferSize: int = 64 * 1024) -> None:
        super().__init__(bufferSize=bufferSize)
        self.reading = True
        self.producerPaused = False

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True

    def stopProducing(self) -> None:
        self.reading = False

    def write(self, data: bytes) -> None:
        StringTransport.write(self, data)
        self.calls.append("write")
        if (
            self.producer is not None
            and self.streaming
            and len(self.value()) > self.bufferSize
        ):
            self.producerPaused = True
            self.producer.pauseProducing()

    def read(self) -> bytes:
        """
        The client reads everything sent so far; the transport then resumes
        its producer, as a real one does once its buffer is empty.
        """
        data = self.value()
        self.clear()
        if self.producer is not None and self.producerPaused:
            self.producerPaused = False
            self.producer.resumeProducing()
        return data

    def loseWriteConnection(self) -> None:
        self.calls.append("loseWriteConnection")


def clientServer(**site: object) -> tuple[Server, ClientTransport]:
    transport = ClientTransport()
    return Server(None, transport=transport, site=site), transport


def refusals(events: list[LogEvent]) -> list[tuple[int, str]]:
    return [(e["status"], e["why"]) for e in events if "why" in e and "status" in e]


class HeaderTimeoutTests:
    def test_trickled(self) -> None:
        """
        A request head trickled one byte per second is cut at the header
        timeout, however much is still to come: a 408 that closes the
        connection, and one log line.
        """
        server, transport = clientServer(headerTimeout=15.0, timeout=None)
        head = b"GET /zero?bytes=1 HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 100
        with capturedLogs() as events:
            for second in range(15):
                assert transport.value() == b""
                server.send(head[second : second + 1])
                server.clock.advance(1)
        [response] = parseResponses(transport.value())
        assert response.status == 408
        assert response.headers["connection"] == "close"
        assert response.body == (
            b"408 Request Timeout: the request head did not arrive within 15s\n"
        )
        assert "loseWriteConnection" in transport.calls
        assert refusals(events) == [(408, "the request head did not arrive within 15s")]

    def test_inTime(self) -> None:
        """
        A head that arrives whole within the timeout, however slowly, is
        answered; its clock stops with it.
        """
        server, transport = clientServer(headerTimeout=15, timeout=None)
        head = b"GET /zero?bytes=3 HTTP/1.1\r\nHost: t\r\n\r\n"
        for index in range(len(head)):
            server.send(head[index : index + 1])
            server.clock.advance(14.9 / len(head))
        [response] = parseResponses(transport.read())
        assert (response.status, response.body) == (200, b"\0\0\0")
        server.clock.advance(100)
        assert transport.value() == b""
        assert not transport.disconnecting
        assert server.clock.getDelayedCalls() == []

    def test_keepAlive(self) -> None:
        """
        On a keep-alive connection, the next head's clock starts with its
        first byte: the wait before it is the idle timeout's business.
        """
        server, transport = clientServer(headerTimeout=15, timeout=None)
        request = b"GET /zero?bytes=1 HTTP/1.1\r\nHost: t\r\n\r\n"
        server.send(request)
        assert parseResponses(transport.read())[0].status == 200
        calls = len(transport.calls)
        server.clock.advance(1000)
        assert (transport.value(), len(transport.calls)) == (b"", calls)
        server.send(request[:5])
        server.clock.advance(14)
        server.send(request[5:-2])
        server.clock.advance(0.9)
        server.send(request[-2:])
        assert parseResponses(transport.read())[0].status == 200
        server.send(request[:5])
        server.clock.advance(15)
        [response] = parseResponses(transport.read())
        assert response.status == 408

    def test_pipelined(self) -> None:
        """
        A head already received when the response before it ends is timed
        from then: its rest must come within the timeout.
        """
        server, transport = clientServer(headerTimeout=15, timeout=None)
        server.send(b"GET /zero?bytes=1 HTTP/1.1\r\nHost: t\r\n\r\nGET /zero")
        server.clock.advance(14)
        server.send(b"?bytes=2 HTTP/1.1\r\n")
        server.clock.advance(1)
        responses = parseResponses(transport.read())
        assert [r.status for r in responses] == [200, 408]

    def test_nothingSent(self) -> None:
        """
        A connection on which not a byte of a request comes is closed at the
        header timeout, without a response (there was no request to answer).
        """
        server, transport = clientServer(headerTimeout=15, timeout=None)
        with capturedLogs() as events:
            server.clock.advance(14.9)
            assert not transport.disconnecting
            server.clock.advance(0.1)
        assert transport.value() == b""
        assert transport.disconnecting
        [event] = [e for e in events if "timeout" in e]
        assert event["log_format"].startswith("closed a connection from {peer}")

    def test_disabled(self) -> None:
        """
        Without a header timeout, a trickling head is left to the idle
        timeout.
        """
        server, transport = clientServer(headerTimeout=None, timeout=None)
        for _ in range(100):
            server.send(b"a")
            server.clock.advance(1)
        assert (transport.value(), transport.disconnecting) == (b"", False)

    def test_closedOnShutdown(self) -> None:
        """
        On shutdown, a connection whose head is still arriving is closed
        like an idle one.
        """
        server, transport = clientServer()
        server.send(b"GET /zero HTTP/1.1\r\nHo")
        server.site.closeIdle()
        assert transport.disconnecting


def headWith(*fields: bytes, target: bytes = b"/zero?bytes=1") -> bytes:
    return b"GET %s HTTP/1.1\r\n%s\r\n" % (
        target,
        b"".join(field + b"\r\n" for field in fields),
    )


class HeadLimitTests:
    """
    Heads over Twisted's limits (16384 bytes, 500 header fields) are
    answered, on the wire, with a status that says why, and the connection
    is closed; Twisted itself closes in silence (a line too long) or sends
    a bare 400.
    """

    @pytest.mark.parametrize(
        ("head", "status", "why"),
        [
            (
                headWith(*(b"X-%d: y" % (index,) for index in range(501))),
                431,
                "more than 500 header fields",
            ),
            (
                headWith(*(b"X-%d: %s" % (index, b"y" * 1000) for index in range(17))),
                431,
                "request head over 16384 bytes",
            ),
            (
                headWith(b"X-Long: " + b"y" * 16400),
                431,
                "header field line over 16384 bytes",
            ),
            (
                headWith(target=b"/" + b"a" * 16400),
                414,
                "request line over 16384 bytes",
            ),
            (
                headWith(b"Host: t", b"X-Long: " + b"y" * 16400)[:-20],
                431,
                "header field line over 16384 bytes",
            ),
        ],
    )
    def test_tooLarge(self, head: bytes, status: int, why: str) -> None:
        """
        A head with too many fields or too many bytes (in all, or in one
        line, even one not yet ended) gets a 431, and a request line too
        long a 414, whole responses that close the connection.
        """
        server, transport = clientServer()
        with capturedLogs() as events:
            server.send(head)
        reason = {431: "Request Header Fields Too Large", 414: "URI Too Long"}[status]
        body = f"{status} {reason}: {why}\n".encode()
        assert transport.value() == (
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nCache-Control: no-store\r\n"
            b"Connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body)
        )
        assert "loseWriteConnection" in transport.calls
        assert refusals(events) == [(status, why)]

    def test_atTheLimits(self) -> None:
        """
        A head with 500 header fields, or of 16384 bytes, is served.
        """
        many = headWith(*(b"X-%d: y" % (index,) for index in range(500)))
        server, transport = clientServer()
        server.send(many)
        assert parseResponses(transport.read())[0].status == 200
        padding = 16384 - len(b"GET /zero?bytes=1 HTTP/1.1X-Pad: ")
        server.send(headWith(b"X-Pad: " + b"y" * padding))
        assert parseResponses(transport.read())[0].status == 200
        # An empty line before a request line (which Twisted skips) is no
        # part of its head.
        server.send(b"\r\n" + many)
        assert parseResponses(transport.read())[0].status == 200

    @pytest.mark.parametrize(
        "head",
        [
            headWith(b"NoColon"),
            b"GARBAGE\r\n\r\n",
            headWith(b"Content-Length: -1"),
            headWith(b"Content-Length: 1", b"Transfer-Encoding: chunked"),
            b"POST /zero HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ],
    )
    def test_malformed(self, head: bytes) -> None:
        """
        A malformed head or chunked body gets a whole 400 response that
        closes the connection.
        """
        server, transport = clientServer()
        with capturedLogs() as events:
            server.send(head)
        [response] = parseResponses(transport.value())
        assert response.status == 400
        assert response.headers["connection"] == "close"
        assert response.body == b"400 Bad Request: malformed request\n"
        assert refusals(events) == [(400, "malformed request")]

    def test_nothingParsedAfter(self) -> None:
        """
        After a refusal, nothing more on the connection is parsed or
        answered, though it is read: not the rest of what came with the
        refused head, not what comes later.
        """
        server, transport = clientServer()
        server.send(
            headWith(b"NoColon")
            + b"GET /zero?bytes=1 HTTP/1.1\r\n\r\n"
            + b"GET /" * 5000
        )
        server.send(b"GET /zero?bytes=1 HTTP/1.1\r\n\r\n")
        assert len(parseResponses(transport.value())) == 1
        assert transport.reading


class BodyLimitTests:
    def post(self, *fields: bytes) -> bytes:
        return b"POST /zero HTTP/1.1\r\nHost: t\r\n%s\r\n" % (
            b"".join(field + b"\r\n" for field in fields),
        )

    @pytest.mark.parametrize("expect", [False, True])
    def test_declaredOverLimit(self, expect: bool) -> None:
        """
        A body declared larger than the limit gets a 413 at once, before a
        byte of it is sent, and never a C{100 Continue}; the request is not
        processed.
        """
        server, transport = clientServer(maxBody=1000)
        fields = [b"Content-Length: 1001"]
        if expect:
            fields.append(b"Expect: 100-continue")
        with capturedLogs() as events:
            server.send(self.post(*fields) + b"x" * 500)
        [response] = parseResponses(transport.value())
        assert response.status == 413
        assert response.headers["connection"] == "close"
        assert response.body == (
            b"413 Content Too Large: declared body of 1001 bytes over the limit "
            b"of 1000 bytes\n"
        )
        assert b"100 Continue" not in transport.value()
        assert "loseWriteConnection" in transport.calls
        assert [e for e in events if "method" in e] == []

    def test_atTheLimit(self) -> None:
        """
        A body of exactly the limit is read (after a C{100 Continue} when
        the client asks) and thrown away; the request is answered.
        """
        server, transport = clientServer(maxBody=1000)
        server.send(self.post(b"Content-Length: 1000", b"Expect: 100-continue"))
        assert transport.read() == b"HTTP/1.1 100 Continue\r\n\r\n"
        server.send(b"x" * 1000)
        [response] = parseResponses(transport.read())
        assert response.status == 405

    @pytest.mark.parametrize("expect", [False, True])
    def test_chunkedOverLimit(self, expect: bool) -> None:
        """
        A chunked body gets a 413 as soon as it goes over the limit, in the
        middle of a chunk too; nothing after it is parsed.
        """
        server, transport = clientServer(maxBody=1000)
        fields = [b"Transfer-Encoding: chunked"]
        if expect:
            fields.append(b"Expect: 100-continue")
        server.send(self.post(*fields))
        if expect:
            assert transport.read() == b"HTTP/1.1 100 Continue\r\n\r\n"
        server.send(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
        assert transport.value() == b""
        with capturedLogs() as events:
            server.send(b"10\r\n" + b"x" * 8 + b"\r\n")
        [response] = parseResponses(transport.value())
        assert response.status == 413
        assert response.body == (
            b"413 Content Too Large: body over the limit of 1000 bytes\n"
        )
        server.send(b"x" * 8 + b"\r\n0\r\n\r\nGET /zero?bytes=1 HTTP/1.1\r\n\r\n")
        assert len(parseResponses(transport.value())) == 1
        assert [e for e in events if "method" in e] == []

    @pytest.mark.parametrize(
        "tail",
        [
            b"10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\nGET /zero?bytes=1 HTTP/1.1\r\n\r\n",
            b"zz\r\n",
        ],
    )
    def test_chunkedOverLimitAtOnce(self, tail: bytes) -> None:
        """
        A chunked body over the limit that comes in one piece with more
        chunks, its end and a pipelined request, or a malformed chunk, is
        refused once all the same: neither it nor the request behind it is
        answered.
        """
        server, transport = clientServer(maxBody=1000)
        with capturedLogs() as events:
            server.send(
                self.post(b"Transfer-Encoding: chunked")
                + b"3e8\r\n" + b"x" * 1000 + b"\r\n10\r\n" + b"x" * 16 + b"\r\n"
                + tail
            )  # fmt: skip
        [response] = parseResponses(transport.value())
        assert response.status == 413
        assert [e for e in events if "method" in e] == []
        assert refusals(events) == [(413, "body over the limit of 1000 bytes")]

    def test_otherChannel(self) -> None:
        """
        A L{StreamSite}'s request on a channel of another kind still
        discards its body, without a limit.
        """
        channel = HTTPChannel()
        channel.site = StreamSite(makeResource(clock=TurnClock()), reactor=TurnClock())
        channel.requestFactory = StreamSite.requestFactory
        channel.makeConnection(StringTransport())
        channel.dataReceived(
            b"POST /zero HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n" + bytes(10)
        )
        [request] = channel.requests
        assert request.content.tell() == 10

    def test_hugeDeclaredLength(self) -> None:
        """
        A C{Content-Length} of thousands of digits (which Python will not
        convert) is a 413, not an error.
        """
        server, transport = clientServer()
        with capturedLogs() as events:
            server.send(self.post(b"Content-Length: " + b"9" * 5000))
        [response] = parseResponses(transport.value())
        assert response.status == 413
        assert [e for e in events if e.get("log_failure") is not None] == []


class LingerTests:
    def refused(self) -> tuple[Server, ClientTransport]:
        server, transport = clientServer(maxBody=10)
        server.send(b"POST /zero HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
        assert parseResponses(transport.value())[0].status == 413
        return server, transport

    def test_lingers(self) -> None:
        """
        After an error response, the server shuts down its sending side and
        reads (and throws away) what the client still sends, so that the
        response is not reset under the client; it closes once the client
        does, or after L{LINGER_SECONDS}, and aborts if the connection is
        not gone L{LINGER_SECONDS} later.
        """
        server, transport = self.refused()
        assert transport.calls[-3:] == [
            "unregisterProducer",
            "write",
            "loseWriteConnection",
        ]
        assert transport.reading
        server.send(b"x" * 100_000)
        server.clock.advance(LINGER_SECONDS - 0.1)
        assert "loseConnection" not in transport.calls
        server.clock.advance(0.1)
        assert transport.calls[-1] == "loseConnection"
        server.clock.advance(LINGER_SECONDS)
        assert transport.calls[-1] == "abortConnection"

    def test_boundedInBytes(self) -> None:
        """
        A client that sends more than L{LINGER_BYTES} meanwhile is closed at
        once.
        """
        server, transport = self.refused()
        for _ in range(LINGER_BYTES // 2**20):
            server.send(bytes(2**20))
        assert "loseConnection" not in transport.calls
        server.send(b"x")
        assert transport.calls[-1] == "loseConnection"

    def test_nothingLeftScheduled(self) -> None:
        """
        Once the connection is gone, nothing of it is left scheduled.
        """
        server, transport = self.refused()
        server.channel.connectionLost(Failure(ConnectionDone()))
        assert server.clock.getDelayedCalls() == []

    def test_notHalfCloseable(self) -> None:
        """
        Over a transport that cannot shut down its sending side alone (TLS),
        an error response closes the connection after it is sent.
        """
        server = Server(None, site={"maxBody": 10})
        server.send(b"POST /zero HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
        assert parseResponses(server.transport.value())[0].status == 413
        assert server.transport.disconnecting


class PipeliningTests:
    """
    A client that sends requests without reading its responses gets no more
    of them read than a small buffer holds, however it sends them; once it
    reads, all are answered, in order.
    """

    def flood(self, server: Server, transport: ClientTransport, requests: bytes) -> int:
        """
        Send C{requests} as a client does, as long as the server reads them,
        without reading responses; return how much was sent.
        """
        sent = 0
        while transport.reading and sent < len(requests):
            server.send(requests[sent : sent + 65536])
            sent += 65536
            for _ in range(3):
                server.clock.runTurn()
        return min(sent, len(requests))

    def readAll(
        self, server: Server, transport: ClientTransport, requests: bytes, sent: int
    ) -> bytes:
        """
        Now read the responses, sending the rest of the requests as the
        server reads them.
        """
        received = b""
        for _ in range(100_000):
            received += transport.read()
            ran = server.clock.runTurn()
            if transport.reading and sent < len(requests):
                server.send(requests[sent : sent + 65536])
                sent += 65536
            elif not ran and not transport.value():
                break
        return received

    def test_stalledResponse(self) -> None:
        """
        Requests pipelined behind a response the client does not read are
        not read beyond Twisted's 16 KiB of look-ahead and one read
        (Twisted, while the transport is full, reads them without end).
        """
        server, transport = clientServer()
        server.send(b"GET /zero?bytes=4M HTTP/1.1\r\nHost: t\r\n\r\n")
        for _ in range(10):
            server.clock.runTurn()
        assert transport.producerPaused
        pad = b"X-Pad: " + b"p" * 4000
        requests = b"".join(
            headWith(b"Host: t", pad, target=b"/zero?bytes=%d" % (index,))
            for index in range(512)
        )
        sent = self.flood(server, transport, requests)
        assert sent <= 128 * 1024 < len(requests)
        assert sum(map(len, server.channel._dataBuffer)) <= 16384 + 65536  # type: ignore[attr-defined]
        responses = parseResponses(self.readAll(server, transport, requests, sent))
        assert [int(r.headers["content-length"]) for r in responses] == [
            4 * 2**20,
            *range(512),
        ]
        assert {r.status for r in responses} == {200}

    def test_unreadResponses(self) -> None:
        """
        Small responses the client does not read are not answered beyond
        what fills the transport: then reading and answering stop until the
        client reads (Twisted would answer every request it reads, and read
        them all).
        """
        server, transport = clientServer()
        count = 5000
        requests = b"".join(
            b"GET /zero?bytes=%d HTTP/1.1\r\n\r\n" % (1000 + index % 100,)
            for index in range(count)
        )
        sent = self.flood(server, transport, requests)
        assert not transport.reading
        assert sent < len(requests)
        assert len(transport.value()) < 64 * 1024 + 2000
        responses = parseResponses(self.readAll(server, transport, requests, sent))
        assert [len(r.body) for r in responses] == [
            1000 + index % 100 for index in range(count)
        ]


class TwistedChannelTests:
    def test_details(self) -> None:
        """
        Twisted's L{HTTPChannel} still has every detail L{_Channel} relies
        on (a new Twisted that changes them must fail here, not in
        production), and they still mean what they meant: while a request
        is answered, pipelined bytes wait in C{_dataBuffer}, and the
        transport pausing the channel is remembered in
        C{_waitingForTransport}.
        """
        channel = HTTPChannel()
        channel.makeConnection(StringTransport())
        for name in _CHANNEL_DETAILS:
            assert hasattr(channel, name), name
        assert channel._networkProducer is channel.transport
        server, transport = clientServer()
        server.send(b"GET /zero HTTP/1.1\r\n\r\nGET /")
        channel = server.channel
        assert channel._handlingRequest  # type: ignore[attr-defined]
        assert channel._dataBuffer == [b"GET /"]  # type: ignore[attr-defined]
        assert channel._waitingForTransport  # type: ignore[attr-defined]


class FreedTests:
    @pytest.mark.parametrize(
        "request_",
        [
            pytest.param(b"GET /zero?bytes=10 HTTP/1.1\r\nHost: t\r\n\r\n", id="GET"),
            pytest.param(
                b"POST /zero HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde",
                id="body",
            ),
            pytest.param(
                b"POST /zero HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\nabc",
                id="body cut short",
            ),
            pytest.param(
                b"GET /zero HTTP/1.1\r\nHost: t\r\n\r\n", id="endless, stopped"
            ),
        ],
    )
    def test_noCycle(self, request_: bytes) -> None:
        """
        A connection, its requests and their streams are freed as soon as
        it is closed, whatever they were doing: they hold no cycle that only
        the garbage collector would break, which on a busy server comes
        late, holding every such connection's memory until then.
        """
        gc.collect()
        gc.disable()
        try:
            server = Server(None)
            channel = weakref.ref(server.channel)
            server.send(request_)
            for _ in range(5):
                server.transport.drain()
                server.clock.runTurn()
            # As a socket transport loses its connection:
            transport = server.transport
            if transport.producer is not None:
                transport.producer.stopProducing()
                transport.producer = None
            server.channel.connectionLost(Failure(ConnectionDone()))
            del server
            assert channel() is None
        finally:
            gc.enable()


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
