"""
The HTTP download of C{twisted-zero measure}: one C{GET} over a connection
of its own, its body counted as it arrives.

Twisted's HTTP client copies every body byte twice through its chunked
decoder (into a buffer, then out of it), which on a fast link makes the
measuring client the bottleneck. Here the body is only counted: a body of
known length, read until the close, or chunked, whose framing is parsed at
each chunk's boundary (a chunk's bytes are never copied). Nothing else of
HTTP is needed to download a URL once.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from attrs import define, field
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from . import __version__
from ._measurestreams import (
    MeasuredConnection,
    MeasureError,
    failureReason,
    raiseReadSize,
)

MAX_HEAD = 64 * 1024
"""
The largest response head read, and the longest chunk-size line.
"""


def getRequest(url: str) -> bytes:
    """
    The request for C{url}: C{GET}, on a connection closed after it, its
    body not encoded (a compressed body would be another measurement).
    """
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host = parts.netloc.rpartition("@")[2]
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\n"
        f"User-Agent: twisted-zero/{__version__}\r\n"
        "Accept-Encoding: identity\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


@define(eq=False)
class HTTPReceiver(MeasuredConnection):
    """
    Sends C{request} for C{url}, checks the response's status, and counts
    its body; ends after C{limit} bytes if given, else at the body's end.
    """

    request: bytes = b""
    url: str = ""
    _head: bytearray | None = field(factory=bytearray, init=False)
    _left: int | None = field(default=None, init=False)
    _chunked: bool = field(default=False, init=False)
    _line: bytearray = field(factory=bytearray, init=False)
    _error: str | None = field(default=None, init=False)

    def connectionMade(self) -> None:
        raiseReadSize(self.transport)
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        start = 0
        if self._head is not None:
            start = self._readHead(data)
            if start < 0:
                return
        if self._chunked:
            self._chunks(data, start)
        elif start < len(data):
            self._body(len(data) - start)

    def _readHead(self, data: bytes) -> int:
        """
        Take the response head from C{data}.

        @return: Where the body starts in C{data}; -1 if it has not.
        """
        head = self._head
        assert head is not None
        head += data
        while True:
            end = head.find(b"\r\n\r\n")
            if end < 0:
                if len(head) > MAX_HEAD:
                    self._fail(f"{self.url}: a response head over {MAX_HEAD} bytes")
                return -1
            status, fields = self._parseHead(bytes(head[:end]))
            del head[: end + 4]
            if not 100 <= status < 200:
                break
            # An interim response (100 Continue, 103 Early Hints): the
            # response follows.
        self._head = None
        if not 200 <= status < 300:
            self._fail(f"{self.url}: HTTP {status} {fields.get('', '')}".rstrip())
            return -1
        if "chunked" in fields.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in fields:
            try:
                self._left = int(fields["content-length"])
            except ValueError:
                self._fail(f"{self.url}: a bad Content-Length")
                return -1
        # What is left is the start of the body: the end of this data.
        start = len(data) - len(head)
        if self._left == 0:
            self._finish()
        return start

    def _parseHead(self, head: bytes) -> tuple[int, dict[str, str]]:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            self._fail(f"{self.url}: not an HTTP/1.1 response")
            return 0, {}
        fields = {"": reason}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        return int(code), fields

    def _body(self, count: int) -> None:
        """
        Count C{count} bytes of body (of a body of known length, no more
        than is left of it).
        """
        if self._left is not None:
            count = min(count, self._left)
            self._left -= count
        if self.meter.received(count, self.limit):
            self.stop()
        elif self._left == 0:
            self._finish()

    def _chunks(self, data: bytes, index: int) -> None:
        """
        Count the chunks' bytes in C{data} from C{index}; parse their
        framing at each boundary.
        """
        end = len(data)
        while index < end and not self.stopping:
            left = self._left
            if left:
                taken = min(left, end - index)
                self._left = left - taken
                index += taken
                if self.meter.received(taken, self.limit):
                    self.stop()
                continue
            newline = data.find(b"\n", index)
            if newline < 0:
                self._line += data[index:]
                if len(self._line) > MAX_HEAD:
                    self._fail(f"{self.url}: a chunk-size line over {MAX_HEAD} bytes")
                return
            self._line += data[index:newline]
            index = newline + 1
            line, self._line = bytes(self._line).strip(), bytearray()
            if not line:
                continue  # the end of a chunk's data
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                self._fail(f"{self.url}: a malformed chunk")
                return
            if size == 0:
                self._finish()  # trailers, if any, are not read
                return
            self._left = size

    def _finish(self) -> None:
        """
        The whole body came: close, and end as asked.
        """
        if not self.stopping:
            self.stopping = True
            self.meter.end()
            transport: Any = self.transport
            transport.loseConnection()

    def _fail(self, why: str) -> None:
        """
        End with C{why}, once the connection is lost.
        """
        if not self.stopping:
            self._error = why
            self.stop()

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.meter.end()
            transport: Any = self.transport
            transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.meter.end()
        if self._error is not None:
            self.finished.errback(MeasureError(self._error))
        elif self.stopping:
            self.finished.callback(None)
        elif (
            self._head is None
            and not self._chunked
            and self._left is None
            and reason.check(ConnectionDone)
        ):
            # A body delimited by the close: this is its end.
            self.finished.callback(None)
        elif self._head is not None and not self._head:
            # Not a byte of a response: the connection failed (a TLS
            # handshake refused), or the server closed it unanswered.
            self.finished.errback(
                MeasureError(f"cannot connect to {self.url}: {failureReason(reason)}")
            )
        else:
            self.finished.errback(
                MeasureError(
                    f"the server ended stream {self.meter.number}'s response "
                    f"early, after {self.meter.bytes} bytes: {failureReason(reason)}"
                )
            )
