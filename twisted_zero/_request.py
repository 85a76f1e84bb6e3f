"""
One HTTP request as this server reads and logs it: its body thrown away as
it arrives, its target in either form, and one structured event when it
ends, however it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer, IReactorTime, ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from ._connections import formatAddress


class DiscardedBody:
    """
    Where a request's body goes: counted and thrown away as it arrives,
    never stored (Twisted's own requests spool a large body to a temporary
    file, so any client could fill the disk). Only the upload sink reads
    what it was: how many bytes came, and since when.

    @ivar received: How many bytes of body came.
    @ivar started: When the body began to be awaited (the end of the
        request head), in its clock's seconds.
    """

    def __init__(
        self,
        limit: int | None = None,
        overLimit: Callable[[], None] | None = None,
        started: float = 0.0,
        counted: Callable[[int], None] | None = None,
    ) -> None:
        """
        @param limit: The most bytes of body allowed; L{None} for any number.
        @param overLimit: Called once, as soon as more than C{limit} bytes
            have come.
        @param started: When the body began to be awaited.
        @param counted: Told of every piece of body as it comes, by its
            length (the metrics); L{None} for no one.
        """
        self.received = 0
        self.started = started
        self._limit = limit
        self._overLimit = overLimit
        self._counted = counted

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self._counted is not None:
            self._counted(len(data))
        if self._limit is not None and self.received > self._limit:
            overLimit, self._overLimit = self._overLimit, None
            if overLimit is not None:
                overLimit()

    def tell(self) -> int:
        return self.received

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        """
        The body has all come (or never will): nothing more is over the
        limit. The callback, which holds the connection, is let go, so that
        a request and its connection are freed as soon as they are done
        with, not when the garbage collector finds their cycle.
        """
        self._overLimit = None
        self._counted = None


def originForm(target: bytes) -> bytes:
    """
    The origin form (C{/path?query}) of a request target, which may be in
    absolute form (C{http://host/path?query}): a server must accept both
    (RFC 9112, 3.2.2).
    """
    scheme, separator, rest = target.partition(b"://")
    if not separator or scheme.lower() not in (b"http", b"https"):
        return target
    for index, byte in enumerate(rest):
        if byte in b"/?":
            rest = rest[index:]
            break
    else:
        rest = b""
    return rest if rest.startswith(b"/") else b"/" + rest


def peer(request: Request) -> str:
    """
    The client's address, for the log.
    """
    return formatAddress(request.getClientAddress())


def abortTransport(request: Request) -> None:
    """
    Abort the connection C{request} came on: the client can tell that its
    response is cut short.
    """
    # Request.channel is not annotated; every transport an HTTP channel
    # runs over (TCP, UNIX, TLS) can abort.
    cast(ITCPTransport, request.channel.transport).abortConnection()


class StreamRequest(Request):
    """
    A request that logs one structured event when it ends, however it ends:
    method, path, status, range, bytes, seconds and why it ended. Its body
    is discarded as it arrives (see L{DiscardedBody}: the channel sets
    C{content} to a limited one as soon as the head is in); its target may
    be in absolute form.

    @ivar ending: Set when the response is ended by the server itself
        (C{"aborted: source failed"}, C{"stalled"}); otherwise the reason
        is read from how the request finished.
    @ivar rangeNote: The byte ranges sent, for the log (C{"-"} for none).
    @ivar stream: The producer streaming the body, while it streams.
    @ivar received: How many bytes of request body came.
    """

    _log = Logger()
    ending: str | None = None
    rangeNote: str = "-"
    received: int = 0
    stream: IPushProducer | None = None
    _started: float = 0.0

    def gotLength(self, length: int | None) -> None:
        self.content = DiscardedBody()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if isinstance(self.content, DiscardedBody):
            self.content.close()
            self.received = self.content.received
        super().requestReceived(command, originForm(path), version)

    def process(self) -> None:
        self._clock: IReactorTime = self.channel.site.reactor  # type: ignore[attr-defined]  # set by Site.buildProtocol, not declared
        self._started = self._clock.seconds()
        self.notifyFinish().addBoth(self._logEnd)
        super().process()

    def stopStream(self, why: str) -> None:
        """
        The server ends this response before its end: C{why} is logged as
        its ending (unless one was set already), and its stream, if any,
        is stopped, so that nothing more is read for it. The caller then
        aborts the connection.
        """
        if self.ending is None:
            self.ending = why
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.stopProducing()

    def _logEnd(self, result: Failure | None) -> None:
        self.stream = None
        if self.ending is not None:
            reason = self.ending
        elif result is None:
            reason = "complete"
        elif result.check(ConnectionDone):
            reason = "client closed"
        else:
            reason = "client reset"
        self._log.info(
            "{method} {path} {status} from {peer} ({reason}): range {range}, "
            "{bytes} bytes in {seconds:.3f}s, {received} bytes received",
            method=self.method.decode("ascii", "replace"),
            path=self.uri.decode("ascii", "backslashreplace"),
            status=self.code,
            peer=peer(self),
            range=self.rangeNote,
            bytes=self.sentLength,
            received=self.received,
            seconds=self._clock.seconds() - self._started,
            reason=reason,
        )
