"""
A slow file system for end-to-end tests and benchmarks: a read-only FUSE
pass-through of a directory in which every C{read()} first sleeps, as a
network mount or a spinning disk would, and may be logged.

As a script, it mounts SOURCE at MOUNTPOINT in the foreground (multithreaded,
so reads sleep side by side) until unmounted or sent SIGTERM or SIGINT::

    python tests/slowfs.py SOURCE MOUNTPOINT --delay 0.02 [--delay-meta 0] [--log PATH]

It needs C{/dev/fuse}, C{fusermount3} and libfuse3 (Debian: C{apt-get
install fuse3}) and the C{mfusepy} package; L{unavailable} says what is
missing. Tests use L{mounted}, which runs the script in a subprocess.

The kernel keeps no page cache of a file across opens (no C{keep_cache}), so
every open of a file reads it through the delay again; reads within one open
may be served from the cache, as after readahead.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes.util
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

MOUNT_TIMEOUT = 10.0
"""Seconds L{mounted} waits for the mount to appear."""

EXIT_TIMEOUT = 5.0
"""Seconds L{mounted} waits for the file system process to end once unmounted."""

CONCURRENCY = 64
"""
The most reads served at once: libfuse's worker threads, and the kernel's
asynchronous requests (readahead) in flight, which are 10 and 12 by default.
The readahead of several files, and a server's own thread pool, must not
queue behind one another.
"""

_STAT_FIELDS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size")
_STAT_TIMES = ("st_atime", "st_mtime", "st_ctime")
_STATVFS_FIELDS = (
    "f_bsize",
    "f_frsize",
    "f_blocks",
    "f_bfree",
    "f_bavail",
    "f_files",
    "f_ffree",
    "f_favail",
    "f_namemax",
)


class SlowPassthrough:
    """
    The read-only file system operations that C{mfusepy} calls, by name, for
    the paths of the mount: each maps onto the same path under the source
    directory. Deliberately not a subclass of C{mfusepy.Operations}, so that
    this module imports without libfuse (for L{unavailable} and L{mounted}).

    File handles are the file descriptors of the source files.
    """

    use_ns = True
    """Tell C{mfusepy} that the times L{getattr} returns are nanoseconds."""

    def __init__(
        self,
        source: str,
        delay: float,
        delayMeta: float,
        logFd: int | None,
        direct: bool = False,
    ) -> None:
        """
        @param source: The absolute path of the directory shown.
        @param delay: Seconds every C{read} sleeps.
        @param delayMeta: Seconds every C{getattr} and C{readdir} sleeps.
        @param logFd: A file descriptor open for appending, to which every
            C{read} writes a line C{begin OFFSET SIZE} as it starts and
            C{read OFFSET SIZE} once done; or L{None}.
        @param direct: Whether files are opened for direct I/O (no page
            cache, no readahead): every C{read()} of the mount is then
            exactly the reads of the file system that it asks for, in
            requests of at most 128 KiB.
        """
        self._direct = direct
        self._source = source.rstrip("/")
        self._delay = delay
        self._delayMeta = delayMeta
        self._logFd = logFd

    def init_with_config(self, connection: Any, config: Any) -> None:
        """
        Let the kernel have up to L{CONCURRENCY} asynchronous reads
        (readahead) in flight at once; open files for direct I/O if asked.
        """
        connection.max_background = CONCURRENCY
        connection.congestion_threshold = CONCURRENCY * 3 // 4
        if self._direct:
            config.direct_io = 1

    def _path(self, path: str) -> str:
        return self._source + path

    def _metaDelay(self) -> None:
        if self._delayMeta > 0:
            time.sleep(self._delayMeta)

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        """
        The C{lstat} of the source path, times in nanoseconds.
        """
        self._metaDelay()
        st = os.lstat(self._path(path))
        attributes = {name: getattr(st, name) for name in _STAT_FIELDS}
        for name in _STAT_TIMES:
            attributes[name] = getattr(st, name + "_ns")
        return attributes

    def readlink(self, path: str) -> str:
        return os.readlink(self._path(path))

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        """
        The entries of the source directory, with their types.
        """
        self._metaDelay()
        directory = {"st_mode": stat.S_IFDIR}
        entries = [(".", directory, 0), ("..", directory, 0)]
        with os.scandir(self._path(path)) as scan:
            for entry in scan:
                mode = entry.stat(follow_symlinks=False).st_mode
                entries.append((entry.name, {"st_mode": mode}, 0))
        return entries

    def open(self, path: str, flags: int) -> int:
        return os.open(self._path(path), os.O_RDONLY)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        """
        Sleep, then read from the source file (and log the read).
        """
        if self._logFd is not None:
            os.write(self._logFd, f"begin {offset} {size}\n".encode())
        time.sleep(self._delay)
        data = os.pread(fh, size, offset)
        if self._logFd is not None:
            os.write(self._logFd, f"read {offset} {size}\n".encode())
        return data

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        result = os.statvfs(self._path(path))
        return {name: getattr(result, name) for name in _STATVFS_FIELDS}


def _libfuse3() -> str | None:
    """
    The name under which libfuse3 loads, or L{None} if it is not installed.
    """
    return ctypes.util.find_library("fuse3")


def unavailable() -> str | None:
    """
    Why no slow file system can be mounted here, in one line; or L{None} if
    it can.
    """
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "no usable /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "no fusermount3 (apt-get install fuse3)"
    libfuse = _libfuse3()
    if libfuse is None:
        return "libfuse3 not found (apt-get install fuse3)"
    probe = subprocess.run(
        [sys.executable, "-c", "import mfusepy"],
        env={**os.environ, "FUSE_LIBRARY_PATH": libfuse},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        lines = probe.stderr.strip().splitlines() or ["no error output"]
        return f"mfusepy not importable: {lines[-1]}"
    return None


def _unescape(field: str) -> str:
    r"""
    A path as written in C{/proc/self/mountinfo}, whose C{\NNN} are octal.
    """
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def isMountedAt(mountpoint: Path) -> bool:
    """
    Whether something is mounted at C{mountpoint}, dead FUSE mounts (whose
    process is gone, which C{os.path.ismount} cannot tell) included.
    """
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as mounts:
        return any(_unescape(line.split()[4]) == target for line in mounts)


def _unmount(mountpoint: Path) -> None:
    """
    Unmount C{mountpoint} if something is mounted there, lazily if it is busy.
    """
    for command in (["fusermount3", "-u", "-q"], ["umount", "-l"]):
        if not isMountedAt(mountpoint):
            return
        subprocess.run(
            [*command, str(mountpoint)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=EXIT_TIMEOUT,
        )


def _dieWithParent() -> None:
    """
    In the file system process, before it execs: get SIGTERM, on which it
    unmounts and ends, when the process that started it dies, even by SIGKILL.
    """
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _reap(process: subprocess.Popen[bytes]) -> None:
    """
    Wait for C{process} to end; terminate it, then kill it, if it does not.
    """
    for end in (None, process.terminate, process.kill):
        if end is not None:
            end()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(EXIT_TIMEOUT)
            return


@contextlib.contextmanager
def mounted(
    source: Path,
    mountpoint: Path,
    delay: float,
    log: Path | None = None,
    delayMeta: float = 0.0,
    direct: bool = False,
) -> Iterator[Path]:
    """
    Mount C{source} at C{mountpoint} (an empty directory) as a slow file
    system, in a subprocess, for the duration of the context. The subprocess
    runs in a session of its own, so that a Ctrl-C reaches only this process,
    which then unmounts in order.

    @param delay: Seconds every C{read} sleeps.
    @param log: Where every C{read} appends a line C{begin OFFSET SIZE}
        when it starts, and C{read OFFSET SIZE} when it is done.
    @param delayMeta: Seconds every C{getattr} and C{readdir} sleeps.
    @param direct: Whether files are opened for direct I/O: no page cache
        or readahead, every read as asked.
    @return: A context manager giving C{mountpoint} once mounted, and which
        unmounts it and waits for the subprocess to end on the way out.
    @raise RuntimeError: If the mount does not appear within
        L{MOUNT_TIMEOUT} seconds.
    """
    command = [sys.executable, __file__, str(source), str(mountpoint)]
    command += ["--delay", str(delay), "--delay-meta", str(delayMeta)]
    if log is not None:
        command += ["--log", str(log)]
    if direct:
        command.append("--direct-io")
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=errors,
            stderr=errors,
            start_new_session=True,
            preexec_fn=_dieWithParent,
        )
        try:
            deadline = time.monotonic() + MOUNT_TIMEOUT
            while not os.path.ismount(mountpoint):
                if process.poll() is not None or time.monotonic() > deadline:
                    errors.seek(0)
                    output = errors.read().decode(errors="replace").strip()
                    raise RuntimeError(
                        f"slowfs did not mount {source} at {mountpoint} "
                        f"(exit status {process.poll()}): {output}"
                    )
                time.sleep(0.02)
            yield mountpoint
        finally:
            _unmount(mountpoint)
            _reap(process)
            _unmount(mountpoint)  # a mount left dead by a killed process


def main(argv: Sequence[str] | None = None) -> int:
    """
    Mount, and serve until unmounted.
    """
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the directory to show")
    parser.add_argument("mountpoint", type=Path, help="an empty directory")
    parser.add_argument(
        "--delay", type=float, required=True, help="seconds every read sleeps"
    )
    parser.add_argument(
        "--delay-meta",
        type=float,
        default=0.0,
        help="seconds every getattr and readdir sleeps (default 0)",
    )
    parser.add_argument(
        "--log",
        type=Path,
        help="append 'begin OFFSET SIZE' as each read starts, "
        "'read OFFSET SIZE' once it is done",
    )
    parser.add_argument(
        "--direct-io",
        action="store_true",
        help="open files for direct I/O: no page cache, no readahead",
    )
    args = parser.parse_args(argv)
    if args.delay < 0 or args.delay_meta < 0:
        parser.error("delays cannot be negative")
    source: Path = args.source.resolve()
    if not source.is_dir():
        parser.error(f"{source} is not a directory")
    libfuse = _libfuse3()
    if libfuse is None:
        parser.error("libfuse3 not found (apt-get install fuse3)")
    os.environ["FUSE_LIBRARY_PATH"] = libfuse
    import mfusepy  # type: ignore[import-untyped]  # ships no type hints

    logFd = None
    if args.log is not None:
        logFd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    operations: Any = SlowPassthrough(
        str(source), args.delay, args.delay_meta, logFd, args.direct_io
    )
    mfusepy.FUSE(
        operations,
        str(args.mountpoint),
        foreground=True,
        ro=True,
        fsname=f"slowfs:{source}",
        subtype="slowfs",
        max_threads=CONCURRENCY,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
