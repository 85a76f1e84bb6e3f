"""
The HTTP/1.1 channel: what a client may cost before and between its
requests (header timeout, head and body limits, pipelining), the lingering
close after an error answer, and the connection's place in the site's
counts and the service's registry.
"""

from __future__ import annotations

import enum
from functools import partial
from typing import Protocol, cast

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableDescriptor,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from ._connections import formatPeer
from ._linger import LingeringClose
from ._metrics import Metrics
from ._protection import Protection
from ._registry import ConnectionRegistry
from ._request import DiscardedBody, StreamRequest
from ._responses import MAX_CONTENT_LENGTH, refusal


class ChannelSite(Protocol):
    """
    What a L{Channel} needs of the L{StreamSite<twisted_zero._site.StreamSite>}
    that made it: its clock, limits, counts and the service's registry.
    """

    clock: IReactorTime
    protection: Protection
    metrics: Metrics
    registry: ConnectionRegistry | None

    def bodyLimit(self, method: bytes, target: bytes) -> int | None:
        """
        The largest body a request for C{target} with C{method} may have;
        L{None} for no limit.
        """

    headerTimeout: float | None
    channels: set[Channel]
    shuttingDown: bool


class _Phase(enum.Enum):
    """
    Where a connection is between requests.
    """

    HEAD = "a request head is arriving (or awaited on a new connection)"
    IDLE = "keep-alive: no byte of the next request yet"
    REQUEST = "a request's body is arriving, or it is being answered"
    CLOSING = "answered with an error; closing"


_CONTENT_LENGTH_DIGITS = len(str(MAX_CONTENT_LENGTH))
"""
A C{Content-Length} with more significant digits than this is over any body
limit (and Python would refuse to convert one of more than 4300 digits).
"""


