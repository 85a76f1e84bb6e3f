"""
Deterministic tests of C{twisted-zero measure}: the accounting, interval
reports and JSON on a L{MemoryReactorClock}, with the connections played
by hand over L{StringTransport}s.
"""

from __future__ import annotations

import io
import json
from typing import Any, cast

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import IConnector
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from twisted_zero._measure import MeasureOptions, measure
from twisted_zero._measurereport import (
    Recorder,
    formatBits,
    formatBytes,
    latencyFigures,
)
from twisted_zero._measurestreams import SEND_CHUNK, ZeroBody, raiseReadSize

from .helpers import PausingTransport, assertNoResult, successResultOf

TARGET = "tcp:127.0.0.1:5001"


def checkFigures(figures: dict[str, Any]) -> None:
    """
    The invariants of every set of figures in a report.
    """
    assert figures["seconds"] == pytest.approx(figures["end"] - figures["start"])
    if figures["seconds"] > 0:
        assert figures["bits_per_second"] == pytest.approx(
            8 * figures["bytes"] / figures["seconds"]
        )


def checkDocument(document: dict[str, Any]) -> None:
    """
    Every interval and the end: figures consistent, sum = sum of streams.
    """
    for part in [*document["intervals"], document["end"]]:
        for figures in [*part["streams"], part["sum"]]:
            checkFigures(figures)
        assert part["sum"]["bytes"] == sum(s["bytes"] for s in part["streams"])
    total = sum(i["sum"]["bytes"] for i in document["intervals"])
    if document["intervals"]:
        assert total == document["end"]["sum"]["bytes"]


class TriggerReactor(MemoryReactorClock):
    """
    A memory reactor whose system event triggers can also be removed.
    """

    def addSystemEventTrigger(  # type: ignore[override]  # returns an id
        self, phase: str, eventType: str, f: Any, *args: Any, **kw: Any
    ) -> Any:
        MemoryReactorClock.addSystemEventTrigger(self, phase, eventType, f, *args, **kw)
        return (phase, eventType, self.triggers[phase][eventType][-1])

    def removeSystemEventTrigger(self, triggerID: Any) -> None:
        phase, eventType, trigger = triggerID
        self.triggers[phase][eventType].remove(trigger)


class Run:
    """
    C{measure} on a memory reactor, its output and its connections.
    """

    def __init__(self, *argv: str, tty: bool = False) -> None:
        self.reactor = TriggerReactor()
        self.out = TTY() if tty else io.StringIO()
        self.err = io.StringIO()
        self.result = measure(self.reactor, list(argv), self.out, self.err)
        self.transports: list[StringTransport] = []
        self.protocols: list[Any] = []

    def connect(self, index: int, transport: StringTransport | None = None) -> Any:
        """
        Make the C{index}th connection the client asked for.
        """
        factory = self.reactor.tcpClients[index][2]
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5001))
        assert protocol is not None
        transport = transport or StringTransport()
        protocol.makeConnection(transport)
        self.transports.append(transport)
        self.protocols.append(protocol)
        return protocol

    def lose(self, index: int, reason: type[Exception] = ConnectionAborted) -> None:
        self.protocols[index].connectionLost(Failure(reason()))

    def code(self) -> int:
        code: int = successResultOf(self.result)
        return code

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.out.getvalue())
        return document


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class FormatTests:
    def test_bytes(self) -> None:
        """
        Byte counts are shown in binary units with three digits.
        """
        assert formatBytes(0) == "0 B"
        assert formatBytes(1023) == "1023 B"
        assert formatBytes(1536) == "1.50 KiB"
        assert formatBytes(300 * 2**20) == "300 MiB"
        assert formatBytes(2**30) == "1.00 GiB"

    def test_bits(self) -> None:
        """
        Rates are shown in decimal bits per second.
        """
        assert formatBits(999) == "999 bit/s"
        assert formatBits(9.41e9) == "9.41 Gbit/s"
        assert formatBits(25.5e6) == "25.5 Mbit/s"


