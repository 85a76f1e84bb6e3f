"""
The HTTP front end: generated streams and a file root, streamed by the same
push producer as the raw-TCP daemon, registered on the request.
"""

from __future__ import annotations

import enum
import html
import mimetypes
import os
import secrets
from collections.abc import Callable
from functools import partial
from typing import BinaryIO, cast
from urllib.parse import quote

from attrs import frozen
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableDescriptor,
    IProtocolNegotiationFactory,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import classImplementsOnly, implementedBy

from ._httpoutlet import requestOutlet
from ._iopool import IOPool, reactorPool
from ._limits import Protection
from ._metrics import Metrics
from ._paths import Listing, NotFound, listUnderRoot, resolveUnderRoot
from ._producer import ConnectionBroken, StreamProducer, StreamStopped
from ._protocol import LINGER_SECONDS, MetricsObserver, formatAddress
from ._ranges import UNSATISFIABLE, ByteRange, parseRange
from ._responses import notAllowed, plain
from ._sizes import parseSize
from ._sources import (
    BytesSource,
    ChargenSource,
    ConcatenatedSource,
    FileSource,
    ISource,
    RandomSource,
    SourceError,
    TimedSource,
    ZeroSource,
    openRegularFile,
)
from ._validators import (
    evaluatePreconditions,
    httpDate,
    ifRangeAllowsRange,
    makeETag,
)

MAX_CONTENT_LENGTH = 2**63 - 1
"""
The largest C{Content-Length} a client can be expected to parse (a signed
64-bit number), so the most C{?bytes=} may ask for.
"""

MAX_BODY = 2**20
"""
The largest request body accepted by default (nginx's C{client_max_body_size}):
a larger one is answered with 413 and its connection closed.
"""

HEADER_TIMEOUT = 15.0
"""
By default, how many seconds a whole request head (request line and header
fields) may take to arrive, from the connection's start or, on a keep-alive
connection, from the first byte of the request.
"""

LINGER_BYTES = 8 * 2**20
"""
After an error response that closes the connection (413, 431, 408...), the
most bytes the client may still send, read and thrown away, before the
connection is closed anyway. Closing with unread input makes the kernel
reset the connection, which can destroy the response in flight; so the
server first shuts down its sending side and reads (for at most
L{LINGER_SECONDS} and this many bytes), as nginx's lingering close does.
"""

_ENCODED_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "br": "application/x-brotli",
    "compress": "application/x-compress",
}


class _DiscardedBody:
    """
    Where a request's body goes: counted and thrown away as it arrives,
    never stored (Twisted's own requests spool a large body to a temporary
    file, so any client could fill the disk). No resource here reads one.

    @ivar received: How many bytes of body came.
    """

    def __init__(
        self, limit: int | None = None, overLimit: Callable[[], None] | None = None
    ) -> None:
        """
        @param limit: The most bytes of body allowed; L{None} for any number.
        @param overLimit: Called once, as soon as more than C{limit} bytes
            have come.
        """
        self.received = 0
        self._limit = limit
        self._overLimit = overLimit

    def write(self, data: bytes) -> None:
        self.received += len(data)
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


def _originForm(target: bytes) -> bytes:
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


class StreamRequest(Request):
    """
    A request that logs one structured event when it ends, however it ends:
    method, path, status, range, bytes, seconds and why it ended. Its body
    is discarded as it arrives; its target may be in absolute form.

    @ivar ending: Set by the resource when it ends the response itself
        (C{"aborted: source failed"}); otherwise the reason is read from how
        the request finished.
    @ivar rangeNote: The byte ranges sent, for the log (C{"-"} for none).
    """

    _log = Logger()
    ending: str | None = None
    rangeNote: str = "-"
    _started: float = 0.0

    def gotLength(self, length: int | None) -> None:
        channel = self.channel
        if isinstance(channel, _Channel):
            self.content = channel.discardedBody()
        else:
            self.content = _DiscardedBody()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if isinstance(self.content, _DiscardedBody):
            self.content.close()
        super().requestReceived(command, _originForm(path), version)  # type: ignore[no-untyped-call]

    def process(self) -> None:
        site: Site = self.channel.site  # type: ignore[attr-defined]
        self._clock: IReactorTime = site.reactor
        self._started = self._clock.seconds()
        self.notifyFinish().addBoth(self._logEnd)
        super().process()  # type: ignore[no-untyped-call]

    def _logEnd(self, result: Failure | None) -> None:
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
            "{bytes} bytes in {seconds:.3f}s",
            method=self.method.decode("ascii", "replace"),
            path=self.uri.decode("ascii", "backslashreplace"),
            status=self.code,
            peer=_peer(self),
            range=self.rangeNote,
            bytes=self.sentLength,
            seconds=self._clock.seconds() - self._started,
            reason=reason,
        )


