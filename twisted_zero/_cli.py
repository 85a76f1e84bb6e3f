"""
The C{twisted-zero} command (and C{python -m twisted_zero}): C{serve} runs
the daemon in the foreground, as C{twistd -n --pidfile= zero} does, with the
same options, messages and exit codes; C{measure} measures a link against a
server.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from twisted.application import app
from twisted.application.service import ServiceMaker
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.scripts._twistd_unix import ServerOptions
from twisted.scripts.twistd import runApp

from . import __version__

USAGE = """\
Usage: twisted-zero COMMAND [options]

Commands:
  serve [options]           run the daemon in the foreground: zeros on
                            tcp:8019:interface=127.0.0.1 without options
                            (`twisted-zero serve --help` lists them)
  measure [options] TARGET  measure the throughput or latency of a link
                            (`twisted-zero measure --help` lists them)

Options:
  --version                 print twisted-zero's version
  -h, --help                print this help
"""


ZERO = ServiceMaker(
    "twisted-zero",
    "twisted_zero.tap",
    "Stream zeros, chargen, random bytes or a file to every TCP client.",
    "zero",
)
"""
The C{twistd zero} plugin, as the dropin in C{twisted/plugins} declares it;
C{serve} uses it directly, so that it runs wherever this package imports
(an editable install has no dropin in Twisted's plugin directory).
"""


class _ServeOptions(ServerOptions):
    """
    C{twistd}'s options, with C{zero} as its only command.
    """

    @staticmethod
    def _getPlugins(interface: object, package: object = None) -> list[ServiceMaker]:  # type: ignore[override]  # asked only for service makers
        return [ZERO]


def _serve(argv: Sequence[str]) -> int:
    """
    Run C{twistd -n --pidfile= zero} with C{argv}: Twisted's own runner
    parses the options, reports their errors and exits with its codes.
    """
    sys.argv = ["twisted-zero serve", "--nodaemon", "--pidfile=", "zero", *argv]
    app.run(runApp, _ServeOptions)
    return 0


def _measure(argv: Sequence[str]) -> int:
    """
    Run C{measure} on the global reactor until it is done.
    """
    from ._measure import measure

    def main(reactor: IReactorCore) -> Deferred[None]:
        d = measure(reactor, list(argv), sys.stdout, sys.stderr)

        def exit(code: int) -> None:
            if code:
                raise SystemExit(code)

        return d.addCallback(exit)

    task.react(main)
    return 0  # react exits, with the code


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """
    Run the command given by C{argv} (by default, the process's arguments).

    @param out: Where help and the version go (by default, standard
        output).
    @return: The exit code, where the command returns one (C{serve} and
        C{measure} exit the process themselves).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    out = sys.stdout if out is None else out
    if not args or args[0] in ("-h", "--help"):
        out.write(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "--version" or (
        command in ("serve", "measure") and "--version" in rest
    ):
        out.write(f"twisted-zero {__version__}\n")
        return 0
    if command == "serve":
        return _serve(rest)
    if command == "measure":
        return _measure(rest)
    sys.stderr.write(
        f"twisted-zero: unknown command {command!r}: use serve or measure "
        "(twisted-zero --help)\n"
    )
    return 2
