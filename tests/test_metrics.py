"""
Tests for L{twisted_zero._metrics}: the counters and gauges, their text
exposition, and the resource serving it through a real L{Site}.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.server import Site

from twisted_zero._metrics import Metrics, MetricsObserver
from twisted_zero._resources import MetricsResource

FAMILIES = {
    "twisted_zero_connections_active",
    "twisted_zero_connections",
    "twisted_zero_connections_closed",
    "twisted_zero_sent_bytes",
    "twisted_zero_disk_read_bytes",
    "twisted_zero_producers_paused",
    "twisted_zero_stall_aborts",
    "twisted_zero_rejected_connections",
    "twisted_zero_rate_limit_waits",
    "twisted_zero_rate_limit_wait_seconds",
}


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """
    Every sample in C{metrics} but the C{_created} timestamps, by name and
    labels.
    """
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def changes(
    before: dict[tuple[str, frozenset[tuple[str, str]]], float],
    after: dict[tuple[str, frozenset[tuple[str, str]]], float],
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """
    The samples that differ from C{before} to C{after}, with their change.
    """
    return {
        key: value - before.get(key, 0.0)
        for key, value in after.items()
        if value != before.get(key, 0.0)
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


class MetricsTests:
    def test_connectionOpened(self) -> None:
        """
        L{Metrics.connectionOpened} adds one to the active gauge and the total
        counter of its kind, and changes nothing else.
        """
        metrics = Metrics()
        before = samples(metrics)
        metrics.connectionOpened("tcp")
        assert changes(before, samples(metrics)) == {
            key("twisted_zero_connections_active", kind="tcp"): 1.0,
            key("twisted_zero_connections_total", kind="tcp"): 1.0,
        }
        metrics.connectionOpened("tcp")
        metrics.connectionOpened("http")
        registry = metrics.registry
        assert (
            registry.get_sample_value(
                "twisted_zero_connections_active", {"kind": "tcp"}
            )
            == 2.0
        )
        assert (
            registry.get_sample_value(
                "twisted_zero_connections_total", {"kind": "http"}
            )
            == 1.0
        )

    def test_connectionClosed(self) -> None:
        """
        L{Metrics.connectionClosed} takes one from the active gauge of its kind
        and adds one to the closed counter of its kind and reason, and changes
        nothing else.
        """
        metrics = Metrics()
        metrics.connectionOpened("http")
        metrics.connectionOpened("http")
        before = samples(metrics)
        metrics.connectionClosed("http", "client closed")
        assert changes(before, samples(metrics)) == {
            key("twisted_zero_connections_active", kind="http"): -1.0,
            key(
                "twisted_zero_connections_closed_total",
                kind="http",
                reason="client closed",
            ): 1.0,
        }
        metrics.connectionClosed("http", "stalled")
        registry = metrics.registry
        assert (
            registry.get_sample_value(
                "twisted_zero_connections_active", {"kind": "http"}
            )
            == 0.0
        )
        assert (
            registry.get_sample_value(
                "twisted_zero_connections_closed_total",
                {"kind": "http", "reason": "stalled"},
            )
            == 1.0
        )
        assert (
            registry.get_sample_value(
                "twisted_zero_connections_total", {"kind": "http"}
            )
            == 2.0
        )

    @pytest.mark.parametrize("source", ["zero", "chargen", "random", "file"])
    def test_bytesSent(self, source: str) -> None:
        """
        L{Metrics.bytesSent} adds the count to the sent-bytes counter of its
        source only.
        """
        metrics = Metrics()
        before = samples(metrics)
        metrics.bytesSent(source, 65536)
        metrics.bytesSent(source, 10)
        assert changes(before, samples(metrics)) == {
            key("twisted_zero_sent_bytes_total", source=source): 65546.0,
        }

    def test_bytesRead(self) -> None:
        """
        L{Metrics.bytesRead} adds the count to the disk-read counter only.
        """
        metrics = Metrics()
        before = samples(metrics)
        metrics.bytesRead(4096)
        metrics.bytesRead(1)
        assert changes(before, samples(metrics)) == {
            key("twisted_zero_disk_read_bytes_total"): 4097.0,
        }
        assert (
            metrics.registry.get_sample_value("twisted_zero_disk_read_bytes_total")
            == 4097.0
        )

    def test_producerPausedResumed(self) -> None:
        """
        L{Metrics.producerPaused} and L{Metrics.producerResumed} add and take
        one from the paused-producers gauge only, which is back at zero once
        each pause has its resume.
        """
        metrics = Metrics()
        before = samples(metrics)
        metrics.producerPaused()
        metrics.producerPaused()
        assert changes(before, samples(metrics)) == {
            key("twisted_zero_producers_paused"): 2.0,
        }
        metrics.producerResumed()
        assert metrics.registry.get_sample_value("twisted_zero_producers_paused") == 1.0
        metrics.producerResumed()
        assert changes(before, samples(metrics)) == {}

    def test_stallAborted(self) -> None:
        """
        L{Metrics.stallAborted} adds one to the stall-abort counter of its kind
        only.
        """
        metrics = Metrics()
        before = samples(metrics)
        metrics.stallAborted("tcp")
        assert changes(before, samples(metrics)) == {
            key("twisted_zero_stall_aborts_total", kind="tcp"): 1.0,
        }

    @pytest.mark.parametrize("why", ["max-connections", "max-per-ip"])
    def test_rejected(self, why: str) -> None:
        """
        L{Metrics.rejected} adds one to the rejected counter of its kind and
        reason only.
        """
        metrics = Metrics()
        before = samples(metrics)
        metrics.rejected("http", why)
        assert changes(before, samples(metrics)) == {
            key("twisted_zero_rejected_connections_total", kind="http", why=why): 1.0,
        }

    def test_rateLimitWaited(self) -> None:
        """
        L{Metrics.rateLimitWaited} adds one to the wait counter and the seconds
        to the waited-seconds counter, and changes nothing else.
        """
        metrics = Metrics()
        before = samples(metrics)
        metrics.rateLimitWaited(0.25)
        metrics.rateLimitWaited(1.5)
        assert changes(before, samples(metrics)) == {
            key("twisted_zero_rate_limit_waits_total"): 2.0,
            key("twisted_zero_rate_limit_wait_seconds_total"): 1.75,
        }

    def test_independent(self) -> None:
        """
        Two L{Metrics} have registries of their own, neither the global one:
        counting in one leaves the other unchanged.
        """
        from prometheus_client import REGISTRY

        one, other = Metrics(), Metrics()
        assert one.registry is not other.registry
        assert REGISTRY not in (one.registry, other.registry)
        one.connectionOpened("tcp")
        one.bytesSent("zero", 100)
        assert (
            one.registry.get_sample_value(
                "twisted_zero_sent_bytes_total", {"source": "zero"}
            )
            == 100.0
        )
        assert (
            other.registry.get_sample_value(
                "twisted_zero_sent_bytes_total", {"source": "zero"}
            )
            is None
        )
        assert (
            other.registry.get_sample_value(
                "twisted_zero_connections_active", {"kind": "tcp"}
            )
            is None
        )
        assert REGISTRY.get_sample_value("twisted_zero_producers_paused") is None

    def test_givenRegistry(self) -> None:
        """
        L{Metrics} registers its metrics in the registry it is given.
        """
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        assert metrics.registry is registry
        metrics.bytesRead(7)
        assert registry.get_sample_value("twisted_zero_disk_read_bytes_total") == 7.0

    def test_registryTwice(self) -> None:
        """
        A second L{Metrics} on the same registry is refused with
        L{ValueError}, as its samples would clash.
        """
        registry = CollectorRegistry()
        Metrics(registry)
        with pytest.raises(ValueError, match="Duplicated"):
            Metrics(registry)

    def test_render(self) -> None:
        """
        L{Metrics.render} gives a text exposition that parses, with every
        family, its help text and the current values, and its content type.
        """
        metrics = Metrics()
        metrics.connectionOpened("tcp")
        metrics.bytesSent("file", 123)
        body, contentType = metrics.render()
        assert contentType == CONTENT_TYPE_LATEST
        families = {
            family.name: family
            for family in text_string_to_metric_families(body.decode("utf-8"))
        }
        assert set(families) >= FAMILIES
        for name in FAMILIES:
            assert families[name].documentation
        [sample] = families["twisted_zero_sent_bytes"].samples
        assert sample.name == "twisted_zero_sent_bytes_total"
        assert sample.labels == {"source": "file"}
        assert sample.value == 123.0


class Response:
    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()


def serve(metrics: Metrics, path: str, method: str = "GET") -> Response:
    """
    Send one request to a L{Site} of a L{MetricsResource} over a
    L{StringTransport} and parse what it answers.
    """
    site = Site(MetricsResource(metrics), reactor=Clock())
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    response = Response(transport.value())
    channel.connectionLost(Failure(ConnectionDone()))
    return response


class MetricsResourceTests:
    @pytest.mark.parametrize("path", ["/metrics", "/", "/metrics?x=1"])
    def test_get(self, path: str) -> None:
        """
        C{GET /metrics} (or C{/}) answers 200 with the exposition, its content
        type, its length and C{Cache-Control: no-store}.
        """
        metrics = Metrics()
        metrics.connectionOpened("http")
        metrics.bytesSent("zero", 42)
        response = serve(metrics, path)
        assert response.status == 200
        assert response.headers["content-type"] == CONTENT_TYPE_LATEST
        assert response.headers["content-type"].startswith("text/plain; version=")
        assert response.headers["cache-control"] == "no-store"
        assert int(response.headers["content-length"]) == len(response.body)
        families = {
            family.name: family
            for family in text_string_to_metric_families(response.body.decode())
        }
        assert set(families) >= FAMILIES
        assert b'twisted_zero_sent_bytes_total{source="zero"} 42.0\n' in response.body
        assert b'twisted_zero_connections_active{kind="http"} 1.0\n' in response.body

    def test_current(self) -> None:
        """
        Each request sees the values at that time.
        """
        metrics = Metrics()
        assert b"twisted_zero_disk_read_bytes_total 0.0\n" in serve(metrics, "/").body
        metrics.bytesRead(5)
        assert b"twisted_zero_disk_read_bytes_total 5.0\n" in serve(metrics, "/").body

    def test_head(self) -> None:
        """
        C{HEAD /metrics} has the headers of C{GET} and no body.
        """
        metrics = Metrics()
        get = serve(metrics, "/metrics")
        head = serve(metrics, "/metrics", method="HEAD")
        assert head.status == 200
        assert head.body == b""
        assert head.headers["content-type"] == CONTENT_TYPE_LATEST
        assert head.headers["cache-control"] == "no-store"
        assert head.headers["content-length"] == get.headers["content-length"]

    @pytest.mark.parametrize("path", ["/other", "/metrics/", "/metrics/x", "/x/"])
    def test_notFound(self, path: str) -> None:
        """
        Other paths are 404, in plain text.
        """
        response = serve(Metrics(), path)
        assert response.status == 404
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.body == b"404 Not Found\n"

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
    def test_notAllowed(self, method: str) -> None:
        """
        Other methods than C{GET} and C{HEAD} are 405 with an C{Allow} header.
        """
        response = serve(Metrics(), "/metrics", method=method)
        assert response.status == 405
        assert response.headers["allow"] == "GET, HEAD"
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert b"twisted_zero" not in response.body


class ImportTests:
    def test_noGlobalReactor(self) -> None:
        """
        Importing L{twisted_zero._metrics} installs no reactor.
        """
        code = (
            "import sys, twisted_zero._metrics\n"
            "assert 'twisted.internet.reactor' not in sys.modules\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


class MetricsObserverTests:
    def test_chunks(self) -> None:
        """
        L{MetricsObserver} counts a stream's bytes as sent by its source's
        kind (what its description says before C{:}), and a file's as read
        from disk too.
        """
        metrics = Metrics()
        before = samples(metrics)
        MetricsObserver(metrics, "file:/data.bin").chunkWritten(100)
        MetricsObserver(metrics, "zero").chunkWritten(7)
        assert changes(before, samples(metrics)) == {
            ("twisted_zero_sent_bytes_total", frozenset({("source", "file")})): 100.0,
            ("twisted_zero_sent_bytes_total", frozenset({("source", "zero")})): 7.0,
            ("twisted_zero_disk_read_bytes_total", frozenset()): 100.0,
        }

    def test_pauses(self) -> None:
        """
        L{MetricsObserver} counts its stream's producer as paused, then as
        no longer paused.
        """
        metrics = Metrics()
        observer = MetricsObserver(metrics=metrics, description="chargen")
        observer.pauseChanged(True)
        assert metrics.registry.get_sample_value("twisted_zero_producers_paused") == 1.0
        observer.pauseChanged(False)
        assert metrics.registry.get_sample_value("twisted_zero_producers_paused") == 0.0