class RecorderTests:
    def test_clockStartsAtFirstByte(self) -> None:
        """
        The test's clock starts at the first byte of any stream; each
        stream's from its own first byte.
        """
        clock = Clock()
        clock.advance(100)
        recorder = Recorder(clock, 2)
        assert recorder.now() == 0.0
        assert recorder.closeInterval() is None
        one, two = recorder.meters
        one.start()
        one.bytes += 1000
        clock.advance(0.5)
        two.start()
        two.bytes += 3000
        clock.advance(0.5)
        interval = recorder.closeInterval()
        assert interval is not None
        assert (interval.start, interval.end, interval.streams) == (0, 1, [1000, 3000])
        clock.advance(1)
        one.end()
        two.end()
        end = recorder.endFigures()
        assert [s["seconds"] for s in end["streams"]] == [2.0, 1.5]
        assert end["sum"]["seconds"] == 2.0
        assert end["sum"]["bytes"] == 4000
        assert end["sum"]["bits_per_second"] == 8 * 4000 / 2

    def test_shortTailJoinsLastInterval(self) -> None:
        """
        A final interval under a millisecond is not reported alone: the last
        interval takes its bytes and time, so the intervals still add up.
        """
        clock = Clock()
        recorder = Recorder(clock, 1)
        (meter,) = recorder.meters
        meter.start()
        meter.bytes = 100
        clock.advance(1)
        recorder.closeInterval()
        meter.bytes = 150
        clock.advance(0.0001)
        assert recorder.closeInterval(final=True) is None
        (interval,) = recorder.intervals
        assert interval.streams == [150]
        assert interval.end == pytest.approx(1.0001)

    def test_neverStarted(self) -> None:
        """
        A stream that moved nothing ends with no time and no rate.
        """
        recorder = Recorder(Clock(), 1)
        recorder.meters[0].end()
        end = recorder.endFigures()
        assert end["sum"] == {
            "start": 0.0,
            "end": 0.0,
            "seconds": 0.0,
            "bytes": 0,
            "bits_per_second": 0.0,
        }


class LatencyFiguresTests:
    def test_figures(self) -> None:
        """
        Min, median, p99 (nearest rank) and jitter (mean absolute difference
        of consecutive samples), in milliseconds.
        """
        f = latencyFigures([0.001, 0.003, 0.002, 0.004])
        assert f["count"] == 4
        assert f["min_ms"] == pytest.approx(1)
        assert f["median_ms"] == pytest.approx(2.5)
        assert f["p99_ms"] == pytest.approx(4)
        assert f["jitter_ms"] == pytest.approx((2 + 1 + 2) / 3)

    def test_one(self) -> None:
        """
        One sample has no jitter; none has no figures.
        """
        assert latencyFigures([0.002])["jitter_ms"] == 0.0
        assert latencyFigures([])["count"] == 0


