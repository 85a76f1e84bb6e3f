"""
Tests of the slow file system fixture, L{tests.slowfs}, with real FUSE mounts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .slowfs import isMountedAt, mounted, unavailable

REASON = unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

DELAY = 0.05


def _directories(tmp_path: Path) -> tuple[Path, Path]:
    source, mountpoint = tmp_path / "source", tmp_path / "mount"
    source.mkdir()
    mountpoint.mkdir()
    return source, mountpoint


def _processesRunning(*arguments: str) -> list[int]:
    """
    The processes whose command line holds all of C{arguments}.
    """
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                words = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # gone meanwhile
            if all(argument.encode() in words for argument in arguments):
                found.append(int(entry.name))
    return found


class MountedTests:
    def test_bytesUnchanged(self, tmp_path: Path) -> None:
        """
        A file, a listing and a symlink read through the mount are those of
        the source directory.
        """
        source, mountpoint = _directories(tmp_path)
        content = os.urandom(3 * 1024 * 1024 + 17)
        (source / "data.bin").write_bytes(content)
        (source / "link").symlink_to("data.bin")
        with mounted(source, mountpoint, DELAY) as mount:
            assert (mount / "data.bin").read_bytes() == content
            assert sorted(os.listdir(mount)) == ["data.bin", "link"]
            assert os.readlink(mount / "link") == "data.bin"
            assert (mount / "link").stat().st_size == len(content)

    def test_readsSlowAndLogged(self, tmp_path: Path) -> None:
        """
        Every read appends C{begin OFFSET SIZE} to the log, sleeps the
        delay, then appends C{read OFFSET SIZE}; the reads of each open of a
        file cover it, and are made again at the next open (no page cache is
        kept across opens).
        """
        source, mountpoint = _directories(tmp_path)
        log = tmp_path / "reads.log"
        size = 64 * 1024
        (source / "data.bin").write_bytes(os.urandom(size))
        with mounted(source, mountpoint, DELAY, log) as mount:
            logged = 0
            for _ in range(2):
                started = time.monotonic()
                (mount / "data.bin").read_bytes()
                assert time.monotonic() - started >= DELAY
                lines = log.read_text().splitlines()
                entries = [line.split() for line in lines[logged:]]
                logged = len(lines)
                reads = [entry for entry in entries if entry[0] == "read"]
                begun = [entry[1:] for entry in entries if entry[0] == "begin"]
                assert reads and len(begun) == len(reads) == len(entries) // 2
                assert sorted(begun) == sorted(entry[1:] for entry in reads)
                assert min(int(offset) for _, offset, _ in reads) == 0
                assert sum(int(length) for _, _, length in reads) >= size

    def test_unmountedAfterwards(self, tmp_path: Path) -> None:
        """
        Once the context ends, nothing is mounted at the mount point and the
        file system process is gone, even after an error inside it.
        """
        source, mountpoint = _directories(tmp_path)
        with pytest.raises(ZeroDivisionError), mounted(source, mountpoint, DELAY):
            assert os.path.ismount(mountpoint)
            assert _processesRunning(str(source), str(mountpoint))
            1 / 0  # noqa: B018
        assert not isMountedAt(mountpoint)
        assert _processesRunning(str(source), str(mountpoint)) == []