class StreamSite(Site):
    """
    A L{Site} of L{StreamRequest}s: the structured event per request replaces
    the access log.

    @ivar maxBody: The largest request body accepted (then discarded); a
        larger one gets a 413 and its connection is closed.
    @ivar headerTimeout: Seconds a request head may take to arrive, however
        it trickles; L{None} for no limit.
    """

    requestFactory = StreamRequest
    noisy = False
    _log = Logger()

    def __init__(
        self,
        resource: IResource,
        reactor: IReactorTime,
        protection: Protection | None = None,
        metrics: Metrics | None = None,
        timeout: float | None = 60 * 60 * 12,
        maxBody: int = MAX_BODY,
        headerTimeout: float | None = HEADER_TIMEOUT,
    ) -> None:
        super().__init__(resource, reactor=reactor, timeout=timeout)  # type: ignore[no-untyped-call]
        self.clock = reactor
        self.protection = Protection(reactor) if protection is None else protection
        self.metrics = Metrics() if metrics is None else metrics
        self.maxBody = maxBody
        self.headerTimeout = headerTimeout
        self.channels: set[_Channel] = set()
        self.shuttingDown = False
        self.protocol = self._channel  # type: ignore[method-assign,assignment]

    def _channel(self) -> HTTPChannel:
        return _Channel(self)

    def closeIdle(self) -> None:
        """
        Close the connections that wait for a request (keep-alive, or a
        request head still arriving), and keep no more open after their
        responses: on shutdown, only responses under way are worth waiting
        for.
        """
        self.shuttingDown = True
        for channel in list(self.channels):
            if channel.waitingForRequest:
                channel.loseConnection()  # type: ignore[no-untyped-call]

    def buildProtocol(self, addr: IAddress) -> Protocol | None:  # type: ignore[override]
        refused = self.protection.admit(addr)
        if refused is not None:
            self.metrics.rejected("http", refused)
            self._log.warn(
                "refused a connection from {peer}: {why}",
                peer=formatAddress(addr),
                why=refused,
            )
            return _Busy()
        channel = super().buildProtocol(addr)  # type: ignore[no-untyped-call]
        if isinstance(channel, _Channel):
            channel.admitted = addr
        built: Protocol | None = channel
        return built

    def log(self, request: http.Request) -> None:
        """
        Nothing: L{StreamRequest} logs each request when it ends.
        """


class _Phase(enum.Enum):
    """
    Where a connection is between requests.
    """

    HEAD = "a request head is arriving (or awaited on a new connection)"
    IDLE = "keep-alive: no byte of the next request yet"
    REQUEST = "a request's body is arriving, or it is being answered"
    CLOSING = "answered with an error; closing"


_REASONS = {
    http.BAD_REQUEST: b"Bad Request",
    http.REQUEST_TIMEOUT: b"Request Timeout",
    http.REQUEST_ENTITY_TOO_LARGE: b"Content Too Large",
    http.REQUEST_URI_TOO_LONG: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}

_CONTENT_LENGTH_DIGITS = len(str(MAX_CONTENT_LENGTH))
"""
A C{Content-Length} with more significant digits than this is over any body
limit (and Python would refuse to convert one of more than 4300 digits).
"""


# A StreamSite speaks HTTP/1.1 only, so it offers no protocols to negotiate
# (ALPN): Twisted's Site offers h2 where the h2 package is installed, which a
# client would then speak to an HTTP/1.1 channel; and Twisted 24.7 sets the
# protocols on a TLS context for every connection, which pyOpenSSL 24.3 on
# refuses once the context has made one (every HTTPS connection failed).
classImplementsOnly(
    StreamSite,
    *(
        interface
        for interface in implementedBy(Site)  # type: ignore[no-untyped-call]
        if interface is not IProtocolNegotiationFactory
    ),
)