class OptionsTests:
    def test_defaults(self) -> None:
        """
        One stream for 10 seconds, reports every second.
        """
        options = MeasureOptions()
        options.parseOptions([TARGET])
        assert options["parallel"] == 1
        assert options["time"] == 10.0
        assert options["bytes"] is None
        assert options["interval"] == 1.0
        assert options["connect-timeout"] == 10.0

    def test_bytesWithoutTime(self) -> None:
        """
        C{--bytes} alone has no time limit; sizes take units.
        """
        options = MeasureOptions()
        options.parseOptions(["--bytes", "1.5M", "-P", "4", "-i", "0", TARGET])
        assert options["bytes"] == 3 * 2**19
        assert options["time"] is None
        assert options["parallel"] == 4
        assert options["interval"] is None

    def test_optionsAfterTarget(self) -> None:
        """
        Options may follow TARGET; C{--} ends them.
        """
        options = MeasureOptions()
        options.parseOptions([TARGET, "-t", "3", "--json", "-P", "2"])
        assert (options["target"], options["time"], options["json"]) == (TARGET, 3, 1)
        assert options["parallel"] == 2
        options = MeasureOptions()
        options.parseOptions(["--bytes=1K", "--", "-odd:1"])
        assert (options["target"], options["bytes"]) == ("-odd:1", 1024)

    def test_helpHasMetavars(self) -> None:
        """
        C{--help} goes to the given output, names the values each option
        takes, and ends with exit code 0.
        """
        run = Run("--help")
        assert run.code() == 0
        text = run.out.getvalue()
        for shown in ("--parallel=N", "--time=SECONDS", "--bytes=SIZE", "--ca=FILE"):
            assert shown in text

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            ([], "give one TARGET (an endpoint or a URL)"),
            (["a:1", "b:2"], "give one TARGET"),
            (["-P", "0", TARGET], "--parallel: '0' is not a positive whole number"),
            (["-t", "x", TARGET], "--time: 'x' is not a number of seconds"),
            (["--bytes", "lots", TARGET], "--bytes: 'lots' is not a size"),
            (["--connect-timeout", "0", TARGET], "--connect-timeout: must be more"),
            (["--latency", "--upload", TARGET], "--latency and --upload exclude"),
            (["gopher://x/"], "'gopher://x/' is not a target"),
            (["tcp:127.0.0.1:notaport"], "'tcp:127.0.0.1:notaport': "),
            (["http://127.0.0.1:99999/zero"], "'http://127.0.0.1:99999/zero': "),
            (["--ca", "/nonexistent", "https://localhost:1/"], "--ca: /nonexistent"),
        ],
    )
    def test_usageError(self, argv: list[str], message: str) -> None:
        """
        Bad options or a bad target: one line on err, exit code 2, nothing
        on out.
        """
        run = Run(*argv)
        assert run.code() == 2
        error = run.err.getvalue()
        assert error.startswith("twisted-zero measure: error: ")
        assert message in error
        assert error.count("\n") == 1
        assert run.out.getvalue() == ""

    def test_hostPortIsTCP(self) -> None:
        """
        C{HOST:PORT} is taken for C{tcp:HOST:PORT}.
        """
        run = Run("127.0.0.1:5001")
        host, port = run.reactor.tcpClients[0][:2]
        assert (host, port) == ("127.0.0.1", 5001)


