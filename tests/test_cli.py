"""
Tests for L{twisted_zero._cli}: the C{twisted-zero} command.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.application import app
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from twisted.python import usage
from twisted.python.failure import Failure

import twisted_zero
from twisted_zero._cli import USAGE, ZERO, main

from .helpers import successResultOf
from .test_twistd import (
    DEADLINE,
    Daemon,
    environment,
    receiveAll,
    serveCommand,
    start,
)


class MainTests:
    @pytest.mark.parametrize(
        "argv",
        [["--version"], ["serve", "--version"], ["measure", "--version"]],
    )
    def test_version(self, argv: list[str]) -> None:
        """
        C{--version} prints twisted-zero's version, not Twisted's.
        """
        out = io.StringIO()
        assert main(argv, out) == 0
        assert out.getvalue() == f"twisted-zero {twisted_zero.__version__}\n"

    def test_measureOptionsVersion(self) -> None:
        """
        C{measure}'s own C{--version} and C{--help} speak of twisted-zero,
        not of Twisted.
        """
        from twisted.internet.testing import MemoryReactorClock

        from twisted_zero._measure import measure

        for flag, first in [
            ("--version", f"twisted-zero {twisted_zero.__version__}\n"),
            ("--help", "Usage: twisted-zero measure [options] TARGET\n"),
        ]:
            out, err = io.StringIO(), io.StringIO()
            d = measure(MemoryReactorClock(), [flag], out, err)
            assert successResultOf(d) == 0
            assert out.getvalue().startswith(first)
            assert "Twisted version" not in out.getvalue()
            assert err.getvalue() == ""

    def test_help(self) -> None:
        """
        C{--help} lists the commands.
        """
        out = io.StringIO()
        assert main(["--help"], out) == 0
        assert out.getvalue() == USAGE
        assert "serve [options]" in USAGE
        assert "measure [options] TARGET" in USAGE

    def test_noCommand(self) -> None:
        """
        Without a command, the usage, and a usage error's exit code.
        """
        out = io.StringIO()
        assert main([], out) == 2
        assert out.getvalue() == USAGE

    def test_unknownCommand(self, capsys: pytest.CaptureFixture[str]) -> None:
        """
        An unknown command gets one line that says which ones there are.
        """
        assert main(["serv"], io.StringIO()) == 2
        assert capsys.readouterr().err == (
            "twisted-zero: unknown command 'serv': use serve or measure "
            "(twisted-zero --help)\n"
        )


class WiringTests:
    def test_serveOptions(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        C{serve} runs Twisted's runner in the foreground, without a pid
        file, with C{zero} and the arguments given, whatever plugins are
        installed.
        """
        ran: list[object] = []

        def run(runApp: object, optionsClass: type[usage.Options]) -> None:
            config = optionsClass()
            config.parseOptions(sys.argv[1:])
            ran.append(config)

        monkeypatch.setattr(app, "run", run)
        monkeypatch.setattr(sys, "argv", ["twisted-zero"])
        assert main(["serve", "--limit", "1M"]) == 0
        [config] = ran
        assert isinstance(config, usage.Options)
        assert (config["nodaemon"], config["pidfile"]) == (True, "")
        assert config.subCommand == "zero"
        assert config.subOptions["limit"] == 2**20
        assert getattr(config, "loadedPlugins", None) == {"zero": ZERO}

    @pytest.mark.parametrize("code", [0, 1, 2])
    def test_measureExits(self, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
        """
        C{measure} runs on the reactor, and its exit code is the process's.
        """
        import twisted_zero._measure

        calls: list[list[str]] = []

        def measure(
            reactor: object, argv: list[str], out: object, err: object
        ) -> Deferred[int]:
            calls.append(argv)
            return succeed(code)

        results: list[Failure | None] = []

        def react(main: Callable[[object], Deferred[None]]) -> None:
            main(object()).addBoth(results.append)

        monkeypatch.setattr(twisted_zero._measure, "measure", measure)
        monkeypatch.setattr(task, "react", react)
        main(["measure", "-t", "1", "tcp:localhost:1"])
        assert calls == [["-t", "1", "tcp:localhost:1"]]
        [result] = results
        if code:
            assert isinstance(result, Failure)
            assert isinstance(result.value, SystemExit)
            assert result.value.code == code
        else:
            assert result is None


def run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twisted_zero", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment(),
        stdin=subprocess.DEVNULL,
        timeout=DEADLINE,
        check=False,
    )


@pytest.mark.e2e
class CommandTests:
    def test_module(self, tmp_path: Path) -> None:
        """
        C{python -m twisted_zero} is the command.
        """
        result = run("--version", tmp_path=tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (
            0,
            f"twisted-zero {twisted_zero.__version__}\n",
            "",
        )

    def test_serve(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        C{twisted-zero serve} runs the daemon in the foreground, with the
        daemon's options, and no pid file; SIGTERM stops it cleanly.
        """
        daemon = start(daemons, tmp_path, "--limit", "1M", command=serveCommand)
        assert receiveAll(daemon.connect())[0] == 2**20
        assert not (tmp_path / "twistd.pid").exists()
        assert daemon.stop() == 0
