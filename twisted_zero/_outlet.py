"""
Direct sends: a stream's bytes written straight to the socket under its
consumer, without a trip through the transport's buffer.

Twisted's socket transports send what they are given on a later reactor
turn, at most C{SEND_LIMIT} bytes per turn, and copy an unsent remainder
smaller than that on every turn. A producer that sends to the socket itself
while the transport's buffer is empty, as asyncio's transports do, skips all
of that; when the socket is full, it hands the transport a single byte so
that the transport pauses it, and resumes it once that byte, and so
everything before it, has left. Bytes are never sent past bytes still
waiting in the transport, so the stream stays in order.
"""

from __future__ import annotations

import errno

from twisted.internet.interfaces import IConsumer
from twisted.internet.tcp import Connection
from twisted.web import http, server
from twisted.web.http import NO_BODY_CODES, HTTPChannel, Request

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


class SocketOutlet:
    """
    The socket under a consumer: a plain TCP or UNIX transport, or an HTTP
    request on one whose body is sent as it is (not chunked).

    Use L{socketOutlet} to make one. Bytes may be sent to it while it is
    L{usable} and L{ready}; while it is usable but not ready, the producer
    waits for room (L{waitForRoom}); once it is no longer usable, the
    producer writes to its consumer as any producer does.

    @ivar fileno: The socket's file descriptor.
    """

    def __init__(
        self, consumer: IConsumer, transport: Connection, request: Request | None
    ) -> None:
        self._consumer = consumer
        self._transport = transport
        self._request = request
        socket = transport.getHandle()
        self._send = socket.send
        # Only used while usable(): once the connection is closed the number
        # may name another file.
        self.fileno: int = socket.fileno()

    def usable(self) -> bool:
        """
        Whether the stream may still be sent directly: the connection is
        open and not closing, not TLS, and an HTTP response's body (once its
        headers are written) goes on the wire as it is.
        """
        transport = self._transport
        request = self._request
        return bool(
            transport.connected
            and not transport.disconnecting
            and not transport._writeDisconnecting
            and not transport._aborting
            and not transport.TLS
            and (
                request is None or not request.startedWriting or _bodyUnframed(request)
            )
        )

    def ready(self) -> bool:
        """
        Whether bytes may be sent now, if L{usable}: nothing written to the
        consumer before is still in the transport's buffer, and an HTTP
        response's headers have been written.
        """
        transport = self._transport
        unsent = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        return unsent == 0 and (
            self._request is None or bool(self._request.startedWriting)
        )

    def send(self, data: memoryview) -> int:
        """
        Send what the socket takes now of C{data}.

        @return: How many bytes were sent; 0 when the socket is full.
        @raise OSError: If the connection is broken.
        """
        try:
            return self._send(data)
        except OSError as e:
            if isNoRoom(e):
                return 0
            raise

    def countSent(self, count: int) -> None:
        """
        C{count} bytes were sent past the consumer: an HTTP request counts
        them as its own.
        """
        if self._request is not None:
            self._request.sentLength += count

    def waitForRoom(self, data: bytes) -> None:
        """
        The socket is full: write C{data} (one byte will do) to the consumer
        in a way that makes the transport pause the producer, and resume it
        once the transport's buffer is empty again.
        """
        transport = self._transport
        had = "bufferSize" in vars(transport)
        saved = transport.bufferSize
        transport.bufferSize = 0  # any byte buffered pauses the producer
        try:
            self._consumer.write(data)
        finally:
            if had:
                transport.bufferSize = saved
            else:
                del transport.bufferSize  # back to the class's own

    def broken(self) -> None:
        """
        A send found the connection gone: drop it at once, rather than wait
        for the transport to notice.
        """
        self._transport.abortConnection()


_TWISTED_WRITES = (http.Request.write, server.Request.write)

_TRANSPORT_ATTRIBUTES = (
    "dataBuffer",
    "offset",
    "_tempDataLen",
    "_writeDisconnecting",
    "_aborting",
    "TLS",
    "bufferSize",
)
"""
What L{SocketOutlet} reads of a transport besides its public methods: where
Twisted keeps its buffer, and whether it is closing. A transport without all
of them gets no direct sends.
"""


def _bodyUnframed(request: Request) -> bool:
    """
    Whether the response's headers have been written and its body goes on
    the wire as it is: not chunked, not suppressed (HEAD, 204, 304), not
    finished.
    """
    return bool(
        request.startedWriting
        and not request.chunked
        and not request.finished
        and request.method != b"HEAD"
        and request.code not in NO_BODY_CODES
    )


def _bodyAsWritten(request: Request) -> bool:
    """
    Whether the body a request is given is what goes on the wire: not
    encoded (gzip), not rewritten by a subclass's C{write}, not discarded
    (HEAD, 204, 304), and, on HTTP/1.1, framed by a C{Content-Length} rather
    than chunked.
    """
    if type(request).write not in _TWISTED_WRITES:
        return False
    if getattr(request, "_encoder", None) is not None:
        return False
    if getattr(request, "_inFakeHead", False) or request.method == b"HEAD":
        return False
    if request.code in NO_BODY_CODES:
        return False
    return request.clientproto != b"HTTP/1.1" or request.responseHeaders.hasHeader(
        b"content-length"
    )


def socketOutlet(consumer: IConsumer) -> SocketOutlet | None:
    """
    The socket under C{consumer} for direct sends, or L{None} when there is
    none to send to directly: TLS (bytes must be encrypted), an HTTP body
    that is encoded, chunked or discarded, HTTP/2, a connection already
    closed, or any other consumer.
    """
    transport: object
    request: Request | None
    if isinstance(consumer, Request):
        channel = consumer.channel
        if not isinstance(channel, HTTPChannel) or not _bodyAsWritten(consumer):
            return None
        transport, request = channel.transport, consumer
    else:
        transport, request = consumer, None
    if (
        not isinstance(transport, Connection)
        or not transport.connected
        or not all(hasattr(transport, name) for name in _TRANSPORT_ATTRIBUTES)
        or transport.TLS
    ):
        return None
    return SocketOutlet(consumer, transport, request)