class RawReceiveTests:
    def test_timedJSON(self) -> None:
        """
        With C{-t}, every stream is aborted at the deadline (counted from the
        first byte), and the JSON document's figures add up.
        """
        run = Run("-t", "2", "-P", "2", "--json", TARGET)
        assert len(run.reactor.tcpClients) == 2
        one, two = run.connect(0), run.connect(1)
        one.dataReceived(b"x" * 1000)
        run.reactor.advance(0.5)
        two.dataReceived(b"x" * 500)
        run.reactor.advance(0.5)
        one.dataReceived(b"x" * 2000)
        run.reactor.advance(1)
        assert [t.disconnecting for t in run.transports] == [True, True]
        assertNoResult(run.result)
        run.lose(0)
        run.lose(1)
        assert run.code() == 0
        document = run.document()
        checkDocument(document)
        assert document["start"]["streams"] == 2
        assert document["start"]["target"] == TARGET
        assert [i["sum"]["bytes"] for i in document["intervals"]] == [1500, 2000]
        ends = document["end"]["streams"]
        assert [(s["bytes"], s["seconds"]) for s in ends] == [(3000, 2.0), (500, 1.5)]
        assert document["end"]["sum"]["seconds"] == 2.0
        assert run.err.getvalue() == ""
        assert run.reactor.triggers["before"]["shutdown"] == []

    def test_readSizeRaised(self) -> None:
        """
        Each connection reads up to 1 MiB at a time from a TCP socket; other
        transports are left alone.
        """
        from twisted.internet import tcp

        assert isinstance(tcp.Connection.bufferSize, int)
        connection = tcp.Connection.__new__(tcp.Connection)
        raiseReadSize(connection)
        assert connection.bufferSize == 2**20
        transport = StringTransport()
        raiseReadSize(transport)
        assert not hasattr(transport, "bufferSize")

    def test_bytesLimit(self) -> None:
        """
        With C{--bytes}, a stream ends after that many bytes, counted
        exactly, and the text report shows it.
        """
        run = Run("--bytes", "1K", "-i", "0", TARGET)
        protocol = run.connect(0)
        protocol.dataReceived(b"x" * 600)
        run.reactor.advance(0.25)
        protocol.dataReceived(b"x" * 600)
        assert run.transports[0].disconnecting
        run.lose(0)
        assert run.code() == 0
        text = run.out.getvalue()
        assert "1 stream receiving from tcp:127.0.0.1:5001, 1.00 KiB per stream" in text
        assert "[  1]   0.00-0.25   sec    1.00 KiB    32.8 Kbit/s" in text
        assert "receiver" in text

    def test_intervalLines(self) -> None:
        """
        Interval reports per stream and C{[SUM]}, as the test runs.
        """
        run = Run("-t", "2", "-P", "2", TARGET)
        one, two = run.connect(0), run.connect(1)
        one.dataReceived(b"x" * 1000)
        two.dataReceived(b"x" * 1000)
        run.reactor.advance(1)
        lines = run.out.getvalue().splitlines()
        assert lines[-3:] == [
            "[  1]   0.00-1.00   sec      1000 B    8.00 Kbit/s      1000 B/s",
            "[  2]   0.00-1.00   sec      1000 B    8.00 Kbit/s      1000 B/s",
            "[SUM]   0.00-1.00   sec    1.95 KiB    16.0 Kbit/s    1.95 KiB/s",
        ]

    def test_serverClosesEarly(self) -> None:
        """
        A server that ends a raw stream before the test's end: the report,
        one line on err, exit code 1.
        """
        run = Run("-t", "10", TARGET)
        protocol = run.connect(0)
        protocol.dataReceived(b"x" * 100)
        run.reactor.advance(1)
        run.lose(0, ConnectionDone)
        assert run.code() == 1
        assert run.err.getvalue() == (
            "twisted-zero measure: the server closed stream 1 after 100 bytes, "
            "before the end of the test\n"
        )
        assert "receiver" in run.out.getvalue()

    def test_connectTimeout(self) -> None:
        """
        A connection not made within C{--connect-timeout}: one line, exit 1.
        """
        run = Run("--connect-timeout", "3", TARGET)
        run.reactor.advance(3)
        assert run.code() == 1
        assert run.err.getvalue() == (
            "twisted-zero measure: cannot connect to tcp:127.0.0.1:5001: "
            "no connection after 3 seconds\n"
        )

    def test_oneOfSeveralFails(self) -> None:
        """
        When a stream cannot connect at all, the others are stopped too.
        """
        run = Run("-P", "2", TARGET)
        factory = run.reactor.tcpClients[0][2]

        factory.clientConnectionFailed(
            cast(IConnector, None),
            Failure(ConnectionRefusedError(111, "Connection refused")),
        )
        assert run.code() == 1
        assert run.err.getvalue() == (
            "twisted-zero measure: cannot connect to tcp:127.0.0.1:5001: "
            "Connection refused\n"
        )

    def test_interrupted(self) -> None:
        """
        Ctrl-C (the reactor shutting down) ends every stream and prints the
        report so far; exit code 130.
        """
        run = Run("--json", TARGET)
        protocol = run.connect(0)
        protocol.dataReceived(b"x" * 100)
        run.reactor.advance(1.5)
        ((trigger, args, kw),) = run.reactor.triggers["before"]["shutdown"]
        trigger(*args, **kw)
        assert run.code() == 130
        assert run.transports[0].disconnecting
        document = run.document()
        assert document["interrupted"] is True
        assert document["end"]["sum"]["bytes"] == 100
        assert document["end"]["sum"]["seconds"] == 1.5
        checkDocument(document)
        run.lose(0)

    def test_progressOnTerminal(self) -> None:
        """
        On a terminal, a progress line is redrawn in place and cleared
        before each report line; elsewhere there is none.
        """
        run = Run("-t", "1", TARGET, tty=True)
        protocol = run.connect(0)
        protocol.dataReceived(b"x" * 100)
        run.reactor.advance(0.25)
        assert run.out.getvalue().endswith("\x1b[K")
        assert "\r   0.2 s" in run.out.getvalue()
        run.reactor.advance(0.75)
        run.lose(0)
        assert run.code() == 0
        assert "\r\x1b[K[  1]   0.00-1.00" in run.out.getvalue()
        quiet = Run("-t", "1", TARGET)
        quiet.connect(0).dataReceived(b"x")
        quiet.reactor.advance(1)
        assert "\r" not in quiet.out.getvalue()


