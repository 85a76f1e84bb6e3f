"""
The stream wiring of a response body: a L{StreamProducer} registered on the
request, under the server's protection (rates, stall watch, maximum
duration) and counted in its metrics; the request finished at the end, the
connection aborted (the producer stopped first) when the body cannot be
whole.
"""

from __future__ import annotations

from functools import partial

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from ._httpoutlet import requestOutlet
from ._iopool import IOPool
from ._metrics import Metrics, MetricsObserver
from ._producer import ConnectionBroken, StreamProducer, StreamStopped
from ._protection import Protection
from ._request import StreamRequest, abortTransport, peer
from ._sizes import parseSize
from ._sources import ISource, SourceError

_log = Logger()


def requestedRate(request: Request) -> float | None:
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


@frozen
class ResponseStreamer:
    """
    Stream sources as response bodies, each with its own push producer.

    @ivar clock: Times the streams (rates, stall watch, deadline).
    @ivar protection: Rates, stall timeout and maximum duration for each
        stream, and the unsent-bytes limit of its connection.
    @ivar metrics: Where the bytes sent and pauses are counted; L{None} for
        nowhere.
    @ivar chunkSize: Bytes per write; L{None} for each source's own.
    @ivar sendfile: Whether a file's bytes may go to the socket with
        C{sendfile()}; if not, they are read and sent.
    @ivar ioPool: Where a file is read when that may block; L{None} for the
        reactor's own thread pool.
    """

    clock: IReactorTime
    protection: Protection
    metrics: Metrics | None = None
    chunkSize: int | None = None
    sendfile: bool = True
    ioPool: IOPool | None = None

    def stream(
        self,
        request: Request,
        source: ISource,
        limit: int | None = None,
        rate: float | None = None,
    ) -> int:
        """
        Stream C{source} as the response body; finish the request at the
        end.

        @param limit: End the body after so many bytes; L{None} for the
            whole source.
        @param rate: The client's own rate in bytes per second (it may only
            lower the server's); L{None} for the server's.
        @return: L{NOT_DONE_YET}, for C{render} to return.
        """
        protection, metrics, clock = self.protection, self.metrics, self.clock
        transport = request.channel.transport
        observer = (
            None if metrics is None else MetricsObserver(metrics, source.description)
        )
        producer = StreamProducer(
            source=source,
            chunkSize=self.chunkSize,
            limit=limit,
            clock=clock,
            throttle=protection.throttle(rate),
            observer=protection.observe(transport, observer),
            sendfile=self.sendfile,
            ioPool=self.ioPool,
        )
        if isinstance(request, StreamRequest):
            request.stream = producer

        def drop(why: str) -> None:
            if isinstance(request, StreamRequest) and request.ending is None:
                request.ending = why
            abortTransport(request)

        guard = protection.guard(
            transport,
            producer,
            drop=drop,
            stalled=None if metrics is None else partial(metrics.stallAborted, "http"),
        )

        def ended(result: object) -> object:
            if isinstance(request, StreamRequest):
                request.stream = None
            guard.stop()
            return result

        def finished(sent: int) -> None:
            request.finish()

        def failed(failure: Failure) -> None:
            if failure.check(StreamStopped):
                return  # the client went away, or the server ended it
            if failure.check(ConnectionBroken):
                # A send found the connection gone before the transport did
                # (the producer has stopped): drop it, for the transport may
                # not notice; the request logs how it ended.
                abortTransport(request)
                return
            if isinstance(request, StreamRequest):
                request.ending = "aborted: source failed"
            if failure.check(SourceError):
                _log.warn(
                    "aborting response to {peer}: {error}",
                    peer=peer(request),
                    error=str(failure.value),
                )
            else:
                _log.failure("aborting response", failure)
            # The client must be able to tell the body is short.
            guard.abort("aborted: source failed")

        # Before the body starts: a body that ends inside startStreaming (an
        # empty file, bytes=0) finishes the request there, and a Deferred
        # from notifyFinish() asked for after that would never fire, leaving
        # the watch and the deadline behind. The transport stops the
        # producer when the connection is lost, before the request hears of
        # it; stop it here too, whatever the transport.
        request.notifyFinish().addBoth(ended).addErrback(
            lambda reason: producer.stopProducing()
        )
        producer.startStreaming(request, requestOutlet(request)).addCallbacks(
            finished, failed
        )
        return NOT_DONE_YET
