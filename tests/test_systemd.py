"""
Tests for L{twisted_zero._systemd}: notifications to systemd over a real
C{AF_UNIX} datagram socket standing in for C{NOTIFY_SOCKET}, the watchdog on
a L{Clock}; and socket activation of the real C{twistd zero}.
"""

from __future__ import annotations

import errno
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, capturedLogs

import twisted_zero
from twisted_zero._systemd import (
    STATUS_INTERVAL,
    SystemdNotifier,
    SystemdService,
    _datagramSocket,
    notifyAddress,
)

from .helpers import assertNoResult, successResultOf

WATCHDOG_USEC = "30000000"
HALF_INTERVAL = 15.0


class Receiver:
    """
    A bound C{AF_UNIX} datagram socket: what systemd listens on.
    """

    def __init__(self, address: bytes) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(address)
        self.socket.setblocking(False)

    def messages(self) -> list[bytes]:
        """
        Everything received since the last call.
        """
        received = []
        while True:
            try:
                received.append(self.socket.recv(4096))
            except BlockingIOError:
                return received

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def socketDirectory(tmp_path: Path) -> Iterator[Path]:
    """
    C{tmp_path}, or a shorter directory if a socket path there would be too
    long for C{AF_UNIX} (108 bytes).
    """
    if len(os.fsencode(tmp_path / "notify")) < 100:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="tz-") as short:
        yield Path(short)


@pytest.fixture
def receiver(socketDirectory: Path) -> Iterator[Receiver]:
    """
    A L{Receiver} bound at a path.
    """
    listening = Receiver(os.fsencode(socketDirectory / "notify"))
    yield listening
    listening.close()


class CountingFactory:
    """
    A socket factory that counts the sockets it makes and keeps them.
    """

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def __call__(self) -> socket.socket:
        sock = _datagramSocket()
        self.sockets.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def factory() -> Iterator[CountingFactory]:
    made = CountingFactory()
    yield made
    made.close()


def notifier(
    receiver: Receiver | None,
    factory: CountingFactory,
    clock: Clock | None = None,
    **environ: str,
) -> SystemdNotifier:
    """
    A L{SystemdNotifier} for C{receiver} (unless L{None}) and C{environ}.
    """
    if receiver is not None:
        environ.setdefault("NOTIFY_SOCKET", receiver.socket.getsockname())
    return SystemdNotifier(
        clock if clock is not None else Clock(), environ, socketFactory=factory
    )


def warnings(events: list[LogEvent]) -> list[LogEvent]:
    return [event for event in events if event["log_level"] == LogLevel.warn]


class NotifyAddressTests:
    def test_path(self) -> None:
        """
        An absolute path is a filesystem address.
        """
        assert notifyAddress("/run/systemd/notify") == b"/run/systemd/notify"

    def test_abstract(self) -> None:
        """
        C{@name} is C{name} in the abstract namespace: a leading NUL byte.
        """
        assert notifyAddress("@zero/notify") == b"\0zero/notify"

    @pytest.mark.parametrize("value", ["", "@", "notify", "vsock:2:1234"])
    def test_unsupported(self, value: str) -> None:
        """
        An empty value, a bare C{@}, a relative path or another scheme is no
        address.
        """
        assert notifyAddress(value) is None


