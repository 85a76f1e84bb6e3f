"""
End-to-end tests of file I/O off the reactor thread: the real C{twistd zero}
serving files from a slow FUSE file system (every read sleeps, and is
logged as it begins and ends), and from the ordinary disk with its page
cache dropped.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from twisted_zero._sources import FILE_CHUNK_SIZE

from .helpers import evict
from .slowfs import mounted, unavailable
from .test_twistd import DEADLINE, SERVING_HTTP, Daemon, start

pytestmark = pytest.mark.e2e

REASON = unavailable()
needsFuse = pytest.mark.skipif(REASON is not None, reason=REASON or "")


class ReadLog:
    """
    The log of a slow file system: C{begin OFFSET SIZE} as each read starts,
    C{read OFFSET SIZE} once it is done.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[tuple[str, int, int]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [
            (kind, int(offset), int(size))
            for kind, offset, size in (line.split() for line in text.splitlines())
        ]

    def pending(self) -> list[tuple[int, int]]:
        """
        The reads (offset, size) that have begun and are not done.
        """
        pending: list[tuple[int, int]] = []
        for kind, offset, size in self.entries():
            if kind == "begin":
                pending.append((offset, size))
            else:
                pending.remove((offset, size))
        return pending

    def inFlight(self) -> int:
        """
        How many reads have begun and are not done.
        """
        return len(self.pending())

    def waitFor(self, condition: str, timeout: float = DEADLINE) -> None:
        """
        Wait until C{condition} (C{"reading"}: a read is in flight; C{"idle"}:
        none is) holds.
        """
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (self.inFlight() > 0) == (condition == "reading"):
                return
            time.sleep(0.01)
        raise AssertionError(f"the file system was never {condition}")


@pytest.fixture
def slowMount(tmp_path: Path) -> Iterator[tuple[Path, ReadLog]]:
    """
    The files of C{tmp_path / "source"} through a FUSE file system whose
    reads take one second each, opened for direct I/O: the file system's
    reads are exactly those the daemon makes (in requests of at most 128
    KiB), no readahead.
    """
    if REASON is not None:
        pytest.skip(REASON)
    source, mountpoint = tmp_path / "source", tmp_path / "mount"
    source.mkdir()
    mountpoint.mkdir()
    log = tmp_path / "reads.log"
    with mounted(source, mountpoint, 1.0, log, direct=True) as mount:
        yield mount, ReadLog(log)


def httpGet(port: int, path: str) -> socket.socket:
    """
    Connect and send a GET for C{path}; the caller reads the response.
    """
    connection = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    connection.sendall(
        f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    )
    return connection


def receive(connection: socket.socket) -> bytes:
    """
    Everything until the server closes.
    """
    chunks = []
    with connection:
        while chunk := connection.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


def reset(connection: socket.socket) -> None:
    """
    Close with a reset, as a client that crashed or gave up does.
    """
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def opensUnder(pid: int, directory: Path) -> list[str]:
    """
    What process C{pid} has open under C{directory}.
    """
    found = []
    for entry in os.scandir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(entry.path)
        except OSError:
            continue
        if target.startswith(str(directory) + "/"):
            found.append(target)
    return found


def httpDaemon(
    daemons: list[Daemon], tmp_path: Path, root: Path, *args: str
) -> tuple[Daemon, int]:
    daemon = start(
        daemons,
        tmp_path,
        "--http",
        "tcp:0:interface=127.0.0.1",
        "--root",
        str(root),
        *args,
    )
    return daemon, int(daemon.waitFor(SERVING_HTTP).group("port"))


@needsFuse
class SlowFileSystemTests:
    def test_othersNotHeldUp(
        self,
        daemons: list[Daemon],
        tmp_path: Path,
        slowMount: tuple[Path, ReadLog],
    ) -> None:
        """
        While a read of a download waits for the file system, the daemon
        answers other clients: their responses come before that read ends.
        """
        mount, log = slowMount
        (tmp_path / "source" / "data.bin").write_bytes(os.urandom(8 * 2**20))
        daemon, port = httpDaemon(daemons, tmp_path, mount)
        download = httpGet(port, "/files/data.bin")
        log.waitFor("reading")
        reading = log.pending()
        for _ in range(5):
            response = receive(httpGet(port, "/zero?bytes=1"))
            assert response.startswith(b"HTTP/1.1 200 ")
            assert response.endswith(b"\r\n\r\n\0")
        still = log.pending()
        assert all(read in still for read in reading), "answered only after the read"
        reset(download)

    def test_listingNotHoldingUp(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        A listing of a directory on a slow file system is made in a thread:
        other clients are answered while it is made, and it comes after.
        """
        if REASON is not None:
            pytest.skip(REASON)
        source, mountpoint = tmp_path / "source", tmp_path / "mount"
        (source / "dir").mkdir(parents=True)
        mountpoint.mkdir()
        for index in range(100):
            (source / "dir" / f"file{index:03}").write_bytes(b"")
        with mounted(source, mountpoint, 0.0, delayMeta=0.5) as mount:
            daemon, port = httpDaemon(daemons, tmp_path, mount, "--listing")
            listing = httpGet(port, "/files/dir/")
            listing.setblocking(False)
            for _ in range(5):
                response = receive(httpGet(port, "/zero?bytes=1"))
                assert response.endswith(b"\r\n\r\n\0")
            with pytest.raises(BlockingIOError):
                listing.recv(1)  # nothing yet: the listing is being made
            listing.setblocking(True)
            page = receive(listing)
            assert page.startswith(b"HTTP/1.1 200 ")
            assert page.count(b'<li><a href="file') == 100

    @pytest.mark.parametrize("over", ["tcp", "http"])
    def test_noReadAfterDisconnect(
        self,
        daemons: list[Daemon],
        tmp_path: Path,
        slowMount: tuple[Path, ReadLog],
        over: str,
    ) -> None:
        """
        A client that leaves while a read is in flight costs at most that
        read: no other begins, and the file is closed once it is done.
        """
        mount, log = slowMount
        (tmp_path / "source" / "data.bin").write_bytes(os.urandom(16 * 2**20))
        # The client reads one byte: with the kernel's own send buffer (no
        # --max-unsent), the daemon goes on reading into it for seconds, so
        # a read is in flight when the client leaves.
        unlimited = ("--max-unsent", "0")
        if over == "tcp":
            daemon = start(
                daemons, tmp_path, "--source", f"file:{mount}/data.bin", *unlimited
            )
            client = daemon.connect()
        else:
            daemon, port = httpDaemon(daemons, tmp_path, mount, *unlimited)
            client = httpGet(port, "/files/data.bin")
        assert client.recv(1)  # streaming
        log.waitFor("idle")
        log.waitFor("reading")  # the next read
        seen = len(log.entries())
        reset(client)
        end = time.monotonic() + DEADLINE
        while opensUnder(daemon.process.pid, mount):
            assert time.monotonic() < end, "the file was never closed"
            time.sleep(0.01)
        time.sleep(2.0)  # two reads' time: any further read would show
        assert log.inFlight() == 0
        later = [size for kind, _, size in log.entries()[seen:] if kind == "begin"]
        assert sum(later) <= FILE_CHUNK_SIZE, later

    def test_shutdownWaitsForRead(
        self,
        daemons: list[Daemon],
        tmp_path: Path,
        slowMount: tuple[Path, ReadLog],
    ) -> None:
        """
        On SIGTERM, the daemon waits for the read in flight for a client
        that has gone, then exits cleanly.
        """
        mount, log = slowMount
        (tmp_path / "source" / "data.bin").write_bytes(os.urandom(4 * 2**20))
        # As above: reads go on into the socket's buffer, one in flight.
        daemon, port = httpDaemon(daemons, tmp_path, mount, "--max-unsent", "0")
        client = httpGet(port, "/files/data.bin")
        assert client.recv(1)
        log.waitFor("idle")
        log.waitFor("reading")
        reset(client)
        daemon.waitFor(re.compile(r"GET /files/data.bin 200 .*\(client reset\)"))
        assert daemon.stop() == 0
        output = "".join(daemon.log)
        assert "waiting up to" in output and "file-system calls" in output, output
        assert "still running" not in output
        assert "Traceback" not in output and "Unhandled" not in output
        assert log.inFlight() == 0

    @pytest.mark.parametrize("over", ["tcp", "http"])
    def test_byteExact(self, daemons: list[Daemon], tmp_path: Path, over: str) -> None:
        """
        A file read from a slow file system arrives whole and unchanged,
        through the threads, with C{sendfile()} or without.
        """
        if REASON is not None:
            pytest.skip(REASON)
        source, mountpoint = tmp_path / "source", tmp_path / "mount"
        source.mkdir()
        mountpoint.mkdir()
        content = os.urandom(3 * 2**20 + 12345)
        (source / "data.bin").write_bytes(content)
        with mounted(source, mountpoint, 0.005) as mount:
            for sendfile in ([], ["--no-sendfile"]):
                if over == "tcp":
                    daemon = start(
                        daemons,
                        tmp_path,
                        "--source",
                        f"file:{mount}/data.bin",
                        *sendfile,
                    )
                    received = receive(daemon.connect())
                else:
                    daemon, port = httpDaemon(daemons, tmp_path, mount, *sendfile)
                    response = receive(httpGet(port, "/files/data.bin"))
                    received = response.partition(b"\r\n\r\n")[2]
                assert (
                    hashlib.sha256(received).digest()
                    == hashlib.sha256(content).digest()
                )
                daemon.stop()


class ColdDiskTests:
    @pytest.mark.parametrize("over", ["tcp", "http"])
    def test_coldCache(self, daemons: list[Daemon], tmp_path: Path, over: str) -> None:
        """
        A file of the ordinary disk, not in the page cache, arrives whole
        and unchanged: misses are read in threads, hits sent at once.
        """
        root = tmp_path / "root"
        root.mkdir()
        path = root / "data.bin"
        content = os.urandom(32 * 2**20 + 7)
        path.write_bytes(content)
        if over == "tcp":
            daemon = start(daemons, tmp_path, "--source", f"file:{path}")
            evict(path)
            received = receive(daemon.connect())
        else:
            daemon, port = httpDaemon(daemons, tmp_path, root)
            evict(path)
            received = receive(httpGet(port, "/files/data.bin")).partition(b"\r\n\r\n")[
                2
            ]
        assert hashlib.sha256(received).digest() == hashlib.sha256(content).digest()
