"""
Tests for L{twisted_zero.tap}: options, the service they make, and the
twistd plugin.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.application.service import IService, IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.scripts._twistd_unix import ServerOptions

from twisted_zero import ChargenSource, StreamFactory
from twisted_zero._cli import ZERO
from twisted_zero._site import StreamSite
from twisted_zero.tap import (
    DEFAULT_LISTEN,
    Options,
    makeService,
)

from .sockets import countSendfiles, getFile


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionsTests:
    def test_defaults(self) -> None:
        """
        By default: zeros, on localhost port 8019 only, no limit, each
        source's own chunk size.
        """
        options = parse()
        assert options["listen"] == [DEFAULT_LISTEN] == ["tcp:8019:interface=127.0.0.1"]
        assert options["source"] == "zero"
        assert options["limit"] is None
        assert options["chunk-size"] is None
        assert options["io-threads"] == 16

    def test_values(self) -> None:
        """
        C{--listen} repeats; sizes take binary suffixes; the source factory
        makes the named source.
        """
        options = parse(
            "--listen", "tcp:0", "--listen", "unix:/tmp/z.sock",
            "--source", "chargen", "--limit", "1G", "--chunk-size", "64K",
        )  # fmt: skip
        assert options["listen"] == ["tcp:0", "unix:/tmp/z.sock"]
        assert options["limit"] == 2**30
        assert options["chunk-size"] == 65536
        assert isinstance(options["sourceFactory"](), ChargenSource)

    def test_limitZero(self) -> None:
        """
        A limit of zero is allowed: every stream is empty.
        """
        assert parse("--limit", "0")["limit"] == 0

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--limit", "lots"], "--limit: 'lots' is not a size"),
            (["--limit", "-1"], "--limit: '-1' is not a size"),
            (["--chunk-size", "0"], "--chunk-size: must be at least 1 bytes"),
            (["--chunk-size", "1G"], "--chunk-size: at most 16M"),
            (["--source", "ones"], "--source: unknown source 'ones'"),
            (["--source", "file:/nonexistent"], "--source: /nonexistent: no such file"),
            (["--source", "file:/"], "--source: /: is a directory"),
            (["--source", "file:/dev/null"], "--source: /dev/null: is a device"),
            (["--bogus"], "option --bogus not recognized"),
            (
                ["--max-duration", "-1"],
                "--max-duration: '-1' is not a number of seconds",
            ),
            (
                ["--shutdown-timeout", "x"],
                "--shutdown-timeout: 'x' is not a number of seconds",
            ),
            (
                ["--max-per-ip", "1.5"],
                "--max-per-ip: '1.5' is not a positive whole number",
            ),
            (["--total-rate", "0"], "--total-rate: must be at least 1 bytes"),
            (["--workers", "65"], "--workers: at most 64"),
            (["--io-threads", "0"], "--io-threads: '0' is not a positive whole number"),
            (["--io-threads", "1025"], "--io-threads: at most 1024"),
            (
                ["--worker-sockets", "ftp:3:2"],
                "--worker-sockets: unknown listener kind 'ftp'",
            ),
            (["extra"], "Wrong number of arguments"),
        ],
    )
    def test_errors(self, args: list[str], message: str) -> None:
        """
        Bad input is refused with a message naming the option and the
        problem.
        """
        with pytest.raises(UsageError) as raised:
            parse(*args)
        assert str(raised.value).startswith(message)
        assert "\\n" not in str(raised.value)

    def test_fifo(self, tmp_path: Path) -> None:
        """
        A FIFO is refused, and not opened (this would hang).
        """
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(UsageError, match="is a FIFO"):
            parse("--source", f"file:{tmp_path / 'fifo'}")

    def test_oneLineUnderTwistd(self) -> None:
        """
        Under twistd, bad options end the process with one line (twistd
        would print its whole usage text instead).
        """
        with pytest.raises(SystemExit) as raised:
            ServerOptions().parseOptions(["zero", "--limit", "x"])
        assert (
            str(raised.value.code)
            == "twistd zero: error: --limit: 'x' is not a size (use a whole number of bytes, optionally followed by K, M or G)"
        )


class HTTPOptionsTests:
    def test_httpOnly(self, tmp_path: Path) -> None:
        """
        With C{--http} and no C{--listen}, only HTTP is served; the root is
        made real.
        """
        (tmp_path / "real").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "real")
        options = parse(
            "--http", "tcp:8080", "--http", "tcp:8081", "--root", str(tmp_path / "link")
        )
        assert options["listen"] == []
        assert options["http"] == ["tcp:8080", "tcp:8081"]
        assert options["root"] == str((tmp_path / "real").resolve())

    def test_both(self) -> None:
        """
        C{--listen} and C{--http} combine; C{--max-bytes} takes a size.
        """
        options = parse(
            "--listen", "tcp:1", "--http", "tcp:2", "--max-bytes", "1G", "--listing"
        )
        assert (options["listen"], options["http"]) == (["tcp:1"], ["tcp:2"])
        assert options["max-bytes"] == 2**30
        assert options["listing"]

    def test_requestLimits(self) -> None:
        """
        Request bodies over 1M get a 413 and request heads must arrive
        within 15 seconds, unless C{--max-body} and C{--header-timeout} say
        otherwise (0: no body at all; no head timeout); the site gets them.
        """
        defaults = parse("--http", "tcp:1")
        assert (defaults["max-body"], defaults["header-timeout"]) == (2**20, 15.0)
        options = parse(
            "--http", "tcp:1", "--max-body", "1G", "--header-timeout", "2.5"
        )
        assert (options["max-body"], options["header-timeout"]) == (2**30, 2.5)
        options = parse("--http", "tcp:1", "--max-body", "0", "--header-timeout", "0")
        assert (options["max-body"], options["header-timeout"]) == (0, None)
        reactor = MemoryReactorClock()
        makeService(
            parse("--http", "tcp:8080", "--max-body", "5K", "--header-timeout", "3"),
            reactor,
        )
        [(_, site, _, _)] = reactor.tcpServers
        assert isinstance(site, StreamSite)
        assert (site.maxBody, site.headerTimeout) == (5 * 1024, 3.0)

    def test_maxUpload(self) -> None:
        """
        Uploads have no limit unless C{--max-upload} gives one (0: no
        upload at all); the site gets it.
        """
        assert parse("--http", "tcp:1")["max-upload"] is None
        assert parse("--http", "tcp:1", "--max-upload", "2G")["max-upload"] == 2**31
        assert parse("--http", "tcp:1", "--max-upload", "0")["max-upload"] == 0
        reactor = MemoryReactorClock()
        makeService(parse("--http", "tcp:8080", "--max-upload", "5K"), reactor)
        [(_, site, _, _)] = reactor.tcpServers
        assert isinstance(site, StreamSite)
        assert site.maxUpload == 5 * 1024
        assert site.bodyLimit(b"POST", b"/upload") == 5 * 1024
        assert site.bodyLimit(b"GET", b"/upload") == site.maxBody

    def test_maxUnsent(self) -> None:
        """
        C{--max-unsent} is 128K by default, off with 0, a size otherwise,
        which the connections' protection gets.
        """
        assert parse()["max-unsent"] == 128 * 1024
        assert parse("--max-unsent", "0")["max-unsent"] is None
        assert parse("--max-unsent", "128K")["max-unsent"] == 128 * 1024
        reactor = MemoryReactorClock()
        makeService(parse("--listen", "tcp:1", "--max-unsent", "64K"), reactor)
        [(_, factory, _, _)] = reactor.tcpServers
        assert isinstance(factory, StreamFactory)
        assert factory.protection.maxUnsent == 64 * 1024

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (
                ["--max-unsent", "2G"],
                "--max-unsent: at most 1024M, not 2147483648 bytes",
            ),
            (["--max-unsent", "x"], "--max-unsent: 'x' is not a size"),
            (["--root", "/tmp"], "--root needs --http"),
            (["--listing"], "--listing needs --http"),
            (["--dotfiles"], "--dotfiles needs --http"),
            (["--max-bytes", "1M"], "--max-bytes needs --http"),
            (
                ["--http", "tcp:1", "--root", "/nonexistent"],
                "--root: /nonexistent: no such directory",
            ),
            (
                ["--http", "tcp:1", "--root", "/etc/passwd"],
                "--root: /etc/passwd: not a directory",
            ),
            (["--http", "tcp:1", "--max-bytes", "x"], "--max-bytes: 'x' is not a size"),
            (["--max-body", "1M"], "--max-body needs --http"),
            (["--max-upload", "1M"], "--max-upload needs --http"),
            (
                ["--http", "tcp:1", "--max-upload", "lots"],
                "--max-upload: 'lots' is not a size",
            ),
            (
                ["--http", "tcp:1", "--max-upload", "9000000T"],
                "--max-upload: at most 9223372036854775807 bytes",
            ),
            (["--header-timeout", "5"], "--header-timeout needs --http"),
            (["--http", "tcp:1", "--max-body", "-1"], "--max-body: '-1' is not a size"),
            (
                ["--http", "tcp:1", "--max-body", "9000000T"],
                "--max-body: at most 9223372036854775807 bytes",
            ),
            (
                ["--http", "tcp:1", "--header-timeout", "soon"],
                "--header-timeout: 'soon' is not a number of seconds",
            ),
        ],
    )
    def test_errors(self, args: list[str], message: str) -> None:
        """
        HTTP options are checked like the others.
        """
        with pytest.raises(UsageError) as raised:
            parse(*args)
        assert str(raised.value).startswith(message)

    def test_service(self, tmp_path: Path) -> None:
        """
        L{makeService} binds every C{--http} endpoint to one HTTP site and
        logs it.
        """
        reactor = MemoryReactorClock()
        options = parse(
            "--http", "tcp:8080", "--http", "tcp:8081", "--root", str(tmp_path)
        )
        service = makeService(options, reactor)
        assert [port for port, _, _, _ in reactor.tcpServers] == [8080, 8081]
        [site] = {factory for _, factory, _, _ in reactor.tcpServers}
        assert isinstance(site, StreamSite)
        with capturedLogs() as events:
            service.startService()
        assert [e["log_format"].split(" on ")[0] for e in events if "address" in e] == [
            "serving HTTP"
        ] * 2


class MakeServiceTests:
    def test_listens(self) -> None:
        """
        L{makeService} binds every endpoint at once, all serving one
        L{StreamFactory}, and the service logs each address when started.
        """
        reactor = MemoryReactorClock()
        options = parse(
            "--listen", "tcp:1234", "--listen", r"tcp:0:interface=\:\:1", "--limit", "5"
        )
        service = makeService(options, reactor)
        assert IService.providedBy(service)
        assert [(p, i) for p, _, _, i in reactor.tcpServers] == [(1234, ""), (0, "::1")]
        [factory] = {f for _, f, _, _ in reactor.tcpServers}
        assert isinstance(factory, StreamFactory)
        assert factory.limit == 5
        assert factory.clock is reactor
        with capturedLogs() as events:
            service.startService()
        assert [e["address"] for e in events if "address" in e] == [
            "0.0.0.0:1234",
            "[::1]:0",
        ]

    def test_noSendfile(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        C{--no-sendfile} has files read and sent, over raw TCP and HTTP.
        """
        sendfiles = countSendfiles(monkeypatch)
        content = os.urandom(2**20)
        (tmp_path / "data.bin").write_bytes(content)
        for args, used in [(["--no-sendfile"], False), ([], True)]:
            reactor = MemoryReactorClock()
            options = parse(
                "--listen", "tcp:1234", "--http", "tcp:8080", "--root", str(tmp_path),
                *args,
            )  # fmt: skip
            makeService(options, reactor)
            (_, factory, _, _), (_, site, _, _) = reactor.tcpServers
            assert isinstance(factory, StreamFactory)
            assert factory.sendfile is used
            assert isinstance(site, StreamSite)
            assert getFile(site, reactor) == content
            assert bool(sendfiles) is used

    def test_oneLineUnderTwistd(self) -> None:
        """
        Under twistd, a startup failure ends the process with one line.
        """
        options = ServerOptions()
        options.parseOptions(["zero", "--listen", "bogus:1"])
        with pytest.raises(SystemExit) as raised:
            makeService(options.subOptions, MemoryReactorClock())
        assert str(raised.value.code).startswith(
            "twistd zero: error: bad endpoint 'bogus:1'"
        )


class PluginTests:
    def test_plugin(self) -> None:
        """
        twistd finds the C{zero} plugin, built from L{twisted_zero.tap}.
        """
        from twisted import plugins

        [maker] = [p for p in getPlugins(IServiceMaker, plugins) if p.tapname == "zero"]
        assert maker.options is Options
        assert maker.makeService is makeService

    def test_serveUsesThePlugin(self) -> None:
        """
        C{twisted-zero serve} runs the plugin the dropin declares.
        """
        from twisted import plugins

        [maker] = [p for p in getPlugins(IServiceMaker, plugins) if p.tapname == "zero"]
        assert vars(maker) == vars(ZERO)
