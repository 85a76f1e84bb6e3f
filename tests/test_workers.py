"""
Tests for L{twisted_zero._workers}: worker command lines and supervision,
with a fake process reactor and a task clock.
"""

from __future__ import annotations

import signal
import socket
import sys

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from twisted_zero._workers import (
    RESTART_DELAY,
    InheritedSocket,
    WorkerSupervisor,
    parseInherited,
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
    def __init__(self, pid: int) -> None:
        self.pid = pid


class FakeReactor:
    def __init__(self) -> None:
        self.spawned: list[tuple[object, dict[str, str], dict[int, object]]] = []

    def spawnProcess(
        self,
        protocol: object,
        executable: str,
        args: list[str],
        env: dict[str, str],
        childFDs: dict[int, object],
    ) -> FakeProcess:
        self.spawned.append((protocol, env, childFDs))
        return FakeProcess(100_000 + len(self.spawned))


def supervisor(
    sent: list[tuple[int, int]] | None = None,
) -> tuple[WorkerSupervisor, FakeReactor, Clock]:
    reactor, clock = FakeReactor(), Clock()
    signals = [] if sent is None else sent
    return (
        WorkerSupervisor(
            reactor=reactor,  # type: ignore[arg-type]
            clock=clock,
            command=["python", "-c", "pass"],
            childFDs={0: "w", 1: 1, 2: 2, 3: 7},
            count=2,
            stopTimeout=5,
            kill=lambda pid, number: signals.append((pid, number)),
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
        first = reactor.spawned[0][0]
        first.processEnded(Failure(ProcessTerminated(signal=9)))  # type: ignore[attr-defined]
        assert service.pids == [100_002]
        clock.advance(RESTART_DELAY)
        assert len(reactor.spawned) == 3
        assert service.restarts == 1
        assert service.pids == [100_002, 100_003]

    def test_stop(self) -> None:
        """
        Stopping sends SIGTERM to every worker, SIGKILL to those still there
        after the timeout, and fires once all have ended; none is restarted.
        """
        sent: list[tuple[int, int]] = []
        service, reactor, clock = supervisor(sent)
        service.startService()
        stopped = service.stopService()
        assert sent == [(100_001, signal.SIGTERM), (100_002, signal.SIGTERM)]
        reactor.spawned[0][0].processEnded(Failure(ProcessDone(0)))  # type: ignore[attr-defined]
        assert not stopped.called
        clock.advance(5)
        assert sent[2:] == [(100_001, signal.SIGKILL), (100_002, signal.SIGKILL)]
        reactor.spawned[1][0].processEnded(Failure(ProcessTerminated(signal=9)))  # type: ignore[attr-defined]
        assert stopped.called
        clock.advance(RESTART_DELAY)
        assert len(reactor.spawned) == 2
        assert clock.getDelayedCalls() == []
