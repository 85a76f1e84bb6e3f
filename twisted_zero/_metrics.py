"""
Prometheus metrics: counters and gauges in a registry of their own, and the
observer a stream reports its bytes and pauses to. Served by
L{twisted_zero._resources.MetricsResource}.
"""

from __future__ import annotations

from attrs import define, field
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

_PREFIX = "twisted_zero"


class Metrics:
    """
    All the daemon's metrics, in their own L{CollectorRegistry} (never the
    global one), so that two instances, as in tests, never share a sample.

    Label values are used exactly as passed: callers pass values from small
    fixed sets (C{kind}: C{"tcp"} or C{"http"}; C{source}: C{"zero"},
    C{"chargen"}, C{"random"} or C{"file"}; C{why}: C{"max-connections"} or
    C{"max-per-ip"}), never anything a client chose.

    The two gauges are never clamped: they stay non-negative because calls
    come in pairs. Call L{connectionClosed} once for each L{connectionOpened}
    with the same C{kind}, and L{producerResumed} only for a producer that
    L{producerPaused} counted and that has not been counted as resumed since
    (a producer stopped while paused must be counted as resumed once too).

    @ivar registry: The registry holding every metric here, to be served.
    """

    registry: CollectorRegistry

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """
        @param registry: Where to register the metrics; a new, empty
            registry if not given.
        @raise ValueError: If C{registry} already holds metrics of these names.
        """
        if registry is None:
            registry = CollectorRegistry()
        self.registry = registry
        self._connectionsActive = Gauge(
            f"{_PREFIX}_connections_active",
            "Client connections open now.",
            ["kind"],
            registry=registry,
        )
        self._connectionsTotal = Counter(
            f"{_PREFIX}_connections",
            "Client connections accepted.",
            ["kind"],
            registry=registry,
        )
        self._connectionsClosed = Counter(
            f"{_PREFIX}_connections_closed",
            "Client connections closed, by why they ended.",
            ["kind", "reason"],
            registry=registry,
        )
        self._sentBytes = Counter(
            f"{_PREFIX}_sent_bytes",
            "Bytes of response data handed to transports, by source.",
            ["source"],
            unit="bytes",
            registry=registry,
        )
        self._receivedBytes = Counter(
            f"{_PREFIX}_received_bytes",
            "Bytes received from clients: what raw streams' clients send, "
            "and HTTP request bodies (uploads).",
            ["kind"],
            unit="bytes",
            registry=registry,
        )
        self._diskReadBytes = Counter(
            f"{_PREFIX}_disk_read_bytes",
            "Bytes read from files to be sent.",
            unit="bytes",
            registry=registry,
        )
        self._producersPaused = Gauge(
            f"{_PREFIX}_producers_paused",
            "Producers paused now because their client is not reading.",
            registry=registry,
        )
        self._stallAborts = Counter(
            f"{_PREFIX}_stall_aborts",
            "Connections aborted because their client stopped reading too long.",
            ["kind"],
            registry=registry,
        )
        self._rejected = Counter(
            f"{_PREFIX}_rejected_connections",
            "Connections refused by a limit, by which limit.",
            ["kind", "why"],
            registry=registry,
        )
        self._rateLimitWaits = Counter(
            f"{_PREFIX}_rate_limit_waits",
            "Times a stream waited for the rate limit.",
            registry=registry,
        )
        self._rateLimitWaitSeconds = Counter(
            f"{_PREFIX}_rate_limit_wait_seconds",
            "Seconds streams spent waiting for the rate limit.",
            unit="seconds",
            registry=registry,
        )

    def connectionOpened(self, kind: str) -> None:
        """
        Count a new connection of C{kind}, open now and in all.
        """
        self._connectionsActive.labels(kind).inc()
        self._connectionsTotal.labels(kind).inc()

    def connectionClosed(self, kind: str, reason: str) -> None:
        """
        Count a connection of C{kind}, counted by L{connectionOpened}, as
        closed for C{reason}.
        """
        self._connectionsActive.labels(kind).dec()
        self._connectionsClosed.labels(kind, reason).inc()

    def bytesSent(self, source: str, count: int) -> None:
        """
        Count C{count} bytes of C{source} written to a transport.
        """
        self._sentBytes.labels(source).inc(count)

    def bytesReceived(self, kind: str, count: int) -> None:
        """
        Count C{count} bytes received from a client of C{kind}.
        """
        self._receivedBytes.labels(kind).inc(count)

    def bytesRead(self, count: int) -> None:
        """
        Count C{count} bytes read from a file.
        """
        self._diskReadBytes.inc(count)

    def producerPaused(self) -> None:
        """
        Count one more producer paused now.
        """
        self._producersPaused.inc()

    def producerResumed(self) -> None:
        """
        Count one producer, counted by L{producerPaused}, as no longer paused.
        """
        self._producersPaused.dec()

    def stallAborted(self, kind: str) -> None:
        """
        Count a connection of C{kind} aborted for a stalled client.
        """
        self._stallAborts.labels(kind).inc()

    def rejected(self, kind: str, why: str) -> None:
        """
        Count a connection of C{kind} refused by the limit C{why}.
        """
        self._rejected.labels(kind, why).inc()

    def rateLimitWaited(self, seconds: float) -> None:
        """
        Count one wait of C{seconds} for the rate limit.
        """
        self._rateLimitWaits.inc()
        self._rateLimitWaitSeconds.inc(seconds)

    def render(self) -> tuple[bytes, str]:
        """
        @return: The text exposition of every metric and its content type.
        """
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@define
class MetricsObserver:
    """
    Count a stream's bytes (sent, and read from disk for a file) and pauses.

    @param metrics: Where to count them.
    @param description: The stream's source (L{ISource.description}): what
        comes before its first C{:} is the C{source} label.
    """

    _metrics: Metrics = field(alias="metrics")
    _description: str = field(alias="description")
    _kind: str = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._kind = self._description.partition(":")[0]

    def chunkWritten(self, count: int) -> None:
        """
        Count C{count} bytes sent (and read, for a file).
        """
        self._metrics.bytesSent(self._kind, count)
        if self._kind == "file":
            self._metrics.bytesRead(count)

    def pauseChanged(self, paused: bool) -> None:
        """
        Count the stream's producer as paused or no longer paused.
        """
        if paused:
            self._metrics.producerPaused()
        else:
            self._metrics.producerResumed()
