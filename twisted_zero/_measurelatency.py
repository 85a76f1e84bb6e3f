"""
Round trips for C{twisted-zero measure --latency}: tiny HTTP requests on
one persistent connection, or TCP connects of a raw endpoint.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent

from ._measurestreams import MeasureError, connectFailed, readAll, withTimeout


async def httpLatency(
    reactor: Any, agent: IAgent, url: str, count: int, timeout: float
) -> list[float]:
    """
    The seconds of C{count} sequential C{GET}s of C{url}, each from the
    request to the end of its body, on one persistent connection; one
    request before them, which includes the connection, is not counted.
    """
    samples: list[float] = []
    for index in range(count + 1):
        started = reactor.seconds()
        d = agent.request(b"GET", url.encode("ascii"))
        withTimeout(d, reactor, timeout)
        d.addErrback(connectFailed, url)
        response = await d
        if not 200 <= response.code < 300:
            phrase = response.phrase.decode("latin-1")
            raise MeasureError(f"{url}: HTTP {response.code} {phrase}")
        await readAll(response)
        if index:
            samples.append(reactor.seconds() - started)
    return samples


async def rawLatency(
    reactor: Any,
    endpoint: IStreamClientEndpoint,
    target: str,
    count: int,
    timeout: float,
) -> list[float]:
    """
    The seconds of C{count} sequential connects of C{endpoint}, each
    aborted once made.
    """
    samples: list[float] = []
    for _index in range(count):
        started = reactor.seconds()
        protocol = _Connected()
        d: Deferred[Any] = connectProtocol(endpoint, protocol)
        withTimeout(d, reactor, timeout)
        d.addErrback(connectFailed, target)
        await d
        samples.append(reactor.seconds() - started)
        transport: Any = protocol.transport
        transport.abortConnection()
        await protocol.lost
    return samples


class _Connected(Protocol):
    """
    A connection that is only made and aborted.
    """

    def __init__(self) -> None:
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)
