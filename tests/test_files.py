"""
Tests for L{twisted_zero._files}: the file root, its validators, ranges,
multipart bodies, listings, and what happens to the file when the client
leaves or the file shrinks, over an in-memory transport and over a real
socket pair.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from twisted.internet.error import ConnectionLost
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from twisted_zero import _paths
from twisted_zero._sources import openRegularFile

from .helpers import manualPool, parseResponses
from .sockets import countSendfiles
from .webserver import (
    BIG,
    CONTENT,
    SIZE,
    Client,
    Server,
    SocketServer,
    makeRoot,
    multipart,
    written,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return makeRoot(tmp_path)


Serve = Callable[[Path], Client]
"""
Makes a L{Client} of a site serving the given root.
"""


@pytest.fixture
def sendfiles(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """
    The calls of C{os.sendfile}, by the bytes asked for.
    """
    return countSendfiles(monkeypatch)


@pytest.fixture(params=["memory", "socket", "socket without sendfile"])
def serve(request: pytest.FixtureRequest) -> Iterator[Serve]:
    """
    Sites with a client over an in-memory transport, or over a real socket
    pair sending with C{sendfile()}, or reading and sending.
    """
    sockets: list[SocketServer] = []

    def make(root: Path) -> Client:
        if request.param == "memory":
            return Server(root)
        server = SocketServer(root, sendfile=request.param == "socket")
        sockets.append(server)
        return server

    yield make
    for server in sockets:
        server.close()


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


class RangeTests:
    """
    Over an in-memory transport and over a real socket (sending with
    C{sendfile()} or reading and sending).
    """

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
        serve: Serve,
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
        response = serve(root).get("/files/data.bin", f"Range: {range_}")
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
        self, root: Path, serve: Serve, range_: str, expected: list[tuple[int, int]]
    ) -> None:
        """
        Several ranges give a C{multipart/byteranges} 206 whose parts hold
        exactly those bytes, in the order asked; unsatisfiable ones are
        dropped.
        """
        response = serve(root).get("/files/data.bin", f"Range: {range_}")
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

    def test_rangesLargerThanFile(self, root: Path, serve: Serve) -> None:
        """
        Ranges adding up to more than the file get the plain whole file.
        """
        header = "Range: bytes=" + ",".join(["0-60000"] * 3)
        response = serve(root).get("/files/data.bin", header)
        assert (response.status, response.body) == (200, CONTENT)

    def test_ifRange(self, root: Path, serve: Serve) -> None:
        """
        C{If-Range} with the current strong ETag or exact date keeps the
        range; anything else gets the whole file.
        """
        server = serve(root)
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

    def test_headRange(self, root: Path, serve: Serve) -> None:
        """
        C{HEAD} ignores a range (ranges are defined for GET only): the 200
        headers, no body, nothing read.
        """
        server = serve(root)
        response = server.get("/files/data.bin", "Range: bytes=10-19", method="HEAD")
        assert response.status == 200
        assert response.headers["content-length"] == str(SIZE)
        assert "content-range" not in response.headers
        assert [(f.reads, f.closed) for f in server.files] == [(0, True)]

    def test_empty(self, root: Path, serve: Serve) -> None:
        """
        An empty file is sent as such; any range of it is unsatisfiable.
        """
        server = serve(root)
        assert server.get("/files/empty").body == b""
        response = server.get("/files/empty", "Range: bytes=0-")
        assert (response.status, response.headers["content-range"]) == (
            416,
            "bytes */0",
        )


class ValidatorTests:
    """
    Over an in-memory transport and over a real socket (sending with
    C{sendfile()} or reading and sending).
    """

    def test_headers(self, root: Path, serve: Serve) -> None:
        """
        Files carry a strong ETag, C{Last-Modified} and a type from the name.
        """
        server = serve(root)
        response = server.get("/files/data.bin")
        assert re.fullmatch(r'"[^"]+"', response.headers["etag"])
        assert response.headers["last-modified"].endswith(" GMT")
        assert response.headers["content-type"] == "application/octet-stream"
        assert (
            server.get("/files/a%20b.txt")
            .headers["content-type"]
            .startswith("text/plain")
        )

    def test_notModified(self, root: Path, serve: Serve) -> None:
        """
        A matching C{If-None-Match} or a recent enough C{If-Modified-Since}
        gives a 304 without a body, and the file is not read.
        """
        server = serve(root)
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

    def test_preconditionFailed(self, root: Path, serve: Serve) -> None:
        """
        A failing C{If-Match} or C{If-Unmodified-Since} gives a 412.
        """
        server = serve(root)
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


def start(server: Client, path: str, *headers: str) -> Client:
    """
    The client asks C{server} for C{path}, and reads nothing yet.
    """
    lines = [f"GET {path} HTTP/1.1", "Host: t", *headers]
    server.send(("\r\n".join(lines) + "\r\n\r\n").encode())
    return server


class BackpressureTests:
    def start(self, root: Path, *headers: str) -> Server:
        server = Server(root)
        start(server, "/files/data.bin", *headers)
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


class DisconnectTests:
    """
    Over an in-memory transport and over a real socket (sending with
    C{sendfile()} or reading and sending): a client that leaves, a file
    that shrinks.
    """

    @pytest.mark.parametrize(
        ("range_", "expected"),
        [
            (None, BIG),
            ("Range: bytes=10-3000000", BIG[10:3000001]),
            ("Range: bytes=0-9,20000-3000000", None),
        ],
    )
    def test_disconnect(
        self,
        root: Path,
        serve: Serve,
        sendfiles: list[int],
        range_: str | None,
        expected: bytes | None,
    ) -> None:
        """
        A client that leaves mid-body (mid-range, mid-multipart) has had the
        start of its body, exactly; the file is closed at once, and never
        read or sent from again.
        """
        server = start(serve(root), "/files/big.bin", *([range_] if range_ else []))
        received = b"".join(server.turn() for _ in range(3))
        [file] = server.files
        assert not file.closed
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 20")
        assert 0 < len(body) < len(BIG) // 2
        if expected is not None:
            assert body == expected[: len(body)]
        else:
            [part, second] = body.split(b"\r\n\r\n", 2)[1:]
            assert part.startswith(BIG[:10] + b"\r\n--")
            assert second == BIG[20000 : 20000 + len(second)]
        reads, sends = file.reads, len(sendfiles)
        with capturedLogs() as events:
            server.leave()
        assert file.closed
        for _ in range(3):
            server.turn()
        assert (file.reads, len(sendfiles)) == (reads, sends)
        [event] = [e for e in events if "status" in e]
        assert event["reason"] == server.leftAs

    def test_truncated(self, root: Path, serve: Serve) -> None:
        """
        A file that shrinks while being sent aborts the connection, so the
        client can tell: what it had is the start of the file, exactly,
        short of the length announced; nothing is padded.
        """
        server = start(serve(root), "/files/big.bin")
        os.truncate(root / "big.bin", 20_000)
        with capturedLogs() as events:
            received = server.pump()
            assert server.aborted()
        head, _, body = received.partition(b"\r\n\r\n")
        assert f"content-length: {len(BIG)}".encode() in head.lower()
        assert len(body) < len(BIG)
        assert body == BIG[: len(body)]
        assert [f.closed for f in server.files] == [True]
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

        server.site.resource.children[b"files"]._open = swapped
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
        assert (server.files, written(server.transport)) == ([], b"")
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
        assert written(server.transport) == b""

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


class ServerInThreads(Server):
    """
    A L{Server} whose file root uses an I/O pool driven by hand.
    """

    def __init__(
        self,
        root: Path,
        opener: Callable[[str], tuple[BinaryIO, os.stat_result]] | None = None,
    ) -> None:
        self.pool, self.threads = manualPool()
        if opener is None:
            super().__init__(root, listing=True, ioPool=self.pool)
        else:
            super().__init__(root, listing=True, ioPool=self.pool, opener=opener)


class ListingTests:
    def test_truncatedNote(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        A listing cut short says so on the page.
        """
        monkeypatch.setattr(_paths, "MAX_LISTING", 2)
        page = Server(root, listing=True).get("/files/").body.decode()
        assert page.count("<li><a ") == 2
        assert "(the first 2 entries found; there are more)" in page
