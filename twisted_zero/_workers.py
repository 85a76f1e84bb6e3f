"""
Several worker processes serving the same listening sockets: the parent
binds them, each worker adopts them, and the parent restarts a worker that
dies and stops them all on shutdown.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from attrs import define, field
from twisted.application.service import Service
from twisted.internet import tcp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import (
    IListeningPort,
    IProcessTransport,
    IReactorCore,
    IReactorFDSet,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.main import CONNECTION_DONE
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

RESTART_DELAY = 1.0
"""
Seconds before a worker that died is started again (doubled each time it
dies young, up to L{MAX_RESTART_DELAY}).
"""
MAX_RESTART_DELAY = 30.0
HEALTHY_SECONDS = 10.0
"""
A worker that lived this long was healthy: its next restart is quick again.
"""

FIRST_WORKER_FD = 3
_CHILD_ENVIRONMENT_DROPPED = (
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
)


@define(frozen=True)
class InheritedSocket:
    """
    A listening socket a worker adopts.

    @param kind: Which listener it is for: C{"tcp"} (raw streams) or
        C{"http"}.
    @param fd: Its file descriptor in the worker.
    @param family: Its address family.
    """

    kind: str
    fd: int
    family: int

    def spec(self) -> str:
        return f"{self.kind}:{self.fd}:{self.family}"


def parseInherited(spec: str) -> list[InheritedSocket]:
    """
    Read the sockets a worker is to adopt (written by L{workerCommand}).

    @raise ValueError: If C{spec} is malformed.
    """
    sockets = []
    for item in spec.split(","):
        kind, fd, family = item.split(":")
        if kind not in ("tcp", "http"):
            raise ValueError(f"unknown listener kind {kind!r}")
        sockets.append(InheritedSocket(kind, int(fd), int(family)))
    return sockets


def workerCommand(argv: Sequence[str], sockets: Sequence[InheritedSocket]) -> list[str]:
    """
    The command line of a worker: the parent's own C{twistd} command, in the
    foreground and without a PID file, told to adopt C{sockets}.

    @param argv: The parent's C{sys.argv}.
    """
    arguments = list(argv[1:])
    subcommand = arguments.index("zero")
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        *arguments[:subcommand],
        "--nodaemon",
        "--pidfile=",
        *arguments[subcommand:],
        "--worker-sockets",
        ",".join(s.spec() for s in sockets),
    ]


@define(eq=False)
class _Worker(ProcessProtocol):
    """
    One worker process: tells its supervisor when it has ended.
    """

    supervisor: WorkerSupervisor
    number: int
    ended: Deferred[None] = field(factory=Deferred, init=False)

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.supervisor.workerEnded(self, reason)


@define(eq=False)
class WorkerSupervisor(Service):
    """
    Start C{count} workers, restart those that die, stop them all (SIGTERM,
    then SIGKILL after C{stopTimeout}) when stopped.

    @param reactor: Spawns the workers.
    @param clock: Times the restarts and the stop timeout.
    @param command: A worker's command line (L{workerCommand}).
    @param childFDs: A worker's file descriptors: the listening sockets it
        adopts, and standard input as a pipe from this process (see
        L{ParentWatch}).
    @param count: How many workers run at once.
    @param stopTimeout: Seconds a worker may take to stop on SIGTERM
        before it gets SIGKILL.
    @ivar restarts: How many times a worker that died was restarted.
    """

    _reactor: IReactorProcess = field(alias="reactor")
    _clock: IReactorTime = field(alias="clock")
    _command: list[str] = field(alias="command")
    _childFDs: dict[int, int | str] = field(alias="childFDs")
    _count: int = field(alias="count")
    _stopTimeout: float = field(alias="stopTimeout")
    restarts: int = field(default=0, init=False)
    _workers: dict[int, _Worker] = field(factory=dict, init=False)
    _pids: dict[int, int] = field(factory=dict, init=False)
    _processes: dict[int, IProcessTransport] = field(factory=dict, init=False)
    _started: dict[int, float] = field(factory=dict, init=False)
    _delays: dict[int, float] = field(factory=dict, init=False)
    _stopping: bool = field(default=False, init=False)

    _log = Logger()

    def startService(self) -> None:
        Service.startService(self)
        for number in range(self._count):
            self._spawn(number)

    def _spawn(self, number: int) -> None:
        if self._stopping:
            return
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in _CHILD_ENVIRONMENT_DROPPED
        }
        worker = _Worker(self, number)
        process = self._reactor.spawnProcess(
            worker,
            self._command[0],
            self._command,
            env=environment,
            childFDs=self._childFDs,
        )
        self._workers[number] = worker
        self._pids[number] = process.pid
        self._processes[number] = process
        self._started[number] = self._clock.seconds()
        self._log.info(
            "started worker {number}, pid {pid}", number=number, pid=process.pid
        )

    def workerEnded(self, worker: _Worker, reason: Failure) -> None:
        """
        C{worker} has ended: restart it, unless this is stopping.
        """
        self._workers.pop(worker.number, None)
        pid = self._pids.pop(worker.number, None)
        self._processes.pop(worker.number, None)
        if self._stopping:
            return
        self.restarts += 1
        # A worker that dies young is restarted later and later (up to
        # MAX_RESTART_DELAY), so one that cannot start does not spin.
        lived = self._clock.seconds() - self._started.get(worker.number, 0.0)
        delay = self._delays.get(worker.number, RESTART_DELAY)
        delay = RESTART_DELAY if lived > HEALTHY_SECONDS else delay
        self._delays[worker.number] = min(delay * 2, MAX_RESTART_DELAY)
        self._log.warn(
            "worker {number} (pid {pid}) ended ({why}); restarting it in {delay}s",
            number=worker.number,
            pid=pid,
            why=reason.getErrorMessage()
            if reason.check(ProcessDone, ProcessTerminated)
            else reason,
            delay=delay,
        )
        self._clock.callLater(delay, self._spawn, worker.number)

    @property
    def pids(self) -> list[int]:
        """
        The process IDs of the running workers.
        """
        return sorted(self._pids.values())

    def _signalRunning(self, name: str) -> None:
        """
        Signal the workers still running (through their process transports,
        so a PID reused by another process is never signalled).
        """
        for process in list(self._processes.values()):
            with contextlib.suppress(ProcessExitedAlready, OSError):
                process.signalProcess(name)

    def stopService(self) -> Deferred[None]:
        """
        Stop the workers: SIGTERM, then SIGKILL to those still running
        after the stop timeout.

        @return: A L{Deferred} that fires once all have ended.
        """
        Service.stopService(self)
        self._stopping = True
        ended = [worker.ended for worker in self._workers.values()]
        self._signalRunning("TERM")
        kill = self._clock.callLater(self._stopTimeout, self._signalRunning, "KILL")
        done = gatherResults(ended, consumeErrors=True)
        return done.addBoth(lambda result: kill.cancel() if kill.active() else None)


def superviseWorkers(
    reactor: IReactorProcess,
    clock: IReactorTime,
    ports: Sequence[tuple[str, IListeningPort]],
    argv: Sequence[str],
    count: int,
    stopTimeout: float,
) -> WorkerSupervisor:
    """
    Hand the listening C{ports} of this process (the parent, which only
    binds) to C{count} workers, which accept: this process stops reading
    them, and each worker gets them as file descriptors from
    L{FIRST_WORKER_FD} on, and is told so on its command line.

    @param ports: Each port with the kind of listener it is (C{"tcp"} for
        raw streams, C{"http"}).
    @param argv: This process's C{sys.argv}, which the workers repeat.
    @raise ValueError: If a port is not a socket this process listens on.
    """
    sockets = []
    childFDs: dict[int, int | str] = {0: "w", 1: 1, 2: 2}
    for index, (kind, port) in enumerate(ports):
        if not isinstance(port, tcp.Port):
            raise ValueError(f"cannot hand the listener on {port.getHost()} to workers")
        port.stopReading()
        fd = FIRST_WORKER_FD + index
        sockets.append(InheritedSocket(kind, fd, port.addressFamily))
        childFDs[fd] = port.fileno()
    return WorkerSupervisor(
        reactor=reactor,
        clock=clock,
        command=workerCommand(argv, sockets),
        childFDs=childFDs,
        count=count,
        stopTimeout=stopTimeout,
    )


class ParentWatch(FileDescriptor):
    """
    In a worker: stop when the parent is gone. The parent holds the other
    end of the worker's standard input, so its end of file means the parent
    has exited, however it ended; a worker must not serve on alone.
    """

    _log = Logger()

    def fileno(self) -> int:
        return 0

    def doRead(self) -> object:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        return None if data else CONNECTION_DONE

    def connectionLost(self, reason: Failure) -> None:
        FileDescriptor.connectionLost(self, reason)
        self._log.warn("the parent process is gone: stopping this worker")
        reactor = IReactorCore(self.reactor)
        if reactor.running:
            reactor.stop()


def watchParent(reactor: IReactorFDSet) -> ParentWatch:
    """
    In a worker: stop once the parent is gone (see L{ParentWatch}).
    """
    watch = ParentWatch(reactor=reactor)
    FileDescriptor.startReading(watch)
    return watch
