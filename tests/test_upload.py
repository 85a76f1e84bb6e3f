"""
Tests for L{twisted_zero._upload}: the upload sink counts and throws away
what is sent to it, answers with its length and time, and holds a client to
its limits.
"""

from __future__ import annotations

import io
import json

import pytest
from twisted.internet.interfaces import IReactorTime
from twisted.logger import capturedLogs
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from twisted_zero._metrics import Metrics
from twisted_zero._protection import Protection
from twisted_zero._upload import Upload, isUpload

from .helpers import TurnClock, parseResponses
from .webserver import Server, written


def post(
    body: bytes,
    target: bytes = b"/upload",
    method: bytes = b"POST",
    chunked: bool = False,
) -> tuple[bytes, bytes]:
    """
    A request head for C{body} and the body as it is sent.
    """
    if chunked:
        field = b"Transfer-Encoding: chunked"
        sent = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    else:
        field = b"Content-Length: %d" % (len(body),)
        sent = body
    head = b"%s %s HTTP/1.1\r\nHost: t\r\n%s\r\n\r\n" % (method, target, field)
    return head, sent


def answer(server: Server) -> tuple[int, dict[str, object]]:
    [response] = parseResponses(written(server.transport))
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    document = json.loads(response.body)
    assert isinstance(document, dict)
    return response.status, document


class TargetTests:
    @pytest.mark.parametrize(
        "target",
        [
            b"/upload",
            b"/upload/",
            b"/upload?x=1",
            b"/uplo%61d",
            b"http://example.com/upload",
            b"https://example.com:8443/upload/?a",
        ],
    )
    def test_upload(self, target: bytes) -> None:
        """
        The sink's path, in any form Twisted's traversal finds it by.
        """
        assert isUpload(target)

    @pytest.mark.parametrize(
        "target",
        [b"/", b"/zero", b"/upload/x", b"/upload//", b"/uploads", b"//upload", b"*"],
    )
    def test_other(self, target: bytes) -> None:
        """
        Any other path is not the sink.
        """
        assert not isUpload(target)


class SinkTests:
    @pytest.mark.parametrize("method", [b"POST", b"PUT"])
    @pytest.mark.parametrize("chunked", [False, True])
    def test_counted(self, method: bytes, chunked: bool) -> None:
        """
        A body sent in pieces over time is counted, never stored, and
        answered with its length and the seconds from the end of the head
        to its end.
        """
        server = Server(None)
        body = bytes(300_000)
        head, sent = post(body, method=method, chunked=chunked)
        server.send(head)
        for offset in range(0, len(sent), 100_000):
            server.clock.advance(0.5)
            server.send(sent[offset : offset + 100_000])
        status, document = answer(server)
        assert status == 200
        assert document == {"bytes": len(body), "seconds": 2.0 if chunked else 1.5}

    def test_empty(self) -> None:
        """
        An empty body is answered at once: 0 bytes in 0 seconds.
        """
        server = Server(None)
        head, sent = post(b"")
        server.send(head + sent)
        assert answer(server) == (200, {"bytes": 0, "seconds": 0.0})

    def test_keepAlive(self) -> None:
        """
        Uploads follow one another on one connection, each counted alone.
        """
        server = Server(None)
        for size in (10, 20_000, 5):
            head, sent = post(bytes(size))
            server.send(head + sent)
            status, document = answer(server)
            server.transport.clear()
            assert (status, document["bytes"]) == (200, size)

    @pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
    def test_notAllowed(self, method: str) -> None:
        """
        Only C{POST} and C{PUT} upload: anything else is a 405 that says
        which methods are.
        """
        response = Server(None).get("/upload", method=method)
        assert response.status == 405
        assert response.headers["allow"] == "POST, PUT"

    def test_belowUpload(self) -> None:
        """
        A path below the sink is a 404, under the ordinary body limit.
        """
        server = Server(None, site={"maxBody": 10, "maxUpload": None})
        head, sent = post(b"x" * 5, target=b"/upload/x")
        server.send(head + sent)
        [response] = parseResponses(written(server.transport))
        assert response.status == 404

    def test_logged(self) -> None:
        """
        The request's end event tells how many bytes of body came.
        """
        server = Server(None)
        head, sent = post(bytes(12_345))
        with capturedLogs() as events:
            server.send(head + sent)
        [event] = [e for e in events if e.get("method") == "POST"]
        assert (event["path"], event["status"], event["received"]) == (
            "/upload",
            200,
            12_345,
        )

    def test_metrics(self) -> None:
        """
        Bodies are counted in the metrics as they arrive, before they end.
        """
        server = Server(None)
        head, sent = post(bytes(50_000))
        server.send(head + sent[:20_000])
        assert sample(server.site.metrics) == 20_000
        server.send(sent[20_000:])
        assert sample(server.site.metrics) == 50_000


