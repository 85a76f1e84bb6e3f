"""
Tests for L{twisted_zero._channel} and L{twisted_zero._linger}: what a
client may cost before and between its requests, the lingering close,
and aborting a connection.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from attrs import define, field
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IHalfCloseableDescriptor,
)
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, capturedLogs
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from zope.interface import implementer

from twisted_zero._channel import _CHANNEL_DETAILS, Channel
from twisted_zero._connections import LINGER_SECONDS
from twisted_zero._linger import LINGER_BYTES
from twisted_zero._resources import makeResource
from twisted_zero._site import StreamSite

from .helpers import PausingTransport, TurnClock, parseResponses
from .webserver import (
    Server,
    SiteOptions,
    abortNoting,
    makeRoot,
    written,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return makeRoot(tmp_path)


@implementer(IHalfCloseableDescriptor)
class ClientTransport(PausingTransport):
    """
    The socket to a client that reads its responses only when told to.

    Unlike L{PausingTransport}, it keeps apart the two ways of pausing: the
    channel pausing the transport (L{reading}: the client's requests stay in
    its socket) and the transport pausing the channel, its producer, once
    more than C{bufferSize} bytes wait unread (L{producerPaused}), until the
    client has read them all (L{read}).
    """

    def __init__(self, bufferSize: int = 64 * 1024) -> None:
        super().__init__(bufferSize=bufferSize)
        self.reading = True
        self.producerPaused = False

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True

    def stopProducing(self) -> None:
        self.reading = False

    def write(self, data: bytes) -> None:
        StringTransport.write(self, data)
        self.calls.append("write")
        if (
            self.producer is not None
            and self.streaming
            and len(written(self)) > self.bufferSize
        ):
            self.producerPaused = True
            self.producer.pauseProducing()

    def read(self) -> bytes:
        """
        The client reads everything sent so far; the transport then resumes
        its producer, as a real one does once its buffer is empty.
        """
        data = written(self)
        self.clear()
        if self.producer is not None and self.producerPaused:
            self.producerPaused = False
            self.producer.resumeProducing()
        return data

    def loseWriteConnection(self) -> None:
        self.calls.append("loseWriteConnection")

    def readConnectionLost(self, reason: Failure) -> None:
        """
        Never called here: the channel is told of the end of its input.
        """

    def writeConnectionLost(self, reason: Failure) -> None:
        """
        Never called here: the channel is told of the end of its output.
        """


def clientServer(**site: Unpack[SiteOptions]) -> tuple[Server, ClientTransport]:
    """
    A server whose client reads its responses only when told to.
    """
    transport = ClientTransport()
    return Server(None, transport=transport, site=site), transport


def refusals(events: Sequence[LogEvent]) -> list[tuple[int, str]]:
    """
    The requests the channel refused, as logged: their status and why.
    """
    return [(e["status"], e["why"]) for e in events if "why" in e and "status" in e]


class HeaderTimeoutTests:
    def test_trickled(self) -> None:
        """
        A request head trickled one byte per second is cut at the header
        timeout, however much is still to come: a 408 that closes the
        connection, and one log line.
        """
        server, transport = clientServer(headerTimeout=15.0, timeout=None)
        head = b"GET /zero?bytes=1 HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 100
        with capturedLogs() as events:
            for second in range(15):
                assert written(transport) == b""
                server.send(head[second : second + 1])
                server.clock.advance(1)
        [response] = parseResponses(written(transport))
        assert response.status == 408
        assert response.headers["connection"] == "close"
        assert response.body == (
            b"408 Request Timeout: the request head did not arrive within 15s\n"
        )
        assert "loseWriteConnection" in transport.calls
        assert refusals(events) == [(408, "the request head did not arrive within 15s")]

    def test_inTime(self) -> None:
        """
        A head that arrives whole within the timeout, however slowly, is
        answered; its clock stops with it.
        """
        server, transport = clientServer(headerTimeout=15, timeout=None)
        head = b"GET /zero?bytes=3 HTTP/1.1\r\nHost: t\r\n\r\n"
        for index in range(len(head)):
            server.send(head[index : index + 1])
            server.clock.advance(14.9 / len(head))
        [response] = parseResponses(transport.read())
        assert (response.status, response.body) == (200, b"\0\0\0")
        server.clock.advance(100)
        assert written(transport) == b""
        assert not transport.disconnecting
        assert server.clock.getDelayedCalls() == []

    def test_keepAlive(self) -> None:
        """
        On a keep-alive connection, the next head's clock starts with its
        first byte: the wait before it is the idle timeout's business.
        """
        server, transport = clientServer(headerTimeout=15, timeout=None)
        request = b"GET /zero?bytes=1 HTTP/1.1\r\nHost: t\r\n\r\n"
        server.send(request)
        assert parseResponses(transport.read())[0].status == 200
        calls = len(transport.calls)
        server.clock.advance(1000)
        assert (written(transport), len(transport.calls)) == (b"", calls)
        server.send(request[:5])
        server.clock.advance(14)
        server.send(request[5:-2])
        server.clock.advance(0.9)
        server.send(request[-2:])
        assert parseResponses(transport.read())[0].status == 200
        server.send(request[:5])
        server.clock.advance(15)
        [response] = parseResponses(transport.read())
        assert response.status == 408

    def test_pipelined(self) -> None:
        """
        A head already received when the response before it ends is timed
        from then: its rest must come within the timeout.
        """
        server, transport = clientServer(headerTimeout=15, timeout=None)
        server.send(b"GET /zero?bytes=1 HTTP/1.1\r\nHost: t\r\n\r\nGET /zero")
        server.clock.advance(14)
        server.send(b"?bytes=2 HTTP/1.1\r\n")
        server.clock.advance(1)
        responses = parseResponses(transport.read())
        assert [r.status for r in responses] == [200, 408]

    def test_nothingSent(self) -> None:
        """
        A connection on which not a byte of a request comes is closed at the
        header timeout, without a response (there was no request to answer).
        """
        server, transport = clientServer(headerTimeout=15, timeout=None)
        with capturedLogs() as events:
            server.clock.advance(14.9)
            assert not transport.disconnecting
            server.clock.advance(0.1)
        assert written(transport) == b""
        assert transport.disconnecting
        [event] = [e for e in events if "timeout" in e]
        assert event["log_format"].startswith("closed a connection from {peer}")

    def test_disabled(self) -> None:
        """
        Without a header timeout, a trickling head is left to the idle
        timeout.
        """
        server, transport = clientServer(headerTimeout=None, timeout=None)
        for _ in range(100):
            server.send(b"a")
            server.clock.advance(1)
        assert (written(transport), transport.disconnecting) == (b"", False)

    def test_closedOnShutdown(self) -> None:
        """
        On shutdown, a connection whose head is still arriving is closed
        like an idle one.
        """
        server, transport = clientServer()
        server.send(b"GET /zero HTTP/1.1\r\nHo")
        server.site.closeIdle()
        assert transport.disconnecting


def headWith(*fields: bytes, target: bytes = b"/zero?bytes=1") -> bytes:
    return b"GET %s HTTP/1.1\r\n%s\r\n" % (
        target,
        b"".join(field + b"\r\n" for field in fields),
    )


class HeadLimitTests:
    """
    Heads over Twisted's limits (16384 bytes, 500 header fields) are
    answered, on the wire, with a status that says why, and the connection
    is closed; Twisted itself closes in silence (a line too long) or sends
    a bare 400.
    """

    @pytest.mark.parametrize(
        ("head", "status", "why"),
        [
            (
                headWith(*(b"X-%d: y" % (index,) for index in range(501))),
                431,
                "more than 500 header fields",
            ),
            (
                headWith(*(b"X-%d: %s" % (index, b"y" * 1000) for index in range(17))),
                431,
                "request head over 16384 bytes",
            ),
            (
                headWith(b"X-Long: " + b"y" * 16400),
                431,
                "header field line over 16384 bytes",
            ),
            (
                headWith(target=b"/" + b"a" * 16400),
                414,
                "request line over 16384 bytes",
            ),
            (
                headWith(b"Host: t", b"X-Long: " + b"y" * 16400)[:-20],
                431,
                "header field line over 16384 bytes",
            ),
        ],
    )
    def test_tooLarge(self, head: bytes, status: int, why: str) -> None:
        """
        A head with too many fields or too many bytes (in all, or in one
        line, even one not yet ended) gets a 431, and a request line too
        long a 414, whole responses that close the connection.
        """
        server, transport = clientServer()
        with capturedLogs() as events:
            server.send(head)
        reason = {431: "Request Header Fields Too Large", 414: "URI Too Long"}[status]
        body = f"{status} {reason}: {why}\n".encode()
        assert written(transport) == (
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nCache-Control: no-store\r\n"
            b"Connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body)
        )
        assert "loseWriteConnection" in transport.calls
        assert refusals(events) == [(status, why)]

    def test_atTheLimits(self) -> None:
        """
        A head with 500 header fields, or of 16384 bytes, is served.
        """
        many = headWith(*(b"X-%d: y" % (index,) for index in range(500)))
        server, transport = clientServer()
        server.send(many)
        assert parseResponses(transport.read())[0].status == 200
        padding = 16384 - len(b"GET /zero?bytes=1 HTTP/1.1X-Pad: ")
        server.send(headWith(b"X-Pad: " + b"y" * padding))
        assert parseResponses(transport.read())[0].status == 200
        # An empty line before a request line (which Twisted skips) is no
        # part of its head.
        server.send(b"\r\n" + many)
        assert parseResponses(transport.read())[0].status == 200

    @pytest.mark.parametrize(
        "head",
        [
            headWith(b"NoColon"),
            b"GARBAGE\r\n\r\n",
            headWith(b"Content-Length: -1"),
            headWith(b"Content-Length: 1", b"Transfer-Encoding: chunked"),
            b"POST /zero HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ],
    )
    def test_malformed(self, head: bytes) -> None:
        """
        A malformed head or chunked body gets a whole 400 response that
        closes the connection.
        """
        server, transport = clientServer()
        with capturedLogs() as events:
            server.send(head)
        [response] = parseResponses(written(transport))
        assert response.status == 400
        assert response.headers["connection"] == "close"
        assert response.body == b"400 Bad Request: malformed request\n"
        assert refusals(events) == [(400, "malformed request")]

    def test_nothingParsedAfter(self) -> None:
        """
        After a refusal, nothing more on the connection is parsed or
        answered, though it is read: not the rest of what came with the
        refused head, not what comes later.
        """
        server, transport = clientServer()
        server.send(
            headWith(b"NoColon")
            + b"GET /zero?bytes=1 HTTP/1.1\r\n\r\n"
            + b"GET /" * 5000
        )
        server.send(b"GET /zero?bytes=1 HTTP/1.1\r\n\r\n")
        assert len(parseResponses(written(transport))) == 1
        assert transport.reading


class BodyLimitTests:
    def post(self, *fields: bytes) -> bytes:
        return b"POST /zero HTTP/1.1\r\nHost: t\r\n%s\r\n" % (
            b"".join(field + b"\r\n" for field in fields),
        )

    @pytest.mark.parametrize("expect", [False, True])
    def test_declaredOverLimit(self, expect: bool) -> None:
        """
        A body declared larger than the limit gets a 413 at once, before a
        byte of it is sent, and never a C{100 Continue}; the request is not
        processed.
        """
        server, transport = clientServer(maxBody=1000)
        fields = [b"Content-Length: 1001"]
        if expect:
            fields.append(b"Expect: 100-continue")
        with capturedLogs() as events:
            server.send(self.post(*fields) + b"x" * 500)
        [response] = parseResponses(written(transport))
        assert response.status == 413
        assert response.headers["connection"] == "close"
        assert response.body == (
            b"413 Content Too Large: declared body of 1001 bytes over the limit "
            b"of 1000 bytes\n"
        )
        assert b"100 Continue" not in written(transport)
        assert "loseWriteConnection" in transport.calls
        assert [e for e in events if "method" in e] == []

    def test_atTheLimit(self) -> None:
        """
        A body of exactly the limit is read (after a C{100 Continue} when
        the client asks) and thrown away; the request is answered.
        """
        server, transport = clientServer(maxBody=1000)
        server.send(self.post(b"Content-Length: 1000", b"Expect: 100-continue"))
        assert transport.read() == b"HTTP/1.1 100 Continue\r\n\r\n"
        server.send(b"x" * 1000)
        [response] = parseResponses(transport.read())
        assert response.status == 405

    @pytest.mark.parametrize("expect", [False, True])
    def test_chunkedOverLimit(self, expect: bool) -> None:
        """
        A chunked body gets a 413 as soon as it goes over the limit, in the
        middle of a chunk too; nothing after it is parsed.
        """
        server, transport = clientServer(maxBody=1000)
        fields = [b"Transfer-Encoding: chunked"]
        if expect:
            fields.append(b"Expect: 100-continue")
        server.send(self.post(*fields))
        if expect:
            assert transport.read() == b"HTTP/1.1 100 Continue\r\n\r\n"
        server.send(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
        assert written(transport) == b""
        with capturedLogs() as events:
            server.send(b"10\r\n" + b"x" * 8 + b"\r\n")
        [response] = parseResponses(written(transport))
        assert response.status == 413
        assert response.body == (
            b"413 Content Too Large: body over the limit of 1000 bytes\n"
        )
        server.send(b"x" * 8 + b"\r\n0\r\n\r\nGET /zero?bytes=1 HTTP/1.1\r\n\r\n")
        assert len(parseResponses(written(transport))) == 1
        assert [e for e in events if "method" in e] == []

    @pytest.mark.parametrize(
        "tail",
        [
            b"10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\nGET /zero?bytes=1 HTTP/1.1\r\n\r\n",
            b"zz\r\n",
        ],
    )
    def test_chunkedOverLimitAtOnce(self, tail: bytes) -> None:
        """
        A chunked body over the limit that comes in one piece with more
        chunks, its end and a pipelined request, or a malformed chunk, is
        refused once all the same: neither it nor the request behind it is
        answered.
        """
        server, transport = clientServer(maxBody=1000)
        with capturedLogs() as events:
            server.send(
                self.post(b"Transfer-Encoding: chunked")
                + b"3e8\r\n" + b"x" * 1000 + b"\r\n10\r\n" + b"x" * 16 + b"\r\n"
                + tail
            )  # fmt: skip
        [response] = parseResponses(written(transport))
        assert response.status == 413
        assert [e for e in events if "method" in e] == []
        assert refusals(events) == [(413, "body over the limit of 1000 bytes")]

    def test_otherChannel(self) -> None:
        """
        A L{StreamSite}'s request on a channel of another kind still
        discards its body, without a limit.
        """
        channel = HTTPChannel()
        channel.site = StreamSite(makeResource(clock=TurnClock()), reactor=TurnClock())  # type: ignore[attr-defined]  # as Site.buildProtocol sets it
        channel.requestFactory = StreamSite.requestFactory
        channel.makeConnection(StringTransport())
        channel.dataReceived(
            b"POST /zero HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n" + bytes(10)
        )
        [request] = channel.requests
        assert request.content.tell() == 10

    def test_hugeDeclaredLength(self) -> None:
        """
        A C{Content-Length} of thousands of digits (which Python will not
        convert) is a 413, not an error.
        """
        server, transport = clientServer()
        with capturedLogs() as events:
            server.send(self.post(b"Content-Length: " + b"9" * 5000))
        [response] = parseResponses(written(transport))
        assert response.status == 413
        assert [e for e in events if e.get("log_failure") is not None] == []


class LingerTests:
    def refused(self) -> tuple[Server, ClientTransport]:
        server, transport = clientServer(maxBody=10)
        server.send(b"POST /zero HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
        assert parseResponses(written(transport))[0].status == 413
        return server, transport

    def test_lingers(self) -> None:
        """
        After an error response, the server shuts down its sending side and
        reads (and throws away) what the client still sends, so that the
        response is not reset under the client; it closes once the client
        does, or after L{LINGER_SECONDS}, and aborts if the connection is
        not gone L{LINGER_SECONDS} later.
        """
        server, transport = self.refused()
        assert transport.calls[-3:] == [
            "unregisterProducer",
            "write",
            "loseWriteConnection",
        ]
        assert transport.reading
        server.send(b"x" * 100_000)
        server.clock.advance(LINGER_SECONDS - 0.1)
        assert "loseConnection" not in transport.calls
        server.clock.advance(0.1)
        assert transport.calls[-1] == "loseConnection"
        server.clock.advance(LINGER_SECONDS)
        assert transport.calls[-1] == "abortConnection"

    def test_boundedInBytes(self) -> None:
        """
        A client that sends more than L{LINGER_BYTES} meanwhile is closed at
        once.
        """
        server, transport = self.refused()
        for _ in range(LINGER_BYTES // 2**20):
            server.send(bytes(2**20))
        assert "loseConnection" not in transport.calls
        server.send(b"x")
        assert transport.calls[-1] == "loseConnection"

    def test_sendingOnDoesNotPutOffTheAbort(self) -> None:
        """
        A client that goes on sending once closed for sending too much is
        aborted L{LINGER_SECONDS} after the close all the same (as over TLS,
        where reading goes on after C{loseConnection}).
        """
        server, transport = self.refused()
        server.send(bytes(LINGER_BYTES + 1))
        assert transport.calls[-1] == "loseConnection"
        for _ in range(4):
            server.clock.advance(LINGER_SECONDS / 4 - 0.01)
            server.send(bytes(LINGER_BYTES + 1))
        assert transport.calls.count("loseConnection") == 1
        server.clock.advance(0.04)
        assert transport.calls[-1] == "abortConnection"

    def test_nothingLeftScheduled(self) -> None:
        """
        Once the connection is gone, nothing of it is left scheduled.
        """
        server, transport = self.refused()
        server.channel.connectionLost(Failure(ConnectionDone()))
        assert server.clock.getDelayedCalls() == []

    def test_notHalfCloseable(self) -> None:
        """
        Over a transport that cannot shut down its sending side alone (TLS),
        an error response closes the connection after it is sent.
        """
        server = Server(None, site={"maxBody": 10})
        server.send(b"POST /zero HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
        assert parseResponses(written(server.transport))[0].status == 413
        assert server.transport.disconnecting


class PipeliningTests:
    """
    A client that sends requests without reading its responses gets no more
    of them read than a small buffer holds, however it sends them; once it
    reads, all are answered, in order.
    """

    def flood(self, server: Server, transport: ClientTransport, requests: bytes) -> int:
        """
        Send C{requests} as a client does, as long as the server reads them,
        without reading responses; return how much was sent.
        """
        sent = 0
        while transport.reading and sent < len(requests):
            server.send(requests[sent : sent + 65536])
            sent += 65536
            for _ in range(3):
                server.clock.runTurn()
        return min(sent, len(requests))

    def readAll(
        self, server: Server, transport: ClientTransport, requests: bytes, sent: int
    ) -> bytes:
        """
        Now read the responses, sending the rest of the requests as the
        server reads them.
        """
        received = b""
        for _ in range(100_000):
            received += transport.read()
            ran = server.clock.runTurn()
            if transport.reading and sent < len(requests):
                server.send(requests[sent : sent + 65536])
                sent += 65536
            elif not ran and not written(transport):
                break
        return received

    def test_stalledResponse(self) -> None:
        """
        Requests pipelined behind a response the client does not read are
        not read beyond Twisted's 16 KiB of look-ahead and one read
        (Twisted, while the transport is full, reads them without end).
        """
        server, transport = clientServer()
        server.send(b"GET /zero?bytes=4M HTTP/1.1\r\nHost: t\r\n\r\n")
        for _ in range(10):
            server.clock.runTurn()
        assert transport.producerPaused
        pad = b"X-Pad: " + b"p" * 4000
        requests = b"".join(
            headWith(b"Host: t", pad, target=b"/zero?bytes=%d" % (index,))
            for index in range(512)
        )
        sent = self.flood(server, transport, requests)
        assert sent <= 128 * 1024 < len(requests)
        assert sum(map(len, server.channel._dataBuffer)) <= 16384 + 65536
        responses = parseResponses(self.readAll(server, transport, requests, sent))
        assert [int(r.headers["content-length"]) for r in responses] == [
            4 * 2**20,
            *range(512),
        ]
        assert {r.status for r in responses} == {200}

    def test_unreadResponses(self) -> None:
        """
        Small responses the client does not read are not answered beyond
        what fills the transport: then reading and answering stop until the
        client reads (Twisted would answer every request it reads, and read
        them all).
        """
        server, transport = clientServer()
        count = 5000
        requests = b"".join(
            b"GET /zero?bytes=%d HTTP/1.1\r\n\r\n" % (1000 + index % 100,)
            for index in range(count)
        )
        sent = self.flood(server, transport, requests)
        assert not transport.reading
        assert sent < len(requests)
        assert len(written(transport)) < 64 * 1024 + 2000
        responses = parseResponses(self.readAll(server, transport, requests, sent))
        assert [len(r.body) for r in responses] == [
            1000 + index % 100 for index in range(count)
        ]


class TwistedChannelTests:
    def test_details(self) -> None:
        """
        Twisted's L{HTTPChannel} still has every detail L{Channel} relies
        on (a new Twisted that changes them must fail here, not in
        production), and they still mean what they meant: while a request
        is answered, pipelined bytes wait in C{_dataBuffer}, and the
        transport pausing the channel is remembered in
        C{_waitingForTransport}.
        """
        channel = HTTPChannel()
        channel.makeConnection(StringTransport())
        for name in _CHANNEL_DETAILS:
            assert hasattr(channel, name), name
        assert channel._networkProducer is channel.transport  # type: ignore[comparison-overlap]  # typed IPushProducer; it is the transport
        server, transport = clientServer()
        server.send(b"GET /zero HTTP/1.1\r\n\r\nGET /")
        channel = server.channel
        assert channel._handlingRequest
        assert channel._dataBuffer == [b"GET /"]
        assert channel._waitingForTransport


class FreedTests:
    @pytest.mark.parametrize(
        "request_",
        [
            pytest.param(b"GET /zero?bytes=10 HTTP/1.1\r\nHost: t\r\n\r\n", id="GET"),
            pytest.param(
                b"POST /zero HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde",
                id="body",
            ),
            pytest.param(
                b"POST /zero HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\nabc",
                id="body cut short",
            ),
            pytest.param(
                b"GET /zero HTTP/1.1\r\nHost: t\r\n\r\n", id="endless, stopped"
            ),
        ],
    )
    def test_noCycle(self, request_: bytes) -> None:
        """
        A connection, its requests and their streams are freed as soon as
        it is closed, whatever they were doing: they hold no cycle that only
        the garbage collector would break, which on a busy server comes
        late, holding every such connection's memory until then.
        """
        gc.collect()
        gc.disable()
        try:
            server = Server(None)
            channel = weakref.ref(server.channel)
            server.send(request_)
            for _ in range(5):
                server.transport.drain()
                server.clock.runTurn()
            # As a socket transport loses its connection:
            transport = server.transport
            if transport.producer is not None:
                transport.producer.stopProducing()
                transport.producer = None
            server.channel.connectionLost(Failure(ConnectionDone()))
            del server
            assert channel() is None
        finally:
            gc.enable()


@define
class RecordingRegistry:
    """
    A registry that records what it is told.
    """

    events: list[tuple[str, object]] = field(factory=list)

    def opened(self, connection: Channel) -> None:
        self.events.append(("opened", connection))

    def closed(self, connection: Channel) -> None:
        self.events.append(("closed", connection))


class AbortTests:
    def test_abortStopsStreamFirst(self, root: Path) -> None:
        """
        L{Channel.abort} stops the stream of the response under way (its
        file is closed, never read again) before it aborts the connection;
        the request logs the reason given as its ending.
        """
        server, transport = abortNoting(root)
        server.send(b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        [file] = server.files
        assert not file.closed
        with capturedLogs() as events:
            server.channel.abort("server shutdown")
            assert transport.noted == [[True]]
            reads = file.reads
            server.turn()
            server.channel.connectionLost(Failure(ConnectionAborted()))
        assert file.reads == reads
        [event] = [e for e in events if "status" in e]
        assert event["reason"] == "server shutdown"

    def test_abortBetweenRequests(self) -> None:
        """
        L{Channel.abort} on a connection waiting for a request aborts it.
        """
        server, transport = abortNoting(None)
        server.get("/zero?bytes=10")
        with capturedLogs() as events:
            server.channel.abort("server shutdown")
        assert transport.noted == [[]]
        assert not [e for e in events if "status" in e]

    def test_registry(self) -> None:
        """
        A site's registry is told of each channel when it opens and when it
        closes.
        """
        registry = RecordingRegistry()
        server = Server(
            None,
            site={"registry": registry},  # type: ignore[arg-type]  # a recording stand-in for the service's registry
        )
        assert registry.events == [("opened", server.channel)]
        server.channel.connectionLost(Failure(ConnectionDone()))
        assert registry.events == [
            ("opened", server.channel),
            ("closed", server.channel),
        ]
