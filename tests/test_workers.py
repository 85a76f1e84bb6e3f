"""
Tests for L{twisted_zero._workers}: worker command lines and supervision,
with a fake process reactor and a task clock.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import cast

import pytest
from twisted.internet import tcp
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.python.failure import Failure

from twisted_zero._workers import (
    FIRST_WORKER_FD,
    HEALTHY_SECONDS,
    RESTART_DELAY,
    InheritedSocket,
    ParentWatch,
    WorkerSupervisor,
    _Worker,
    parseInherited,
    superviseWorkers,
    workerCommand,
)


class InheritedTests:
    def test_roundTrip(self) -> None:
        """
        What the parent writes, the worker reads.
        """
        sockets = [
            InheritedSocket("tcp", 3, socket.AF_INET),
            InheritedSocket("http", 4, socket.AF_INET6),
        ]
        spec = ",".join(s.spec() for s in sockets)
        assert parseInherited(spec) == sockets

    @pytest.mark.parametrize("spec", ["", "tcp:3", "ftp:3:2", "tcp:x:2", "tcp:3:2:1"])
    def test_malformed(self, spec: str) -> None:
        """
        Anything else is refused.
        """
        with pytest.raises(ValueError):
            parseInherited(spec)

    def test_command(self) -> None:
        """
        A worker runs the parent's own twistd command, in the foreground,
        without a PID file, adopting the sockets.
        """
        command = workerCommand(
            ["/usr/bin/twistd", "--pidfile=x.pid", "zero", "--workers", "2"],
            [InheritedSocket("tcp", 3, 2)],
        )
        assert command == [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "--pidfile=x.pid",
            "--nodaemon",
            "--pidfile=",
            "zero",
            "--workers",
            "2",
            "--worker-sockets",
            "tcp:3:2",
        ]


class FakeProcess:
    def __init__(self, pid: int, signals: list[tuple[int, str]]) -> None:
        self.pid = pid
        self._signals = signals

    def signalProcess(self, name: str) -> None:
        self._signals.append((self.pid, name))


class FakeReactor:
    def __init__(self) -> None:
        self.spawned: list[tuple[object, dict[str, str], dict[int, object]]] = []
        self.signals: list[tuple[int, str]] = []

    def spawnProcess(
        self,
        protocol: object,
        executable: str,
        args: list[str],
        env: dict[str, str],
        childFDs: dict[int, object],
    ) -> FakeProcess:
        self.spawned.append((protocol, env, childFDs))
        return FakeProcess(100_000 + len(self.spawned), self.signals)


def workerNumbered(reactor: FakeReactor, number: int) -> _Worker:
    """
    The last worker of that number the supervisor spawned.
    """
    workers = [p for p, _, _ in reactor.spawned if isinstance(p, _Worker)]
    return [worker for worker in workers if worker.number == number][-1]


def supervisor() -> tuple[WorkerSupervisor, FakeReactor, Clock]:
    reactor, clock = FakeReactor(), Clock()
    return (
        WorkerSupervisor(
            reactor=cast(IReactorProcess, reactor),
            clock=clock,
            command=["python", "-c", "pass"],
            childFDs={0: "w", 1: 1, 2: 2, 3: 7},
            count=2,
            stopTimeout=5,
        ),
        reactor,
        clock,
    )


class SupervisorTests:
    def test_start(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        Starting spawns the workers with the sockets, and without the
        parent's systemd variables.
        """
        monkeypatch.setenv("NOTIFY_SOCKET", "/run/notify")
        monkeypatch.setenv("LISTEN_FDS", "1")
        service, reactor, clock = supervisor()
        service.startService()
        assert len(reactor.spawned) == 2
        for _, env, childFDs in reactor.spawned:
            assert "NOTIFY_SOCKET" not in env and "LISTEN_FDS" not in env
            assert childFDs[3] == 7
        assert service.pids == [100_001, 100_002]

    def test_restart(self) -> None:
        """
        A worker that ends is started again after a delay; a stopped
        supervisor starts nothing.
        """
        service, reactor, clock = supervisor()
        service.startService()
        first = workerNumbered(reactor, 0)
        first.processEnded(Failure(ProcessTerminated(signal=9)))
        assert service.pids == [100_002]
        clock.advance(RESTART_DELAY)
        assert len(reactor.spawned) == 3
        assert service.restarts == 1
        assert service.pids == [100_002, 100_003]

    def test_backoff(self) -> None:
        """
        A worker that keeps dying young is restarted later and later; one
        that lived long is restarted quickly again.
        """
        service, reactor, clock = supervisor()
        service.startService()
        delays = []
        for _ in range(7):
            worker = workerNumbered(reactor, 0)
            before = len(reactor.spawned)
            worker.processEnded(Failure(ProcessTerminated(exitCode=1)))
            waited = 0.0
            while len(reactor.spawned) == before:
                clock.advance(0.5)
                waited += 0.5
            delays.append(waited)
        assert delays == [1, 2, 4, 8, 16, 30, 30]
        clock.advance(HEALTHY_SECONDS + 1)
        worker = workerNumbered(reactor, 0)
        before = len(reactor.spawned)
        worker.processEnded(Failure(ProcessTerminated(exitCode=1)))
        clock.advance(RESTART_DELAY)
        assert len(reactor.spawned) == before + 1

    def test_stop(self) -> None:
        """
        Stopping sends SIGTERM to every worker, SIGKILL to those still there
        after the timeout, and fires once all have ended; none is restarted.
        """
        service, reactor, clock = supervisor()
        service.startService()
        stopped = service.stopService()
        assert reactor.signals == [(100_001, "TERM"), (100_002, "TERM")]
        workerNumbered(reactor, 0).processEnded(Failure(ProcessDone(0)))
        assert not stopped.called
        clock.advance(5)
        assert reactor.signals[2:] == [(100_002, "KILL")]  # not the one that ended
        workerNumbered(reactor, 1).processEnded(Failure(ProcessTerminated(signal=9)))
        assert stopped.called
        clock.advance(RESTART_DELAY)
        assert len(reactor.spawned) == 2
        assert clock.getDelayedCalls() == []


