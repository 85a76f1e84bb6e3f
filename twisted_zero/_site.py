"""
The HTTP site: a L{Channel} per admitted connection, a 503 for a connection
the limits refuse, L{StreamRequest}s that each log their own end.
"""

from __future__ import annotations

from twisted.internet.interfaces import (
    IAddress,
    IProtocolNegotiationFactory,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Site
from zope.interface import classImplementsOnly, implementedBy

from ._channel import Channel
from ._metrics import Metrics
from ._protection import Protection
from ._registry import ConnectionRegistry
from ._request import StreamRequest
from ._upload import UPLOAD_METHODS, isUpload

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


class StreamSite(Site):
    """
    A L{Site} of L{StreamRequest}s over L{Channel}s: the structured event
    per request replaces the access log.

    @ivar clock: Times the channels' limits.
    @ivar protection: Admits connections (per-address limits) and limits
        what the kernel holds unsent for each.
    @ivar metrics: Where connections are counted.
    @ivar registry: Told of every channel opened and closed, or L{None}.
    @ivar maxBody: The largest request body accepted (then discarded); a
        larger one gets a 413 and its connection is closed.
    @ivar maxUpload: The same for the bodies of C{POST} and C{PUT} requests
        to the upload sink, L{UPLOAD_PATH}; L{None} for no limit.
    @ivar headerTimeout: Seconds a request head may take to arrive, however
        it trickles; L{None} for no limit.
    @ivar channels: The channels open now.
    @ivar shuttingDown: Set by L{closeIdle}: no connection is kept open
        after its responses.
    """

    requestFactory = StreamRequest
    noisy = False

    def __init__(
        self,
        resource: IResource,
        reactor: IReactorTime,
        protection: Protection | None = None,
        metrics: Metrics | None = None,
        timeout: float | None = 60 * 60 * 12,
        maxBody: int = MAX_BODY,
        headerTimeout: float | None = HEADER_TIMEOUT,
        registry: ConnectionRegistry | None = None,
        maxUpload: int | None = None,
    ) -> None:
        """
        @param resource: The root resource (see L{makeResource}).
        @param reactor: Times requests and the channels' limits.
        @param protection: Admission and unsent-bytes limits shared with
            the other listeners; L{None} for no limits.
        @param metrics: Where connections are counted; L{None} for metrics
            of its own.
        @param timeout: Seconds a connection may be idle (Twisted's
            C{Site} timeout); L{None} for no limit.
        @param maxBody: The largest request body accepted.
        @param headerTimeout: Seconds a request head may take to arrive;
            L{None} for no limit.
        @param registry: Told of every connection opened and closed, so
            that it can abort those left at shutdown; L{None} for none.
        @param maxUpload: The largest upload accepted; L{None} for no limit.
        """
        super().__init__(resource, reactor=reactor, timeout=timeout)
        self.clock = reactor
        self.protection = Protection(reactor) if protection is None else protection
        self.metrics = Metrics() if metrics is None else metrics
        self.registry = registry
        self.maxBody = maxBody
        self.maxUpload = maxUpload
        self.headerTimeout = headerTimeout
        self.channels: set[Channel] = set()
        self.shuttingDown = False
        # Twisted declares the channel factory as its own generic channel's.
        self.protocol = self._channel  # type: ignore[method-assign,assignment]  # a Channel per connection

    def bodyLimit(self, method: bytes, target: bytes) -> int | None:
        """
        The largest body a request for C{target} with C{method} may have:
        L{maxUpload} for an upload, L{maxBody} for any other request.
        """
        if method in UPLOAD_METHODS and isUpload(target):
            return self.maxUpload
        return self.maxBody

    def _channel(self) -> HTTPChannel:
        return Channel(self)

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
                channel.loseConnection()

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:  # type: ignore[override]  # a 503 when refused, not Twisted's channel
        if not self.protection.admitFrom(addr, "http", self.metrics):
            return _Busy()
        channel = super().buildProtocol(addr)
        if isinstance(channel, Channel):
            channel.admitted = addr
        built: Protocol | None = channel
        return built

    def log(self, request: http.Request) -> None:
        """
        Nothing: L{StreamRequest} logs each request when it ends.
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
        for interface in implementedBy(Site)
        if interface is not IProtocolNegotiationFactory
    ),
)


class _Busy(Protocol):
    """
    Tell a client the server is full, and close.
    """

    def connectionMade(self) -> None:
        body = b"503 Service Unavailable: too many connections\n"
        transport = self.transport
        assert transport is not None
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        transport.loseConnection()
