"""
Real-socket tests of C{twisted-zero measure}, in this process: the client
runs on pytest-twisted's reactor against the package's own servers (a raw
L{StreamFactory} and an HTTP L{StreamSite}, over TCP, TLS and a UNIX
socket), listening on 127.0.0.1 port 0 or in a temporary directory.

Every wait is bounded by L{DEADLINE} of reactor time, and the L{servers}
fixture aborts every server connection a test leaves open and stops
listening. No test asserts a speed: only counts, invariants, messages and
exit codes.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from attrs import define, field
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IPushProducer, ITCPTransport
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool

from twisted_zero import ZeroSource
from twisted_zero._measure import measure
from twisted_zero._measurereport import StreamMeter
from twisted_zero._measurestreams import RawStream
from twisted_zero._registry import ConnectionRegistry
from twisted_zero._resources import makeResource
from twisted_zero._site import StreamSite

from .helpers import TLSFiles, asyncYieldFixture, ensureDeferred, writeTLSFiles
from .test_integration import RecordingFactory, ServerConnection
from .test_measure import checkDocument

DEADLINE = 10.0
"""
Seconds of reactor time any one wait may take before the test fails.
"""

LOCALHOST = "tcp:0:interface=127.0.0.1"
MiB = 2**20

# Twisted's ssl: server endpoint hands pyOpenSSL X509 and PKey objects to
# pyOpenSSL, which deprecates that: a Twisted matter, not this package's.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Passing pyOpenSSL (X509|PKey) objects is deprecated:DeprecationWarning"
)


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def _within(d: Deferred[Any], what: str) -> Any:
    """
    Wait for C{d}, failing the test if it has not fired after L{DEADLINE}.
    """
    try:
        return await d.addTimeout(DEADLINE, _reactor())
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def _waitUntil(predicate: Callable[[], bool], what: str) -> None:
    """
    Poll C{predicate} on the reactor until it holds, for at most L{DEADLINE}.
    """
    reactor = _reactor()
    deadline = reactor.seconds() + DEADLINE
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await deferLater(reactor, 0.005, lambda: None)


def _port(port: IListeningPort) -> int:
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    return address.port


@define
class Outcome:
    """
    What one run of C{measure} gave: its exit code and what it wrote.
    """

    code: int
    out: str
    err: str

    def document(self) -> dict[str, Any]:
        """
        The JSON report, checked for its invariants (figures consistent,
        the sum the sum of the streams).
        """
        document: dict[str, Any] = json.loads(self.out)
        checkDocument(document)
        return document


async def runMeasure(*argv: str) -> Outcome:
    """
    Run C{measure} with C{argv} on the global reactor, for at most
    L{DEADLINE}.
    """
    out, err = io.StringIO(), io.StringIO()
    code = await _within(measure(_reactor(), list(argv), out, err), "measure")
    return Outcome(code, out.getvalue(), err.getvalue())


@define
class Servers:
    """
    The servers of one test, all undone by L{close}.
    """

    ports: list[IListeningPort] = field(factory=list)
    factories: list[RecordingFactory] = field(factory=list)
    registries: list[ConnectionRegistry] = field(factory=list)

    async def listen(self, factory: Any, description: str) -> IListeningPort:
        """
        Serve C{factory} on the endpoint C{description}.
        """
        port: IListeningPort = await _within(
            serverFromString(_reactor(), description).listen(factory),
            "the listener to start",
        )
        self.ports.append(port)
        return port

    async def raw(
        self, limit: int | None = None, description: str = LOCALHOST
    ) -> tuple[RecordingFactory, IListeningPort]:
        """
        A raw server of zeros, C{limit} bytes per stream if given.
        """
        factory = RecordingFactory(ZeroSource, chunkSize=64 * 1024, limit=limit)
        self.factories.append(factory)
        return factory, await self.listen(factory, description)

    async def http(
        self,
        root: Path | None = None,
        maxUpload: int | None = None,
        description: str = LOCALHOST,
    ) -> tuple[ConnectionRegistry, IListeningPort]:
        """
        The HTTP front end, with C{root} under C{/files/}; its registry
        counts the connections open.
        """
        reactor = _reactor()
        registry = ConnectionRegistry(clock=reactor)
        self.registries.append(registry)
        site = StreamSite(
            makeResource(clock=reactor, root=None if root is None else str(root)),
            reactor=reactor,
            registry=registry,
            maxUpload=maxUpload,
        )
        return registry, await self.listen(site, description)

    async def close(self) -> None:
        for pool in _leftPools():
            await _within(pool.closeCachedConnections(), "the client's pool to close")
        for factory in self.factories:
            for server in factory.connections:
                transport = server.protocol.transport
                if not server.lost.called and transport is not None:
                    cast(ITCPTransport, transport).abortConnection()
        for registry in self.registries:
            await _within(registry.drain(0), "the HTTP connections to close")
        for port in self.ports:
            stopped = port.stopListening()
            if stopped is not None:
                await _within(stopped, "unlisten")
        for factory in self.factories:
            for server in factory.connections:
                await _within(server.lost, "a server connection to close")


def _leftPools() -> list[HTTPConnectionPool]:
    """
    The client's connection pools that still keep a connection: those
    with a cached connection's timeout pending in the reactor.
    """
    pools = []
    for call in _reactor().getDelayedCalls():
        owner = getattr(call.func, "__self__", None)
        if isinstance(owner, HTTPConnectionPool) and owner not in pools:
            pools.append(owner)
    return pools


@asyncYieldFixture
async def servers() -> AsyncIterator[Servers]:
    """
    L{Servers} that are closed after the test, whatever its outcome.
    """
    made = Servers()
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture(scope="module")
def tlsFiles(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """
    A self-signed certificate for 127.0.0.1 and its key, in files.
    """
    return writeTLSFiles(tmp_path_factory.mktemp("tls"))


async def _allLost(factory: RecordingFactory, count: int) -> list[ServerConnection]:
    """
    Wait until C{count} server connections were made and all of them have
    closed.
    """
    await _waitUntil(
        lambda: len(factory.connections) >= count, f"{count} connection(s)"
    )
    for server in factory.connections:
        await _within(server.lost, "the server's connection to close")
    return factory.connections


async def _freePort(servers: Servers) -> int:
    """
    A port on 127.0.0.1 that nothing listens on: one just listened on and
    closed.
    """
    factory, port = await servers.raw()
    servers.ports.remove(port)
    number = _port(port)
    stopped = port.stopListening()
    if stopped is not None:
        await _within(stopped, "unlisten")
    return number


class RawDownloadTests:
    """
    Raw streams received from a L{StreamFactory}.
    """

    @ensureDeferred
    async def test_bytesExact(self, servers: Servers) -> None:
        """
        Three streams of C{--bytes} each: every stream counts exactly that
        many, the sum is the sum of the streams, and every server
        connection closes once the client has its bytes.
        """
        factory, port = await servers.raw()
        target = f"tcp:127.0.0.1:{_port(port)}"
        outcome = await runMeasure("--json", "-P", "3", "--bytes", "3M", target)

        assert (outcome.code, outcome.err) == (0, "")
        document = outcome.document()
        assert document["start"]["target"] == target
        assert document["start"]["streams"] == 3
        assert [s["bytes"] for s in document["end"]["streams"]] == [3 * MiB] * 3
        assert [s["stream"] for s in document["end"]["streams"]] == [1, 2, 3]
        assert document["end"]["sum"]["bytes"] == 9 * MiB
        lost = await _allLost(factory, 3)
        for server in lost:
            assert server.producer.bytesSent >= 3 * MiB

    @ensureDeferred
    async def test_timedStopsServer(self, servers: Servers) -> None:
        """
        A timed stream of an endless server: the client counts no more
        than the server sent, reports intervals that add up to the end's
        figures, and its stopping ends the server's stream.
        """
        factory, port = await servers.raw()
        outcome = await runMeasure(
            "--json", "-t", "0.3", "-i", "0.1", f"127.0.0.1:{_port(port)}"
        )

        assert (outcome.code, outcome.err) == (0, "")
        document = outcome.document()
        assert document["start"]["target"] == f"tcp:127.0.0.1:{_port(port)}"
        assert document["start"]["options"]["time"] == 0.3
        assert len(document["intervals"]) >= 2
        (stream,) = document["end"]["streams"]
        assert stream["bytes"] > 0
        assert stream["seconds"] > 0
        (server,) = await _allLost(factory, 1)
        assert server.producer.state == "stopped"
        assert stream["bytes"] <= server.producer.bytesSent
        assert factory.sources[0].closes == 1

    @ensureDeferred
    async def test_textReport(self, servers: Servers) -> None:
        """
        Without C{--json}: a headline, the table's header, one end line per
        stream and the sum, marked C{receiver}; nothing on the error
        output.
        """
        factory, port = await servers.raw()
        target = f"tcp:127.0.0.1:{_port(port)}"
        outcome = await runMeasure("-P", "2", "--bytes", "1M", "-i", "0", target)

        assert (outcome.code, outcome.err) == (0, "")
        lines = outcome.out.splitlines()
        assert lines[0] == f"2 streams receiving from {target}, 1.00 MiB per stream"
        assert lines[1].startswith("[ ID] Interval")
        ends = lines[lines.index("- " * 30) + 1 :]
        assert [line.split("]")[0] for line in ends] == ["[  1", "[  2", "[SUM"]
        assert all(line.endswith("receiver") for line in ends)
        assert "1.00 MiB" in ends[0]
        assert "2.00 MiB" in ends[2]
        await _allLost(factory, 2)

    @ensureDeferred
    async def test_unixSocket(self, servers: Servers, tmp_path: Path) -> None:
        """
        A raw stream over a UNIX socket counts exactly C{--bytes}.
        """
        path = tmp_path / "zero.sock"
        factory, port = await servers.raw(description=f"unix:{path}")
        outcome = await runMeasure("--json", "--bytes", "2M", f"unix:{path}")

        assert (outcome.code, outcome.err) == (0, "")
        assert outcome.document()["end"]["sum"]["bytes"] == 2 * MiB
        await _allLost(factory, 1)

    @ensureDeferred
    async def test_serverClosesEarly(self, servers: Servers) -> None:
        """
        A server that ends the stream before C{--bytes}: exit code 1, one
        line naming the stream and the bytes it delivered, and the report
        of what did arrive.
        """
        limit = MiB + 5
        factory, port = await servers.raw(limit=limit)
        outcome = await runMeasure(
            "--json", "--bytes", "8M", f"tcp:127.0.0.1:{_port(port)}"
        )

        message = (
            f"the server closed stream 1 after {limit} bytes, before the end "
            "of the test"
        )
        assert outcome.code == 1
        assert outcome.err == f"twisted-zero measure: {message}\n"
        document = outcome.document()
        assert document["error"] == message
        assert document["end"]["sum"]["bytes"] == limit

    @ensureDeferred
    async def test_refused(self, servers: Servers) -> None:
        """
        A port nothing listens on: exit code 1, one line, and the text
        report stops after its headline.
        """
        number = await _freePort(servers)
        target = f"tcp:127.0.0.1:{number}"
        outcome = await runMeasure("-t", "5", target)

        assert outcome.code == 1
        assert outcome.err == (
            f"twisted-zero measure: cannot connect to {target}: Connection refused\n"
        )
        assert outcome.out == f"1 stream receiving from {target}, 5 seconds\n"


class RawUploadTests:
    """
    Raw streams sent to a L{StreamFactory}, which counts what it receives.
    """

    @ensureDeferred
    async def test_bytesExact(self, servers: Servers) -> None:
        """
        C{--upload --bytes}: the client counts exactly C{--bytes} sent and
        the server receives exactly that many before the connection
        closes.
        """
        factory, port = await servers.raw()
        outcome = await runMeasure(
            "--json", "--upload", "--bytes", "16M", f"tcp:127.0.0.1:{_port(port)}"
        )

        assert (outcome.code, outcome.err) == (0, "")
        document = outcome.document()
        assert document["start"]["options"]["upload"] is True
        assert document["end"]["sum"]["bytes"] == 16 * MiB
        await _allLost(factory, 1)

    @ensureDeferred
    async def test_serverReceivesEveryByte(self, servers: Servers) -> None:
        """
        C{--upload --bytes} to a server that also sends: the server receives
        every byte the client counts as sent.
        """
        factory, port = await servers.raw()
        outcome = await runMeasure(
            "--json", "--upload", "--bytes", "16M", f"tcp:127.0.0.1:{_port(port)}"
        )

        assert outcome.code == 0
        (server,) = await _allLost(factory, 1)
        assert server.protocol.received == 16 * MiB

    @ensureDeferred
    async def test_timed(self, servers: Servers) -> None:
        """
        A timed upload: the server received no more than the client
        counted as sent, and its connection closes when the client stops.
        """
        factory, port = await servers.raw()
        outcome = await runMeasure(
            "--json", "--upload", "-t", "0.3", f"tcp:127.0.0.1:{_port(port)}"
        )

        assert (outcome.code, outcome.err) == (0, "")
        sent = outcome.document()["end"]["sum"]["bytes"]
        assert sent > 0
        (server,) = await _allLost(factory, 1)
        assert 0 < server.protocol.received <= sent

    @ensureDeferred
    async def test_flowControl(self, servers: Servers) -> None:
        """
        While the server reads nothing, a sending stream stops writing
        once the buffers are full, far short of its bytes; when the server
        reads again the stream completes and the server has exactly every
        byte.
        """
        reactor = _reactor()
        limit = 256 * MiB
        factory, port = await servers.raw()
        meter = StreamMeter(reactor, 1)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", _port(port))
        stream = RawStream(reactor, endpoint, "raw", meter, limit=limit, upload=True)
        ended = stream.run()
        results: list[object] = []
        ended.addBoth(results.append)
        server = await _waitForConnection(factory)
        serverReading = cast(IPushProducer, server.protocol.transport)
        serverReading.pauseProducing()

        await _waitUntilStill(lambda: meter.bytes, "the sender stalls")
        held = meter.bytes
        assert held < limit
        assert server.protocol.received < held
        assert results == []

        serverReading.resumeProducing()
        await _waitUntil(lambda: bool(results), "the stream ends")
        assert results == [None]
        assert meter.bytes == limit
        await _within(server.lost, "the server's connection to close")
        assert held <= server.protocol.received <= limit


async def _waitForConnection(factory: RecordingFactory) -> ServerConnection:
    await _waitUntil(lambda: bool(factory.connections), "a connection")
    server = factory.connections[0]
    await _waitUntil(lambda: server.protocol.transport is not None, "it is made")
    return server


async def _waitUntilStill(value: Callable[[], int], what: str) -> None:
    """
    Wait until C{value} has not changed for 50 reactor turns spanning at
    least 0.2 seconds, for at most L{DEADLINE}.
    """
    reactor = _reactor()
    deadline = reactor.seconds() + DEADLINE
    seen, since, turns = value(), reactor.seconds(), 0
    while turns < 50 or reactor.seconds() - since < 0.2:
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await deferLater(reactor, 0.005, lambda: None)
        turns += 1
        if value() != seen:
            seen, since, turns = value(), reactor.seconds(), 0


class TLSTests:
    """
    Raw streams and HTTPS over TLS, verified against C{--ca} unless
    C{--insecure}.
    """

    @ensureDeferred
    async def test_rawWithCA(self, servers: Servers, tlsFiles: TLSFiles) -> None:
        """
        C{ssl:} with C{--ca} trusting the server's certificate: exactly
        C{--bytes}.
        """
        factory, port = await servers.raw(description=tlsFiles.serverEndpoint())
        outcome = await runMeasure(
            "--json",
            "--ca",
            str(tlsFiles.certPath),
            "--bytes",
            "2M",
            f"ssl:127.0.0.1:{_port(port)}",
        )

        assert (outcome.code, outcome.err) == (0, "")
        assert outcome.document()["end"]["sum"]["bytes"] == 2 * MiB
        await _allLost(factory, 1)

    @ensureDeferred
    async def test_rawInsecure(self, servers: Servers, tlsFiles: TLSFiles) -> None:
        """
        C{ssl:} with C{--insecure} accepts the self-signed certificate;
        C{host=} names the host.
        """
        factory, port = await servers.raw(description=tlsFiles.serverEndpoint())
        outcome = await runMeasure(
            "--json",
            "--insecure",
            "--bytes",
            "1M",
            f"ssl:host=127.0.0.1:port={_port(port)}",
        )

        assert (outcome.code, outcome.err) == (0, "")
        assert outcome.document()["end"]["sum"]["bytes"] == MiB
        await _allLost(factory, 1)

    @ensureDeferred
    async def test_rawUntrusted(self, servers: Servers, tlsFiles: TLSFiles) -> None:
        """
        C{ssl:} without trust in the self-signed certificate: refused,
        exit code 1, one line saying why, no bytes counted.
        """
        factory, port = await servers.raw(description=tlsFiles.serverEndpoint())
        outcome = await runMeasure(
            "--json", "--bytes", "1M", f"ssl:127.0.0.1:{_port(port)}"
        )

        assert outcome.code == 1
        assert outcome.err.startswith("twisted-zero measure: ")
        assert outcome.err.count("\n") == 1
        assert "certificate verify failed" in outcome.err
        document = outcome.document()
        assert document["end"]["sum"]["bytes"] == 0
        assert "certificate verify failed" in document["error"]
        await _allLost(factory, 1)

    @ensureDeferred
    async def test_httpsWithCA(self, servers: Servers, tlsFiles: TLSFiles) -> None:
        """
        HTTPS with C{--ca}: exactly C{--bytes} of C{/zero}.
        """
        registry, port = await servers.http(description=tlsFiles.serverEndpoint())
        url = f"https://127.0.0.1:{_port(port)}/zero"
        outcome = await runMeasure(
            "--json", "--ca", str(tlsFiles.certPath), "--bytes", "2M", url
        )

        assert (outcome.code, outcome.err) == (0, "")
        assert outcome.document()["end"]["sum"]["bytes"] == 2 * MiB

    @ensureDeferred
    async def test_httpsUntrusted(self, servers: Servers, tlsFiles: TLSFiles) -> None:
        """
        HTTPS without trust in the certificate: exit code 1, one line
        saying the client cannot connect; with C{--insecure}, it measures.
        """
        registry, port = await servers.http(description=tlsFiles.serverEndpoint())
        url = f"https://127.0.0.1:{_port(port)}/zero"
        refused = await runMeasure("--bytes", "1M", url)
        insecure = await runMeasure("--json", "--insecure", "--bytes", "1M", url)

        assert refused.code == 1
        assert refused.err.startswith(f"twisted-zero measure: cannot connect to {url}")
        assert refused.err.count("\n") == 1
        assert (insecure.code, insecure.err) == (0, "")
        assert insecure.document()["end"]["sum"]["bytes"] == MiB

    @ensureDeferred
    async def test_badCA(self, tmp_path: Path) -> None:
        """
        C{--ca} naming a missing file or one that is not a certificate: a
        usage error, exit code 2.
        """
        notPEM = tmp_path / "not.pem"
        notPEM.write_text("hello\n")
        missing = await runMeasure("--ca", str(tmp_path / "no.pem"), "tcp:x:1")
        bad = await runMeasure("--ca", str(notPEM), "tcp:x:1")

        assert missing.code == bad.code == 2
        assert missing.err == (
            f"twisted-zero measure: error: --ca: {tmp_path / 'no.pem'}: "
            "No such file or directory (see --help)\n"
        )
        assert bad.err == (
            f"twisted-zero measure: error: --ca: {notPEM}: not a PEM certificate "
            "(see --help)\n"
        )


class HTTPDownloadTests:
    """
    HTTP streams received from a L{StreamSite}.
    """

    @ensureDeferred
    async def test_endless(self, servers: Servers) -> None:
        """
        A timed stream of endless C{/zero} (the default path): bytes
        counted, figures consistent, and the server's connection closes
        when the client stops.
        """
        registry, port = await servers.http()
        base = f"http://127.0.0.1:{_port(port)}"
        outcome = await runMeasure("--json", "-t", "0.3", "-i", "0.1", base)

        assert (outcome.code, outcome.err) == (0, "")
        document = outcome.document()
        assert document["start"]["target"] == base
        assert document["end"]["sum"]["bytes"] > 0
        await _waitUntil(lambda: registry.count == 0, "the server's connection closes")

    @ensureDeferred
    async def test_bytesParallel(self, servers: Servers) -> None:
        """
        C{-P 3 --bytes} of a generated stream asks the server for that
        many bytes: each stream counts exactly that many, and the server's
        connections close.
        """
        registry, port = await servers.http()
        url = f"http://127.0.0.1:{_port(port)}/random"
        outcome = await runMeasure("--json", "-P", "3", "--bytes", "3M", url)

        assert (outcome.code, outcome.err) == (0, "")
        document = outcome.document()
        assert [s["bytes"] for s in document["end"]["streams"]] == [3 * MiB] * 3
        assert document["end"]["sum"]["bytes"] == 9 * MiB
        await _waitUntil(lambda: registry.count == 0, "the server's connections close")

    @ensureDeferred
    async def test_file(self, servers: Servers, tmp_path: Path) -> None:
        """
        A file under C{/files/}: its whole size, or the first C{--bytes}
        of it, the client ending the response there.
        """
        root = tmp_path / "root"
        root.mkdir()
        size = 3 * MiB + 7
        (root / "big.bin").write_bytes(bytes(size))
        registry, port = await servers.http(root=root.resolve())
        url = f"http://127.0.0.1:{_port(port)}/files/big.bin"
        whole = await runMeasure("--json", "-t", "5", url)
        part = await runMeasure("--json", "--bytes", "1M", url)

        assert (whole.code, whole.err) == (0, "")
        assert whole.document()["end"]["sum"]["bytes"] == size
        assert (part.code, part.err) == (0, "")
        assert part.document()["end"]["sum"]["bytes"] == MiB
        await _waitUntil(lambda: registry.count == 0, "the server's connections close")

    @ensureDeferred
    async def test_notFound(self, servers: Servers) -> None:
        """
        A URL the server answers with 404: exit code 1, one line with the
        URL and the status.
        """
        registry, port = await servers.http()
        url = f"http://127.0.0.1:{_port(port)}/files/missing"
        outcome = await runMeasure("-t", "5", url)

        assert outcome.code == 1
        assert outcome.err == f"twisted-zero measure: {url}: HTTP 404 Not Found\n"

    @ensureDeferred
    async def test_refused(self, servers: Servers) -> None:
        """
        A URL whose port nothing listens on: exit code 1, one line.
        """
        number = await _freePort(servers)
        url = f"http://127.0.0.1:{number}/zero"
        outcome = await runMeasure("--json", "-t", "5", url)

        assert outcome.code == 1
        assert outcome.err == (
            f"twisted-zero measure: cannot connect to {url}: Connection refused\n"
        )
        assert outcome.document()["error"] == (
            f"cannot connect to {url}: Connection refused"
        )

    @ensureDeferred
    async def test_serverGoesAway(self, servers: Servers) -> None:
        """
        A server that aborts its connection in the middle of a response:
        exit code 1, one line saying the response ended early and after
        how many bytes, and the report of what did arrive.
        """
        registry, port = await servers.http()
        url = f"http://127.0.0.1:{_port(port)}/zero"
        out, err = io.StringIO(), io.StringIO()
        result = measure(_reactor(), ["-t", "5", "-i", "0", url], out, err)
        await _waitUntil(lambda: "[ ID]" in out.getvalue(), "the first byte arrives")
        await _within(registry.drain(0), "the server's connection to close")
        code = await _within(result, "measure")

        assert code == 1
        (line,) = err.getvalue().splitlines()
        assert line.startswith(
            "twisted-zero measure: the server ended stream 1's response early, after "
        )
        received = int(line.split("after ")[1].split(" bytes")[0])
        assert received > 0
        assert out.getvalue().splitlines()[-1].endswith("receiver")


class HTTPUploadTests:
    """
    HTTP uploads to C{/upload}, which answers with what it received.
    """

    @ensureDeferred
    async def test_bytes(self, servers: Servers) -> None:
        """
        C{-P 2 --upload --bytes} (a body with a Content-Length): each
        stream sends exactly C{--bytes} and the server says it received
        exactly that; the text report shows the server's figure.
        """
        registry, port = await servers.http()
        url = f"http://127.0.0.1:{_port(port)}/upload"
        outcome = await runMeasure(
            "--json", "-P", "2", "--upload", "--bytes", "5M", url
        )
        text = await runMeasure("--upload", "--bytes", "1M", "-i", "0", url)

        assert (outcome.code, outcome.err) == (0, "")
        for stream in outcome.document()["end"]["streams"]:
            assert stream["bytes"] == 5 * MiB
            assert stream["server"]["bytes"] == 5 * MiB
            assert stream["server"]["seconds"] > 0
        assert (text.code, text.err) == (0, "")
        lines = text.out.splitlines()
        assert lines[0] == f"1 stream sending to {url}, 1.00 MiB per stream"
        assert lines[-2].endswith("sender")
        assert lines[-1].startswith("[  1] server: received 1.00 MiB in ")

    @ensureDeferred
    async def test_timed(self, servers: Servers) -> None:
        """
        A timed upload (a chunked body, the default path C{/upload}): the
        server received exactly what the client counts as sent.
        """
        registry, port = await servers.http()
        base = f"http://127.0.0.1:{_port(port)}"
        outcome = await runMeasure("--json", "--upload", "-t", "0.3", base)

        assert (outcome.code, outcome.err) == (0, "")
        (stream,) = outcome.document()["end"]["streams"]
        assert stream["bytes"] > 0
        assert stream["server"]["bytes"] == stream["bytes"]
        await _waitUntil(lambda: registry.count == 0, "the server's connection closes")

    @ensureDeferred
    async def test_small(self, servers: Servers) -> None:
        """
        An upload smaller than one chunk: sent whole, and the server says
        it received exactly that.
        """
        registry, port = await servers.http()
        url = f"http://127.0.0.1:{_port(port)}/upload"
        outcome = await runMeasure("--json", "--upload", "--bytes", "1K", url)

        assert (outcome.code, outcome.err) == (0, "")
        (stream,) = outcome.document()["end"]["streams"]
        assert stream["bytes"] == stream["server"]["bytes"] == 1024

    @ensureDeferred
    async def test_tooLarge(self, servers: Servers) -> None:
        """
        An upload larger than the server takes: exit code 1, one line with
        the URL and the status 413.
        """
        registry, port = await servers.http(maxUpload=MiB)
        url = f"http://127.0.0.1:{_port(port)}/upload"
        outcome = await runMeasure("--upload", "--bytes", "4M", url)

        assert outcome.code == 1
        assert outcome.err == (
            f"twisted-zero measure: {url}: HTTP 413 Content Too Large\n"
        )

    @ensureDeferred
    async def test_notAnUploadPath(self, servers: Servers) -> None:
        """
        An upload to a path that takes no body: the server refuses it, exit
        code 1, one line with the URL and the status.
        """
        registry, port = await servers.http()
        url = f"http://127.0.0.1:{_port(port)}/files/x"
        outcome = await runMeasure("--json", "--upload", "--bytes", "4M", url)

        assert outcome.code == 1
        assert outcome.err == (
            f"twisted-zero measure: {url}: HTTP 413 Content Too Large\n"
        )
        (stream,) = outcome.document()["end"]["streams"]
        assert stream["server"] is None

    @ensureDeferred
    async def test_refused(self, servers: Servers) -> None:
        """
        An upload to a port nothing listens on: exit code 1, one line.
        """
        number = await _freePort(servers)
        url = f"http://127.0.0.1:{number}/upload"
        outcome = await runMeasure("--upload", "-t", "5", url)

        assert outcome.code == 1
        assert outcome.err == (
            f"twisted-zero measure: cannot connect to {url}: Connection refused\n"
        )


def _checkLatency(latency: dict[str, Any], count: int) -> None:
    assert latency["count"] == count
    assert len(latency["samples_ms"]) == count
    assert latency["min_ms"] <= latency["median_ms"] <= latency["p99_ms"]
    assert latency["p99_ms"] <= latency["max_ms"]
    assert latency["min_ms"] >= 0


class LatencyTests:
    """
    C{--latency}: round trips over HTTP and raw connects.
    """

    @ensureDeferred
    async def test_http(self, servers: Servers) -> None:
        """
        C{--count} tiny GETs: that many samples, ordered figures; as text,
        one line.
        """
        registry, port = await servers.http()
        url = f"http://127.0.0.1:{_port(port)}/zero"
        outcome = await runMeasure("--json", "--latency", "--count", "5", url)
        text = await runMeasure("--latency", "--count", "3", url)

        assert (outcome.code, outcome.err) == (0, "")
        document = json.loads(outcome.out)
        assert document["start"]["options"]["count"] == 5
        _checkLatency(document["latency"], 5)
        assert (text.code, text.err) == (0, "")
        assert text.out.startswith(f"Latency to {url}: 3 round trips: min ")

    @ensureDeferred
    async def test_httpLeavesNothing(self, servers: Servers) -> None:
        """
        Once C{measure --latency} has answered, it keeps no connection to
        the server and no timer in the reactor.
        """
        registry, port = await servers.http()
        url = f"http://127.0.0.1:{_port(port)}/zero"
        outcome = await runMeasure("--latency", "--count", "2", url)

        assert outcome.code == 0
        assert _leftPools() == []
        await _waitUntil(lambda: registry.count == 0, "the server's connection closes")

    @ensureDeferred
    async def test_raw(self, servers: Servers) -> None:
        """
        C{--count} connects: that many samples and server connections, each
        closed by the client.
        """
        factory, port = await servers.raw()
        outcome = await runMeasure(
            "--json", "--latency", "--count", "4", f"tcp:127.0.0.1:{_port(port)}"
        )

        assert (outcome.code, outcome.err) == (0, "")
        _checkLatency(json.loads(outcome.out)["latency"], 4)
        assert len(await _allLost(factory, 4)) == 4

    @ensureDeferred
    async def test_httpNotFound(self, servers: Servers) -> None:
        """
        Round trips to a URL answered with 404: exit code 1, one line.
        """
        registry, port = await servers.http()
        url = f"http://127.0.0.1:{_port(port)}/files/missing"
        outcome = await runMeasure("--latency", url)

        assert outcome.code == 1
        assert outcome.err == f"twisted-zero measure: {url}: HTTP 404 Not Found\n"
        assert outcome.out == ""

    @ensureDeferred
    async def test_rawRefused(self, servers: Servers) -> None:
        """
        Connects to a port nothing listens on: exit code 1, one line.
        """
        number = await _freePort(servers)
        target = f"tcp:127.0.0.1:{number}"
        outcome = await runMeasure("--latency", target)

        assert outcome.code == 1
        assert outcome.err == (
            f"twisted-zero measure: cannot connect to {target}: Connection refused\n"
        )


class TargetTests:
    """
    Targets that name no host: a usage error before any connection.
    """

    @pytest.mark.parametrize(
        ("target", "message"),
        [
            ("ssl:port=5001", "ssl:port=5001: no host"),
            ("http://:8080/zero", "'http://:8080/zero': no host"),
        ],
    )
    @ensureDeferred
    async def test_noHost(self, target: str, message: str) -> None:
        """
        Exit code 2 and one line naming the target.
        """
        outcome = await runMeasure(target)

        assert outcome.code == 2
        assert outcome.err == f"twisted-zero measure: error: {message} (see --help)\n"
        assert outcome.out == ""