class SystemdNotifierTests:
    def test_disabledWithoutNotifySocket(self, factory: CountingFactory) -> None:
        """
        Without C{NOTIFY_SOCKET}, the notifier is disabled: every method does
        nothing, no socket is made, nothing is scheduled or logged.
        """
        clock = Clock()
        sd = notifier(None, factory, clock, WATCHDOG_USEC=WATCHDOG_USEC)
        with capturedLogs() as events:
            assert not sd.enabled
            sd.ready()
            sd.status("streaming")
            sd.startWatchdog()
            clock.advance(60)
            sd.stopping()
            sd.stopWatchdog()
            sd.close()
        assert factory.sockets == []
        assert clock.getDelayedCalls() == []
        assert not sd.watching
        assert list(events) == []

    def test_enabled(self, receiver: Receiver, factory: CountingFactory) -> None:
        """
        With C{NOTIFY_SOCKET} set to a path, the notifier is enabled; it makes
        no socket before the first notification.
        """
        sd = notifier(receiver, factory)
        assert sd.enabled
        assert factory.sockets == []

    def test_defaultEnviron(
        self, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        By default the notifier reads a copy of the process environment made
        when it is made.
        """
        monkeypatch.setenv("NOTIFY_SOCKET", receiver.socket.getsockname())
        sd = SystemdNotifier(Clock())
        monkeypatch.delenv("NOTIFY_SOCKET")
        assert sd.enabled
        sd.ready()
        sd.close()
        assert receiver.messages() == [b"READY=1"]

    def test_defaultSocket(self) -> None:
        """
        Notifications are sent from a non-blocking C{AF_UNIX} datagram socket.
        """
        with _datagramSocket() as sock:
            assert sock.family == socket.AF_UNIX
            assert sock.type == socket.SOCK_DGRAM
            assert not sock.getblocking()

    def test_readyStoppingStatus(
        self, receiver: Receiver, factory: CountingFactory
    ) -> None:
        """
        L{SystemdNotifier.ready}, L{SystemdNotifier.status} and
        L{SystemdNotifier.stopping} send one datagram each, in order, from
        one socket.
        """
        sd = notifier(receiver, factory)
        sd.ready()
        sd.status("streaming zero on 127.0.0.1:8019")
        sd.stopping()
        assert receiver.messages() == [
            b"READY=1",
            b"STATUS=streaming zero on 127.0.0.1:8019",
            b"STOPPING=1",
        ]
        assert len(factory.sockets) == 1

    def test_statusOneLine(self, receiver: Receiver, factory: CountingFactory) -> None:
        """
        A status of several lines is sent as one line, in UTF-8.
        """
        sd = notifier(receiver, factory)
        sd.status("two\nlines\r\nand é")
        assert receiver.messages() == ["STATUS=two lines and é".encode()]

    def test_abstractNamespace(self, factory: CountingFactory) -> None:
        """
        C{NOTIFY_SOCKET=@name} sends to C{name} in the abstract namespace.
        """
        name = f"twisted-zero-test-{os.urandom(8).hex()}"
        abstract = Receiver(b"\0" + name.encode())
        try:
            sd = notifier(None, factory, NOTIFY_SOCKET=f"@{name}")
            assert sd.enabled
            sd.ready()
            assert abstract.messages() == [b"READY=1"]
        finally:
            abstract.close()

    def test_closeClosesSocket(
        self, receiver: Receiver, factory: CountingFactory
    ) -> None:
        """
        L{SystemdNotifier.close} closes the socket; a later notification is
        sent from a new one.
        """
        sd = notifier(receiver, factory)
        sd.ready()
        sd.close()
        assert factory.sockets[0].fileno() == -1
        sd.stopping()
        assert len(factory.sockets) == 2
        assert receiver.messages() == [b"READY=1", b"STOPPING=1"]

    def test_missingSocketLogged(
        self, socketDirectory: Path, factory: CountingFactory
    ) -> None:
        """
        If nothing listens at C{NOTIFY_SOCKET}, notifying raises nothing and
        logs one warning, however many notifications fail.
        """
        missing = str(socketDirectory / "missing")
        sd = notifier(None, factory, NOTIFY_SOCKET=missing)
        with capturedLogs() as events:
            sd.ready()
            sd.status("still failing")
            sd.stopping()
        [warning] = warnings(list(events))
        assert warning["address"] == missing
        assert isinstance(warning["error"], FileNotFoundError)

    def test_loggedAgainAfterRecovery(
        self, socketDirectory: Path, factory: CountingFactory
    ) -> None:
        """
        Once a notification gets through again, the next failure is logged
        again.
        """
        path = socketDirectory / "notify"
        sd = notifier(None, factory, NOTIFY_SOCKET=str(path))
        with capturedLogs() as events:
            sd.ready()
            listening = Receiver(os.fsencode(path))
            sd.status("recovered")
            assert listening.messages() == [b"STATUS=recovered"]
            listening.close()
            path.unlink()
            sd.status("failing again")
            sd.status("still failing")
        assert len(warnings(list(events))) == 2

    def test_socketErrorLogged(self, receiver: Receiver) -> None:
        """
        If no socket can be made, notifying raises nothing and logs a
        warning.
        """

        def noSocket() -> socket.socket:
            raise OSError(errno.EMFILE, "Too many open files")

        sd = SystemdNotifier(
            Clock(),
            {"NOTIFY_SOCKET": receiver.socket.getsockname()},
            socketFactory=noSocket,
        )
        with capturedLogs() as events:
            sd.ready()
        [warning] = warnings(list(events))
        assert warning["error"].errno == errno.EMFILE

    def test_unsupportedAddressLogged(self, factory: CountingFactory) -> None:
        """
        A C{NOTIFY_SOCKET} that is no C{AF_UNIX} address disables the
        notifier and is logged once.
        """
        sd = notifier(None, factory, NOTIFY_SOCKET="vsock:2:1234")
        with capturedLogs() as events:
            assert not sd.enabled
            sd.ready()
            sd.stopping()
        [warning] = warnings(list(events))
        assert warning["address"] == "vsock:2:1234"
        assert factory.sockets == []


class WatchdogTests:
    def test_pings(self, receiver: Receiver, factory: CountingFactory) -> None:
        """
        L{SystemdNotifier.startWatchdog} sends C{WATCHDOG=1} at once, then
        again every half of C{WATCHDOG_USEC} on the clock.
        """
        clock = Clock()
        sd = notifier(receiver, factory, clock, WATCHDOG_USEC=WATCHDOG_USEC)
        sd.startWatchdog()
        assert sd.watching
        assert receiver.messages() == [b"WATCHDOG=1"]
        clock.advance(HALF_INTERVAL - 0.1)
        assert receiver.messages() == []
        clock.advance(0.1)
        assert receiver.messages() == [b"WATCHDOG=1"]
        clock.advance(HALF_INTERVAL)
        assert receiver.messages() == [b"WATCHDOG=1"]
        sd.close()

    def test_blockedReactorMissesPings(
        self, receiver: Receiver, factory: CountingFactory
    ) -> None:
        """
        The pings come from the reactor's clock: if it runs late, the pings
        it missed are not made up for.
        """
        clock = Clock()
        sd = notifier(receiver, factory, clock, WATCHDOG_USEC=WATCHDOG_USEC)
        sd.startWatchdog()
        receiver.messages()
        clock.advance(4 * HALF_INTERVAL)
        assert receiver.messages() == [b"WATCHDOG=1"]
        sd.close()

    def test_stopWatchdog(self, receiver: Receiver, factory: CountingFactory) -> None:
        """
        L{SystemdNotifier.stopWatchdog} stops the pings, leaves nothing
        scheduled, and closes the socket.
        """
        clock = Clock()
        sd = notifier(receiver, factory, clock, WATCHDOG_USEC=WATCHDOG_USEC)
        sd.startWatchdog()
        receiver.messages()
        sd.stopWatchdog()
        assert not sd.watching
        assert clock.getDelayedCalls() == []
        clock.advance(10 * HALF_INTERVAL)
        assert receiver.messages() == []
        assert factory.sockets[0].fileno() == -1

    def test_restart(self, receiver: Receiver, factory: CountingFactory) -> None:
        """
        The watchdog can be started again after it was stopped.
        """
        clock = Clock()
        sd = notifier(receiver, factory, clock, WATCHDOG_USEC=WATCHDOG_USEC)
        sd.startWatchdog()
        sd.stopWatchdog()
        sd.startWatchdog()
        clock.advance(HALF_INTERVAL)
        assert receiver.messages() == [b"WATCHDOG=1"] * 3
        sd.close()
        assert clock.getDelayedCalls() == []

    def test_startTwice(self, receiver: Receiver, factory: CountingFactory) -> None:
        """
        Starting the watchdog while it runs changes nothing.
        """
        clock = Clock()
        sd = notifier(receiver, factory, clock, WATCHDOG_USEC=WATCHDOG_USEC)
        sd.startWatchdog()
        sd.startWatchdog()
        assert len(clock.getDelayedCalls()) == 1
        clock.advance(HALF_INTERVAL)
        assert receiver.messages() == [b"WATCHDOG=1"] * 2
        sd.close()

    def test_stopWithoutStart(
        self, receiver: Receiver, factory: CountingFactory
    ) -> None:
        """
        Stopping a watchdog that was never started does nothing.
        """
        sd = notifier(receiver, factory)
        sd.stopWatchdog()
        assert factory.sockets == []

    def test_watchdogPidThisProcess(
        self, receiver: Receiver, factory: CountingFactory
    ) -> None:
        """
        With C{WATCHDOG_PID} set to this process, the pings are sent.
        """
        sd = notifier(
            receiver,
            factory,
            WATCHDOG_USEC=WATCHDOG_USEC,
            WATCHDOG_PID=str(os.getpid()),
        )
        sd.startWatchdog()
        assert receiver.messages() == [b"WATCHDOG=1"]
        sd.close()

    def test_watchdogPidOtherProcess(
        self, receiver: Receiver, factory: CountingFactory
    ) -> None:
        """
        With C{WATCHDOG_PID} set to another process, no ping is sent or
        scheduled, and nothing is logged: the pings are that process's job.
        """
        clock = Clock()
        sd = notifier(
            receiver,
            factory,
            clock,
            WATCHDOG_USEC=WATCHDOG_USEC,
            WATCHDOG_PID=str(os.getppid()),
        )
        with capturedLogs() as events:
            sd.startWatchdog()
        assert not sd.watching
        assert clock.getDelayedCalls() == []
        assert receiver.messages() == []
        assert list(events) == []

    def test_noWatchdogUsec(self, receiver: Receiver, factory: CountingFactory) -> None:
        """
        Without C{WATCHDOG_USEC}, no ping is sent or scheduled.
        """
        clock = Clock()
        sd = notifier(receiver, factory, clock)
        sd.startWatchdog()
        assert not sd.watching
        assert clock.getDelayedCalls() == []
        assert receiver.messages() == []

    @pytest.mark.parametrize("usec", ["0", "-1", "", "1.5", "30s"])
    def test_badWatchdogUsec(
        self, receiver: Receiver, factory: CountingFactory, usec: str
    ) -> None:
        """
        A C{WATCHDOG_USEC} that is not a positive integer is logged once and
        no ping is sent or scheduled.
        """
        clock = Clock()
        sd = notifier(receiver, factory, clock, WATCHDOG_USEC=usec)
        with capturedLogs() as events:
            sd.startWatchdog()
            sd.startWatchdog()
        [warning] = warnings(list(events))
        assert warning["usec"] == usec
        assert not sd.watching
        assert clock.getDelayedCalls() == []
        assert receiver.messages() == []

    def test_pingErrorsKeepPinging(
        self, socketDirectory: Path, factory: CountingFactory
    ) -> None:
        """
        Pings that fail are logged once and raise nothing; the pings go on,
        and get through once systemd listens again.
        """
        path = socketDirectory / "notify"
        clock = Clock()
        sd = notifier(
            None, factory, clock, NOTIFY_SOCKET=str(path), WATCHDOG_USEC=WATCHDOG_USEC
        )
        with capturedLogs() as events:
            sd.startWatchdog()
            clock.advance(HALF_INTERVAL)
            clock.advance(HALF_INTERVAL)
        assert len(warnings(list(events))) == 1
        assert sd.watching
        listening = Receiver(os.fsencode(path))
        try:
            clock.advance(HALF_INTERVAL)
            assert listening.messages() == [b"WATCHDOG=1"]
        finally:
            listening.close()
            sd.close()


PROJECT = Path(twisted_zero.__file__).resolve().parent.parent
TWISTD = Path(sys.executable).parent / "twistd"
DEADLINE = 30.0
#: Run the rest of the command line with LISTEN_PID set to its own PID (exec
#: keeps the shell's), and the socket given as stdin as file descriptor 3,
#: where systemd puts the first one (a POSIX shell only names descriptors 0-9,
#: so the socket comes in as stdin rather than by its number).
ACTIVATE = 'LISTEN_PID=$$ exec "$0" "$@" 3<&0 0</dev/null'


class Child(Service):
    """
    A service that records when it starts and stops, in the same list as
    the notifications the test reads, and stops when the test says.
    """

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.stopped: Deferred[None] = Deferred()

    def startService(self) -> None:
        Service.startService(self)
        self.events.append("child started")

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        self.events.append("child stopping")
        return self.stopped


def systemdService(
    receiver: Receiver | None,
    factory: CountingFactory,
    clock: Clock,
    connections: list[int],
    **environ: str,
) -> tuple[SystemdService, Child, list[str]]:
    """
    A L{SystemdService} over one L{Child}, reporting the last of
    C{connections} as the open connections.
    """
    events: list[str] = []
    service = SystemdService(
        notifier=notifier(receiver, factory, clock, **environ),
        connections=lambda: connections[-1],
    )
    child = Child(events)
    Service.setServiceParent(child, service)
    return service, child, events


class SystemdServiceTests:
    def test_readyAfterChildren(
        self, receiver: Receiver, factory: CountingFactory
    ) -> None:
        """
        L{SystemdService} starts the services under it, then says READY=1,
        then the open connections at once and every L{STATUS_INTERVAL}
        seconds ("1 connection", "2 connections").
        """
        clock = Clock()
        connections = [1]
        service, child, events = systemdService(receiver, factory, clock, connections)
        service.startService()
        assert events == ["child started"]
        assert child.running
        assert receiver.messages() == [b"READY=1", b"STATUS=1 connection open"]
        connections.append(2)
        clock.advance(STATUS_INTERVAL - 0.1)
        assert receiver.messages() == []
        clock.advance(0.1)
        assert receiver.messages() == [b"STATUS=2 connections open"]
        service.stopService()
        child.stopped.callback(None)

    def test_stoppingThenCloseAfterChildren(
        self, receiver: Receiver, factory: CountingFactory
    ) -> None:
        """
        Stopping says STOPPING=1 before the services under it stop, sends no
        more status, keeps pinging the watchdog while they stop, and closes
        the socket (and stops the pings) only once they have all stopped.
        """
        clock = Clock()
        service, child, events = systemdService(
            receiver, factory, clock, [0], WATCHDOG_USEC=WATCHDOG_USEC
        )
        service.startService()
        assert receiver.messages() == [
            b"READY=1",
            b"WATCHDOG=1",
            b"STATUS=0 connections open",
        ]
        stopped = service.stopService()
        assert receiver.messages() == [b"STOPPING=1"]
        assert events == ["child started", "child stopping"]
        assertNoResult(stopped)
        clock.advance(HALF_INTERVAL)
        assert receiver.messages() == [b"WATCHDOG=1"]
        assert factory.sockets[0].fileno() != -1
        child.stopped.callback(None)
        assert successResultOf(stopped) is None
        assert factory.sockets[0].fileno() == -1
        assert clock.getDelayedCalls() == []

    def test_disabled(self, factory: CountingFactory) -> None:
        """
        Without C{NOTIFY_SOCKET}, the services under it start and stop, and
        nothing is scheduled or sent.
        """
        clock = Clock()
        service, child, events = systemdService(None, factory, clock, [3])
        service.startService()
        assert clock.getDelayedCalls() == []
        stopped = service.stopService()
        child.stopped.callback(None)
        assert successResultOf(stopped) is None
        assert events == ["child started", "child stopping"]
        assert factory.sockets == []


class SocketActivationTests:
    @pytest.mark.e2e
    def test_inheritedSocket(self, tmp_path: Path) -> None:
        """
        C{twistd zero --listen systemd:domain=INET:name=zero-tcp} serves zeros
        on the listening socket it inherits as systemd passes it, then exits
        cleanly on SIGTERM.
        """
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            port = listener.getsockname()[1]
            environ = {
                name: value
                for name, value in os.environ.items()
                if not name.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_"))
            }
            path = environ.get("PYTHONPATH")
            environ.update(
                PYTHONPATH=str(PROJECT) + (os.pathsep + path if path else ""),
                LISTEN_FDS="1",
                LISTEN_FDNAMES="zero-tcp",
            )
            process = subprocess.Popen(
                ["sh", "-c", ACTIVATE, str(TWISTD), "-n", "--pidfile=", "zero",
                 "--listen", "systemd:domain=INET:name=zero-tcp"],
                stdin=listener.fileno(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                env=environ,
            )  # fmt: skip
        lines: queue.Queue[str | None] = queue.Queue()
        log: list[str] = []

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line.decode("utf-8", "replace"))
            lines.put(None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            listening = re.compile(rf"streaming zero on 127\.0\.0\.1:{port}$")
            end = time.monotonic() + DEADLINE
            while not any(listening.search(line) for line in log):
                try:
                    line = lines.get(timeout=max(end - time.monotonic(), 0.01))
                except queue.Empty:
                    line = None
                assert line is not None, f"not listening on {port}:\n{''.join(log)}"
                log.append(line)
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as c:
                received = bytearray()
                while len(received) < 2**20:
                    chunk = c.recv(2**20 - len(received))
                    assert chunk
                    received += chunk
            assert received == bytes(2**20)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            reader.join(timeout=DEADLINE)
            assert process.stdout is not None
            process.stdout.close()
        while not lines.empty():
            log.append(lines.get_nowait() or "")
        output = "".join(log)
        # twistd ends itself with the signal it was stopped by.
        assert code in (0, -signal.SIGTERM), output
        assert "Traceback" not in output
        assert "Unhandled" not in output
