"""
The outlet under a C{twisted.web} request: direct sends of a response's
body, past L{Request.write}, where that is what the request would have sent.

The web stream wiring builds it (L{requestOutlet}) and hands it to the
producer, which knows nothing of HTTP. Every detail of Twisted's request
read here was checked against C{twisted.web.http.Request} and
C{twisted.web.server.Request}; a request of another kind, or one missing
any of those details, gets no outlet, and its body is written to it as to
any consumer.
"""

from __future__ import annotations

from twisted.web import http, server
from twisted.web.http import NO_BODY_CODES, HTTPChannel, Request

from ._outlet import SocketOutlet, hasAll, usableTransport

REQUEST_WRITES = (http.Request.write, server.Request.write)
"""
The C{write} methods whose body handling L{requestOutlet} was written
against: a request whose class has another (a subclass's own), or whose
instance was given one, gets no outlet.
"""

REQUEST_ATTRIBUTES = (
    "channel",
    "startedWriting",
    "chunked",
    "finished",
    "method",
    "code",
    "clientproto",
    "responseHeaders",
    "sentLength",
    "_disconnected",
)
"""
What the outlet reads (or, for C{sentLength}, updates) of any request.
"""

SERVER_REQUEST_ATTRIBUTES = ("_encoder", "_inFakeHead")
"""
What the outlet reads of a request whose C{write} is
C{twisted.web.server.Request}'s: whether the body is encoded (gzip), or
discarded (a HEAD answered as a GET).
"""

CHANNEL_WRITES = (
    ("write", HTTPChannel.write),
    ("writeSequence", HTTPChannel.writeSequence),
    ("writeHeaders", HTTPChannel.writeHeaders),
)
"""
The channel's methods a request writes its headers and body through, which
must be L{HTTPChannel}'s own (on its class, not replaced on the instance):
a channel that rewrites what it writes, or writes its headers elsewhere
than to the transport's buffer, gets no direct sends under it.
"""


class RequestOutlet(SocketOutlet):
    """
    The socket under an HTTP/1.1 request: its body is sent as it is, or in
    chunks the outlet frames, once the request has written its headers.
    """

    def __init__(self, request: Request, transport: object, chunked: bool) -> None:
        """
        @param request: The request whose body is streamed.
        @param transport: Its channel's transport, as L{usableTransport}
            returned it.
        @param chunked: Whether the body goes in HTTP/1.1 chunks.
        """
        connection = usableTransport(transport)
        assert connection is not None
        super().__init__(request, connection, chunked)
        self._request = request
        self._serverRequest = request if isinstance(request, server.Request) else None

    def usable(self) -> bool:
        """
        As L{SocketOutlet.usable}, and the response's body (once its headers
        are written) goes on the wire as it is or in the chunks this outlet
        frames: not suppressed (HEAD, 204, 304), not encoded, not finished,
        its connection not lost.
        """
        request, serverRequest = self._request, self._serverRequest
        if request._disconnected or (
            serverRequest is not None
            and (serverRequest._encoder is not None or serverRequest._inFakeHead)
        ):
            return False
        return SocketOutlet.usable(self) and (
            not request.startedWriting
            or bool(
                bool(request.chunked) == self._chunked
                and not request.finished
                and request.method != b"HEAD"
                and request.code not in NO_BODY_CODES
            )
        )

    def awaitingHeaders(self) -> bool:
        """
        Whether the response's headers have yet to be written.
        """
        return not self._request.startedWriting

    def ready(self) -> bool:
        """
        As L{SocketOutlet.ready}, and the response's headers have been
        written.
        """
        # SocketOutlet.ready, inline: this is asked before every send.
        transport = self._transport
        unsent = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        return unsent == 0 and bool(self._request.startedWriting)

    def countSent(self, count: int) -> None:
        """
        The request counts the bytes sent past it as its own.
        """
        self._request.sentLength += count

    def _writeToWait(self, data: bytes) -> None:
        """
        Write C{data} to the request, or, once its body is in chunks this
        outlet frames, in the chunk owed or in one of its own.
        """
        if self._chunked and self._request.startedWriting:
            if self._owed:
                self.write(data)
            else:
                self._writeRaw(b"%x\r\n%s\r\n" % (len(data), data), len(data))
        else:
            self._consumer.write(data)


def _bodyAsWritten(request: Request) -> bool:
    """
    Whether the body a request is given is what goes on the wire, or in
    chunks of it: C{write} is Twisted's own and the request has everything
    it reads; not encoded (gzip), not discarded (HEAD, 204, 304).
    """
    write = type(request).write
    if (
        write not in REQUEST_WRITES
        or "write" in vars(request)
        or not hasAll(request, REQUEST_ATTRIBUTES)
    ):
        return False
    if write is server.Request.write:
        if not isinstance(request, server.Request) or not hasAll(
            request, SERVER_REQUEST_ATTRIBUTES
        ):
            return False
        if request._encoder is not None or request._inFakeHead:
            return False
    if request.method == b"HEAD":
        return False
    return request.code not in NO_BODY_CODES


def _chunkedBody(request: Request) -> bool:
    """
    Whether the request's body is, or will be, sent in HTTP/1.1 chunks:
    as Twisted's C{Request.write} decides it, no C{Content-Length} on
    HTTP/1.1.
    """
    if request.startedWriting:
        return bool(request.chunked)
    return request.clientproto == b"HTTP/1.1" and not (
        request.responseHeaders.hasHeader(b"content-length")
    )


def requestOutlet(request: object) -> SocketOutlet | None:
    """
    The socket under C{request} for direct sends of its body, or L{None}
    when there is none to send to directly: TLS (bytes must be encrypted),
    a body that is encoded or discarded, HTTP/2, a connection already
    closed, a request, channel or transport of a kind the outlet was not
    written against (see L{REQUEST_WRITES}, L{CHANNEL_WRITES},
    L{twisted_zero._outlet.ALLOWED_TRANSPORTS}), or any other consumer.
    """
    if not isinstance(request, Request) or not _bodyAsWritten(request):
        return None
    channel = request.channel
    if not isinstance(channel, HTTPChannel) or not all(
        getattr(type(channel), name) is method and name not in vars(channel)
        for name, method in CHANNEL_WRITES
    ):
        return None
    transport = channel.transport
    if usableTransport(transport) is None:
        return None
    return RequestOutlet(request, transport, _chunkedBody(request))
