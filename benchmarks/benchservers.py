"""
The servers the benchmarks measure, shared by them: the checkouts our
daemon is run from, what C{/proc} says of a server, server processes that
die with the benchmark (their start, port, log and stop), our C{twistd
zero} daemon, and what every server of a run is started with. Not a
benchmark itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import TypeVar

from benchutil import (
    BASELINE,
    HOST,
    OURS,
    REPO_ROOT,
    BenchError,
    Pinning,
    dieWithParent,
)

STARTUP_TIMEOUT = 20.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

TWISTD = (
    "import sys; sys.argv[0] = 'twistd'; "
    "from twisted.scripts.twistd import run; sys.exit(run())"
)
"""
C{python -c TWISTD ...} runs twistd with this interpreter (and its
C{PYTHONPATH}), whatever C{twistd} script is on C{PATH}.
"""

DAEMON_PORT_LINE = re.compile(
    rf"(?:streaming \S+|serving HTTP) on {re.escape(HOST)}:(\d+)"
)
"""
The line our daemon logs for each listener it starts, with its port.
"""


def twistdCommand(plugin: str, *arguments: str) -> list[str]:
    """
    C{twistd -n --pidfile= PLUGIN ARGUMENTS}, run by this interpreter (see
    L{TWISTD}).
    """
    return [sys.executable, "-c", TWISTD, "-n", "--pidfile=", plugin, *arguments]


# Checkouts ---------------------------------------------------------------


def checkoutEnvironment(root: Path) -> dict[str, str]:
    """
    This process's environment with C{root} first on C{PYTHONPATH}: a daemon
    started with it imports C{twisted_zero} (and so the C{twisted_zero.tap}
    that the C{zero} plugin names) from the checkout at C{root}.
    """
    env = dict(os.environ)
    paths = [str(root), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    return env


def serverEnvironment(kind: str, baseline: Path | None) -> dict[str, str]:
    """
    The environment of a server of C{kind}: the baseline imports our package
    from its checkout at C{baseline}, every other server from this tree.
    """
    if kind == BASELINE:
        assert baseline is not None
        return checkoutEnvironment(baseline)
    return checkoutEnvironment(REPO_ROOT)


def daemonEnvironments(baseline: Path | None) -> dict[str, dict[str, str]]:
    """
    The daemons to measure, ours and, given a C{baseline} checkout, the
    baseline's, in that order, each with its environment.
    """
    kinds = [OURS] + ([BASELINE] if baseline else [])
    return {kind: serverEnvironment(kind, baseline) for kind in kinds}


def runProbe(
    probe: str, arguments: Sequence[str], env: dict[str, str], cwd: Path, failure: str
) -> list[str]:
    """
    Run the Python code C{probe} with C{arguments} in C{env} and C{cwd}.

    @return: The words it printed.
    @raise SystemExit: With C{failure} and the probe's error output, if it
        failed.
    """
    completed = subprocess.run(
        [sys.executable, "-c", probe, *arguments],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if completed.returncode != 0:
        raise SystemExit(f"{failure}:\n{completed.stderr.strip()}")
    return completed.stdout.split()


def checkImportedFrom(package: str, root: Path) -> None:
    """
    Stop the benchmark unless C{package}, the C{twisted_zero/__init__.py} a
    probe imported, is in the checkout at C{root}.
    """
    if not Path(package).resolve().is_relative_to(root):
        raise SystemExit(f"the daemon would import {package}, not {root}")


@dataclass(frozen=True, kw_only=True)
class ServerSetup:
    """
    What every server of a run is started with: the directory of its logs
    and configuration, and the plan's C{baseline} and C{pinning} (see
    L{benchutil.RunPlan}). A benchmark's own setup adds what it needs.
    """

    workDir: Path
    baseline: Path | None = None
    pinning: Pinning | None = None

    def environment(self, kind: str = OURS) -> dict[str, str]:
        """
        The environment of a server of C{kind}: the baseline imports our
        package from its checkout, every other server from this tree.
        """
        return serverEnvironment(kind, self.baseline)

    def probeDaemon(
        self,
        kind: str,
        probe: str,
        arguments: Sequence[str],
        failure: str,
        words: int,
    ) -> list[str]:
        """
        Run the Python code C{probe} with C{arguments} as the interpreter of
        the daemon of C{kind} (ours or the baseline) runs it, and check that
        it imported our package (the first word it printed: the path of
        C{twisted_zero/__init__.py}) from that daemon's checkout.

        @return: The C{words} words it printed.
        @raise BenchError: If it printed another number of words.
        @raise SystemExit: If the probe failed (with C{failure}), or imported
            our package from elsewhere.
        """
        output = runProbe(
            probe, arguments, self.environment(kind), self.workDir, failure
        )
        if len(output) != words:
            raise BenchError(f"unexpected output of the probe: {output}")
        root = self.baseline if kind == BASELINE else REPO_ROOT
        assert root is not None
        checkImportedFrom(output[0], root)
        return output


# /proc -------------------------------------------------------------------


def _statFields(pid: int) -> list[str]:
    """
    The fields of C{/proc/PID/stat} after the command name, which, in
    parentheses, may itself hold spaces.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def cpuTimes(pid: int) -> tuple[float, float]:
    """
    User and system CPU time of a process so far, in seconds.
    """
    fields = _statFields(pid)
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU time of a process so far.
    """
    return sum(cpuTimes(pid))


def _procValue(path: str, name: str) -> int:
    """
    The number after C{name} in the C{/proc} file at C{path}.

    @raise BenchError: If there is none.
    """
    for line in Path(path).read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise BenchError(f"no {name} in {path}")


def rssKiB(pid: int) -> int:
    return _procValue(f"/proc/{pid}/status", "VmRSS")


def readChars(pid: int) -> int:
    """
    What a process has read so far (C{rchar} of C{/proc/PID/io}): files, and
    what C{sendfile()} sent.
    """
    return _procValue(f"/proc/{pid}/io", "rchar")


def openFds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def childPids(pid: int) -> list[int]:
    """
    The processes whose parent is C{pid}.
    """
    children = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_statFields(int(entry.name))[1])
        except OSError:
            continue  # gone meanwhile
        if parent == pid:
            children.append(int(entry.name))
    return sorted(children)


# Processes ---------------------------------------------------------------


def terminate(signum: int, frame: FrameType | None) -> None:
    """
    A SIGTERM handler that unwinds the benchmark, so that its C{finally}
    clauses stop the servers and remove the temporary directory.
    """
    raise SystemExit(128 + signum)


def serverPreexec(pinning: Pinning | None) -> Callable[[], None]:
    """
    The C{preexec_fn} of a server subprocess: L{dieWithParent}, and with
    C{pinning} the server CPUs (L{Pinning.prepareServer}).
    """
    return dieWithParent if pinning is None else pinning.prepareServer


def spawnServer(
    command: Sequence[str],
    logPath: Path,
    errPath: Path,
    cwd: Path,
    env: dict[str, str],
    pinning: Pinning | None,
    mergeErrors: bool = False,
) -> subprocess.Popen[bytes]:
    """
    Start a server subprocess in a session of its own, its output to
    C{logPath} and its error output to C{errPath} (or with C{mergeErrors} to
    C{logPath} too, C{errPath} being created empty).
    """
    with open(logPath, "wb") as log, open(errPath, "wb") as err:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if mergeErrors else err,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=serverPreexec(pinning),
        )


class ServerProcess:
    """
    A running server subprocess that a benchmark started; as a context
    manager, stopped on the way out. A subclass (a dataclass) has a
    C{process} and a C{logPath}, and says what C{label} it goes by.
    """

    process: subprocess.Popen[bytes]
    logPath: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def label(self) -> str:
        raise NotImplementedError

    def logPaths(self) -> tuple[Path, ...]:
        """
        The logs whose end L{logTail} shows.
        """
        return (self.logPath, self.logPath.with_suffix(".err"))

    def _waitForPort(self, portLine: re.Pattern[str], lines: int = 1) -> int:
        """
        Wait until the log holds C{lines} lines that match C{portLine}.

        @return: The port of the first.
        """
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            ports = portLine.findall(self.logPath.read_text(errors="replace"))
            if len(ports) >= lines:
                return int(ports[0])
            self.checkAlive()
            time.sleep(0.05)
        raise BenchError(f"{self.label}: no port after {STARTUP_TIMEOUT}s")

    def checkAlive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.label} (pid {self.pid}) exited with "
                f"{self.process.returncode}:\n{self.logTail()}"
            )

    def logTail(self, lines: int = 15) -> str:
        text = ""
        for path in self.logPaths():
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """
        Terminate this server (by its PID only) and reap it.
        """
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self: _Server) -> _Server:
        return self

    def __exit__(
        self,
        excType: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


_Server = TypeVar("_Server", bound=ServerProcess)


@dataclass
class ZeroDaemon(ServerProcess):
    """
    A C{twistd zero} daemon of this tree or of the baseline (as C{env}
    says), as a subprocess that dies with the benchmark, its output in
    C{workDir}, and the port of its first listener; started once it has
    logged C{listeners} listeners (with C{--workers N}: the parent's, then
    each worker's).
    """

    kind: str
    args: Sequence[str]
    env: dict[str, str]
    workDir: Path
    listeners: int = 1
    process: subprocess.Popen[bytes] = field(init=False)
    logPath: Path = field(init=False)
    port: int = field(init=False)

    @property
    def label(self) -> str:
        return self.kind

    def __post_init__(self) -> None:
        self.logPath = self.workDir / f"{self.kind}.log"
        self.process = spawnServer(
            twistdCommand("zero", *self.args),
            self.logPath,
            self.logPath.with_suffix(".err"),
            self.workDir,
            self.env,
            None,
            mergeErrors=True,
        )
        try:
            self.port = self._waitForPort(DAEMON_PORT_LINE, self.listeners)
        except BaseException:
            self.stop()
            raise

    def rchar(self) -> int:
        """
        What the daemon has read so far (see L{readChars}).
        """
        return readChars(self.pid)