def sample(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "twisted_zero_received_bytes_total", {"kind": "http"}
    )
    assert value is not None
    return value


def limitedTo30s(clock: IReactorTime) -> Protection:
    return Protection(clock, maxDuration=30.0)


class LimitTests:
    def test_unlimitedByDefault(self) -> None:
        """
        An upload is not held to the ordinary body limit.
        """
        server = Server(None, site={"maxBody": 10})
        head, sent = post(bytes(100_000))
        server.send(head + sent)
        assert answer(server)[1]["bytes"] == 100_000

    def test_declaredOverLimit(self) -> None:
        """
        An upload declared over C{maxUpload} gets a 413 before a byte of it
        is read (and no C{100 Continue}).
        """
        server = Server(None, site={"maxUpload": 1000})
        head = (
            b"PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        server.send(head)
        [response] = parseResponses(written(server.transport))
        assert response.status == 413
        assert b"declared body of 1001 bytes over the limit of 1000" in response.body
        assert b"100 Continue" not in written(server.transport)

    def test_chunkedOverLimit(self) -> None:
        """
        A chunked upload is cut with a 413 as soon as it goes over
        C{maxUpload}, and nothing more of it is counted.
        """
        server = Server(None, site={"maxUpload": 1000})
        head, _ = post(b"", chunked=True)
        server.send(head + b"3e8\r\n" + bytes(1000) + b"\r\n")
        assert written(server.transport) == b""
        server.send(b"1\r\nx\r\n")
        [response] = parseResponses(written(server.transport))
        assert response.status == 413
        server.send(b"100\r\n" + bytes(256) + b"\r\n")
        assert sample(server.site.metrics) == 1001

    def test_otherBodiesKeepTheirLimit(self) -> None:
        """
        With uploads unlimited, a body to any other path still gets a 413
        over the ordinary limit.
        """
        server = Server(None, site={"maxBody": 10, "maxUpload": None})
        head, sent = post(b"x" * 11, target=b"/zero")
        server.send(head + sent)
        [response] = parseResponses(written(server.transport))
        assert response.status == 413

    def test_maxDuration(self) -> None:
        """
        An upload still arriving after the maximum duration is answered
        with a 408 and its connection closed: a client trickling a body
        holds its connection no longer than one downloading.
        """

        server = Server(None, protection=limitedTo30s)
        head, sent = post(bytes(1000))
        server.send(head)
        for offset in range(29):
            server.clock.advance(1)
            server.send(sent[offset : offset + 1])
        assert written(server.transport) == b""
        with capturedLogs() as events:
            server.clock.advance(1)
        [response] = parseResponses(written(server.transport))
        assert response.status == 408
        assert [e["why"] for e in events if "why" in e] == [
            "the request body did not arrive within the maximum duration (30s)"
        ]

    def test_maxDurationEndsWithTheBody(self) -> None:
        """
        An upload that ends in time leaves no timer behind.
        """

        server = Server(None, protection=limitedTo30s)
        head, sent = post(bytes(1000))
        server.send(head)
        timers = [call.func for call in server.clock.calls]
        assert server.channel._bodyTimedOut in timers
        server.send(sent)
        assert answer(server)[0] == 200
        timers = [call.func for call in server.clock.calls]
        assert server.channel._bodyTimedOut not in timers


class AbortedTests:
    def test_clientLeavesMidUpload(self) -> None:
        """
        A client that leaves in the middle of an upload leaves nothing
        behind: no timer, no channel, no request logged as answered.
        """
        server = Server(None, protection=limitedTo30s)
        head, sent = post(bytes(100_000))
        with capturedLogs() as events:
            server.send(head + sent[:40_000])
            server.leave()
        assert server.clock.calls == []
        assert server.site.channels == set()
        assert [e for e in events if e.get("method") == "POST"] == []
        assert sample(server.site.metrics) == 40_000


class OtherSiteTests:
    def test_storedBody(self) -> None:
        """
        Under a site that stores bodies, only their length is known.
        """
        request = Request(DummyChannel())
        request.method = b"PUT"
        request.postpath = []
        request.content = io.BytesIO(b"abcdef")
        resource = Upload(clock=TurnClock())
        assert json.loads(resource.render(request)) == {"bytes": 6, "seconds": None}
