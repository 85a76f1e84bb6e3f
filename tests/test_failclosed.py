"""
Tests for the outlets' failing closed (L{twisted_zero._outlet},
L{twisted_zero._httpoutlet}): the Twisted details they rely on are checked
on real instances, so that a Twisted that changes them trips these tests,
and any transport or request they were not written against is written to
as any consumer is, and still gets its stream whole.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from twisted.internet import tcp, unix
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.testing import MemoryReactorClock
from twisted.web import http, server
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from zope.interface import implementer

from twisted_zero import _httpoutlet, _outlet
from twisted_zero._httpoutlet import RequestOutlet, requestOutlet
from twisted_zero._outlet import SocketOutlet, transportOutlet
from twisted_zero._producer import StreamProducer
from twisted_zero._sources import CHARGEN_PERIOD, ChargenSource

from .helpers import parseResponses, successResultOf
from .sockets import Pair

SIZE = 300_000
"""
Bytes streamed in each test: several times what the socket pair buffers.
"""

EXPECTED = (CHARGEN_PERIOD * (SIZE // len(CHARGEN_PERIOD) + 1))[:SIZE]


@implementer(IPushProducer)
class Recorder:
    """
    A push producer that records being paused and resumed.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


def unsent(transport: tcp.Connection) -> int:
    """
    The bytes C{transport} holds, as the outlet counts them.
    """
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def webRequest(pair: Pair, kind: type[http.Request] = server.Request) -> http.Request:
    """
    A C{GET} request of the given kind on C{pair}'s transport, with a
    C{Content-Length}: its body goes on the wire as it is.
    """
    channel = HTTPChannel()
    channel.site = server.Site(Resource())  # type: ignore[attr-defined]  # as Site.buildProtocol sets it
    channel.makeConnection(pair.transport)
    request = kind(channel)
    channel.requests.append(request)
    request.method, request.clientproto = b"GET", b"HTTP/1.1"
    request.setHeader(b"content-length", b"%d" % SIZE)
    return request


def outletUnder(channelType: type[HTTPChannel]) -> SocketOutlet | None:
    """
    The outlet of a C{GET} request under a channel of the given type, on a
    socket pair.
    """
    pair = Pair()
    try:
        channel = channelType()
        channel.makeConnection(pair.transport)
        request = http.Request(channel)
        request.method, request.clientproto = b"GET", b"HTTP/1.1"
        return requestOutlet(request)
    finally:
        pair.close()