class RawUploadTests:
    def test_sendsUntilBytes(self) -> None:
        """
        C{--upload} stops reading the server's stream, writes zeros as the
        transport takes them, and ends once the last byte has left the
        transport's buffer.
        """
        run = Run("--upload", "--bytes", "300K", "--json", TARGET)
        transport = PausingTransport()
        run.connect(0, transport)
        assert transport.producerState == "paused"  # the transport's reading
        assert transport.streaming
        assert len(transport.value()) == len(SEND_CHUNK)
        sent = transport.drain()
        assert not transport.disconnecting
        sent += transport.drain()
        # The last bytes fit in the transport's buffer: its close sends them.
        assert transport.disconnecting
        sent += transport.drain()
        assert len(sent) == 300 * 1024
        assert sent.count(0) == len(sent)
        assert transport.disconnecting
        run.lose(0, ConnectionDone)
        assert run.code() == 0
        assert run.document()["end"]["sum"]["bytes"] == 300 * 1024

    def test_deadlineAborts(self) -> None:
        """
        With C{-t}, the upload is aborted at the deadline.
        """
        run = Run("--upload", "-t", "1", TARGET)
        transport = PausingTransport()
        run.connect(0, transport)
        run.reactor.advance(1)
        assert transport.calls[-1] == "abortConnection"
        run.lose(0)
        assert run.code() == 0
        assert "sender" in run.out.getvalue()


class ZeroBodyTests:
    def test_interface(self) -> None:
        """
        L{ZeroBody} is an L{IBodyProducer} of unknown length without
        C{--bytes}, of that length with it.
        """
        from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer

        recorder = Recorder(Clock(), 1)
        assert verifyObject(IBodyProducer, ZeroBody(recorder.meters[0], None))
        assert ZeroBody(recorder.meters[0], None).length is UNKNOWN_LENGTH
        assert ZeroBody(recorder.meters[0], 10).length == 10

    def test_finish(self) -> None:
        """
        L{ZeroBody.finish} ends a body of unknown length; C{stopProducing}
        leaves its L{Deferred} unfired.
        """
        recorder = Recorder(Clock(), 1)
        body = ZeroBody(recorder.meters[0], None)
        consumer = PausingTransport()
        consumer.registerProducer(body, True)
        d = body.startProducing(consumer)
        assert len(consumer.value()) == len(SEND_CHUNK)
        assertNoResult(d)
        body.finish()
        assert successResultOf(d) is None
        stopped = ZeroBody(recorder.meters[0], None)
        other = PausingTransport()
        other.registerProducer(stopped, True)
        d2 = stopped.startProducing(other)
        stopped.stopProducing()
        assertNoResult(d2)