class Channel(HTTPChannel):
    """
    An HTTP/1.1 channel counted in its site's connections and metrics, which
    bounds what a client may cost before and between its requests:

      - a request head must arrive whole within the site's header timeout,
        however slowly it trickles (408, or a plain close if not a byte of
        it came);
      - a head over Twisted's size or field-count limits gets a 414 or 431,
        a malformed one a 400, a body over the site's limit a 413 (before it
        is read when its length is declared, and never after a
        C{100 Continue});
      - each of those closes the connection after a lingering close bounded
        in time and bytes, so that the response is not reset under the
        client;
      - a client that does not read its responses gets no more of its
        pipelined requests read or answered until it does.

    The service may end it at any time with L{abort}.

    Twisted's L{HTTPChannel} details this relies on are listed in
    L{_CHANNEL_DETAILS}; a test checks them.
    """

    admitted: IAddress | None = None

    def __init__(self, site: ChannelSite) -> None:
        super().__init__()
        self._site = site
        self._phase = _Phase.HEAD
        self._headTimer: IDelayedCall | None = None
        self._headSeen = False
        self._headLines = 0
        self._headBytes = 0
        self._requestLine = b""
        self._bodyTimer: IDelayedCall | None = None
        self._held = False
        self._linger: LingeringClose | None = None

    @property
    def waitingForRequest(self) -> bool:
        """
        Whether no request is being read or answered: between requests, or
        while a head arrives.
        """
        return self._phase in (_Phase.HEAD, _Phase.IDLE)

    def connectionMade(self) -> None:
        super().connectionMade()
        self._site.channels.add(self)
        self._site.metrics.connectionOpened("http")
        self._site.protection.opened(self.transport)
        if self._site.registry is not None:
            self._site.registry.opened(self)
        self._startHead()

    def _startHead(self) -> None:
        """
        A request head is awaited (new connection) or has begun (keep-alive):
        start its clock.
        """
        self._phase = _Phase.HEAD
        timeout = self._site.headerTimeout
        if timeout is not None and self._headTimer is None:
            self._headTimer = self._site.clock.callLater(timeout, self._headTimedOut)

    def _stopHeadTimer(self) -> None:
        timer, self._headTimer = self._headTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _headTimedOut(self) -> None:
        self._headTimer = None
        if not self._headSeen:
            self._phase = _Phase.CLOSING
            self.setTimeout(None)
            self._log.info(
                "closed a connection from {peer}: no request in {timeout:g}s",
                peer=formatPeer(self.transport),
                timeout=self._site.headerTimeout,
            )
            self.loseConnection()
            return
        self._refuse(
            http.REQUEST_TIMEOUT,
            f"the request head did not arrive within {self._site.headerTimeout:g}s",
        )

    def dataReceived(self, data: bytes) -> None:
        if self._phase is _Phase.CLOSING:
            if self._linger is not None:
                self._linger.discard(len(data))
            return
        if data:
            if self._phase is _Phase.IDLE and not self._held:
                self._startHead()
            if self._phase is _Phase.HEAD:
                self._headSeen = True
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._phase is _Phase.CLOSING:
            return
        # An empty line before a request line is no part of a head (Twisted
        # skips one; a second is a malformed request).
        if line or self._headLines:
            if self._phase is _Phase.IDLE:
                self._startHead()
            self._headSeen = True
            self._headLines += 1
            self._headBytes += len(line)
            if self._headBytes > self.totalHeadersSize:
                self._refuse(431, f"request head over {self.totalHeadersSize} bytes")
                return
            if line and self._headLines - 1 > self.maxHeaders:
                self._refuse(431, f"more than {self.maxHeaders} header fields")
                return
            if self._headLines == 1:
                self._requestLine = line
            if not line:
                self._headLines = self._headBytes = 0
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._phase is _Phase.CLOSING:
            return
        if self._headLines == 0:
            self._refuse(
                http.REQUEST_URI_TOO_LONG,
                f"request line over {self.MAX_LENGTH} bytes",
            )
        else:
            self._refuse(431, f"header field line over {self.MAX_LENGTH} bytes")

    def headerReceived(self, line: bytes) -> bool:
        name, _, value = line.partition(b":")
        value = value.strip(b" \t")
        if (
            name.lower() == b"content-length"
            and value.isdigit()
            and len(value.lstrip(b"0")) > _CONTENT_LENGTH_DIGITS
        ):
            self._refuse(
                http.REQUEST_ENTITY_TOO_LARGE,
                f"declared body over {MAX_CONTENT_LENGTH} bytes",
            )
            return False
        return bool(super().headerReceived(line))

    def _bodyLimit(self) -> int | None:
        """
        The largest body the request being read may have.
        """
        method, _, rest = self._requestLine.partition(b" ")
        target = rest.partition(b" ")[0]
        return self._site.bodyLimit(method, target)

    def allHeadersReceived(self) -> None:
        self._stopHeadTimer()
        self._headSeen = False
        self._phase = _Phase.REQUEST
        length = self.length
        limit = self._bodyLimit()
        if length is not None and limit is not None and length > limit:
            # Before Twisted answers "Expect: 100-continue".
            self._refuse(
                http.REQUEST_ENTITY_TOO_LARGE,
                f"declared body of {length} bytes over the limit of {limit} bytes",
            )
            return
        super().allHeadersReceived()
        if self._phase is _Phase.REQUEST and self.requests:
            # Its body, if any, is still to come: over the limit, a 413.
            request = self.requests[-1]
            if isinstance(request.content, DiscardedBody):
                request.content = self.discardedBody(limit)
            maxDuration = self._site.protection.maxDuration
            if maxDuration is not None and length != 0:
                self._bodyTimer = self._site.clock.callLater(
                    maxDuration, self._bodyTimedOut, maxDuration
                )

    def _bodyTimedOut(self, seconds: float) -> None:
        self._bodyTimer = None
        self._refuse(
            http.REQUEST_TIMEOUT,
            f"the request body did not arrive within the maximum duration "
            f"({seconds:g}s)",
        )

    def _stopBodyTimer(self) -> None:
        timer, self._bodyTimer = self._bodyTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    def discardedBody(self, limit: int | None) -> DiscardedBody:
        """
        Where the body of the request being read goes: counted, thrown
        away, and answered with a 413 as soon as it is over C{limit} bytes
        (L{None} for no limit).
        """
        overLimit = None
        if limit is not None:
            overLimit = partial(
                self._refuse,
                http.REQUEST_ENTITY_TOO_LARGE,
                f"body over the limit of {limit} bytes",
            )
        return DiscardedBody(
            limit,
            overLimit,
            started=self._site.clock.seconds(),
            counted=partial(self._site.metrics.bytesReceived, "http"),
        )

    def rawDataReceived(self, data: bytes) -> None:
        if self._phase is _Phase.CLOSING:
            return
        super().rawDataReceived(data)
        # Twisted stops reading pipelined requests once more than a few KiB
        # of them wait, but not while the client leaves its responses
        # unread: that is just when they must wait.
        if (
            self._handlingRequest
            and sum(map(len, self._dataBuffer)) > self._optimisticEagerReadSize
        ):
            self._networkProducer.pauseProducing()

    def allContentReceived(self) -> None:
        self._stopBodyTimer()
        if self._phase is _Phase.CLOSING:
            return  # refused with a 413 in the middle of this body
        super().allContentReceived()

    def checkPersistence(self, request: Request, version: bytes) -> bool:
        if self._site.shuttingDown:
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return bool(super().checkPersistence(request, version))

    def requestDone(self, request: Request) -> None:
        self._phase = _Phase.IDLE
        if self._waitingForTransport and self.persistent:
            # The client leaves its responses unread: answer no more of its
            # requests (whatever they cost) until it reads them. Twisted
            # would go on parsing what it holds, and reading more.
            self._held = True
            self.paused = True  # LineReceiver parses nothing while set
        super().requestDone(request)
        if self._held:
            self._networkProducer.pauseProducing()
        else:
            self._startPendingHead()
        if self._site.shuttingDown and not self.requests:
            self.loseConnection()

    def resumeProducing(self) -> None:
        super().resumeProducing()
        if self._held and not self._waitingForTransport:
            self._held = False
            self.paused = False
            if self.transport is not None and not self.transport.disconnecting:  # type: ignore[attr-defined]  # ITransport has no disconnecting; every transport here has
                # The requests held back, parsed now.
                LineReceiver.dataReceived(self, b"")
                self._startPendingHead()

    def _startPendingHead(self) -> None:
        """
        Between requests, start the clock of a head of which some bytes are
        already in hand (pipelined behind the response that just ended).
        """
        if self._phase is _Phase.IDLE and self._buffer:
            self._startHead()
            self._headSeen = True

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Every malformed head or body Twisted finds: a request line or
        # field it cannot parse, a bad length or chunk.
        self._refuse(http.BAD_REQUEST, "malformed request")

    def _refuse(self, code: int, why: str) -> None:
        """
        Answer the request being read with C{code} and close the connection
        (lingering): nothing more of it is parsed.
        """
        if self._phase is _Phase.CLOSING:
            return
        self._phase = _Phase.CLOSING
        self._stopHeadTimer()
        self._stopBodyTimer()
        self.setTimeout(None)
        self._log.info(
            "refused a request from {peer}: {status} {why}",
            peer=formatPeer(self.transport),
            status=code,
            why=why,
        )
        transport = self.transport
        assert transport is not None
        # Nothing more from the transport's flow control: this channel
        # reads until the end, and writes no more than this.
        self._networkProducer.unregisterProducer()  # type: ignore[attr-defined]  # the transport, or Twisted's _NoPushProducer: both have it
        transport.write(refusal(code, why))
        if not IHalfCloseableDescriptor.providedBy(transport):
            transport.loseConnection()
            return
        transport = cast(ITCPTransport, transport)  # half-closeable: TCP, UNIX, TLS
        transport.loseWriteConnection()
        self._networkProducer.resumeProducing()
        self._linger = LingeringClose(clock=self._site.clock, transport=transport)
        self._linger.start()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stopHeadTimer()
        self._stopBodyTimer()
        if self._linger is not None:
            self._linger.cancel()
        # A body cut short leaves cycles through this channel: its request's
        # body (the 413 callback), Twisted's decoder of it (the request's
        # method). Break them, so that all is freed at once.
        for request in self.requests:
            if isinstance(request.content, DiscardedBody):
                request.content.close()
        self._transferDecoder = None
        try:
            super().connectionLost(reason)
        finally:
            self._site.channels.discard(self)
            clean = reason.check(ConnectionDone) is not None
            self._site.metrics.connectionClosed("http", "closed" if clean else "reset")
            self._site.protection.closed(self.transport, self.admitted)
            if self._site.registry is not None:
                self._site.registry.closed(self)

    def abort(self, why: str) -> None:
        """
        End the connection now: stop the stream of each response under way
        (nothing more is read for it), then abort the transport.

        @param why: What each request on this connection logs as its ending
            (C{"server shutdown"}, C{"stalled"}, C{"max duration"}).
        """
        for request in self.requests:
            if isinstance(request, StreamRequest):
                request.stopStream(why)
        if self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()


_CHANNEL_DETAILS = (
    "_buffer",
    "_transferDecoder",
    "_dataBuffer",
    "_handlingRequest",
    "_networkProducer",
    "_optimisticEagerReadSize",
    "_respondToBadRequestAndDisconnect",
    "_waitingForTransport",
    "length",
    "maxHeaders",
    "paused",
    "persistent",
    "totalHeadersSize",
)
"""
What L{Channel} uses of Twisted's L{HTTPChannel} besides its public
methods: where it keeps bytes not yet parsed and pipelined requests, whether
it is answering one or waiting for its transport, how it reads (its
transport as a producer, and L{LineReceiver}'s pause), the body's length,
its limits and its bad-request answer.
"""
