"""
Tests for L{twisted_zero._filesource}: file sources, opening files, and
asking the page cache.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from twisted_zero import (
    ChargenSource,
    FileSource,
    IBlockingSource,
    IRewindableSource,
    ISendfileSource,
    ISharedChunkSource,
    ISource,
    PathSource,
    RandomSource,
    SourceError,
    SourceTruncated,
    ZeroSource,
    openFile,
)
from twisted_zero._sources import (
    BytesSource,
    ConcatenatedSource,
    TimedSource,
    openRegularFile,
)

from .helpers import CountingFile, evict, readAll


class FileSourceTests:
    def test_interface(self) -> None:
        """
        L{FileSource} provides L{ISource}.
        """
        assert verifyObject(ISource, FileSource(file=CountingFile(b""), length=0))

    def test_content(self) -> None:
        """
        Reads return the file's bytes in order, then C{b""} without reading
        the file again.
        """
        file = CountingFile(b"abcdefghij")
        source = FileSource(file=file, length=10)
        assert readAll(source, [4, 4, 4]) == b"abcdefghij"
        reads = file.reads
        assert source.read(4) == b""
        assert file.reads == reads

    def test_truncated(self) -> None:
        """
        A file with fewer bytes than promised raises L{SourceTruncated}.
        """
        source = FileSource(file=CountingFile(b"abc"), length=10, description="f")
        assert source.read(100) == b"abc"
        with pytest.raises(SourceTruncated, match="7 bytes missing"):
            source.read(100)

    def test_close(self) -> None:
        """
        L{FileSource.close} closes the file once; after it nothing is read.
        """
        file = CountingFile(b"abc")
        source = FileSource(file=file, length=3)
        source.close()
        source.close()
        assert file.closeCount == 1
        assert source.read(3) == b""
        assert file.reads == 0


class OpenFileTests:
    def test_wholeFile(self, tmp_path: Path) -> None:
        """
        L{openFile} streams the whole file, named in the description.
        """
        path = tmp_path / "data"
        path.write_bytes(os.urandom(100_000))
        source = openFile(str(path))
        assert source.description == f"file:{path}"
        assert readAll(source, [30_000] * 4) == path.read_bytes()
        source.close()

    def test_range(self, tmp_path: Path) -> None:
        """
        An offset and a length select a range, clipped to the file.
        """
        path = tmp_path / "data"
        path.write_bytes(bytes(range(256)))
        source = openFile(str(path), offset=10, length=5)
        assert readAll(source, [100, 100]) == bytes(range(10, 15))
        source.close()
        source = openFile(str(path), offset=250, length=100)
        assert readAll(source, [100, 100]) == bytes(range(250, 256))
        source.close()
        source = openFile(str(path), offset=300)
        assert source.read(100) == b""
        source.close()

    def test_missing(self, tmp_path: Path) -> None:
        """
        A missing file is refused.
        """
        with pytest.raises(SourceError, match="no such file"):
            openFile(str(tmp_path / "nope"))

    def test_directory(self, tmp_path: Path) -> None:
        """
        A directory is refused.
        """
        with pytest.raises(SourceError, match="is a directory"):
            openFile(str(tmp_path))

    def test_fifo(self, tmp_path: Path) -> None:
        """
        A FIFO is refused without being opened (opening it would block until
        a writer came, so this test would hang).
        """
        path = tmp_path / "fifo"
        os.mkfifo(path)
        with pytest.raises(SourceError, match="is a FIFO"):
            openFile(str(path))

    def test_socket(self, tmp_path: Path) -> None:
        """
        A UNIX socket is refused.
        """
        path = tmp_path / "sock"
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
            with pytest.raises(SourceError, match="is a socket"):
                openFile(str(path))

    def test_device(self) -> None:
        """
        A device is refused.
        """
        with pytest.raises(SourceError, match="is a device"):
            openFile("/dev/null")

    def test_unreadable(self, tmp_path: Path) -> None:
        """
        A file the user may not read is refused. (As root, the check runs in
        a forked child that first drops to an unprivileged user.)
        """
        path = tmp_path / "secret"
        path.write_bytes(b"x")
        path.chmod(0)
        if os.geteuid() != 0:
            with pytest.raises(SourceError, match="permission denied"):
                openFile(str(path))
            return
        tmp_path.chmod(0o755)
        readFrom, writeTo = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child reports through the pipe
            try:
                os.setgid(65534)
                os.setuid(65534)
                try:
                    openFile(str(path)).close()
                    message = "opened"
                except SourceError as e:
                    message = str(e)
                os.write(writeTo, message.encode())
            finally:
                os._exit(0)
        os.close(writeTo)
        with os.fdopen(readFrom, "rb") as pipe:
            message = pipe.read().decode()
        os.waitpid(pid, 0)
        assert message == f"{path}: permission denied"


class OpenRegularFileTests:
    def test_statusAsOpened(self, tmp_path: Path) -> None:
        """
        L{openRegularFile} returns the unbuffered file and its status.
        """
        path = tmp_path / "f"
        path.write_bytes(b"hello")
        file, info = openRegularFile(str(path))
        with file:
            assert info.st_size == 5
            assert file.read(100) == b"hello"


def onDisk(directory: Path) -> bool:
    """
    Whether the file system of C{directory} keeps its files on a disk, with
    a page cache in front that a file's pages can be dropped from, and
    answers C{RWF_NOWAIT} reads, as ext4, xfs and btrfs do (tmpfs cannot
    drop a file's pages; FUSE and NFS refuse C{RWF_NOWAIT}).

    Whether such a read of dropped pages fails rather than wait is not
    asked: the miss starts the kernel's readahead, which on a fast disk
    may be done before the call returns.
    """
    path = directory / "probe"
    path.write_bytes(bytes(4096))
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
        except OSError:
            return False
        finally:
            os.close(fd)
        return evict(path)
    finally:
        path.unlink()


def probesFail(monkeypatch: pytest.MonkeyPatch, code: int) -> list[int]:
    """
    Make every C{RWF_NOWAIT} probe fail with the error C{code}.

    @return: The offsets probed, as they are.
    """
    probed: list[int] = []

    def preadv(fd: int, buffers: list[bytearray], offset: int, flags: int) -> int:
        probed.append(offset)
        raise OSError(code, os.strerror(code))  # EAGAIN: a BlockingIOError

    monkeypatch.setattr(os, "preadv", preadv)
    return probed


def missing(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """
    Make every C{RWF_NOWAIT} probe a page-cache miss (C{EAGAIN}).

    @return: The offsets probed, as they are.
    """
    return probesFail(monkeypatch, errno.EAGAIN)


class PageCacheTests:
    """
    L{FileSource.readNowait} and L{FileSource.sendTo} only touch bytes known
    to be in the page cache.
    """

    def test_interfaces(self, tmp_path: Path) -> None:
        """
        File sources may block; so may a timed or concatenated one of them.
        """
        path = tmp_path / "data"
        path.write_bytes(b"x")
        source = openFile(str(path))
        assert verifyObject(IBlockingSource, source)
        assert IBlockingSource.providedBy(
            TimedSource(source=source, clock=Clock(), seconds=1)
        )
        assert not IBlockingSource.providedBy(
            TimedSource(source=ZeroSource(), clock=Clock(), seconds=1)
        )
        assert verifyObject(IBlockingSource, ConcatenatedSource(parts=[source]))
        source.close()

    def test_inMemoryFile(self) -> None:
        """
        A file object with no descriptor is in memory: read at once.
        """
        source = FileSource(file=CountingFile(b"hello"), length=5)
        assert source.readNowait(3) == b"hel"
        assert source.readNowait(3) == b"lo"
        assert source.readNowait(3) == b""

    def test_miss(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        Bytes not in the page cache are neither read by C{readNowait} nor
        sent by C{sendTo}: nothing is taken from the source.
        """
        path = tmp_path / "data"
        path.write_bytes(b"a" * 100_000)
        source = openFile(str(path))
        left, right = socket.socketpair()
        probed = missing(monkeypatch)
        try:
            assert source.readNowait(10_000) is None
            assert source.sendTo(left.fileno(), 10_000) is None
            assert probed == [0, 0]
            monkeypatch.undo()
            assert source.read(10_000) == b"a" * 10_000
        finally:
            source.close()
            left.close()
            right.close()

    def test_coldDisk(self, tmp_path: Path) -> None:
        """
        On this disk, with its page cache dropped, C{readNowait} never
        waits for the disk and never returns wrong bytes: it reports a miss,
        or returns the right bytes when the readahead that the miss started
        was done before the call returned (the kernel promises no more; a
        miss's handling is in L{test_miss}); once the file is read, its
        bytes are read and sent at once.
        """
        if not onDisk(tmp_path):
            pytest.skip(f"{tmp_path} is not on a disk with RWF_NOWAIT reads")
        path = tmp_path / "data"
        content = os.urandom(100_000)
        path.write_bytes(content)
        for _ in range(20):
            source = openFile(str(path))
            assert evict(path)
            assert source.readNowait(10_000) in (None, content[:10_000])
            source.close()
        source = openFile(str(path))
        left, right = socket.socketpair()
        try:
            assert path.read_bytes() == content
            assert source.readNowait(10_000) == content[:10_000]
            assert source.sendTo(left.fileno(), 10_000) == 10_000
            assert right.recv(20_000) == content[10_000:20_000]
        finally:
            source.close()
            left.close()
            right.close()

    def test_probesBothEnds(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        The first and the last byte asked for are probed, where the source
        is in its file.
        """
        path = tmp_path / "data"
        path.write_bytes(bytes(100_000))
        probed: list[int] = []

        def preadv(fd: int, buffers: list[bytearray], offset: int, flags: int) -> int:
            probed.append(offset)
            return 1

        source = openFile(str(path), offset=1000)
        monkeypatch.setattr(os, "preadv", preadv)
        assert source.readNowait(500) == bytes(500)
        assert probed == [1000, 1499]
        source.close()

    def test_cachedPrefix(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        When only the start of what is asked for is in the page cache (the
        kernel's readahead has not got further), shorter runs are probed and
        the longest one cached at both ends is read or sent at once.
        """
        path = tmp_path / "data"
        content = os.urandom(4 * 2**20)
        path.write_bytes(content)
        cachedUpTo = 300_000
        probed: list[int] = []

        def preadv(fd: int, buffers: list[bytearray], offset: int, flags: int) -> int:
            probed.append(offset)
            if offset >= cachedUpTo:
                raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
            return 1

        source = openFile(str(path))
        left, right = socket.socketpair()
        monkeypatch.setattr(os, "preadv", preadv)
        try:
            assert source.readNowait(2**20) == content[: 2**18]
            assert probed == [0, 2**20 - 1, 2**18 - 1]
            probed.clear()
            # From 256 KiB on, only 37,856 bytes are cached: 16 KiB are sent.
            assert source.sendTo(left.fileno(), 2**20) == 2**14
            assert probed == [2**18, 2**18 + 2**20 - 1, 2**18 + 2**18 - 1,
                              2**18 + 2**16 - 1, 2**18 + 2**14 - 1]  # fmt: skip
            assert right.recv(2**16) == content[2**18 : 2**18 + 2**14]
            probed.clear()
            source.read(cachedUpTo - 2**18 - 2**14)  # up to the first miss
            assert source.readNowait(2**20) is None
            assert probed == [cachedUpTo]
        finally:
            source.close()
            left.close()
            right.close()

    @pytest.mark.parametrize("method", ["readNowait", "sendTo"])
    def test_cannotTell(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
    ) -> None:
        """
        Where the file system cannot tell (FUSE, NFS: C{EOPNOTSUPP}), every
        read is taken to block, and it is not asked again.
        """
        path = tmp_path / "data"
        path.write_bytes(bytes(1000))
        source = openFile(str(path))
        calls = probesFail(monkeypatch, errno.EOPNOTSUPP)
        left, right = socket.socketpair()
        try:
            for _ in range(3):
                if method == "readNowait":
                    assert source.readNowait(100) is None
                else:
                    assert source.sendTo(left.fileno(), 100) is None
            assert calls == [0]
            assert source.read(100) == bytes(100)
        finally:
            source.close()
            left.close()
            right.close()

    def test_otherProbeError(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        Another error of the probe (C{EIO}) leaves the read to a thread,
        where it raises, and probes again next time.
        """
        path = tmp_path / "data"
        path.write_bytes(bytes(1000))
        source = openFile(str(path))
        calls = probesFail(monkeypatch, errno.EIO)
        assert source.readNowait(100) is None
        assert source.readNowait(100) is None
        assert calls == [0, 0]
        source.close()

    def test_concatenated(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        A concatenated source reads its parts at once while they are in
        memory, and not a part that is not.
        """
        path = tmp_path / "data"
        path.write_bytes(b"b" * 100_000)
        file = openFile(str(path))
        source = ConcatenatedSource(parts=[BytesSource(data=b"head"), file])
        missing(monkeypatch)
        assert source.readNowait(100) == b"head"
        assert source.readNowait(100) is None
        monkeypatch.undo()
        assert source.read(100) == b"b" * 100
        assert source.readNowait(100) == b"b" * 100
        source.close()

    def test_timed(self) -> None:
        """
        A timed source reads at once what its source would, until the
        deadline; then it is exhausted.
        """
        clock = Clock()
        source = TimedSource(
            source=FileSource(file=CountingFile(b"hello"), length=5),
            clock=clock,
            seconds=1,
        )
        assert source.readNowait(2) == b"he"
        clock.advance(1)
        assert source.readNowait(2) == b""


class PathSourceTests:
    def test_opensAtFirstRead(self, tmp_path: Path) -> None:
        """
        A L{PathSource} opens its file at the first read, not before: until
        then, nothing is known to be in memory and nothing can be sent.
        """
        path = tmp_path / "data"
        source = PathSource(str(path))
        assert verifyObject(ISendfileSource, source)
        assert verifyObject(IBlockingSource, source)
        assert source.description == f"file:{path}"
        path.write_bytes(b"hello")
        assert source.readNowait(10) is None
        assert source.sendTo(0, 10) is None
        assert readAll(source, [3, 3, 3]) == b"hello"
        source.close()
        assert source.read(3) == b""

    def test_firstByteWhenCached(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        The read that opens the file returns only the first byte when what
        follows is in the page cache (it can then be sent with
        C{sendfile()}, not held in memory), and what was asked for when it
        is not (it had to be read in a thread anyway).
        """
        path = tmp_path / "data"
        path.write_bytes(b"hello")
        if not onDisk(tmp_path):
            pytest.skip(f"{tmp_path} is not on a disk with RWF_NOWAIT reads")
        cached = PathSource(str(path))
        assert cached.read(3) == b"h"
        assert cached.readNowait(10) == b"ello"
        cached.close()
        missing(monkeypatch)
        cold = PathSource(str(path))
        assert cold.read(3) == b"hel"
        cold.close()

    def test_sendTo(self, tmp_path: Path) -> None:
        """
        Once open, it sends from its file.
        """
        path = tmp_path / "data"
        path.write_bytes(b"hello")
        source = PathSource(str(path))
        left, right = socket.socketpair()
        try:
            assert source.read(1) == b"h"
            assert source.sendTo(left.fileno(), 10) in (4, None)
        finally:
            source.close()
            left.close()
            right.close()

    def test_missing(self, tmp_path: Path) -> None:
        """
        A file gone by the first read fails it with a L{SourceError}.
        """
        source = PathSource(str(tmp_path / "nope"))
        with pytest.raises(SourceError, match="no such file"):
            source.read(10)

    def test_closedBeforeOpening(self, tmp_path: Path) -> None:
        """
        Closed before its first read, it never opens its file.
        """
        source = PathSource(str(tmp_path / "nope"))
        source.close()
        assert source.read(10) == b""
        assert source.readNowait(10) == b""
        assert source.sendTo(0, 10) == 0


class RewindTests:
    def test_file(self, tmp_path: Path) -> None:
        """
        A file rewound hands out the same bytes again, and counts them as
        remaining.
        """
        path = tmp_path / "data"
        path.write_bytes(bytes(range(256)) * 4)
        source = openFile(str(path), offset=10, length=1000)
        assert source.read(100) == (bytes(range(256)) * 4)[10:110]
        source.rewind(40)
        assert source.read(1000) == (bytes(range(256)) * 4)[70:1010]
        assert source.read(10) == b""
        source.close()
        source.rewind(5)  # closed: nothing to do
        assert source.read(10) == b""

    def test_pathAndTimed(self, tmp_path: Path) -> None:
        """
        A path source rewinds the file it opened; a timed source is
        rewindable if what it times is.
        """
        path = tmp_path / "data"
        path.write_bytes(b"abcdefgh")
        source = PathSource(str(path))
        source.rewind(3)  # nothing read yet
        assert source.read(1) + source.read(5) == b"abcdef"
        source.rewind(2)
        assert source.read(10) == b"efgh"
        source.close()
        clock = Clock()
        assert IRewindableSource.providedBy(
            TimedSource(source=RandomSource(), clock=clock, seconds=1)
        )
        assert not IRewindableSource.providedBy(
            TimedSource(source=ZeroSource(), clock=clock, seconds=1)
        )

    def test_random(self) -> None:
        """
        Random bytes given back are not handed out again: new ones are.
        """
        source = RandomSource()
        first = source.read(64)
        source.rewind(64)
        assert source.read(64) != first

    def test_interfaces(self, tmp_path: Path) -> None:
        """
        Zeros and chargen hand out shared chunks; random bytes and files
        can be rewound; nothing is both.
        """
        for shared in (ZeroSource(), ChargenSource()):
            assert verifyObject(ISharedChunkSource, shared)
            assert not IRewindableSource.providedBy(shared)
        path = tmp_path / "data"
        path.write_bytes(b"x")
        for fresh in (RandomSource(), openFile(str(path)), PathSource(str(path))):
            assert verifyObject(IRewindableSource, fresh)
            assert not ISharedChunkSource.providedBy(fresh)
            fresh.close()