class _Channel(HTTPChannel):
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

    Twisted's L{HTTPChannel} details this relies on are listed in
    L{_CHANNEL_DETAILS}; a test checks them.
    """

    admitted: IAddress | None = None

    def __init__(self, site: StreamSite) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._site = site
        self._phase = _Phase.HEAD
        self._headTimer: IDelayedCall | None = None
        self._headSeen = False
        self._headLines = 0
        self._headBytes = 0
        self._held = False
        self._lingering: IDelayedCall | None = None
        self._discarded = 0

    @property
    def waitingForRequest(self) -> bool:
        """
        Whether no request is being read or answered: between requests, or
        while a head arrives.
        """
        return self._phase in (_Phase.HEAD, _Phase.IDLE)

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        self._site.channels.add(self)
        self._site.metrics.connectionOpened("http")
        self._site.protection.opened(self.transport)
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
            self.setTimeout(None)  # type: ignore[no-untyped-call]
            self._log.info(
                "closed a connection from {peer}: no request in {timeout:g}s",
                peer=self._peer(),
                timeout=self._site.headerTimeout,
            )
            self.loseConnection()  # type: ignore[no-untyped-call]
            return
        self._refuse(
            http.REQUEST_TIMEOUT,
            f"the request head did not arrive within {self._site.headerTimeout:g}s",
        )

    def dataReceived(self, data: bytes) -> None:
        if self._phase is _Phase.CLOSING:
            self._discard(len(data))
            return
        if data:
            if self._phase is _Phase.IDLE and not self._held:
                self._startHead()
            if self._phase is _Phase.HEAD:
                self._headSeen = True
        super().dataReceived(data)  # type: ignore[no-untyped-call]

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
            if not line:
                self._headLines = self._headBytes = 0
        super().lineReceived(line)  # type: ignore[no-untyped-call]

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
                f"declared body over the limit of {self._site.maxBody} bytes",
            )
            return False
        return bool(super().headerReceived(line))  # type: ignore[no-untyped-call]

    def allHeadersReceived(self) -> None:
        self._stopHeadTimer()
        self._headSeen = False
        self._phase = _Phase.REQUEST
        length = self.length
        if length is not None and length > self._site.maxBody:
            # Before Twisted answers "Expect: 100-continue".
            self._refuse(
                http.REQUEST_ENTITY_TOO_LARGE,
                f"declared body of {length} bytes over the limit of "
                f"{self._site.maxBody} bytes",
            )
            return
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

    def discardedBody(self) -> _DiscardedBody:
        """
        Where the body of the request being read goes: thrown away, and
        answered with a 413 as soon as it is over the limit.
        """
        limit = self._site.maxBody
        return _DiscardedBody(
            limit,
            partial(
                self._refuse,
                http.REQUEST_ENTITY_TOO_LARGE,
                f"body over the limit of {limit} bytes",
            ),
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
        if self._phase is _Phase.CLOSING:
            return  # refused with a 413 in the middle of this body
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def checkPersistence(self, request: Request, version: bytes) -> bool:
        if self._site.shuttingDown:
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return bool(super().checkPersistence(request, version))  # type: ignore[no-untyped-call]

    def requestDone(self, request: Request) -> None:
        self._phase = _Phase.IDLE
        if self._waitingForTransport and self.persistent:
            # The client leaves its responses unread: answer no more of its
            # requests (whatever they cost) until it reads them. Twisted
            # would go on parsing what it holds, and reading more.
            self._held = True
            self.paused = True  # LineReceiver parses nothing while set
        super().requestDone(request)  # type: ignore[no-untyped-call]
        if self._held:
            self._networkProducer.pauseProducing()
        else:
            self._startPendingHead()
        if self._site.shuttingDown and not self.requests:
            self.loseConnection()  # type: ignore[no-untyped-call]

    def resumeProducing(self) -> None:
        super().resumeProducing()  # type: ignore[no-untyped-call]
        if self._held and not self._waitingForTransport:
            self._held = False
            self.paused = False
            if self.transport is not None and not self.transport.disconnecting:  # type: ignore[attr-defined]
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
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        reason = _REASONS[code]
        self._log.info(
            "refused a request from {peer}: {status} {why}",
            peer=self._peer(),
            status=code,
            why=why,
        )
        body = b"%d %s: %s\n" % (code, reason, why.encode("ascii", "replace"))
        transport = self.transport
        assert transport is not None
        # Nothing more from the transport's flow control: this channel
        # reads until the end, and writes no more than this.
        self._networkProducer.unregisterProducer()  # type: ignore[attr-defined]
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nCache-Control: no-store\r\n"
            b"Connection: close\r\n\r\n%s" % (code, reason, len(body), body)
        )
        if not IHalfCloseableDescriptor.providedBy(transport):
            transport.loseConnection()
            return
        transport.loseWriteConnection()  # type: ignore[attr-defined]
        self._networkProducer.resumeProducing()
        self._lingering = self._site.clock.callLater(LINGER_SECONDS, self._endLinger)

    def _discard(self, count: int) -> None:
        """
        Throw away what a client sends after an error response, up to
        L{LINGER_BYTES}; then close.
        """
        self._discarded += count
        if self._discarded > LINGER_BYTES and self._lingering is not None:
            self._endLinger()

    def _endLinger(self) -> None:
        """
        Close after the lingering; abort if even that has not happened
        L{LINGER_SECONDS} later (the client reads nothing).
        """
        self._cancelLinger()
        transport = self.transport
        assert transport is not None
        self._lingering = self._site.clock.callLater(
            LINGER_SECONDS,
            transport.abortConnection,  # type: ignore[attr-defined]
        )
        transport.loseConnection()

    def _cancelLinger(self) -> None:
        lingering, self._lingering = self._lingering, None
        if lingering is not None and lingering.active():
            lingering.cancel()

    def _peer(self) -> str:
        transport = self.transport
        return "?" if transport is None else formatAddress(transport.getPeer())

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._stopHeadTimer()
        self._cancelLinger()
        # A body cut short leaves cycles through this channel: its request's
        # body (the 413 callback), Twisted's decoder of it (the request's
        # method). Break them, so that all is freed at once.
        for request in self.requests:
            if isinstance(request.content, _DiscardedBody):
                request.content.close()
        self._transferDecoder = None
        try:
            super().connectionLost(reason)  # type: ignore[no-untyped-call]
        finally:
            self._site.channels.discard(self)
            clean = reason.check(ConnectionDone) is not None
            self._site.metrics.connectionClosed("http", "closed" if clean else "reset")
            self._site.protection.closed(self.transport, self.admitted)


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
What L{_Channel} uses of Twisted's L{HTTPChannel} besides its public
methods: where it keeps bytes not yet parsed and pipelined requests, whether
it is answering one or waiting for its transport, how it reads (its
transport as a producer, and L{LineReceiver}'s pause), the body's length,
its limits and its bad-request answer.
"""


