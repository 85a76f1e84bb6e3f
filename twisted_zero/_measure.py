"""
C{twisted-zero measure TARGET}: a client that measures how fast a raw
stream or an HTTP URL delivers (or takes) bytes, on the client's clock.
"""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python import usage
from twisted.python.failure import Failure

from . import __version__
from ._measurelatency import httpLatency, rawLatency
from ._measurereport import (
    HEADER,
    SEPARATOR,
    Recorder,
    endLines,
    formatBytes,
    intervalLines,
    jsonDocument,
    latencyFigures,
    latencyLine,
    progressLine,
)
from ._measurestreams import IMeasuredStream, MeasureError
from ._measuretarget import Target, parseTarget
from ._values import countOption, secondsOption, sizeOption

__all__ = ["MeasureOptions", "measure"]

PROGRESS_SECONDS = 0.25
INTERRUPTED = 130


class _HelpShown(Exception):
    pass


class MeasureOptions(usage.Options):
    """
    Command-line options of C{twisted-zero measure}.
    """

    synopsis = "Usage: twisted-zero measure [options] TARGET"
    longdesc = (
        "Measure how fast TARGET delivers bytes (or, with --upload, takes "
        "them), on this client's clock. TARGET is a raw stream's endpoint "
        "(tcp:HOST:PORT, ssl:HOST:PORT, unix:PATH, or HOST:PORT) or a URL "
        "(http://HOST:PORT/zero, /random, /chargen, /files/NAME; /upload with "
        "--upload). A stream's time runs from its first byte to its end. "
        "SIZE takes K, M and G (powers of 1024)."
    )
    optFlags: list[list[Any]] = [
        ["json", None, "Print one JSON document instead of text."],
        ["upload", None, "Send zeros instead of receiving (HTTP: POST)."],
        [
            "latency",
            None,
            "Measure round trips instead (HTTP: tiny GETs; raw: connects).",
        ],
        ["insecure", None, "TLS: do not verify the server's certificate."],
    ]
    optParameters: list[list[Any]] = [
        ["parallel", "P", "1", "Streams at once."],
        ["time", "t", None, "Measure for SECONDS. Default: 10 (none with --bytes)."],
        ["bytes", None, None, "End each stream after SIZE bytes."],
        ["interval", "i", "1", "Report every SECONDS; 0: no interval reports."],
        ["count", None, "20", "--latency: round trips to measure."],
        ["ca", None, None, "TLS: trust the PEM certificate in FILE."],
        ["connect-timeout", None, "10", "Give up on a connection after SECONDS."],
    ]
    _metavars = {
        "parallel": "N",
        "time": "SECONDS",
        "bytes": "SIZE",
        "interval": "SECONDS",
        "count": "N",
        "ca": "FILE",
        "connect-timeout": "SECONDS",
    }

    def __init__(self, out: IO[str] | None = None) -> None:
        usage.Options.__init__(self)
        self._out = out

    def opt_help(self) -> None:
        """
        Display this help and exit.
        """
        (self._out or sys.stdout).write(str(self))
        raise _HelpShown()

    def opt_version(self) -> None:
        """
        Display twisted-zero's version and exit.
        """
        (self._out or sys.stdout).write(f"twisted-zero {__version__}\n")
        raise _HelpShown()

    def getUsage(self, width: int | None = None) -> str:
        text = super().getUsage(width)
        for name, metavar in self._metavars.items():
            text = re.sub(rf"--{name}=( *)", _withMetavar(name, metavar), text, count=1)
        return text

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{options}, which may come before or after TARGET.
        """
        usage.Options.parseOptions(self, self._optionsFirst(options or []))

    def _optionsFirst(self, argv: Sequence[str]) -> list[str]:
        valued = set()
        for long, short, *_ in self.optParameters:
            valued.add(f"--{long}")
            if short:
                valued.add(f"-{short}")
        options: list[str] = []
        targets: list[str] = []
        args = iter(argv)
        for arg in args:
            if arg == "--":
                targets.extend(args)
            elif arg.startswith("-") and arg != "-":
                options.append(arg)
                value = next(args, None) if arg in valued else None
                if value is not None:
                    options.append(value)
            else:
                targets.append(arg)
        return [*options, "--", *targets]

    def parseArgs(self, *targets: str) -> None:
        if len(targets) != 1:
            raise usage.UsageError("give one TARGET (an endpoint or a URL)")
        self["target"] = targets[0]

    def postOptions(self) -> None:
        self["parallel"] = countOption(self["parallel"], "parallel")
        self["count"] = countOption(self["count"], "count")
        self["bytes"] = sizeOption(self["bytes"], "--bytes", 1)
        if self["time"] is None and self["bytes"] is None:
            self["time"] = "10"
        self["time"] = secondsOption(self["time"], "time")
        interval = secondsOption(self["interval"], "interval")
        self["interval"] = interval
        connectTimeout = secondsOption(self["connect-timeout"], "connect-timeout")
        if connectTimeout is None:
            raise usage.UsageError("--connect-timeout: must be more than 0 seconds")
        self["connect-timeout"] = connectTimeout
        if self["latency"] and self["upload"]:
            raise usage.UsageError("--latency and --upload exclude each other")


def _withMetavar(name: str, metavar: str) -> Callable[[re.Match[str]], str]:
    """
    Put C{metavar} after C{--name=} in the help, keeping its columns.
    """

    def replace(match: re.Match[str]) -> str:
        padding = max(len(match.group(1)) - len(metavar), 1)
        return f"--{name}={metavar}" + " " * padding

    return replace


def measure(reactor: Any, argv: list[str], out: IO[str], err: IO[str]) -> Deferred[int]:
    """
    Run C{twisted-zero measure} with the arguments C{argv}.

    @param reactor: Connects and times the streams (L{IReactorTime},
        L{IReactorCore} for the interruption, and whatever the target's
        endpoint needs).
    @param argv: The arguments after C{measure}.
    @param out: Where the report goes.
    @param err: Where one line goes if the measurement fails.
    @return: Fires with the exit code: 0 measured, 1 failed (one line on
        C{err}), 2 bad arguments, 130 interrupted (the report so far
        printed).
    """
    options = MeasureOptions(out)
    try:
        options.parseOptions(argv)
        target = parseTarget(reactor, options)
    except _HelpShown:
        return succeed(0)
    except usage.UsageError as e:
        err.write(f"twisted-zero measure: error: {e} (see --help)\n")
        return succeed(2)
    if options["latency"]:
        return Deferred.fromCoroutine(_latency(reactor, options, target, out, err))
    return _Measurement(reactor, options, target, out, err).run()


async def _latency(
    reactor: Any, options: MeasureOptions, target: Target, out: IO[str], err: IO[str]
) -> int:
    try:
        if target.url is not None:
            assert target.agent is not None
            try:
                samples = await httpLatency(
                    reactor,
                    target.agent,
                    target.latencyURL(),
                    options["count"],
                    options["connect-timeout"],
                )
            finally:
                if target.pool is not None:
                    await target.pool.closeCachedConnections()
        else:
            assert target.endpoint is not None
            samples = await rawLatency(
                reactor,
                target.endpoint,
                target.text,
                options["count"],
                options["connect-timeout"],
            )
    except MeasureError as e:
        err.write(f"twisted-zero measure: {e}\n")
        return 1
    result = latencyFigures(samples)
    if options["json"]:
        out.write(
            jsonDocument(
                {"start": _startInfo(reactor, options, target), "latency": result}
            )
        )
    else:
        out.write(f"Latency to {target.text}: {latencyLine(result)}\n")
    return 0


def _startInfo(
    reactor: IReactorTime, options: MeasureOptions, target: Target
) -> dict[str, Any]:
    from . import __version__

    return {
        "target": target.text,
        "version": __version__,
        "timestamp": datetime.datetime.fromtimestamp(
            reactor.seconds(), datetime.timezone.utc
        ).isoformat(),
        "streams": options["parallel"],
        "options": {
            "parallel": options["parallel"],
            "time": options["time"],
            "bytes": options["bytes"],
            "interval": options["interval"],
            "upload": bool(options["upload"]),
            "latency": bool(options["latency"]),
            "count": options["count"] if options["latency"] else None,
            "connect_timeout": options["connect-timeout"],
        },
    }


@define
class _Measurement:
    """
    One measurement: its streams, timers, reports and exit code.
    """

    reactor: Any
    options: MeasureOptions
    target: Target
    out: IO[str]
    err: IO[str]
    recorder: Recorder = field(init=False)
    streams: list[IMeasuredStream] = field(factory=list, init=False)
    result: Deferred[int] = field(factory=Deferred, init=False)
    error: str | None = field(default=None, init=False)
    _timers: list[Any] = field(factory=list, init=False)
    _loops: list[LoopingCall] = field(factory=list, init=False)
    _trigger: Any = field(default=None, init=False)
    _finished: bool = field(default=False, init=False)
    _progress: bool = field(default=False, init=False)
    _progressShown: bool = field(default=False, init=False)

    def run(self) -> Deferred[int]:
        options = self.options
        self.recorder = Recorder(self.reactor, options["parallel"], self._started)
        self._progress = not options["json"] and _isatty(self.out)
        for meter in self.recorder.meters:
            self.streams.append(self.target.stream(meter, options))
        if not options["json"]:
            self._write(self._headline())
        self._trigger = self.reactor.addSystemEventTrigger(
            "before", "shutdown", self._interrupt
        )
        ended = [
            stream.run().addBoth(self._streamEnded, stream) for stream in self.streams
        ]
        DeferredList(ended).addCallback(lambda ignored: self._finish(0))
        return self.result

    def _headline(self) -> str:
        options = self.options
        count = options["parallel"]
        what = "sending to" if options["upload"] else "receiving from"
        goals = []
        if options["bytes"] is not None:
            goals.append(f"{formatBytes(options['bytes'])} per stream")
        if options["time"] is not None:
            unit = "second" if options["time"] == 1 else "seconds"
            goals.append(f"{options['time']:g} {unit}")
        plural = "s" if count > 1 else ""
        return f"{count} stream{plural} {what} {self.target.text}, {' or '.join(goals)}"

    def _started(self) -> None:
        options = self.options
        if options["time"] is not None:
            self._timers.append(self.reactor.callLater(options["time"], self._stopAll))
        if not options["json"]:
            self._write(HEADER)
        if options["interval"] is not None:
            self._loop(self._tick, options["interval"])
        if self._progress:
            self._loop(self._showProgress, PROGRESS_SECONDS)

    def _loop(self, function: Any, seconds: float) -> None:
        loop = LoopingCall(function)
        loop.clock = self.reactor
        loop.start(seconds, now=False)
        self._loops.append(loop)

    def _tick(self) -> None:
        interval = self.recorder.closeInterval()
        if interval is not None and not self.options["json"]:
            for line in intervalLines(interval):
                self._write(line)

    def _showProgress(self) -> None:
        line = progressLine(self.recorder, "")
        self.out.write("\r" + line + "\x1b[K")
        self._progressShown = True
        _flush(self.out)

    def _write(self, line: str) -> None:
        if self._progressShown:
            self.out.write("\r\x1b[K")
            self._progressShown = False
        self.out.write(line + "\n")
        _flush(self.out)

    def _streamEnded(self, result: object, stream: IMeasuredStream) -> None:
        if isinstance(result, Failure):
            if isinstance(result.value, MeasureError):
                message = str(result.value)
            else:
                message = f"unexpected failure: {result.getErrorMessage()}"
            if self.error is None:
                self.error = message
            if self.recorder.origin is None:
                # Nothing moved at all: the target is not usable.
                self._stopAll()

    def _stopAll(self) -> None:
        for stream in self.streams:
            stream.stop()

    def _interrupt(self) -> None:
        self._stopAll()
        self._finish(INTERRUPTED)

    def _finish(self, code: int) -> None:
        if self._finished:
            return
        self._finished = True
        self.reactor.removeSystemEventTrigger(self._trigger)
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        for loop in self._loops:
            loop.stop()
        for meter in self.recorder.meters:
            meter.end()
        final = None
        if self.options["interval"] is not None:
            final = self.recorder.closeInterval(final=True)
        end = self.recorder.endFigures()
        answers = self.target.answers(self.streams)
        if answers is not None:
            for figures, answer in zip(end["streams"], answers, strict=True):
                figures["server"] = answer
        if self.error is not None:
            code = 1
        if self.options["json"]:
            document: dict[str, Any] = {
                "start": _startInfo(self.reactor, self.options, self.target),
                "intervals": [i.toJSON() for i in self.recorder.intervals],
                "end": end,
            }
            if self.error is not None:
                document["error"] = self.error
            if code == INTERRUPTED:
                document["interrupted"] = True
            self.out.write(jsonDocument(document))
        else:
            if final is not None:
                for line in intervalLines(final):
                    self._write(line)
            if self.recorder.origin is not None:
                self._write(SEPARATOR)
                direction = "sender" if self.options["upload"] else "receiver"
                for line in endLines(end, direction):
                    self._write(line)
                if answers is not None:
                    for number, answer in enumerate(answers, 1):
                        self._write(f"[{number:3d}] server: {_answerText(answer)}")
        if self.error is not None:
            self.err.write(f"twisted-zero measure: {self.error}\n")
        self.result.callback(code)


def _answerText(answer: Any) -> str:
    if not isinstance(answer, dict):
        return "no answer"
    count, seconds = answer.get("bytes"), answer.get("seconds")
    if isinstance(count, int) and isinstance(seconds, (int, float)) and seconds > 0:
        from ._measurereport import formatBits

        return (
            f"received {formatBytes(count)} in {seconds:.2f} sec, "
            f"{formatBits(8 * count / seconds)}"
        )
    return str(answer)


def _isatty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def _flush(stream: IO[str]) -> None:
    flush = getattr(stream, "flush", None)
    if flush is not None:
        flush()