class TwistedDetailsTests:
    """
    What the outlets read of Twisted's objects, beyond their public
    methods, is there and means what they take it to mean: these fail when
    an installed Twisted changes it, before direct sends go wrong.
    """

    def test_allowedTransportsHaveEverything(self) -> None:
        """
        Real instances of every allowed transport type have every attribute
        the outlet reads, of the types it expects.
        """
        pair = Pair()
        listener = socket.create_server(("127.0.0.1", 0))
        reactor = MemoryReactorClock()
        client = tcp.Client(
            "127.0.0.1",
            listener.getsockname()[1],
            None,
            None,  # no connector: never connected
            reactor,
        )
        try:
            instances = {type(pair.transport): pair.transport, tcp.Client: client}
            assert set(instances) == set(_outlet.ALLOWED_TRANSPORTS)
            for transport in instances.values():
                for name in _outlet.TRANSPORT_ATTRIBUTES:
                    assert hasattr(transport, name), name
                assert isinstance(transport.dataBuffer, bytes)
                assert isinstance(transport.offset, int)
                assert isinstance(transport._tempDataLen, int)
                assert isinstance(transport.bufferSize, int)
                assert transport.TLS is False
                assert not transport._aborting and not transport._writeDisconnected
        finally:
            client.socket.close()
            listener.close()
            pair.close()

    def test_unsentBytes(self) -> None:
        """
        What a transport holds and has not sent is C{dataBuffer} from
        C{offset} on, and C{_tempDataLen} more: written bytes count there
        until the socket takes them.
        """
        pair = Pair()
        try:
            transport = pair.transport
            assert unsent(transport) == 0
            transport.write(b"x" * 1000)
            assert unsent(transport) == 1000
            transport.doWrite()
            assert unsent(transport) == 0
            transport.write(b"y" * (4 * 2**20))  # more than the socket takes
            transport.doWrite()
            assert 0 < unsent(transport) < 4 * 2**20
            assert transport.offset or transport._tempDataLen or transport.dataBuffer
        finally:
            pair.close()

    def test_bufferSizePauses(self) -> None:
        """
        An instance's C{bufferSize} of 0 has the transport pause its
        streaming producer on the first byte written, and resume it once
        that byte is sent; deleting it restores the class's own.
        """
        pair = Pair()
        try:
            transport = pair.transport
            producer = Recorder()
            transport.registerProducer(producer, True)
            transport.bufferSize = 0
            transport.write(b"x")
            assert producer.calls == ["pause"]
            del transport.bufferSize
            assert transport.bufferSize == tcp.Server.bufferSize > 0
            transport.doWrite()
            assert producer.calls == ["pause", "resume"]
            assert pair.receive() == b"x"
        finally:
            pair.close()

    def test_closingFlags(self) -> None:
        """
        C{_writeDisconnecting} is set by C{loseWriteConnection}, and
        C{_writeDisconnected} once the sending side is shut;
        C{disconnecting} by C{loseConnection}; C{_aborting} by
        C{abortConnection}.
        """
        pair = Pair()
        try:
            transport = pair.transport
            transport.loseWriteConnection()
            assert transport._writeDisconnecting and not transport._writeDisconnected
            transport.doWrite()
            assert transport._writeDisconnected
        finally:
            pair.close()
        pair = Pair()
        try:
            pair.transport.loseConnection()
            assert pair.transport.disconnecting
        finally:
            pair.close()
        pair = Pair()
        try:
            pair.transport.abortConnection()
            assert pair.transport._aborting
        finally:
            pair.close()

    def test_requestDetails(self) -> None:
        """
        Requests of both allowed kinds have everything the outlet reads, and
        C{twisted.web.server.Request.write} encodes with C{_encoder} and
        sends no body while C{_inFakeHead}.
        """
        assert set(_httpoutlet.REQUEST_WRITES) == {
            http.Request.write,
            server.Request.write,
        }
        for name, method in _httpoutlet.CHANNEL_WRITES:
            assert getattr(HTTPChannel, name) is method
        # Request.write writes the headers through the channel's
        # writeHeaders, which leaves them in the transport's buffer: the
        # outlet sends nothing before they have left it.
        pair = Pair()
        try:
            request = webRequest(pair, http.Request)
            written: list[object] = []
            channel = request.channel
            real = channel.writeHeaders

            def writeHeaders(*args: object) -> None:
                written.append(args)
                real(*args)

            channel.writeHeaders = writeHeaders  # type: ignore[method-assign]  # spy on the headers
            request.write(b"abc")
            assert len(written) == 1
            assert pair.receive() == b""
            assert pair.transport.dataBuffer or pair.transport._tempDataBuffer
        finally:
            pair.close()
        for kind in (http.Request, server.Request):
            pair = Pair()
            try:
                request = webRequest(pair, kind)
                for name in _httpoutlet.REQUEST_ATTRIBUTES:
                    assert hasattr(request, name), name
                if kind is server.Request:
                    for name in _httpoutlet.SERVER_REQUEST_ATTRIBUTES:
                        assert hasattr(request, name), name
            finally:
                pair.close()

        class Upper:
            def encode(self, data: bytes) -> bytes:
                return data.upper()

            def finish(self) -> bytes:
                return b""

        pair = Pair()
        try:
            request = webRequest(pair)
            assert isinstance(request, server.Request)
            request._encoder = Upper()  # type: ignore[assignment]  # declared None
            request.write(b"abc")
            assert request.startedWriting and not request.chunked
            pair.transport.doWrite()
            assert pair.receive().endswith(b"\r\n\r\nABC")
        finally:
            pair.close()
        pair = Pair()
        try:
            request = webRequest(pair)
            assert isinstance(request, server.Request)
            request._inFakeHead = True
            request.write(b"abc")
            pair.transport.doWrite()
            assert pair.receive() == b""
        finally:
            pair.close()


