"""
Tell systemd how the daemon is doing: the C{sd_notify} protocol (readiness,
stopping, status, watchdog pings), without libsystemd.

See U{sd_notify(3)<https://www.freedesktop.org/software/systemd/man/sd_notify.html>}.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import ClassVar

from attrs import define, field
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

STATUS_INTERVAL = 5.0
"""
How often systemd is told how many connections are open, in seconds.
"""


def _datagramSocket() -> socket.socket:
    """
    A non-blocking C{AF_UNIX} datagram socket to send notifications from.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


def _copyEnviron() -> dict[str, str]:
    return dict(os.environ)


def notifyAddress(value: str) -> bytes | None:
    """
    The C{AF_UNIX} address a C{NOTIFY_SOCKET} value names.

    @param value: A filesystem path (C{/run/systemd/notify}), or C{@name} for
        C{name} in the abstract namespace.
    @return: The address to send to (a leading NUL byte for the abstract
        namespace), or L{None} if C{value} is empty or of another form.
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    return None


@define
class SystemdNotifier:
    """
    Send notifications to the service manager named by C{NOTIFY_SOCKET}.

    Without C{NOTIFY_SOCKET} (not started by systemd, or without
    C{Type=notify}) every method does nothing. Errors are logged, once until
    a notification gets through again, and never raised: systemd's view of
    the daemon must not take the daemon down.

    @param clock: Times the watchdog pings.
    @param environ: Where to find C{NOTIFY_SOCKET}, C{WATCHDOG_USEC} and
        C{WATCHDOG_PID}; by default a copy of the process environment.
    @param socketFactory: Makes the socket notifications are sent from, when
        the first is sent.
    """

    clock: IReactorTime
    environ: Mapping[str, str] = field(factory=_copyEnviron)
    socketFactory: Callable[[], socket.socket] = field(
        default=_datagramSocket, kw_only=True
    )
    _socket: socket.socket | None = field(default=None, init=False)
    _watchdog: LoopingCall | None = field(default=None, init=False)
    _failing: bool = field(default=False, init=False)
    _warnedAddress: bool = field(default=False, init=False)
    _warnedWatchdog: bool = field(default=False, init=False)

    _log: ClassVar[Logger] = Logger()

    @property
    def _value(self) -> str:
        return self.environ.get("NOTIFY_SOCKET", "")

    @property
    def enabled(self) -> bool:
        """
        Whether C{NOTIFY_SOCKET} is set: a path, or C{@name} in the abstract
        namespace.
        """
        return notifyAddress(self._value) is not None

    @property
    def watching(self) -> bool:
        """
        Whether watchdog pings are being sent.
        """
        return self._watchdog is not None

    def ready(self) -> None:
        """
        Tell systemd that the daemon has started (C{READY=1}).
        """
        self._send("READY=1")

    def stopping(self) -> None:
        """
        Tell systemd that the daemon is shutting down (C{STOPPING=1}).
        """
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        """
        Set the one line that C{systemctl status} shows (C{STATUS=...}).

        @param text: The status; line breaks become spaces.
        """
        line = " ".join(text.splitlines())
        self._send(f"STATUS={line}")

    def startWatchdog(self) -> None:
        """
        If systemd asks for watchdog pings (C{WATCHDOG_USEC}, for this
        process if C{WATCHDOG_PID} is set), send C{WATCHDOG=1} now and then
        every half of C{WATCHDOG_USEC} from the reactor, so that a blocked
        reactor misses them. Does nothing if pings are being sent already.
        """
        if not self.enabled or self._watchdog is not None:
            return
        interval = self._watchdogInterval()
        if interval is None:
            return
        self._watchdog = LoopingCall(self._send, "WATCHDOG=1")
        self._watchdog.clock = self.clock
        self._watchdog.start(interval, now=True)

    def stopWatchdog(self) -> None:
        """
        Stop the watchdog pings, if any, and close the socket (a later
        notification opens another).
        """
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.running:
            watchdog.stop()
        self._closeSocket()

    def close(self) -> None:
        """
        Stop the watchdog pings and close the socket: what to do when done.
        """
        self.stopWatchdog()

    def _watchdogInterval(self) -> float | None:
        """
        Seconds between two watchdog pings, or L{None} if systemd asks for
        none from this process.
        """
        usec = self.environ.get("WATCHDOG_USEC")
        if usec is None:
            return None
        pid = self.environ.get("WATCHDOG_PID")
        if pid is not None and pid != str(os.getpid()):
            return None
        try:
            microseconds = int(usec)
        except ValueError:
            microseconds = 0
        if microseconds <= 0:
            if not self._warnedWatchdog:
                self._warnedWatchdog = True
                self._log.warn(
                    "no systemd watchdog: WATCHDOG_USEC={usec!r} is not a "
                    "positive number of microseconds",
                    usec=usec,
                )
            return None
        return microseconds / 2 / 1_000_000

    def _send(self, message: str) -> None:
        address = notifyAddress(self._value)
        if address is None:
            if self._value and not self._warnedAddress:
                self._warnedAddress = True
                self._log.warn(
                    "cannot notify systemd: unsupported NOTIFY_SOCKET={address!r}",
                    address=self._value,
                )
            return
        try:
            if self._socket is None:
                self._socket = self.socketFactory()
            self._socket.sendto(message.encode("utf-8"), address)
        except OSError as e:
            if not self._failing:
                self._failing = True
                self._log.warn(
                    "cannot notify systemd at {address}: {error}",
                    address=self._value,
                    message=message,
                    error=e,
                )
            return
        self._failing = False

    def _closeSocket(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()


@define(eq=False)
class SystemdService(MultiService):
    """
    Run the services under it, and tell systemd how they do: ready once
    they have all started (every listener is bound by then), the open
    connections every L{STATUS_INTERVAL} seconds, watchdog pings while they
    run, stopping when they begin to stop; and close the notification
    socket once they have all stopped.

    @param notifier: Tells systemd; its clock times the status reports.
    @param connections: How many connections are open now.
    @param interval: Seconds between two status reports.
    """

    _notifier: SystemdNotifier = field(alias="notifier")
    _connections: Callable[[], int] = field(alias="connections")
    _interval: float = field(default=STATUS_INTERVAL, alias="interval")
    _status: LoopingCall = field(init=False)

    def __attrs_post_init__(self) -> None:
        MultiService.__init__(self)
        self._status = LoopingCall(self._reportStatus)
        self._status.clock = self._notifier.clock

    def startService(self) -> None:
        MultiService.startService(self)
        self._notifier.ready()
        self._notifier.startWatchdog()
        if self._notifier.enabled:
            self._status.start(self._interval)

    def _reportStatus(self) -> None:
        count = self._connections()
        self._notifier.status(f"{count} connection{'' if count == 1 else 's'} open")

    def stopService(self) -> Deferred[None]:
        """
        Tell systemd the daemon is stopping, stop the services under this
        one, and then the watchdog pings.
        """
        self._notifier.stopping()
        if self._status.running:
            self._status.stop()
        stopped: Deferred[object] = MultiService.stopService(self)
        return stopped.addBoth(lambda _: self._notifier.close())
