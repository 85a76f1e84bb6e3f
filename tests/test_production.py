"""
End-to-end tests of the production features: systemd notifications,
timeouts, limits, rates, metrics, graceful shutdown, and no leaks.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from .test_twistd import (
    DEADLINE,
    SERVING_HTTP,
    TWISTD,
    Daemon,
    environment,
    start,
)

pytestmark = pytest.mark.e2e


def receive(connection: socket.socket, limit: int | None = None) -> int:
    total = 0
    buffer = bytearray(1 << 20)
    while limit is None or total < limit:
        count = connection.recv_into(buffer)
        if not count:
            break
        total += count
    return total


class NotifyTests:
    def test_readyStatusWatchdogStopping(
        self, daemons: list[Daemon], tmp_path: Path
    ) -> None:
        """
        Under systemd (C{NOTIFY_SOCKET}), the daemon says READY=1 once it
        listens, its open connections in STATUS=, pings the watchdog from the
        reactor, says STOPPING=1 on SIGTERM and exits 0.
        """
        path = tmp_path / "notify"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(path))
            notify.settimeout(DEADLINE)
            daemon = start(
                daemons,
                tmp_path,
                env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"},
            )
            messages = [notify.recv(4096).decode() for _ in range(5)]
            assert "READY=1" in messages
            assert "STATUS=0 connections open" in messages
            assert messages.count("WATCHDOG=1") >= 2
            assert daemon.stop() == 0
            rest = []
            notify.settimeout(0.5)
            try:
                while True:
                    rest.append(notify.recv(4096).decode())
            except TimeoutError:
                pass
            assert "STOPPING=1" in rest


class StallTests:
    def test_stalledClientAborted(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        A client that stops reading is cut off after the stall timeout.
        """
        daemon = start(daemons, tmp_path, "--stall-timeout", "1")
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", daemon.port))
        with client:
            daemon.waitFor(re.compile(r"ended \(stalled\)"), timeout=15)
            client.settimeout(DEADLINE)
            with pytest.raises(ConnectionResetError):
                receive(client)

    def test_httpStallAndIdle(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        Over HTTP, a client that stops reading in the middle of a body is
        cut off after the stall timeout, and one that sends no request is
        closed after as long.
        """
        daemon = start(
            daemons,
            tmp_path,
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--stall-timeout",
            "1",
        )
        port = int(daemon.waitFor(SERVING_HTTP).group("port"))
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        idle = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        with stalled, idle:
            stalled.sendall(b"GET /zero HTTP/1.1\r\nHost: x\r\n\r\n")
            daemon.waitFor(re.compile(r"GET /zero 200 .*\(stalled\)"), timeout=15)
            started = time.monotonic()
            assert idle.recv(100) == b""
            assert time.monotonic() - started < 5

    def test_readingClientKept(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        A client that reads, however slowly, is not cut off.
        """
        daemon = start(daemons, tmp_path, "--stall-timeout", "1", "--rate", "256K")
        with daemon.connect() as client:
            received = 0
            end = time.monotonic() + 3
            while time.monotonic() < end:
                received += len(client.recv(65536))
        assert received > 256 * 1024
        assert "(stalled)" not in "".join(daemon.log)


class LimitTests:
    def test_maxConnections(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        Connections beyond C{--max-connections} are closed at once and
        logged; once one ends, another gets in.
        """
        daemon = start(daemons, tmp_path, "--max-connections", "2")
        first, second = daemon.connect(), daemon.connect()
        assert first.recv(1) and second.recv(1)
        with daemon.connect() as third:
            assert receive(third) == 0
        daemon.waitFor(
            re.compile(r"refused a connection from 127\.0\.0\.1:\d+: max-connections")
        )
        first.close()
        daemon.waitFor(re.compile(r"ended \(client"))
        with daemon.connect() as fourth:
            assert fourth.recv(1)
        second.close()

    def test_http503(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        Over HTTP, an excess connection gets a 503 with C{Retry-After}.
        """
        daemon = start(
            daemons,
            tmp_path,
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--max-per-ip",
            "1",
        )
        port = int(daemon.waitFor(SERVING_HTTP).group("port"))
        with socket.create_connection(("127.0.0.1", port)) as first:
            first.sendall(b"GET /zero HTTP/1.1\r\nHost: x\r\n\r\n")
            assert first.recv(100).startswith(b"HTTP/1.1 200")
            with socket.create_connection(
                ("127.0.0.1", port), timeout=DEADLINE
            ) as second:
                response = second.recv(4096)
        assert response.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"\r\nRetry-After: 5\r\n" in response

    def test_rate(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        C{--rate} holds a stream to its rate; over HTTP, C{?rate=} may only
        lower it.
        """
        daemon = start(
            daemons, tmp_path, "--rate", "4M", "--http", "tcp:0:interface=127.0.0.1"
        )
        with daemon.connect() as client:
            client.recv(1)
            started = time.monotonic()
            received = receive(client, 8 * 2**20)
            rate = received / (time.monotonic() - started)
        assert rate == pytest.approx(4 * 2**20, rel=0.15)
        port = int(daemon.waitFor(SERVING_HTTP).group("port"))
        for asked, expected in [("1M", 2**20), ("64M", 4 * 2**20)]:
            started = time.monotonic()
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/zero?bytes=6M&rate={asked}", timeout=DEADLINE
            ) as response:
                size = len(response.read())
            seconds = time.monotonic() - started
            assert size == 6 * 2**20
            assert size / seconds == pytest.approx(expected, rel=0.25)

    def test_maxDuration(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        No stream lives longer than C{--max-duration}.
        """
        daemon = start(daemons, tmp_path, "--max-duration", "1", "--rate", "1M")
        with daemon.connect() as client:
            started = time.monotonic()
            with pytest.raises(ConnectionResetError):
                receive(client)
            assert time.monotonic() - started == pytest.approx(1, abs=0.5)
        daemon.waitFor(re.compile(r"ended \(max duration\)"))


class SlowClientTests:
    def test_slowloris(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        With C{--header-timeout 3}, 50 connections that trickle a request
        head one byte every half second are each answered 408 and closed
        about 3 seconds in; with C{--max-connections}, a client turned away
        while they hold every slot is served once they are gone.
        """
        daemon = start(
            daemons,
            tmp_path,
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--header-timeout",
            "3",
            "--max-connections",
            "50",
        )
        port = int(daemon.waitFor(SERVING_HTTP).group("port"))

        def get() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as c:
                c.sendall(b"GET /zero?bytes=1 HTTP/1.1\r\nHost: t\r\n\r\n")
                return c.recv(4096)

        head = b"GET /zero?bytes=1 HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 100
        slow = [
            socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
            for _ in range(50)
        ]
        received = {client: b"" for client in slow}
        closedAt: dict[socket.socket, float] = {}
        started = time.monotonic()
        try:
            for position in range(20):  # 10 s at most
                open_ = [client for client in slow if client not in closedAt]
                if not open_:
                    break
                for client in open_:
                    client.send(head[position : position + 1])
                if position == 2:
                    assert get().startswith(b"HTTP/1.1 503 ")
                end = started + (position + 1) * 0.5
                while open_ and (wait := end - time.monotonic()) > 0:
                    readable, _, _ = select.select(open_, [], [], wait)
                    for client in readable:
                        data = client.recv(4096)
                        received[client] += data
                        if not data:
                            closedAt[client] = time.monotonic() - started
                            open_.remove(client)
                            client.close()  # as a client does at the end
        finally:
            for client in slow:
                client.close()
        assert len(closedAt) == 50
        assert 2.5 < min(closedAt.values()) <= max(closedAt.values()) < 5
        assert {data.partition(b"\r\n")[0] for data in received.values()} == {
            b"HTTP/1.1 408 Request Timeout"
        }
        served = None
        end = time.monotonic() + 5
        while time.monotonic() < end:
            served = get()
            if not served.startswith(b"HTTP/1.1 503 "):
                break
            time.sleep(0.1)
        assert served is not None and served.startswith(b"HTTP/1.1 200 OK\r\n")


class MetricsTests:
    def test_metrics(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        C{--metrics} serves Prometheus text with connections by kind and
        close reason, and bytes by source.
        """
        daemon = start(
            daemons, tmp_path, "--metrics", "tcp:0:interface=127.0.0.1", "--limit", "1M"
        )
        port = daemon.waitFor(
            re.compile(r"serving metrics on 127\.0\.0\.1:(\d+)")
        ).group(1)
        with daemon.connect() as client:
            assert receive(client) == 2**20
        daemon.waitFor(re.compile(r"ended \(complete\)"))
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=DEADLINE
        ) as r:
            text = r.read().decode()
        assert 'twisted_zero_connections_total{kind="tcp"} 1.0' in text
        assert (
            'twisted_zero_connections_closed_total{kind="tcp",reason="complete"} 1.0'
            in text
        )
        assert 'twisted_zero_sent_bytes_total{source="zero"} 1.048576e+06' in text
        assert 'twisted_zero_connections_active{kind="tcp"} 0.0' in text


class JSONLogTests:
    def test_jsonLines(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        With C{--logger twisted_zero.tap.jsonLogObserver}, every log event
        is one JSON line; a stream's end carries its fields.
        """
        process = subprocess.Popen(
            [
                str(TWISTD), "--logger", "twisted_zero.tap.jsonLogObserver", "-n",
                "--pidfile=", "zero", "--listen", "tcp:0:interface=127.0.0.1",
                "--limit", "1000",
            ],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=tmp_path, env=environment(),
        )  # fmt: skip
        try:
            assert process.stdout is not None
            events = []
            for line in process.stdout:
                event = json.loads(line)
                events.append(event)
                if event.get("address"):
                    port = int(event["address"].rpartition(":")[2])
                    with socket.create_connection(("127.0.0.1", port)) as client:
                        assert receive(client) == 1000
                if event.get("reason") == "complete":
                    break
            assert events[-1]["bytes"] == 1000
            assert events[-1]["source"] == "zero"
        finally:
            process.terminate()
            process.wait(timeout=DEADLINE)
            if process.stdout is not None:
                process.stdout.close()


class ShutdownTests:
    def test_streamsFinish(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        On SIGTERM the daemon stops accepting, lets a running stream finish,
        and exits 0.
        """
        daemon = start(daemons, tmp_path, "--rate", "2M", "--limit", "3M")
        with daemon.connect() as client:
            client.recv(1)
            daemon.process.send_signal(15)
            daemon.waitFor(
                re.compile(r"stopping: waiting up to 10.0s for 1 connections")
            )
            end = time.monotonic() + 5
            with pytest.raises(OSError):  # the listener closes in a moment
                while time.monotonic() < end:
                    socket.create_connection(
                        ("127.0.0.1", daemon.port), timeout=1
                    ).close()
                    time.sleep(0.05)
            assert 1 + receive(client) == 3 * 2**20
        assert daemon.process.wait(timeout=DEADLINE) == 0
        assert daemon.stop() == 0
        assert "ended (complete)" in "".join(daemon.log)

    def test_endlessStreamsAborted(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        Streams still running after C{--shutdown-timeout} are aborted; the
        exit status is still 0.
        """
        daemon = start(daemons, tmp_path, "--shutdown-timeout", "1", "--rate", "1M")
        with daemon.connect() as client:
            client.recv(1)
            started = time.monotonic()
            daemon.process.send_signal(15)
            with pytest.raises(ConnectionResetError):
                receive(client)
            assert time.monotonic() - started == pytest.approx(1, abs=0.7)
        # Wait for the exit that the one SIGTERM brings (stop() would send
        # another, which may arrive once the reactor has let go of signals).
        assert daemon.process.wait(timeout=DEADLINE) == 0
        assert daemon.stop() == 0


class LeakTests:
    def test_noLeak(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        After thousands of connections opened, stalled, reset and aborted,
        the daemon's open files and memory are back to their baseline.
        """
        data = tmp_path / "data"
        data.write_bytes(os.urandom(2**20))
        daemon = start(
            daemons, tmp_path, "--stall-timeout", "1", "--source", f"file:{data}"
        )
        fds = Path(f"/proc/{daemon.process.pid}/fd")

        def openFiles() -> int:
            """
            The daemon's open files, once their number stops changing.
            """
            counts = [-1]
            end = time.monotonic() + DEADLINE
            while time.monotonic() < end:
                counts.append(len(list(fds.iterdir())))
                if counts[-3:] == [counts[-1]] * 3:
                    break
                time.sleep(0.5)
            return counts[-1]

        def cycle(count: int) -> None:
            stalled = []
            for index in range(count):
                client = daemon.connect()
                if index % 3 == 0:  # reset
                    client.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    client.recv(1)
                    client.close()
                elif index % 3 == 1:  # read it all
                    receive(client)
                    client.close()
                else:  # stall until aborted
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    stalled.append(client)
            daemon.waitFor(re.compile(r"ended \(stalled\)"))
            time.sleep(2)  # the stall timeout, twice over
            for client in stalled:
                client.close()

        cycle(300)  # warm up caches and allocators
        baselineFds = openFiles()
        baselineRSS = daemon.rss()
        for _ in range(10):  # 3000 connections, 100 stalled at a time
            cycle(300)
        assert openFiles() == baselineFds
        assert daemon.rss() - baselineRSS < 8 * 2**20


class WorkerTests:
    def test_workers(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        With C{--workers 2}, two processes serve the same listener; one that
        dies is restarted; SIGTERM stops them all and the daemon exits 0.
        """
        daemon = start(daemons, tmp_path, "--workers", "2", "--limit", "1M")
        started = re.compile(r"started worker (\d), pid (\d+)")
        pids = {}
        for _ in range(2):
            match = daemon.waitFor(started)
            pids[match.group(1)] = int(match.group(2))
        for _ in range(2):  # each worker logs that it streams
            daemon.waitFor(re.compile(r"streaming zero on"))
        for _ in range(8):
            with daemon.connect() as client:
                assert receive(client) == 2**20
        os.kill(pids["0"], 9)
        daemon.waitFor(re.compile(r"worker 0 \(pid \d+\) ended .*restarting"))
        replacement = int(
            daemon.waitFor(re.compile(r"started worker 0, pid (\d+)")).group(1)
        )
        assert replacement != pids["0"]
        for _ in range(4):
            with daemon.connect() as client:
                assert receive(client) == 2**20
        assert daemon.stop() == 0
        for pid in (replacement, pids["1"]):
            assert (
                not Path(f"/proc/{pid}").exists()
                or "zombie" in Path(f"/proc/{pid}/status").read_text()
            )

    def test_orphansStop(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        Workers whose parent is killed stop by themselves.
        """
        daemon = start(daemons, tmp_path, "--workers", "2")
        started = re.compile(r"started worker \d, pid (\d+)")
        pids = [int(daemon.waitFor(started).group(1)) for _ in range(2)]
        for _ in range(2):
            daemon.waitFor(re.compile(r"streaming zero on"))
        os.kill(daemon.process.pid, 9)
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end and any(_running(pid) for pid in pids):
            time.sleep(0.1)
        assert not any(_running(pid) for pid in pids)


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "zombie" not in status
