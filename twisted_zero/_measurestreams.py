"""
The streams of C{twisted-zero measure}: raw and HTTP, receiving and
sending, each counting into a L{StreamMeter} with no other work per chunk.

A stream's L{IMeasuredStream.run} fires with L{None} when it ended as
asked (its byte count reached, stopped at the deadline, an HTTP body
complete) and fails with L{MeasureError} (one line for people) when it
could not start or ended early.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from attrs import define, field
from OpenSSL import SSL
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from ._kernel import TIOCOUTQ, queuedBytes
from ._measurereport import StreamMeter
from ._unsent import tcpSocket

READ_SIZE = 1024 * 1024
"""
Bytes asked of the socket per read: Twisted's 64 KiB costs a reactor turn
per 64 KiB, a bottleneck on fast links (measured on loopback).
"""

SEND_CHUNK = b"\0" * (1024 * 1024)
"""
The one chunk of zeros every sending stream writes. Twisted's TCP
transport sends it in slices of 128 KiB without copying it; an HTTP upload
frames each chunk (chunked encoding), so larger chunks cost less framing for
the client and the server (measured on loopback: 1 MiB chunks upload about
20% faster than 128 KiB ones, raw streams the same).
"""


T = TypeVar("T")

ACK_POLL_SECONDS = 0.005
"""
How often an upload that has sent its last byte asks the kernel whether
the server has acknowledged them all.
"""


def nextChunk(meter: StreamMeter, limit: int | None) -> tuple[bytes, bool]:
    """
    What a sending stream writes next, counted in C{meter} as sent: the
    whole L{SEND_CHUNK}, or what is left of C{limit} bytes.

    @return: The bytes to write, and whether they are the last.
    """
    chunk, last = SEND_CHUNK, False
    if limit is not None and limit - meter.bytes <= len(chunk):
        chunk, last = chunk[: limit - meter.bytes], True
    meter.bytes += len(chunk)
    return chunk, last


class MeasureError(Exception):
    """
    A stream failed; the message is one line for people.
    """


def raiseReadSize(transport: object, size: int = READ_SIZE) -> None:
    """
    Read up to C{size} bytes per read from the socket under C{transport}
    (through TLS), where it is one of Twisted's TCP or UNIX connections,
    whose read size is the attribute C{bufferSize}; other transports are
    left alone.
    """
    while isinstance(transport, TLSMemoryBIOProtocol):
        transport = transport.transport
    if isinstance(transport, tcp.Connection):
        # Fail closed: the attribute is Twisted's, not public API.
        assert isinstance(transport.bufferSize, int)
        transport.bufferSize = size


class IMeasuredStream(Protocol):
    """
    One measured stream.
    """

    def run(self) -> Deferred[None]:
        """
        Connect and move bytes until the stream ends.
        """

    def stop(self) -> None:
        """
        End the stream now (the deadline, or an interruption).
        """


def failureReason(failure: Failure) -> str:
    """
    The reason a connection failed or ended, in a few words.
    """
    value = failure.value
    if isinstance(value, MeasureError):
        return str(value)
    args = getattr(value, "args", ())
    if isinstance(value, SSL.Error) and args and isinstance(args[0], list):
        # OpenSSL's error queue: (library, function, reason) each.
        return "TLS: " + "; ".join(str(error[-1]) for error in args[0])
    if (
        isinstance(value, Exception)
        and args
        and isinstance(args[0], list)
        and args[0]
        and isinstance(args[0][0], Failure)
    ):
        # ResponseFailed and friends wrap a list of failures.
        return failureReason(args[0][0])
    text = str(args[0]) if args and args[0] else ""
    if not text or text.isdigit():
        text = (type(value).__doc__ or type(value).__name__).strip().splitlines()[0]
    return text.rstrip(".")


@define(eq=False)
class MeasuredConnection(TwistedProtocol):
    """
    A measured connection: it counts into C{meter}, up to C{limit} bytes if
    given, and fires C{finished} when it ends.
    """

    meter: StreamMeter
    limit: int | None
    finished: Deferred[None] = field(factory=Deferred)
    stopping: bool = False

    def __attrs_post_init__(self) -> None:
        TwistedProtocol.__init__(self)

    def stop(self) -> None:
        """
        End the stream now, as asked (at the deadline, at its limit).
        """
        raise NotImplementedError

    def ended(self, reason: Failure) -> None:
        """
        Fire C{finished} for a raw stream's connection, lost for C{reason}:
        as asked if it was stopped, otherwise with why it ended early.
        """
        if self.stopping:
            self.finished.callback(None)
        elif reason.check(ConnectionDone, ConnectionLost):
            self.finished.errback(
                MeasureError(
                    f"the server closed stream {self.meter.number} after "
                    f"{self.meter.bytes} bytes, before the end of the test"
                )
            )
        else:
            self.finished.errback(MeasureError(failureReason(reason)))


@define(eq=False)
class _Receiver(MeasuredConnection):
    """
    Counts what arrives; ends after C{limit} bytes, if given.
    """

    def connectionMade(self) -> None:
        raiseReadSize(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.meter.received(len(data), self.limit):
            self.stop()

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.meter.end()
            transport: Any = self.transport
            transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.meter.end()
        self.ended(reason)


@implementer(IPushProducer)
@define(eq=False)
class _Sender(MeasuredConnection):
    """
    Writes zeros as fast as the connection takes them, reading nothing;
    after C{limit} bytes, ends once the server's kernel has acknowledged
    the last one (a raw server confirms nothing more), and closes.
    """

    _paused: bool = False
    _done: bool = False
    _acknowledging: IDelayedCall | None = None

    def connectionMade(self) -> None:
        transport: Any = self.transport
        # Stop reading what the server sends: its sending is then held
        # back by flow control, and does not compete with ours.
        transport.pauseProducing()
        transport.registerProducer(self, True)
        self.meter.start()
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._done:
            # The transport resumes us once its buffer is empty: the last
            # byte is with the kernel.
            self._finishSending()
            return
        meter, transport = self.meter, self.transport
        assert transport is not None
        while not self._paused and not self._done:
            chunk, self._done = nextChunk(meter, self.limit)
            transport.write(chunk)
        if self._done and not self._paused:
            self._finishSending()

    def _finishSending(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        transport: Any = self.transport
        transport.unregisterProducer()
        self._whenAcknowledged()

    def _whenAcknowledged(self) -> None:
        """
        End once the server's kernel has acknowledged every byte sent (the
        stream's time includes their way to the server), then abort: closing
        earlier, with the server's stream unread, would make the kernel
        reset the connection and drop what it had not yet sent.
        """
        self._acknowledging = None
        handle = tcpSocket(self.transport)
        queued = 0
        if handle is not None:
            try:
                queued = queuedBytes(handle.fileno(), TIOCOUTQ)
            except OSError:
                queued = 0
        if queued:
            self._acknowledging = self.meter.clock.callLater(
                ACK_POLL_SECONDS, self._whenAcknowledged
            )
            return
        self.meter.end()
        transport: Any = self.transport
        transport.abortConnection()

    def pauseProducing(self) -> None:
        self._paused = True

    def stopProducing(self) -> None:
        self._done = True

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self._done = True
            self.meter.end()
            transport: Any = self.transport
            transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._done = True
        acknowledging, self._acknowledging = self._acknowledging, None
        if acknowledging is not None and acknowledging.active():
            acknowledging.cancel()
        self.meter.end()
        self.ended(reason)


def withTimeout(d: Deferred[T], clock: IReactorTime, seconds: float) -> Deferred[T]:
    """
    Cancel C{d} after C{seconds}, then fail it with L{MeasureError}
    whatever its canceller fails it with.
    """
    expired = []

    def expire() -> None:
        expired.append(True)
        d.cancel()

    timer = clock.callLater(seconds, expire)

    def done(result: T | Failure) -> T | Failure:
        if timer.active():
            timer.cancel()
        if expired and isinstance(result, Failure):
            return Failure(MeasureError(f"no connection after {seconds:g} seconds"))
        return result

    return d.addBoth(done)


def connectFailed(failure: Failure, target: str) -> Failure:
    failure.trap(Exception)
    return Failure(
        MeasureError(f"cannot connect to {target}: {failureReason(failure)}")
    )


@define
class RawStream:
    """
    A stream over a connection of its own through C{endpoint}: received,
    or sent with C{upload}, or spoken by the protocol C{makeProtocol}
    makes for its meter and limit.
    """

    reactor: IReactorTime
    endpoint: IStreamClientEndpoint
    target: str
    meter: StreamMeter
    limit: int | None = None
    upload: bool = False
    connectTimeout: float = 10.0
    makeProtocol: Callable[[StreamMeter, int | None], MeasuredConnection] | None = None
    _protocol: MeasuredConnection | None = field(default=None, init=False)
    _connecting: Deferred[Any] | None = field(default=None, init=False)
    _stopping: bool = field(default=False, init=False)

    def run(self) -> Deferred[None]:
        protocol: MeasuredConnection
        if self.makeProtocol is not None:
            protocol = self.makeProtocol(self.meter, self.limit)
        elif self.upload:
            protocol = _Sender(self.meter, self.limit)
        else:
            protocol = _Receiver(self.meter, self.limit)
        self._protocol = protocol
        d = connectProtocol(self.endpoint, protocol)
        self._connecting = d
        withTimeout(d, self.reactor, self.connectTimeout)
        d.addErrback(connectFailed, self.target)
        d.addErrback(self._unlessStopped)

        def connected(ignored: object) -> Deferred[None] | None:
            if self._connecting is None:
                return None
            self._connecting = None
            finished: Deferred[None] = protocol.finished
            return finished

        ended: Deferred[None] = d.addCallback(connected)
        return ended

    def _unlessStopped(self, failure: Failure) -> Failure | None:
        return None if self._stopping else failure

    def stop(self) -> None:
        self._stopping = True
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            self.meter.end()
            connecting.cancel()
        elif self._protocol is not None:
            self._protocol.stop()


class _Collector(TwistedProtocol):
    """
    Collects a (small) response body.
    """

    def __init__(self, done: Deferred[bytes]) -> None:
        self._done = done
        self._data: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self._data.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._data))
        else:
            self._done.errback(reason)


def readAll(response: IResponse) -> Deferred[bytes]:
    """
    The whole body of C{response}: a small one (an upload's answer, a
    latency probe's). Twisted's C{readBody} warns when the body has all come
    before it is called, its transport then having no C{abortConnection}.
    """
    done: Deferred[bytes] = Deferred()
    response.deliverBody(_Collector(done))
    return done


def _checkStatus(response: IResponse, url: str) -> IResponse:
    if not 200 <= response.code < 300:
        phrase = response.phrase.decode("latin-1")
        raise MeasureError(f"{url}: HTTP {response.code} {phrase}")
    return response


@implementer(IBodyProducer)
@define(eq=False)
class ZeroBody:
    """
    A request body of zeros, pushed as fast as the connection takes it:
    C{limit} bytes (sent with a Content-Length), or until L{finish}
    (chunked).
    """

    meter: StreamMeter
    limit: int | None
    length: Any = field(init=False)
    _consumer: IConsumer | None = field(default=None, init=False)
    _finished: Deferred[None] | None = field(default=None, init=False)
    _paused: bool = field(default=False, init=False)
    _done: bool = field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        self.length = UNKNOWN_LENGTH if self.limit is None else self.limit

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        # Kept here: a body written whole at once has fired and dropped it.
        finished: Deferred[None] = Deferred()
        self._finished = finished
        self.meter.start()
        self.resumeProducing()
        return finished

    def resumeProducing(self) -> None:
        self._paused = False
        meter, consumer = self.meter, self._consumer
        assert consumer is not None
        while not self._paused and not self._done:
            chunk, self._done = nextChunk(meter, self.limit)
            consumer.write(chunk)
        if self._done:
            self.finish()

    def finish(self) -> None:
        """
        End the body now (the deadline).
        """
        self._done = True
        finished, self._finished = self._finished, None
        if finished is not None:
            finished.callback(None)

    def pauseProducing(self) -> None:
        self._paused = True

    def stopProducing(self) -> None:
        self._done = True
        self._finished = None


@define
class HTTPStream:
    """
    An HTTP upload: a C{POST} of zeros to C{url}, whose server's answer is
    kept. (Downloads are L{RawStream}s speaking
    L{HTTPReceiver<twisted_zero._measurehttp.HTTPReceiver>}.)

    @ivar answer: The server's JSON answer, once read.
    """

    reactor: IReactorTime
    agent: IAgent
    url: str
    meter: StreamMeter
    limit: int | None = None
    connectTimeout: float = 10.0
    answer: Any = field(default=None, init=False)
    _body: ZeroBody | None = field(default=None, init=False)

    def run(self) -> Deferred[Any]:
        return self._upload(self.url)

    def _upload(self, url: str) -> Deferred[Any]:
        body = ZeroBody(self.meter, self.limit)
        self._body = body
        d = self.agent.request(b"POST", url.encode("ascii"), None, body)
        d.addErrback(self._uploadFailed)
        d.addCallback(_checkStatus, url)
        d.addCallback(self._readAnswer)
        return d

    def _uploadFailed(self, failure: Failure) -> Failure:
        self.meter.end()
        if self.meter.bytes == 0:
            return connectFailed(failure, self.url)
        return Failure(
            MeasureError(
                f"the server ended stream {self.meter.number}'s upload after "
                f"{self.meter.bytes} bytes: {failureReason(failure)}"
            )
        )

    def _readAnswer(self, response: IResponse) -> Deferred[None]:
        from json import loads

        def answered(body: bytes) -> None:
            self.meter.end()
            try:
                self.answer = loads(body)
            except ValueError:
                raise MeasureError(
                    f"{self.url}: the server's answer is not JSON"
                ) from None

        return readAll(response).addCallback(answered)

    def stop(self) -> None:
        if self._body is not None:
            self._body.finish()
