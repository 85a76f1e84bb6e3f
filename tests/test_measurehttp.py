"""
Tests for L{twisted_zero._measurehttp}: the measuring client's HTTP
download counts exactly the body, however the response is framed and cut
into reads.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import SSL
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from twisted_zero._measurehttp import MAX_HEAD, HTTPReceiver, getRequest
from twisted_zero._measurereport import StreamMeter
from twisted_zero._measurestreams import MeasureError

from .helpers import failureResultOf, successResultOf

URL = "http://example.com:8080/zero?seconds=1"


def receiver(limit: int | None = None) -> tuple[HTTPReceiver, StringTransport]:
    meter = StreamMeter(Clock(), 1)
    protocol = HTTPReceiver(meter, limit, request=getRequest(URL), url=URL)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def feed(protocol: HTTPReceiver, data: bytes, cuts: list[int]) -> None:
    """
    Deliver C{data} in reads cut at C{cuts}.
    """
    start = 0
    for cut in sorted(set(cuts)):
        protocol.dataReceived(data[start:cut])
        start = cut
    protocol.dataReceived(data[start:])


def chunked(body: list[bytes]) -> bytes:
    framed = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in body if chunk)
    return framed + b"0\r\n\r\n"


OK = b"HTTP/1.1 200 OK\r\n"


def lose(protocol: HTTPReceiver, reason: type[Exception] = ConnectionDone) -> None:
    protocol.connectionLost(Failure(reason()))


class RequestTests:
    def test_request(self) -> None:
        """
        One C{GET} of the URL's path and query, unencoded, on a connection
        closed after it.
        """
        assert getRequest(URL).startswith(
            b"GET /zero?seconds=1 HTTP/1.1\r\nHost: example.com:8080\r\n"
        )
        assert b"Accept-Encoding: identity\r\nConnection: close\r\n\r\n" in (
            getRequest(URL)
        )
        assert getRequest("https://u:p@[::1]").startswith(
            b"GET / HTTP/1.1\r\nHost: [::1]\r\n"
        )

    def test_sent(self) -> None:
        """
        The request is sent on connecting.
        """
        protocol, transport = receiver()
        assert transport.value() == getRequest(URL)


class BodyTests:
    @given(
        body=st.lists(st.binary(max_size=300), max_size=8),
        cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12),
        extension=st.booleans(),
    )
    def test_chunked(self, body: list[bytes], cuts: list[int], extension: bool) -> None:
        """
        A chunked body is counted exactly, however its framing is cut
        across reads; its last chunk ends the stream as asked.
        """
        protocol, transport = receiver()
        framed = chunked(body)
        if extension:
            framed = framed.replace(b"\r\n", b";x=1\r\n", 1) if body else framed
        head = OK + b"Transfer-Encoding: chunked\r\n\r\n"
        feed(protocol, head + framed, cuts)
        assert protocol.meter.bytes == sum(map(len, body))
        assert transport.disconnecting
        lose(protocol)
        assert successResultOf(protocol.finished) is None

    @given(
        size=st.integers(min_value=0, max_value=2000),
        cuts=st.lists(st.integers(min_value=0, max_value=2100), max_size=8),
    )
    def test_length(self, size: int, cuts: list[int]) -> None:
        """
        A body of known length is counted exactly; bytes after it are not.
        """
        protocol, transport = receiver()
        head = OK + b"Content-Length: %d\r\n\r\n" % (size,)
        feed(protocol, head + bytes(size) + b"extra", cuts)
        assert protocol.meter.bytes == size
        assert transport.disconnecting
        lose(protocol)
        assert successResultOf(protocol.finished) is None

    def test_untilClose(self) -> None:
        """
        A body without length or chunks ends with the connection, cleanly.
        """
        protocol, transport = receiver()
        protocol.dataReceived(OK + b"\r\n" + bytes(100))
        protocol.dataReceived(bytes(50))
        lose(protocol)
        assert protocol.meter.bytes == 150
        assert successResultOf(protocol.finished) is None

    def test_limit(self) -> None:
        """
        With a limit, the stream ends as asked at exactly that many bytes,
        aborting the connection.
        """
        protocol, transport = receiver(limit=1000)
        protocol.dataReceived(OK + b"Transfer-Encoding: chunked\r\n\r\n")
        protocol.dataReceived(b"1000\r\n" + bytes(4096) + b"\r\n")
        assert protocol.meter.bytes == 1000
        assert transport.disconnecting
        lose(protocol, ConnectionLost)
        assert successResultOf(protocol.finished) is None

    def test_interim(self) -> None:
        """
        An interim response (C{100 Continue}) is skipped.
        """
        protocol, transport = receiver()
        protocol.dataReceived(
            b"HTTP/1.1 100 Continue\r\n\r\n" + OK + b"Content-Length: 3\r\n\r\nabc"
        )
        assert protocol.meter.bytes == 3

    def test_started(self) -> None:
        """
        The stream's clock starts with the first byte of body, not of the
        head.
        """
        protocol, transport = receiver()
        protocol.meter.clock.advance(5)  # type: ignore[attr-defined]  # a Clock
        protocol.dataReceived(OK + b"Content-Length: 10\r\n")
        assert protocol.meter.started is None
        protocol.dataReceived(b"\r\n")
        assert protocol.meter.started is None
        protocol.dataReceived(b"x")
        assert protocol.meter.started == 5


class FailureTests:
    def fails(self, protocol: HTTPReceiver) -> str:
        return str(failureResultOf(protocol.finished, MeasureError).value)

    def test_status(self) -> None:
        """
        A status other than 2xx fails the stream with it, and aborts.
        """
        protocol, transport = receiver()
        protocol.dataReceived(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n")
        assert transport.disconnecting
        lose(protocol, ConnectionLost)
        assert self.fails(protocol) == f"{URL}: HTTP 404 Not Found"

    @pytest.mark.parametrize(
        ("response", "why"),
        [
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.1 response"),
            (OK + b"Content-Length: lots\r\n\r\n", "a bad Content-Length"),
            (
                OK + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
                "a malformed chunk",
            ),
            (
                OK + b"Transfer-Encoding: chunked\r\n\r\n" + b"1" * (MAX_HEAD + 1),
                f"a chunk-size line over {MAX_HEAD} bytes",
            ),
            (OK + b"X: " + b"a" * MAX_HEAD, f"a response head over {MAX_HEAD} bytes"),
        ],
    )
    def test_malformed(self, response: bytes, why: str) -> None:
        """
        A response that is not HTTP, or is framed wrongly, fails the stream
        in one line and aborts the connection.
        """
        protocol, transport = receiver()
        protocol.dataReceived(response)
        assert transport.disconnecting
        lose(protocol, ConnectionLost)
        assert self.fails(protocol) == f"{URL}: {why}"

    @pytest.mark.parametrize(
        "head",
        [b"Content-Length: 10\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\n5\r\nab"],
    )
    def test_cutShort(self, head: bytes) -> None:
        """
        A body cut short fails the stream, with how much came.
        """
        protocol, transport = receiver()
        protocol.dataReceived(OK + head + b"ab")
        lose(protocol)
        assert self.fails(protocol).startswith(
            "the server ended stream 1's response early, after "
        )

    def test_noResponse(self) -> None:
        """
        A connection lost before a byte of response (a TLS handshake
        refused) is a failure to connect, in a few words.
        """
        protocol, transport = receiver()
        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        protocol.connectionLost(Failure(error))
        assert self.fails(protocol) == (
            f"cannot connect to {URL}: TLS: certificate verify failed"
        )
