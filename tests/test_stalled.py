"""
End to end: what clients that read nothing cost the daemon, path by path.
Each path is tried with as many stalled clients twice: the first round
pays for what the daemon keeps for good once it has served anyone (its
I/O threads and their arenas, TLS's tables), the second is measured. The
bounds are those the README promises, and well under one chunk of any
source per client (4 MiB shared zeros, 2 MiB random, 240 KiB of a file, a
64 KiB write through a transport), so that a path which went back to
holding a chunk, or a copy of one, fails.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest
from attrs import frozen

from .helpers import TLSFiles, writeTLSFiles
from .test_twistd import LISTENING, SERVING_HTTP, Daemon, start

CLIENTS = 40
PLAIN_BOUND = 64 * 1024
TLS_BOUND = 256 * 1024


@frozen
class Path_:
    """
    A way to ask the daemon for bytes: the daemon's C{args}, whether its
    stream is raw (the second raw listener when C{tls}) or HTTP, the
    C{request} sent once connected.
    """

    args: tuple[str, ...]
    http: bool = False
    tls: bool = False
    request: bytes = b""
    bound: int = PLAIN_BOUND


def _get(target: str, version: str = "1.1") -> bytes:
    return f"GET {target} HTTP/{version}\r\nHost: t\r\n\r\n".encode()


def paths(root: Path, tls: TLSFiles) -> dict[str, Path_]:
    big = str(root / "big.bin")
    web = ("--http", "tcp:0:interface=127.0.0.1", "--root", str(root))
    return {
        "raw zero": Path_(("--source", "zero")),
        "raw chargen": Path_(("--source", "chargen")),
        "raw random": Path_(("--source", "random")),
        "raw file": Path_(("--source", f"file:{big}")),
        "raw file, no sendfile": Path_(("--source", f"file:{big}", "--no-sendfile")),
        "raw TLS zero": Path_(
            ("--listen", tls.serverEndpoint()), tls=True, bound=TLS_BOUND
        ),
        "raw TLS random": Path_(
            ("--source", "random", "--listen", tls.serverEndpoint()),
            tls=True,
            bound=TLS_BOUND,
        ),
        "HTTP zero, Content-Length": Path_(web, True, request=_get("/zero?bytes=1T")),
        "HTTP zero, chunked": Path_(web, True, request=_get("/zero")),
        "HTTP chargen, chunked": Path_(web, True, request=_get("/chargen")),
        "HTTP random, chunked": Path_(web, True, request=_get("/random")),
        "HTTP random, Content-Length": Path_(
            web, True, request=_get("/random?bytes=1T")
        ),
        "HTTP/1.0 zero": Path_(web, True, request=_get("/zero", "1.0")),
        "HTTP file": Path_(web, True, request=_get("/files/big.bin")),
        "HTTP file, no sendfile": Path_(
            (*web, "--no-sendfile"), True, request=_get("/files/big.bin")
        ),
        "HTTPS zero, chunked": Path_(
            ("--http", tls.serverEndpoint()),
            True,
            tls=True,
            request=_get("/zero"),
            bound=TLS_BOUND,
        ),
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TLSFiles]:
    root = tmp_path_factory.mktemp("root")
    with (root / "big.bin").open("wb") as f:
        f.truncate(2**30)
    return root, writeTLSFiles(tmp_path_factory.mktemp("tls"))


NAMES = list(paths(Path("/"), TLSFiles(Path("k"), Path("c"), b"")))


class StalledTests:
    @pytest.mark.parametrize("name", NAMES)
    def test_stalledClients(
        self,
        name: str,
        daemons: list[Daemon],
        tmp_path: Path,
        files: tuple[Path, TLSFiles],
    ) -> None:
        """
        Clients that ask for an endless or huge stream and read nothing cost
        the daemon at most the path's bound each (64 KiB, 256 KiB over TLS)
        once their sockets are full, and make it read nothing more.
        """
        root, tls = files
        path = paths(root, tls)[name]
        daemon = start(daemons, tmp_path, *path.args)
        if path.http:
            port = int(daemon.waitFor(SERVING_HTTP).group("port"))
        elif path.tls:
            port = int(daemon.waitFor(LISTENING).group("port"))
        else:
            port = daemon.port
        with StalledClients(port, path):
            settle(daemon)
        time.sleep(0.5)
        before = daemon.rss()
        with StalledClients(port, path):
            settle(daemon)
            grown = daemon.rss() - before
            read = daemon.io()
            time.sleep(1)
            assert daemon.io() == read, "the daemon read while its clients stalled"
        assert grown < CLIENTS * path.bound, f"{grown / CLIENTS:.0f} bytes per client"


class StalledClients:
    """
    L{CLIENTS} connections that ask for their stream and read nothing (a 4
    KiB receive buffer), closed on the way out.
    """

    def __init__(self, port: int, path: Path_) -> None:
        self._port = port
        self._path = path
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> list[socket.socket]:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        for _ in range(CLIENTS):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", self._port))
            if self._path.tls:
                sock = context.wrap_socket(sock)
            self._sockets.append(sock)
            if self._path.request:
                sock.sendall(self._path.request)
        return self._sockets

    def __exit__(self, *exc: object) -> None:
        for sock in self._sockets:
            sock.close()


def settle(daemon: Daemon, timeout: float = 20.0) -> None:
    """
    Wait until the daemon's memory and reads stop changing for a second.
    """
    end = time.monotonic() + timeout
    last = (daemon.rss(), daemon.io())
    quiet = time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.25)
        now = (daemon.rss(), daemon.io())
        if abs(now[0] - last[0]) > 64 * 1024 or now[1] != last[1]:
            last, quiet = now, time.monotonic()
        elif time.monotonic() - quiet >= 1.0:
            return
    raise AssertionError("the daemon's memory or reads did not settle")