def streamTo(pair: Pair, consumer: IConsumer, outlet: SocketOutlet | None) -> bytes:
    """
    Stream L{SIZE} bytes of chargen to C{consumer} (on C{pair}) with the
    given outlet, reading as fast as a client can; what the client got.
    """
    producer = StreamProducer(source=ChargenSource(), clock=pair.reactor, limit=SIZE)
    done = producer.startStreaming(consumer, outlet)
    received = pair.pump()
    assert successResultOf(done) == SIZE
    return received


class ServerSubclass(tcp.Server):
    """
    A subclass of Twisted's TCP transport: it might override C{write}.
    """


class TransportFallbackTests:
    """
    A transport the outlet was not written against gets no outlet, and its
    stream is written to it whole.
    """

    @pytest.mark.parametrize(
        "transportType",
        [
            pytest.param(unix.Server, id="unix.Server"),
            pytest.param(ServerSubclass, id="subclass"),
        ],
    )
    def test_notAllowed(self, transportType: type[tcp.Server]) -> None:
        """
        A UNIX transport (it may pass file descriptors with its bytes) and
        a subclass of Twisted's TCP transport get no outlet; streamed
        through the consumer, the stream arrives whole.
        """
        pair = Pair(transportType=transportType)
        try:
            assert type(pair.transport) is transportType
            assert transportOutlet(pair.transport) is None
            assert streamTo(pair, pair.transport, None) == EXPECTED
        finally:
            pair.close()

    def test_allowed(self) -> None:
        """
        Twisted's own TCP transport gets an outlet, and the stream sent
        through it arrives whole.
        """
        pair = Pair()
        try:
            outlet = transportOutlet(pair.transport)
            assert outlet is not None
            assert streamTo(pair, pair.transport, outlet) == EXPECTED
        finally:
            pair.close()

    def test_missingAttribute(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        A transport missing an attribute the outlet reads gets no outlet,
        and its stream arrives whole through the consumer.
        """
        monkeypatch.delattr(tcp._AbortingMixin, "_aborting")
        pair = Pair()
        try:
            assert not hasattr(pair.transport, "_aborting")
            assert transportOutlet(pair.transport) is None
            assert streamTo(pair, pair.transport, None) == EXPECTED
        finally:
            pair.close()

    def test_closedOrTLS(self) -> None:
        """
        A transport already closed, or speaking TLS, gets no outlet.
        """
        pair = Pair()
        try:
            pair.transport.TLS = True
            assert transportOutlet(pair.transport) is None
        finally:
            pair.close()
        pair = Pair()
        pair.close()
        assert transportOutlet(pair.transport) is None


def prepareEncoded(request: server.Request) -> None:
    class Identity:
        def encode(self, data: bytes) -> bytes:
            return data

        def finish(self) -> bytes:
            return b""

    request._encoder = Identity()  # type: ignore[assignment]  # declared None


def prepareFakeHead(request: server.Request) -> None:
    request._inFakeHead = True


class RequestFallbackTests:
    """
    A request the outlet was not written against, or whose body is not what
    goes on the wire, gets no outlet; its body is written to it.
    """

    @pytest.mark.parametrize(
        ("prepare", "bodySent"),
        [
            pytest.param(prepareEncoded, True, id="encoder"),
            pytest.param(prepareFakeHead, False, id="fake HEAD"),
        ],
    )
    def test_bodyRewritten(
        self, prepare: Callable[[server.Request], None], bodySent: bool
    ) -> None:
        """
        A request with an encoder (gzip) or answering a HEAD as a GET gets
        no outlet: its body would skip them. Written to the request, the
        stream goes as the request has it: whole through an encoder that
        keeps it as it is, none of it for a HEAD.
        """
        pair = Pair()
        try:
            request = webRequest(pair)
            assert isinstance(request, server.Request)
            assert isinstance(requestOutlet(request), RequestOutlet)
            prepare(request)
            assert requestOutlet(request) is None
            received = streamTo(pair, request, None)
            request.finish()
            received += pair.pump()
        finally:
            pair.close()
        if bodySent:
            [response] = parseResponses(received)
            assert response.body == EXPECTED
        else:
            assert CHARGEN_PERIOD[:72] not in received

    def test_missingAttribute(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        A request missing an attribute the outlet reads gets no outlet, and
        its body arrives whole through it.
        """
        monkeypatch.setattr(
            _httpoutlet,
            "REQUEST_ATTRIBUTES",
            (*_httpoutlet.REQUEST_ATTRIBUTES, "_gone"),
        )
        pair = Pair()
        try:
            request = webRequest(pair)
            assert requestOutlet(request) is None
            received = streamTo(pair, request, None)
            request.finish()
            received += pair.pump()
        finally:
            pair.close()
        [response] = parseResponses(received)
        assert response.body == EXPECTED

    def test_channelRewrites(self) -> None:
        """
        Under a channel whose C{write} is not L{HTTPChannel}'s own, a
        request gets no outlet.
        """

        class Rewriting(HTTPChannel):
            def write(self, data: bytes) -> None:
                HTTPChannel.write(self, data.upper())

        assert outletUnder(Rewriting) is None
        pair = Pair()
        try:
            assert requestOutlet(webRequest(pair)) is not None
        finally:
            pair.close()

    def test_instanceWrite(self) -> None:
        """
        A request whose C{write} was replaced on the instance (a wrapper
        rewriting the body) gets no outlet, and its body goes through that
        C{write}.
        """
        pair = Pair()
        try:
            request = webRequest(pair)
            real = request.write
            request.write = lambda data: real(data.upper())  # type: ignore[method-assign]  # a wrapper that rewrites the body
            assert requestOutlet(request) is None
            received = streamTo(pair, request, None)
            request.finish()
            received += pair.pump()
        finally:
            pair.close()
        [response] = parseResponses(received)
        assert response.body == EXPECTED.upper()

    def test_channelWritesHeadersElsewhere(self) -> None:
        """
        Under a channel whose C{writeHeaders} is not L{HTTPChannel}'s own
        (on its class or its instance), a request gets no outlet: the
        headers might not be in the transport's buffer before the body.
        """

        class Headers(HTTPChannel):
            def writeHeaders(
                self,
                version: bytes,
                code: bytes,
                reason: bytes,
                headers: list[tuple[bytes, bytes]],
            ) -> None:
                HTTPChannel.writeHeaders(self, version, code, reason, headers)

        assert outletUnder(Headers) is None
        pair = Pair()
        try:
            request = webRequest(pair)
            request.channel.writeHeaders = lambda *args: None  # type: ignore[method-assign]  # headers written elsewhere
            assert requestOutlet(request) is None
        finally:
            pair.close()

    @pytest.mark.parametrize(
        "prepare",
        [
            pytest.param(prepareEncoded, id="encoder"),
            pytest.param(prepareFakeHead, id="fake HEAD"),
            pytest.param(
                lambda request: setattr(request, "_disconnected", True),
                id="disconnected",
            ),
        ],
    )
    def test_changedAfterBuilt(self, prepare: Callable[[server.Request], None]) -> None:
        """
        An outlet built for a request is no longer usable once the request
        gets an encoder, answers a HEAD as a GET, or has lost its
        connection: the producer then writes to the request.
        """
        pair = Pair()
        try:
            request = webRequest(pair)
            assert isinstance(request, server.Request)
            outlet = requestOutlet(request)
            assert outlet is not None and outlet.usable()
            prepare(request)
            assert not outlet.usable()
        finally:
            pair.close()

    def test_notARequest(self) -> None:
        """
        Anything but a request gets no request outlet.
        """
        pair = Pair()
        try:
            assert requestOutlet(pair.transport) is None
        finally:
            pair.close()
