"""
End-to-end tests: the real C{twistd zero} in a subprocess, real sockets on
127.0.0.1, the kernel's own accounting of what the daemon read.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import twisted_zero

pytestmark = pytest.mark.e2e

PROJECT = Path(twisted_zero.__file__).resolve().parent.parent
DEADLINE = 30.0
LISTENING = re.compile(r"streaming (?P<source>\S+) on (?P<host>[\d.]+):(?P<port>\d+)")
LISTENING_ANY = re.compile(r"streaming \S+ on (?P<address>\S+)$")
SERVING_HTTP = re.compile(r"serving HTTP on 127\.0\.0\.1:(?P<port>\d+)")
CURL = shutil.which("curl")


TWISTD = Path(sys.executable).parent / "twistd"


def twistdCommand(*args: str) -> list[str]:
    return [str(TWISTD), "-n", "--pidfile=", "zero", *args]


def serveCommand(*args: str) -> list[str]:
    """
    The same daemon through the C{twisted-zero serve} console script.
    """
    return [str(TWISTD.parent / "twisted-zero"), "serve", *args]


COMMANDS = {"twistd": twistdCommand, "serve": serveCommand}


def environment() -> dict[str, str]:
    """
    Run the code under test, whether installed or not.
    """
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": str(PROJECT) + (os.pathsep + path if path else ""),
    }


class Daemon:
    """
    A running C{twistd zero}, with its log lines collected by a thread.
    """

    def __init__(
        self,
        *args: str,
        cwd: Path,
        env: dict[str, str] | None = None,
        command: Callable[..., list[str]] = twistdCommand,
    ) -> None:
        self.process = subprocess.Popen(
            command("--listen", "tcp:0:interface=127.0.0.1", *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env={**environment(), **(env or {})},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = int(self.waitFor(LISTENING).group("port"))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.decode("utf-8", "replace"))

    def waitFor(
        self, pattern: re.Pattern[str], timeout: float = DEADLINE
    ) -> re.Match[str]:
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(end - time.monotonic(), 0.01))
            except queue.Empty:
                self.stop()
                raise AssertionError(
                    f"no {pattern.pattern!r} in log:\n{''.join(self.log)}"
                ) from None
            self.log.append(line)
            match = pattern.search(line)
            if match is not None:
                return match

    def io(self, field: str = "rchar") -> int:
        for line in Path(f"/proc/{self.process.pid}/io").read_text().splitlines():
            name, value = line.split(":")
            if name == field:
                return int(value)
        raise KeyError(field)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise KeyError("VmRSS")

    def readsSettle(self, interval: float = 0.5, timeout: float = DEADLINE) -> int:
        """
        Wait until the daemon's read count stops growing; return it.
        """
        end = time.monotonic() + timeout
        last = self.io()
        while time.monotonic() < end:
            time.sleep(interval)
            now = self.io()
            if now == last:
                return now
            last = now
        raise AssertionError("the daemon kept reading")

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout=DEADLINE)
        assert self.process.stdout is not None
        self.process.stdout.close()
        while not self.lines.empty():
            self.log.append(self.lines.get())
        return code


def start(
    daemons: list[Daemon],
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    command: Callable[..., list[str]] = twistdCommand,
) -> Daemon:
    daemon = Daemon(*args, cwd=tmp_path, env=env, command=command)
    daemons.append(daemon)
    return daemon


def receiveAll(connection: socket.socket) -> tuple[int, str]:
    digest = hashlib.sha256()
    total = 0
    buffer = bytearray(1 << 20)
    with connection:
        while count := connection.recv_into(buffer):
            digest.update(memoryview(buffer)[:count])
            total += count
    return total, digest.hexdigest()


class StreamTests:
    def test_fileByteExact(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        Every client receives exactly the file, then the server closes.
        """
        path = tmp_path / "data"
        content = os.urandom(8 * 2**20 + 12345)
        path.write_bytes(content)
        daemon = start(daemons, tmp_path, "--source", f"file:{path}")
        expected = (len(content), hashlib.sha256(content).hexdigest())
        assert receiveAll(daemon.connect()) == expected
        assert receiveAll(daemon.connect()) == expected
        daemon.waitFor(re.compile(r"ended \(complete\): file:.* 8400953 bytes"))

    def test_limit(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        With C{--limit}, each stream of zeros is exactly that long.
        """
        daemon = start(daemons, tmp_path, "--limit", "64M")
        assert receiveAll(daemon.connect()) == (
            64 * 2**20,
            hashlib.sha256(bytes(64 * 2**20)).hexdigest(),
        )

    def test_severalListeners(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        C{--listen} repeats: the daemon serves TCP over IPv4 and IPv6 and a
        UNIX socket at once.
        """
        path = tmp_path / "zero.sock"
        daemon = start(
            daemons, tmp_path, "--limit", "1M",
            "--listen", r"tcp6:0:interface=\:\:1", "--listen", f"unix:{path}",
        )  # fmt: skip
        addresses = [daemon.waitFor(LISTENING_ANY).group("address") for _ in range(2)]
        assert addresses[1] == f"unix:{path}"
        port = int(addresses[0].rpartition(":")[2])
        assert addresses[0] == f"[::1]:{port}"
        expected = (2**20, hashlib.sha256(bytes(2**20)).hexdigest())
        assert receiveAll(daemon.connect()) == expected
        assert (
            receiveAll(socket.create_connection(("::1", port), timeout=DEADLINE))
            == expected
        )
        unix = socket.socket(socket.AF_UNIX)
        unix.settimeout(DEADLINE)
        unix.connect(str(path))
        assert receiveAll(unix) == expected

    def test_sigterm(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        SIGTERM ends the daemon cleanly, even with a stream running: no
        traceback, no unhandled error, the stream's end logged.
        """
        daemon = start(daemons, tmp_path)
        client = daemon.connect()
        client.recv(65536)
        code = daemon.stop()
        client.close()
        log = "".join(daemon.log)
        assert code == 0, log
        assert "Traceback" not in log and "Unhandled" not in log, log
        assert "ended (server shutdown)" in log, log
        assert "Main loop terminated." in log, log


class DisconnectTests:
    def test_noReadAfterDisconnect(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        Once a client leaves in the middle of a huge file, the daemon reads
        not one more byte from it.
        """
        path = tmp_path / "huge"
        with path.open("wb") as f:
            f.truncate(64 * 2**30)
        daemon = start(daemons, tmp_path, "--source", f"file:{path}")
        before = daemon.io()
        client = daemon.connect()
        received = 0
        while received < 32 * 2**20:
            received += len(client.recv(1 << 20))
        client.close()
        daemon.waitFor(re.compile(r"ended \(client (reset|closed)\)"))
        after = daemon.io()
        time.sleep(1)
        assert daemon.io() == after
        assert after - before < 256 * 2**20

    def test_stalledClients(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        With 100 clients that stop reading, the daemon stops reading the
        file once the socket buffers are full, and its memory stays bounded.
        """
        path = tmp_path / "huge"
        with path.open("wb") as f:
            f.truncate(64 * 2**30)
        daemon = start(daemons, tmp_path, "--source", f"file:{path}")
        baseline = daemon.rss()
        clients = []
        try:
            for _ in range(100):
                client = socket.socket()
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                client.connect(("127.0.0.1", daemon.port))
                clients.append(client)
            settled = daemon.readsSettle()
            time.sleep(1)
            assert daemon.io() == settled
            growth = daemon.rss() - baseline
            assert growth < 100 * 2**20, f"RSS grew by {growth} bytes"
        finally:
            for client in clients:
                client.close()
        daemon.readsSettle()
        assert daemon.process.poll() is None


class HTTPTests:
    """
    The HTTP front end with the real C{curl}.
    """

    def start(
        self, daemons: list[Daemon], tmp_path: Path, *args: str
    ) -> tuple[Daemon, str, bytes]:
        assert CURL is not None, "these tests need curl"
        root = tmp_path / "root"
        root.mkdir()
        content = os.urandom(4 * 2**20 + 99)
        (root / "data.bin").write_bytes(content)
        with (root / "huge.bin").open("wb") as f:
            f.truncate(64 * 2**30)
        daemon = start(
            daemons,
            tmp_path,
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--root",
            str(root),
            *args,
        )
        port = daemon.waitFor(SERVING_HTTP).group("port")
        return daemon, f"http://127.0.0.1:{port}/files/", content

    def curl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        assert CURL is not None
        return subprocess.run(
            [CURL, "--silent", "--show-error", *args],
            capture_output=True,
            timeout=DEADLINE,
            check=False,
        )

    def test_ranges(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        C{curl -r} gets exactly the bytes asked for, one range or several.
        """
        daemon, url, content = self.start(daemons, tmp_path)
        assert self.curl("-r", "100-199", url + "data.bin").stdout == content[100:200]
        assert self.curl("-r", "-10", url + "data.bin").stdout == content[-10:]
        several = self.curl("-r", "0-9,20-29", "-D", "-", url + "data.bin").stdout
        assert b"multipart/byteranges; boundary=" in several
        assert content[:10] in several and content[20:30] in several

    def test_resume(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        C{curl -C -} completes a partial download byte for byte.
        """
        daemon, url, content = self.start(daemons, tmp_path)
        partial = tmp_path / "download"
        partial.write_bytes(content[: 2**20 + 7])
        result = self.curl("-C", "-", "-o", str(partial), url + "data.bin")
        assert result.returncode == 0, result.stderr
        assert partial.read_bytes() == content

    def test_head(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        C{curl --head} shows the size, validators and range support.
        """
        daemon, url, content = self.start(daemons, tmp_path)
        head = self.curl("--head", url + "data.bin").stdout.decode().lower()
        assert head.startswith("http/1.1 200 ok\r\n")
        assert f"content-length: {len(content)}\r\n" in head
        assert "accept-ranges: bytes\r\n" in head
        assert re.search(r'etag: "[^"]+"\r\n', head)
        assert "last-modified: " in head

    def test_pipelined(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        10,000 requests pipelined on one connection are all answered, in
        order, and leave nothing behind: memory does not grow with them and
        nothing is logged but one line per request.
        """
        daemon, url, content = self.start(daemons, tmp_path)
        port = int(url.split(":")[2].split("/")[0])
        count = 10_000
        rss = daemon.rss()
        requests = (
            b"".join(
                b"GET /zero?bytes=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (index % 3)
                for index in range(count - 1)
            )
            + b"GET /zero?bytes=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as client:
            sender = threading.Thread(target=client.sendall, args=(requests,))
            sender.start()
            received = bytearray()
            while chunk := client.recv(1 << 20):
                received += chunk
            sender.join(DEADLINE)
        heads = re.findall(rb"HTTP/1\.1 (\d+) [^\r]*\r\n(?:[^\r]+\r\n)*?content-length: (\d+)\r\n",
                           bytes(received), re.IGNORECASE)  # fmt: skip
        assert len(heads) == count
        assert {status for status, _ in heads} == {b"200"}
        assert [int(length) for _, length in heads] == [
            index % 3 for index in range(count - 1)
        ] + [1]
        daemon.waitFor(re.compile(r"GET /zero\?bytes=1 200 .*\(complete\)"))
        assert daemon.rss() - rss < 16 * 2**20  # measured: 4 to 192 KiB
        log = "".join(daemon.log)
        assert "Traceback" not in log and "Unhandled" not in log

    def test_uploadNotStored(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        A large request body (within C{--max-body}) is thrown away as it
        arrives: the daemon writes nothing of it to disk (Twisted would
        spool it to a temporary file) and holds nothing of it in memory; the
        request is answered.
        """
        daemon, url, content = self.start(daemons, tmp_path, "--max-body", "1G")
        port = int(url.split(":")[2].split("/")[0])
        size = 2**30
        written, rss = daemon.io("write_bytes"), daemon.rss()
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as client:
            client.sendall(
                b"POST /zero HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size
            )
            block = bytes(2**20)
            for _ in range(size // len(block)):
                client.sendall(block)
            assert client.recv(4096).startswith(b"HTTP/1.1 405 ")
        assert daemon.io("write_bytes") - written < 2**20
        assert daemon.rss() - rss < 8 * 2**20

    @pytest.mark.parametrize("chunked", [False, True])
    def test_uploadSink(
        self, daemons: list[Daemon], tmp_path: Path, chunked: bool
    ) -> None:
        """
        A 1 GiB upload to the sink, with no limit set, is counted and thrown
        away as it arrives: nothing of it on disk or in memory; the answer
        says how many bytes came.
        """
        daemon, url, content = self.start(daemons, tmp_path)
        port = int(url.split(":")[2].split("/")[0])
        size = 2**30
        written, rss = daemon.io("write_bytes"), daemon.rss()
        block = bytes(2**20)
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as client:
            framing = (
                b"Transfer-Encoding: chunked"
                if chunked
                else b"Content-Length: %d" % size
            )
            client.sendall(b"PUT /upload HTTP/1.1\r\nHost: t\r\n%s\r\n\r\n" % framing)
            for _ in range(size // len(block)):
                if chunked:
                    client.sendall(b"%x\r\n" % len(block))
                client.sendall(block)
                if chunked:
                    client.sendall(b"\r\n")
            if chunked:
                client.sendall(b"0\r\n\r\n")
            response = b""
            while not response.endswith(b"}\n"):
                response += client.recv(4096)
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert json.loads(body)["bytes"] == size
        assert daemon.io("write_bytes") - written < 2**20
        assert daemon.rss() - rss < 8 * 2**20

    def test_uploadOverLimit(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        A 1 GiB upload over C{--max-body} gets a 413 as soon as its head
        arrives, from a client that sends its body without waiting too; the
        daemon reads at most a few MiB of it, writes nothing to disk, and
        closes the connection within its lingering close's bounds.
        """
        daemon, url, content = self.start(daemons, tmp_path, "--max-body", "1M")
        port = int(url.split(":")[2].split("/")[0])
        written = daemon.io("write_bytes")
        size = 2**30
        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as client:
            client.sendall(
                b"POST /zero HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size
            )

            def send() -> None:
                nonlocal sent
                block = bytes(2**20)
                try:
                    while sent < size:
                        sent += client.send(block)
                except OSError:
                    pass  # the daemon closed the connection

            sender = threading.Thread(target=send)
            started = time.monotonic()
            sender.start()
            received = b""
            try:
                while chunk := client.recv(65536):
                    received += chunk
            except ConnectionResetError:
                pass  # after the response: the daemon stopped reading
            closed = time.monotonic() - started
            sender.join(DEADLINE)
        assert received.startswith(b"HTTP/1.1 413 Content Too Large\r\n")
        assert b"\r\nConnection: close\r\n" in received
        assert closed < 6  # 2 s lingering, then 2 s for the close at most
        assert sent < 64 * 2**20
        assert daemon.io("write_bytes") - written < 2**20
        daemon.waitFor(re.compile(r"refused a request from 127\.0\.0\.1:\d+: 413 "))

    def test_curlExpectsContinue(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        C{curl} uploading 1 GiB asks for a C{100 Continue} first: it gets
        the 413 instead, and sends nothing of the body.
        """
        daemon, url, content = self.start(daemons, tmp_path)
        upload = tmp_path / "upload"
        with upload.open("wb") as f:
            f.truncate(2**30)
        started = time.monotonic()
        result = self.curl(
            "-X", "POST", "-T", str(upload), "-o", os.devnull,
            "-w", "%{http_code} %{size_upload}", url.replace("/files/", "/zero"),
        )  # fmt: skip
        assert result.stdout == b"413 0", result.stderr
        assert time.monotonic() - started < 5

    def test_disconnectMidDownload(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        When C{curl} gives up in the middle of a huge download, the daemon
        reads not one more byte of the file.
        """
        daemon, url, content = self.start(daemons, tmp_path)
        before = daemon.io()
        result = self.curl(
            "--max-time", "1", "--limit-rate", "20M", "-o", os.devnull, url + "huge.bin"
        )
        assert result.returncode == 28, result.stderr  # curl's "operation timed out"
        daemon.waitFor(
            re.compile(r"GET /files/huge.bin 200 .*\(client (reset|closed)\)")
        )
        after = daemon.io()
        time.sleep(1)
        assert daemon.io() == after
        assert after - before < 512 * 2**20


def runBad(
    tmp_path: Path, *args: str, command: Callable[..., list[str]] = twistdCommand
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment(),
        stdin=subprocess.DEVNULL,
        timeout=DEADLINE,
        check=False,
    )


class BadInputTests:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--source", "file:{tmp}/missing"], "--source: {tmp}/missing: no such file"),
            (["--source", "file:{tmp}"], "--source: {tmp}: is a directory, not a file"),
            (["--source", "file:{tmp}/fifo"], "--source: {tmp}/fifo: is a FIFO, not a regular file"),
            (["--source", "file:/dev/zero"], "--source: /dev/zero: is a device, not a regular file"),
            (["--source", "ones"], "--source: unknown source 'ones' (choose one of zero, chargen, random, file:PATH)"),
            (["--limit", "10Q"], "--limit: '10Q' is not a size (use a whole number of bytes, optionally followed by K, M or G)"),
            (["--chunk-size", "0"], "--chunk-size: must be at least 1 bytes"),
            (["--listen", "tcp:eighty"], "bad endpoint 'tcp:eighty': invalid literal for int() with base 10: 'eighty'"),
            (["--listen", "carrier-pigeon:1"], "bad endpoint 'carrier-pigeon:1': Unknown endpoint type: 'carrier-pigeon'"),
            (["--no-such-option"], "option --no-such-option not recognized"),
            (["--http", "tcp:0", "--root", "{tmp}/missing"], "--root: {tmp}/missing: no such directory"),
            (["--root", "{tmp}"], "--root needs --http"),
            (["--workers", "0"], "--workers: '0' is not a positive whole number"),
            (["--workers", "2", "--metrics", "tcp:0"], "--metrics cannot be used with --workers yet (each worker counts its own connections)"),
            (["--stall-timeout", "soon"], "--stall-timeout: 'soon' is not a number of seconds"),
            (["--rate", "fast"], "--rate: 'fast' is not a size (use a whole number of bytes, optionally followed by K, M or G)"),
            (["--max-connections", "-3"], "--max-connections: '-3' is not a positive whole number"),
        ],
    )  # fmt: skip
    @pytest.mark.parametrize("command", COMMANDS)
    def test_refused(
        self, tmp_path: Path, args: list[str], message: str, command: str
    ) -> None:
        """
        Bad input stops the daemon before it listens: one line on stderr, a
        non-zero exit, no traceback; a FIFO is not opened (that would hang).
        C{twisted-zero serve} says and does the same as C{twistd zero}.
        """
        os.mkfifo(tmp_path / "fifo")
        args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
        result = runBad(tmp_path, *args, command=COMMANDS[command])
        assert result.returncode == 1
        assert (
            result.stderr
            == f"twistd zero: error: {message.replace('{tmp}', str(tmp_path))}\n"
        )
        assert result.stdout == ""
        assert not (tmp_path / "twistd.pid").exists()

    @pytest.mark.parametrize("command", COMMANDS)
    def test_portInUse(self, tmp_path: Path, command: str) -> None:
        """
        A port in use is refused the same way.
        """
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = runBad(
                tmp_path,
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                command=COMMANDS[command],
            )
        assert result.returncode == 1
        assert result.stderr == (
            f"twistd zero: error: cannot listen on 'tcp:{port}:interface=127.0.0.1': "
            f"Couldn't listen on 127.0.0.1:{port}: [Errno 98] Address already in use.\n"
        )