class SuperviseWorkersTests:
    def test_handsPortsToWorkers(self) -> None:
        """
        L{superviseWorkers} stops this process reading its listening ports
        and has each worker get them as file descriptors from
        L{FIRST_WORKER_FD} on, named on its command line with their kind
        and address family.
        """
        reactor = MemoryReactor()
        ports = [
            tcp.Port(0, Factory(), interface="127.0.0.1", reactor=reactor)
            for _ in range(2)
        ]
        for port in ports:
            port.startListening()
        try:
            assert reactor.readers == set(ports)
            supervisor = superviseWorkers(
                reactor=cast(IReactorProcess, FakeReactor()),
                clock=Clock(),
                ports=[("tcp", ports[0]), ("http", ports[1])],
                argv=["twistd", "zero", "--workers", "2"],
                count=2,
                stopTimeout=5,
            )
            assert reactor.readers == set()
            assert supervisor._childFDs == {
                0: "w",
                1: 1,
                2: 2,
                FIRST_WORKER_FD: ports[0].fileno(),
                FIRST_WORKER_FD + 1: ports[1].fileno(),
            }
            family = int(socket.AF_INET)
            assert supervisor._command[-2:] == [
                "--worker-sockets",
                f"tcp:{FIRST_WORKER_FD}:{family},http:{FIRST_WORKER_FD + 1}:{family}",
            ]
            assert supervisor._count == 2
        finally:
            for port in ports:
                port.socket.close()

    def test_notASocket(self) -> None:
        """
        A listening port that is not a socket this process listens on
        cannot be handed to workers: L{ValueError}, naming its address.
        """
        reactor = MemoryReactorClock()
        port = reactor.listenTCP(8019, Factory())
        with pytest.raises(
            ValueError, match=r"cannot hand the listener on .* to workers"
        ):
            superviseWorkers(
                reactor=cast(IReactorProcess, FakeReactor()),
                clock=Clock(),
                ports=[("tcp", port)],
                argv=["twistd", "zero"],
                count=2,
                stopTimeout=5,
            )


class ParentWatchTests:
    def test_endOfFileStops(self) -> None:
        """
        The parent's end of the worker's standard input closing stops the
        worker's reactor; data on it (there is none) is ignored.
        """

        class Reactor(MemoryReactor):
            stopped = False

            def __init__(self) -> None:
                MemoryReactor.__init__(self)

            def stop(self) -> None:
                self.stopped = True

        reactor = Reactor()
        reactor.running = True
        watch = ParentWatch(reactor=reactor)
        assert watch.fileno() == 0
        read, write = os.pipe()
        saved = os.dup(0)
        try:
            os.dup2(read, 0)
            os.write(write, b"x")
            assert watch.doRead() is None
            os.close(write)
            result = watch.doRead()
            assert result is not None
            watch.connectionLost(Failure(result))
        finally:
            os.dup2(saved, 0)
            os.close(saved)
            os.close(read)
        assert reactor.stopped