class _Busy(Protocol):
    """
    Tell a client the server is full, and close.
    """

    def connectionMade(self) -> None:
        body = b"503 Service Unavailable: too many connections\n"
        self.transport.write(  # type: ignore[union-attr]
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.loseConnection()  # type: ignore[union-attr]


def _requestedRate(request: Request) -> float | None:
    """
    The rate a client asks for with C{?rate=}, in bytes per second.

    @raise ValueError: If it is not a positive size.
    """
    values = (request.args or {}).get(b"rate")
    if not values:
        return None
    text = values[-1].decode("ascii", "replace")
    try:
        rate = parseSize(text)
    except ValueError:
        rate = 0
    if rate <= 0:
        raise ValueError(f"rate={text}: not a positive number of bytes per second")
    return float(rate)


def _stream(
    request: Request,
    source: ISource,
    clock: IReactorTime,
    limit: int | None = None,
    chunkSize: int | None = None,
    rate: float | None = None,
    sendfile: bool = True,
    ioPool: IOPool | None = None,
) -> int:
    """
    Stream C{source} as the response body with a push producer registered on
    the request; finish the request at the end. On a L{StreamSite}, its
    protection (rates, stall timeout, maximum duration) and metrics apply.
    """
    protection: Protection | None = getattr(request.site, "protection", None)
    metrics: Metrics | None = getattr(request.site, "metrics", None)
    observer = None if metrics is None else MetricsObserver(metrics, source.description)
    if protection is not None:
        observer = protection.observe(request.channel.transport, observer)
    producer = StreamProducer(
        source=source,
        chunkSize=chunkSize,
        limit=limit,
        clock=clock,
        throttle=None if protection is None else protection.throttle(rate),
        observer=observer,
        sendfile=sendfile,
        ioPool=ioPool,
    )
    transport = request.channel.transport

    def abort(why: str) -> None:
        if isinstance(request, StreamRequest) and request.ending is None:
            request.ending = why
        cast(ITCPTransport, transport).abortConnection()

    def stalled() -> None:
        if metrics is not None:
            metrics.stallAborted("http")
        abort("stalled")

    watch = expiry = None
    if protection is not None:
        watch = protection.watch(
            transport, lambda: (producer.bytesSent, producer.rateWaits), stalled
        )
        if protection.maxDuration is not None:
            expiry = clock.callLater(protection.maxDuration, abort, "max duration")

    def ended(result: object) -> object:
        if watch is not None:
            watch.stop()
        if expiry is not None and expiry.active():
            expiry.cancel()
        return result

    def finished(sent: int) -> None:
        request.finish()

    def failed(failure: Failure) -> None:
        if failure.check(StreamStopped):
            return  # the client went away; the request logs it
        if failure.check(ConnectionBroken):
            # A send found the connection gone: drop it (the request logs
            # how it ended).
            cast(ITCPTransport, request.channel.transport).abortConnection()
            return
        if isinstance(request, StreamRequest):
            request.ending = "aborted: source failed"
        if failure.check(SourceError):
            _log.warn(
                "aborting response to {peer}: {error}",
                peer=_peer(request),
                error=str(failure.value),
            )
        else:
            _log.failure("aborting response", failure)
        # The client must be able to tell the body is short.
        cast(ITCPTransport, request.channel.transport).abortConnection()

    # Before the body starts: a body that ends inside startStreaming (an
    # empty file, bytes=0) finishes the request there, and a Deferred from
    # notifyFinish() asked for after that would never fire, leaving the
    # watch and the deadline behind. The transport stops the producer when
    # the connection is lost, before the request hears of it; stop it here
    # too, whatever the transport.
    request.notifyFinish().addBoth(ended).addErrback(
        lambda reason: producer.stopProducing()
    )
    producer.startStreaming(request, requestOutlet(request)).addCallbacks(
        finished, failed
    )
    return NOT_DONE_YET


_log = Logger()


def _peer(request: Request) -> str:
    return formatAddress(request.getClientAddress())


class _NotFound(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return plain(request, http.NOT_FOUND, "404 Not Found")


class _Top(Resource):
    def getChild(self, path: bytes, request: Request) -> Resource:
        return _NotFound()  # type: ignore[no-untyped-call]


class _Index(Resource):
    isLeaf = True

    def __init__(self, files: bool) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._files = files

    def render(self, request: Request) -> bytes:
        refused = notAllowed(request)
        if refused is not None:
            return refused
        if request.postpath not in ([], [b""]):
            return plain(request, http.NOT_FOUND, "404 Not Found")
        lines = [
            "twisted-zero",
            "",
            "GET /zero      zero bytes",
            "GET /random    incompressible random bytes",
            "GET /chargen   the RFC 864 character generator pattern",
            "    ?bytes=N     exactly N bytes (K, M, G: powers of 1024)",
            "    ?seconds=T   for T seconds",
            "    (neither)    without end",
        ]
        if self._files:
            lines.append("GET /files/    files (Range requests welcome)")
        return plain(request, http.OK, "\n".join(lines))


class _Generated(Resource):
    """
    An endless, sized or timed stream of a generated source.
    """

    isLeaf = True

    def __init__(
        self,
        sourceFactory: Callable[[], ISource],
        contentType: bytes,
        clock: IReactorTime,
        maxBytes: int | None,
        chunkSize: int | None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._sourceFactory = sourceFactory
        self._contentType = contentType
        self._clock = clock
        self._maxBytes = maxBytes
        self._chunkSize = chunkSize

    def render(self, request: Request) -> bytes | int:
        refused = notAllowed(request)
        if refused is not None:
            return refused
        if request.postpath not in ([], [b""]):
            return plain(request, http.NOT_FOUND, "404 Not Found")
        try:
            size, seconds = self._parseQuery(request.args or {})
            rate = _requestedRate(request)
        except ValueError as e:
            return plain(request, http.BAD_REQUEST, f"400 Bad Request: {e}")
        request.setHeader(b"content-type", self._contentType)
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if size is not None:
            request.setHeader(b"content-length", b"%d" % (size,))
        if request.method == b"HEAD":
            return b""
        source = self._sourceFactory()
        if seconds is not None:
            source = TimedSource(source=source, clock=self._clock, seconds=seconds)
        return _stream(request, source, self._clock, size, self._chunkSize, rate)

    def _parseQuery(
        self, args: dict[bytes, list[bytes]]
    ) -> tuple[int | None, float | None]:
        size = seconds = None
        if b"bytes" in args:
            text = args[b"bytes"][-1].decode("ascii", "replace")
            try:
                size = parseSize(text)
            except ValueError:
                raise ValueError(f"bytes={text}: not a size") from None
            if size > MAX_CONTENT_LENGTH:
                raise ValueError(
                    f"bytes={text}: more than a Content-Length may say "
                    f"({MAX_CONTENT_LENGTH})"
                )
        if b"seconds" in args:
            text = args[b"seconds"][-1].decode("ascii", "replace")
            try:
                seconds = float(text)
            except ValueError:
                seconds = -1.0
            if not 0 < seconds < 10**9:
                raise ValueError(f"seconds={text}: not a positive number")
        if size is not None and seconds is not None:
            raise ValueError("ask for bytes= or seconds=, not both")
        if self._maxBytes is not None:
            if size is None:
                raise ValueError(
                    f"this server sends at most {self._maxBytes} bytes: ask for bytes=N"
                )
            if size > self._maxBytes:
                raise ValueError(
                    f"bytes={size} is more than this server sends ({self._maxBytes})"
                )
        return size, seconds


def _contentType(name: str) -> bytes:
    kind, encoding = mimetypes.guess_type(name, strict=False)
    if encoding is not None:
        kind = _ENCODED_TYPES.get(encoding, "application/octet-stream")
    return (kind or "application/octet-stream").encode("ascii")


class _Files(Resource):
    """
    The regular files under a root directory, with byte ranges and
    validators; directories as an index if asked for.
    """

    isLeaf = True

    def __init__(
        self,
        root: str,
        clock: IReactorTime,
        listing: bool,
        dotfiles: bool,
        chunkSize: int | None,
        opener: Callable[[str], tuple[BinaryIO, os.stat_result]],
        sendfile: bool,
        ioPool: IOPool | None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._root = root
        self._ioPool = ioPool
        self._sendfile = sendfile
        self._clock = clock
        self._listing = listing
        self._dotfiles = dotfiles
        self._chunkSize = chunkSize
        self._open = opener

    def render(self, request: Request) -> bytes | int:
        refused = notAllowed(request)
        if refused is not None:
            return refused
        try:
            rate = _requestedRate(request)
        except ValueError as e:
            return plain(request, http.BAD_REQUEST, f"400 Bad Request: {e}")
        path = request.path
        if not (path == b"/files" or path.startswith(b"/files/")):
            # Twisted found this resource by a decoded name (/%66iles/).
            return plain(request, http.NOT_FOUND, "404 Not Found")
        lookup = partial(self._lookup, path[len(b"/files") :], path.endswith(b"/"))
        if self._ioPool is None:
            return self._respond(request, lookup(), rate)
        # The file system may be slow: look in a thread, and give up on what
        # was found if the client goes away meanwhile.
        gone = False
        operation = self._ioPool.submit(
            lookup, lambda found: self._found(request, rate, gone, found)
        )

        def lost(reason: Failure) -> None:
            nonlocal gone
            gone = True
            operation.cancel()

        request.notifyFinish().addErrback(lost)
        return NOT_DONE_YET

    def _lookup(self, raw: bytes, slash: bool) -> _Found:
        """
        In a thread: everything the request needs of the file system. Open
        the file (checking it is still under the root once open), or list
        the directory.
        """
        try:
            resolved = resolveUnderRoot(self._root, raw, self._dotfiles)
            if resolved.kind == "directory":
                if not self._listing:
                    return _NOT_FOUND
                if not slash:
                    return _REDIRECT
                listing = listUnderRoot(self._root, resolved, self._dotfiles)
                return _Listed(_indexPage(resolved.relative, listing))
        except NotFound:
            return _NOT_FOUND
        if slash:
            return _NOT_FOUND  # a file is not a directory: /files/a.txt/
        try:
            file, info = self._open(resolved.path)
        except SourceError:
            return _NOT_FOUND
        if not self._opensUnderRoot(file):
            file.close()
            return _NOT_FOUND
        return _Opened(file, info, resolved.relative)

    def _found(
        self, request: Request, rate: float | None, gone: bool, found: _Found | Failure
    ) -> None:
        """
        In the reactor thread: the lookup is done. Respond, unless the client
        went away meanwhile (then close what was opened).
        """
        if gone:
            if isinstance(found, _Opened):
                found.file.close()
            elif isinstance(found, Failure):
                _log.failure("looking up a file for a client that has gone", found)
            return
        if isinstance(found, Failure):
            request.processingFailed(found)
            return
        try:
            body = self._respond(request, found, rate)
        except BaseException:
            request.processingFailed(Failure())
            return
        if body is NOT_DONE_YET:
            return
        assert isinstance(body, bytes)
        # As Resource.render's caller does with bytes.
        if request.method != b"HEAD" or body:
            request.setHeader(b"content-length", b"%d" % (len(body),))
        request.write(b"" if request.method == b"HEAD" else body)
        request.finish()

    def _respond(
        self, request: Request, found: _Found, rate: float | None
    ) -> bytes | int:
        if isinstance(found, _Opened):
            try:
                return self._file(request, found.file, found.info, found.name, rate)
            except BaseException:
                found.file.close()
                raise
        if isinstance(found, _Listed):
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            request.setHeader(b"cache-control", b"no-cache")
            return b"" if request.method == b"HEAD" else found.page
        if found is _REDIRECT:
            location = request.path + b"/"
            request.setHeader(b"location", location)
            return plain(request, http.MOVED_PERMANENTLY, "301 Moved Permanently")
        return plain(request, http.NOT_FOUND, "404 Not Found")

    def _file(
        self,
        request: Request,
        file: BinaryIO,
        info: os.stat_result,
        name: str,
        rate: float | None,
    ) -> bytes | int:
        size = info.st_size
        lastModified = info.st_mtime_ns // 10**9
        etag = makeETag(size, info.st_mtime_ns, info.st_ino)
        request.setHeader(b"accept-ranges", b"bytes")
        request.setHeader(b"etag", etag.encode("ascii"))
        request.setHeader(b"last-modified", httpDate(lastModified).encode("ascii"))
        # Repeated fields are one comma-separated list (RFC 9110, 5.3).
        headers = {
            key.decode("latin-1").lower(): b", ".join(values).decode("latin-1")
            for key, values in request.requestHeaders.getAllRawHeaders()
        }
        method = request.method.decode("ascii", "replace")
        status = evaluatePreconditions(method, headers, etag, lastModified)
        if status is not None:
            file.close()
            if status == http.NOT_MODIFIED:
                # No Content-Length: a 304's would have to be the 200's.
                request.setResponseCode(http.NOT_MODIFIED)
                request.finish()
                return NOT_DONE_YET
            return plain(request, status, "412 Precondition Failed")
        contentType = _contentType(name)
        ranges: list[ByteRange] | None = None
        # Ranges are defined for GET only (RFC 9110, 14.2).
        if (
            method == "GET"
            and "range" in headers
            and ifRangeAllowsRange(headers.get("if-range"), etag, lastModified)
        ):
            parsed = parseRange(headers["range"], size)
            if parsed is UNSATISFIABLE:
                file.close()
                request.setHeader(b"content-range", b"bytes */%d" % (size,))
                return plain(
                    request,
                    http.REQUESTED_RANGE_NOT_SATISFIABLE,
                    "416 Range Not Satisfiable",
                )
            if isinstance(parsed, list):
                ranges = parsed
        description = f"file:/{name}"
        body: ISource
        if ranges is None:
            length = size
            request.setHeader(b"content-type", contentType)
            body = FileSource(file=file, length=size, description=description)
        elif len(ranges) == 1:
            [only] = ranges
            length = only.stop - only.start
            request.setResponseCode(http.PARTIAL_CONTENT)
            request.setHeader(b"content-type", contentType)
            request.setHeader(b"content-range", only.contentRange(size).encode())
            body = FileSource(
                file=file,
                length=length,
                offset=only.start,
                description=description,
            )
        else:
            body, length, boundary = _multipart(file, ranges, size, contentType)
            request.setResponseCode(http.PARTIAL_CONTENT)
            request.setHeader(
                b"content-type", b"multipart/byteranges; boundary=" + boundary
            )
        if ranges is not None and isinstance(request, StreamRequest):
            request.rangeNote = ",".join(f"{r.start}-{r.stop - 1}" for r in ranges)
        request.setHeader(b"content-length", b"%d" % (length,))
        if request.method == b"HEAD":
            body.close()
            return b""
        return _stream(
            request,
            body,
            self._clock,
            chunkSize=self._chunkSize,
            rate=rate,
            sendfile=self._sendfile,
            ioPool=self._ioPool,
        )

    def _opensUnderRoot(self, file: BinaryIO) -> bool:
        """
        Whether the file opened is still under the root: a directory on
        the way may have been swapped for a symlink since the path was
        checked. Where the kernel does not say (no C{/proc}), trust the
        check.
        """
        try:
            opened = os.readlink(f"/proc/self/fd/{file.fileno()}")
        except (OSError, ValueError):
            return True
        return os.path.commonpath([self._root, opened]) == self._root


def _indexPage(relative: str, listing: Listing) -> bytes:
    """
    The HTML index of a directory: its entries as links, names escaped.
    """
    entries = []
    for name, isDirectory in listing.entries:
        link = quote(name, safe="")
        if isDirectory:
            link, name = link + "/", name + "/"
        link, name = html.escape(link), html.escape(name)
        entries.append(f'<li><a href="{link}">{name}</a></li>')
    if listing.truncated:
        entries.append(
            f"<li>(the first {len(listing.entries)} entries found; there are more)</li>"
        )
    title = html.escape(f"/{relative}")
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n"
        "<ul>\n" + "\n".join(entries) + "\n</ul></body></html>\n"
    )
    return page.encode("utf-8")


@frozen
class _Opened:
    """
    A file opened under the root for a request.
    """

    file: BinaryIO
    info: os.stat_result
    name: str


@frozen
class _Listed:
    """
    A directory listed for a request: its index page.
    """

    page: bytes


class _Answer(enum.Enum):
    NOT_FOUND = "not found"
    REDIRECT = "redirect"


_NOT_FOUND = _Answer.NOT_FOUND
_REDIRECT = _Answer.REDIRECT
_Found = _Opened | _Listed | _Answer
"""What L{_Files} found for a request path."""


def _multipart(
    file: BinaryIO, ranges: list[ByteRange], size: int, contentType: bytes
) -> tuple[ISource, int, bytes]:
    """
    The body of a C{multipart/byteranges} response: each range of C{file}
    after its part headers, then the closing boundary.
    """
    boundary = secrets.token_hex(16)
    parts: list[ISource] = []
    length = 0
    for index, byteRange in enumerate(ranges):
        head = (
            ("\r\n" if index else "")
            + f"--{boundary}\r\nContent-Type: {contentType.decode('ascii')}\r\n"
            f"Content-Range: {byteRange.contentRange(size)}\r\n\r\n"
        ).encode("ascii")
        parts.append(BytesSource(data=head))
        parts.append(
            FileSource(
                file=file,
                length=byteRange.stop - byteRange.start,
                offset=byteRange.start,
            )
        )
        length += len(head) + byteRange.stop - byteRange.start
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")
    parts.append(BytesSource(data=tail))
    length += len(tail)
    return ConcatenatedSource(parts=parts), length, boundary.encode("ascii")


def makeResource(
    clock: IReactorTime,
    root: str | None = None,
    listing: bool = False,
    dotfiles: bool = False,
    maxBytes: int | None = None,
    chunkSize: int | None = None,
    opener: Callable[[str], tuple[BinaryIO, os.stat_result]] = openRegularFile,
    sendfile: bool = True,
    ioPool: IOPool | None = None,
) -> IResource:
    """
    The whole HTTP front end: C{/} describes it, C{/zero}, C{/random} and
    C{/chargen} stream generated bytes, C{/files/} serves C{root}.

    @param root: A real (symlink-free) absolute directory path, or L{None}
        for no file root.
    @param listing: Whether directories get an HTML index.
    @param dotfiles: Whether names starting with a dot may be served.
    @param maxBytes: The most bytes a generated stream may be asked for;
        L{None} for no limit.
    @param chunkSize: Bytes per write; L{None} for each source's own.
    @param opener: Opens a file under C{root} (see L{openRegularFile}).
    @param sendfile: Whether files go to the socket with C{sendfile()}
        where they can; if not, they are read and sent.
    @param ioPool: Where the file system is used for requests under
        C{root} (opening, checking, listing and reading files): L{None} for
        the reactor's own thread pool if C{clock} has one, else at once.
    """
    top = _Top()  # type: ignore[no-untyped-call]
    top.putChild(b"", _Index(root is not None))
    for name, factory, contentType in [
        (b"zero", ZeroSource, b"application/octet-stream"),
        (b"random", RandomSource, b"application/octet-stream"),
        (b"chargen", ChargenSource, b"text/plain; charset=us-ascii"),
    ]:
        top.putChild(name, _Generated(factory, contentType, clock, maxBytes, chunkSize))
    if root is not None:
        files = _Files(
            root,
            clock,
            listing,
            dotfiles,
            chunkSize,
            opener,
            sendfile,
            reactorPool(clock) if ioPool is None else ioPool,
        )
        top.putChild(b"files", files)
    return top
