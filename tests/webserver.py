"""
The HTTP front end under test: a L{StreamSite} with one client connection,
over an in-memory L{PausingTransport} (L{Server}) or over a real socket pair
in Twisted's own socket transport (L{SocketServer}), driven by hand.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, TypedDict

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IReactorTime
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from twisted_zero._channel import Channel
from twisted_zero._iopool import IOPool
from twisted_zero._metrics import Metrics
from twisted_zero._protection import Protection
from twisted_zero._registry import ConnectionRegistry
from twisted_zero._resources import makeResource
from twisted_zero._site import StreamSite
from twisted_zero._sources import openRegularFile

from .helpers import PausingTransport, Response, TurnClock, parseResponses
from .sockets import Pair

if TYPE_CHECKING:
    from typing_extensions import Unpack

CONTENT = bytes(range(256)) * 400  # 102400 bytes
SIZE = len(CONTENT)
BIG = bytes(range(256)) * 16384  # 4 MiB: more than any socket buffer holds
CHUNK = 4096
PEER = IPv4Address("TCP", "127.0.0.1", 4321)


class ResourceOptions(TypedDict, total=False):
    """
    The keyword arguments of L{makeResource} a test may choose.
    """

    listing: bool
    dotfiles: bool
    maxBytes: int | None
    opener: Callable[[str], tuple[BinaryIO, os.stat_result]]
    sendfile: bool
    ioPool: IOPool | None


class SiteOptions(TypedDict, total=False):
    """
    The keyword arguments of L{StreamSite} a test may choose.
    """

    timeout: float | None
    maxBody: int
    maxUpload: int | None
    headerTimeout: float | None
    registry: ConnectionRegistry | None


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


def written(transport: StringTransport) -> bytes:
    """
    What has been written to C{transport} and not taken yet.
    """
    data: bytes = transport.value()
    return data


def makeRoot(tmp_path: Path) -> Path:
    """
    A file root with a file of each kind the tests need, and links out of
    it.
    """
    root = tmp_path / "root"
    root.mkdir()
    (root / "data.bin").write_bytes(CONTENT)
    (root / "big.bin").write_bytes(BIG)
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
    return root


def multipart(response: Response) -> list[tuple[str, bytes]]:
    """
    The parts of a C{multipart/byteranges} body: each one's
    C{Content-Range} and bytes.
    """
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


def _site(
    clock: IReactorTime,
    root: Path | None,
    files: list[CountingReader],
    protection: Callable[[IReactorTime], Protection] | None,
    site: SiteOptions | None,
    options: ResourceOptions,
) -> StreamSite:
    """
    A site serving C{root}, its files opened as L{CountingReader}s logged
    in C{files}; its resources share the site's protection and metrics.
    """

    def opener(path: str) -> tuple[BinaryIO, os.stat_result]:
        file, info = openRegularFile(path)
        return CountingReader(file, files), info  # type: ignore[return-value]  # a counting stand-in for the file, with the methods it is used by

    options.setdefault("opener", opener)
    shared = Protection(clock) if protection is None else protection(clock)
    metrics = Metrics()
    resource = makeResource(
        clock=clock,
        root=None if root is None else os.path.realpath(root),
        chunkSize=CHUNK,
        protection=shared,
        metrics=metrics,
        **options,
    )
    return StreamSite(
        resource,
        reactor=clock,
        protection=shared,
        metrics=metrics,
        **(site or {}),
    )


def _request(path: str, headers: tuple[str, ...], method: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Client(Protocol):
    """
    A L{Server} or a L{SocketServer}: a site and its one client, however
    they are connected.
    """

    @property
    def clock(self) -> IReactorTime:
        """
        The site's clock.
        """

    site: StreamSite
    channel: Channel
    files: list[CountingReader]
    leftAs: str

    def send(self, request: bytes) -> None:
        """
        The client sends C{request}.
        """

    def pump(self) -> bytes:
        """
        The client reads as fast as it can until nothing more happens.
        """

    def get(self, path: str, *headers: str, method: str = "GET") -> Response:
        """
        The client asks for C{path} and reads the whole response.
        """

    def turn(self) -> bytes:
        """
        The client reads what was sent; what is due runs.
        """

    def leave(self) -> None:
        """
        The client goes away.
        """

    def aborted(self) -> bool:
        """
        Whether the server aborted the connection; if so, it is lost.
        """


class Server:
    """
    A L{StreamSite} with one client connection over a L{PausingTransport}.

    @ivar leftAs: What a request logs as its ending when the client leaves
        with L{leave}.
    """

    leftAs = "client reset"

    def __init__(
        self,
        root: Path | None,
        lenient: bool = False,
        protection: Callable[[IReactorTime], Protection] | None = None,
        transport: PausingTransport | None = None,
        site: SiteOptions | None = None,
        **options: Unpack[ResourceOptions],
    ) -> None:
        self.clock = TurnClock()
        self.files: list[CountingReader] = []
        self.site = _site(self.clock, root, self.files, protection, site, options)
        self.transport = (
            PausingTransport(bufferSize=3 * CHUNK, lenient=lenient)
            if transport is None
            else transport
        )
        self.transport.peerAddr = PEER
        channel = self.site.buildProtocol(PEER)
        assert isinstance(channel, Channel)
        self.channel = channel
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
            if idle and not written(self.transport):
                break
        return received

    def get(self, path: str, *headers: str, method: str = "GET") -> Response:
        self.send(_request(path, headers, method))
        [response] = parseResponses(self.pump(), head=method == "HEAD")
        return response

    def turn(self) -> bytes:
        """
        The client reads what was sent; what is due runs.

        @return: What the client read.
        """
        received = self.transport.drain()
        self.clock.runTurn()
        return received

    def leave(self) -> None:
        """
        The client goes away, resetting the connection.
        """
        self.channel.connectionLost(Failure(ConnectionLost()))

    def aborted(self) -> bool:
        """
        Whether the server aborted the connection; if so, it is lost.
        """
        if "abortConnection" not in self.transport.calls:
            return False
        if self.channel in self.site.channels:
            self.channel.connectionLost(Failure(ConnectionLost()))
        return True


class SocketServer:
    """
    A L{StreamSite} with one client connection over a real socket pair, in
    Twisted's own socket transport on a memory reactor: the production
    write path (C{sendfile()} or sends straight to the socket).

    @ivar leftAs: What a request logs as its ending when the client leaves
        with L{leave}.
    """

    leftAs = "client closed"

    def __init__(
        self,
        root: Path | None,
        protection: Callable[[IReactorTime], Protection] | None = None,
        site: SiteOptions | None = None,
        **options: Unpack[ResourceOptions],
    ) -> None:
        self.clock = MemoryReactorClock()
        self.files: list[CountingReader] = []
        self.site = _site(self.clock, root, self.files, protection, site, options)
        channel = self.site.buildProtocol(PEER)
        assert isinstance(channel, Channel)
        self.channel = channel
        self.pair = Pair(channel, self.clock)
        self._left = False

    def send(self, request: bytes) -> None:
        self.channel.dataReceived(request)

    def pump(self) -> bytes:
        """
        Read as fast as a client can, until nothing more happens.
        """
        return self.pair.pump()

    def get(self, path: str, *headers: str, method: str = "GET") -> Response:
        self.send(_request(path, headers, method))
        [response] = parseResponses(self.pump(), head=method == "HEAD")
        return response

    def turn(self) -> bytes:
        """
        The client reads what was sent; one reactor turn runs.

        @return: What the client read.
        """
        received = b"" if self._left else self.pair.receive()
        self.pair.turn()
        return received

    def leave(self) -> None:
        """
        The client goes away: its socket is closed.
        """
        self._left = True
        self.pair.close()

    def aborted(self) -> bool:
        """
        Whether the connection is gone (a socket transport loses an aborted
        connection one turn later, by itself).
        """
        return self.channel not in self.site.channels

    def close(self) -> None:
        self.pair.close()


class AbortNotingTransport(PausingTransport):
    """
    A L{PausingTransport} that notes, each time it is aborted, which of its
    server's files were closed by then (their streams stopped).
    """

    def __init__(self) -> None:
        super().__init__(bufferSize=3 * CHUNK)
        self.files: list[CountingReader] = []
        self.noted: list[list[bool]] = []

    def abortConnection(self) -> None:
        self.noted.append([file.closed for file in self.files])
        super().abortConnection()


def abortNoting(
    root: Path | None,
    protection: Callable[[IReactorTime], Protection] | None = None,
    site: SiteOptions | None = None,
) -> tuple[Server, AbortNotingTransport]:
    """
    A L{Server} over an L{AbortNotingTransport}.
    """
    transport = AbortNotingTransport()
    server = Server(root, protection=protection, transport=transport, site=site)
    transport.files = server.files
    return server, transport
