"""
What C{twisted-zero measure} measures: a raw stream's client endpoint or an
HTTP(S) URL, with TLS trust from the options.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from attrs import define
from twisted.internet.endpoints import (
    HostnameEndpoint,
    clientFromString,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    optionsForClientTLS,
    platformTrust,
)
from twisted.python import usage
from twisted.web.client import URI, Agent, HTTPConnectionPool
from twisted.web.iweb import IAgent

from ._measurehttp import HTTPReceiver, getRequest
from ._measurestreams import (
    HTTPStream,
    IMeasuredStream,
    RawStream,
)

GENERATED = ("/zero", "/random", "/chargen")
"""
The paths whose length a client may ask for with C{?bytes=N}.
"""

_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d+)")


@define
class Target:
    """
    A parsed TARGET: an C{endpoint} for raw streams, or a C{url} and the
    C{agent} that requests it, over the persistent connections of C{pool}
    (to be closed when done).
    """

    text: str
    endpoint: IStreamClientEndpoint | None = None
    url: str | None = None
    agent: IAgent | None = None
    pool: HTTPConnectionPool | None = None
    askLimit: bool = False
    reactor: Any = None

    def stream(self, meter: Any, options: Any) -> IMeasuredStream:
        """
        A stream of this target for C{meter}, as C{options} ask.
        """
        if self.url is not None and not options["upload"]:
            assert self.reactor is not None
            url, limit = self.url, options["bytes"]
            if self.askLimit and limit is not None:
                url, limit = f"{url}?bytes={limit}", None
            return RawStream(
                meter.clock,
                _EndpointFactory(self.reactor, options).endpointForURI(
                    URI.fromBytes(url.encode("ascii"))
                ),
                self.url,
                meter,
                limit=limit,
                connectTimeout=options["connect-timeout"],
                makeProtocol=partial(HTTPReceiver, request=getRequest(url), url=url),
            )
        if self.url is not None:
            assert self.reactor is not None
            endpoints = _EndpointFactory(self.reactor, options)
            return HTTPStream(
                meter.clock,
                _agent(self.reactor, endpoints, persistent=False)[0],
                self.url,
                meter,
                limit=options["bytes"],
                connectTimeout=options["connect-timeout"],
            )
        assert self.endpoint is not None
        return RawStream(
            meter.clock,
            self.endpoint,
            self.text,
            meter,
            limit=options["bytes"],
            upload=bool(options["upload"]),
            connectTimeout=options["connect-timeout"],
        )

    def latencyURL(self) -> str:
        """
        The tiny request of a latency round trip: C{?bytes=0} of a
        generated stream, else the URL as given.
        """
        assert self.url is not None
        return self.url + "?bytes=0" if self.askLimit else self.url

    def answers(self, streams: Sequence[IMeasuredStream]) -> list[Any] | None:
        """
        The servers' answers to HTTP uploads, one per stream; L{None} for
        other kinds of measurement.
        """
        if not streams or not all(isinstance(s, HTTPStream) for s in streams):
            return None
        return [s.answer for s in streams if isinstance(s, HTTPStream)]


def _loadTrust(options: Any) -> Certificate | None:
    """
    The certificate C{--ca} names, or L{None}.

    @raise usage.UsageError: If it cannot be read or is not one.
    """
    if options["ca"] is None:
        return None
    try:
        with open(options["ca"], "rb") as f:
            return Certificate.loadPEM(f.read())
    except OSError as e:
        raise usage.UsageError(f"--ca: {options['ca']}: {e.strerror}") from None
    except Exception:
        raise usage.UsageError(
            f"--ca: {options['ca']}: not a PEM certificate"
        ) from None


def _tlsCreator(host: str, options: Any) -> Any:
    if options["insecure"]:
        return CertificateOptions(verify=False)
    trust = options["trust"]
    return optionsForClientTLS(host, trust if trust is not None else platformTrust())


@define
class _EndpointFactory:
    """
    The endpoints of URLs: TCP, and TLS as the options trust.
    """

    reactor: Any
    options: Any

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self.reactor,
            host.strip("[]"),
            uri.port,
            timeout=self.options["connect-timeout"],
        )
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(
                _tlsCreator(host.strip("[]"), self.options), endpoint
            )
        return endpoint


def _agent(
    reactor: Any, factory: _EndpointFactory, persistent: bool
) -> tuple[IAgent, HTTPConnectionPool]:
    """
    An agent for C{factory}'s endpoints, and its pool of connections (kept
    open between requests if C{persistent}: close them when done).
    """
    pool = HTTPConnectionPool(reactor, persistent=persistent)
    pool.maxPersistentPerHost = 1
    pool.retryAutomatically = False
    agent: IAgent = Agent.usingEndpointFactory(reactor, factory, pool)
    return agent, pool


def parseTarget(reactor: Any, options: Any) -> Target:
    """
    The target named by C{options["target"]}.

    @raise usage.UsageError: If it is neither an endpoint nor a URL.
    """
    text: str = options["target"]
    options["trust"] = _loadTrust(options)
    if text.startswith(("http://", "https://")):
        return _urlTarget(reactor, options, text)
    if _HOST_PORT.fullmatch(text):
        text = "tcp:" + text
    kind = text.split(":", 1)[0]
    if kind not in ("tcp", "ssl", "unix"):
        raise usage.UsageError(
            f"{options['target']!r} is not a target: give an endpoint "
            "(tcp:HOST:PORT, ssl:HOST:PORT, unix:PATH) or an http(s):// URL"
        )
    try:
        if kind == "ssl":
            rest = text[len("ssl:") :]
            endpoint = wrapClientTLS(
                _tlsCreator(_sslHost(rest), options),
                clientFromString(reactor, "tcp:" + rest),
            )
        else:
            endpoint = clientFromString(reactor, text)
    except usage.UsageError:
        raise
    except Exception as e:
        raise usage.UsageError(f"{options['target']!r}: {e}") from None
    return Target(text, endpoint=endpoint)


def _sslHost(rest: str) -> str:
    """
    The host name of an C{ssl:} endpoint's arguments, to verify.
    """
    for part in rest.split(":"):
        if part.startswith("host="):
            return part[len("host=") :]
    first = rest.split(":", 1)[0]
    if "=" in first or not first:
        raise usage.UsageError(f"ssl:{rest}: no host")
    return first


def _urlTarget(reactor: Any, options: Any, text: str) -> Target:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as e:
        raise usage.UsageError(f"{text!r}: {e}") from None
    if not parts.hostname:
        raise usage.UsageError(f"{text!r}: no host")
    path = parts.path
    if path in ("", "/"):
        path = "/upload" if options["upload"] else "/zero"
    url = parts._replace(path=path, fragment="").geturl()
    askLimit = path in GENERATED and not parts.query
    agent, pool = _agent(reactor, _EndpointFactory(reactor, options), persistent=True)
    return Target(
        text,
        url=url,
        agent=agent,
        pool=pool,
        askLimit=askLimit,
        reactor=reactor,
    )
