"""
Sources: what bytes a stream carries.

A source hands out chunks of bytes on request and knows nothing of Twisted's
I/O. The generated sources precompute their data and hand out the same
immutable C{bytes} objects again and again, so a transport buffer holding one
of them costs (almost) nothing per connection.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from functools import lru_cache, partial
from typing import BinaryIO

from attrs import define, field
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from twisted.internet.interfaces import IReactorTime
from zope.interface import Attribute, Interface, alsoProvides, implementer


class ISource(Interface):
    """
    A supply of bytes for one stream.
    """

    description: str = Attribute(
        "A short name of what this source sends, for logs: C{'zero'}, "
        "C{'file:/srv/big.iso'}."
    )

    chunkSize: int = Attribute(
        "How many bytes to ask for per read by default. A source that hands "
        "out shared immutable chunks wants large ones (fewer, larger sends "
        "at no memory cost per connection); one that makes a new chunk per "
        "read wants them small enough that a stalled connection holding one "
        "costs little."
    )

    def read(maxBytes: int) -> bytes:
        """
        Return the next chunk: at least one and at most C{maxBytes} bytes, or
        C{b""} when the source is exhausted.

        @param maxBytes: A positive number of bytes.
        @raise SourceError: If the bytes the source promised cannot be had.
        """

    def close() -> None:
        """
        Release what the source holds (an open file). Idempotent; after it,
        L{read} is never called again.
        """


class ISendfileSource(ISource):
    """
    A source whose bytes are in a file, so that they can go from the file to
    a socket with C{sendfile()}, without being read into memory.
    """

    def sendTo(socket: int, maxBytes: int) -> int | None:
        """
        Send the next bytes, at most C{maxBytes}, straight from the file to
        the socket C{socket} with C{os.sendfile()}; the source then goes on
        after those bytes, for L{read} as well.

        @param socket: A non-blocking socket's file descriptor.
        @param maxBytes: A positive number of bytes.
        @return: How many bytes were sent: 0 when the source is exhausted;
            L{None} when its next bytes cannot be sent this way (they are to
            be read instead).
        @raise BlockingIOError: If the socket has no room; nothing was sent.
        @raise OSError: If the socket or the file fails.
        @raise SourceError: If the bytes the source promised cannot be had.
        """


class ISharedChunkSource(ISource):
    """
    A source whose chunks are shared immutable buffers, the same for every
    connection (zeros, the chargen pattern): holding the rest of one while a
    socket is full costs a connection nothing, so a producer may read them
    as large as it likes.
    """


class IRewindableSource(ISource):
    """
    A source that can take back what it handed out: a producer whose socket
    took only part of a chunk gives the rest back rather than hold it while
    the client reads nothing, and reads it again once there is room.
    """

    def rewind(count: int) -> None:
        """
        The last C{count} bytes read were not sent: hand them out again from
        the next read on (or, for a source whose bytes are not a fixed
        sequence, others in their place).

        @param count: At most what the last read returned.
        """


class IBlockingSource(ISource):
    """
    A source whose reads may block: its bytes are in a file, which may be on
    a slow disk or a network mount. A producer with a thread pool reads it
    in a thread, unless L{readNowait} has the bytes at once.
    """

    def readNowait(maxBytes: int) -> bytes | None:
        """
        Read as L{ISource.read} does, but only if that cannot block: when the
        bytes are known to be in memory (the page cache).

        @return: The chunk (C{b""} at the end); L{None} if reading it might
            block, so that it is to be read (with L{ISource.read}) in a
            thread instead. Nothing was read then.
        @raise SourceError: As L{ISource.read}.
        """


class SourceError(Exception):
    """
    A source cannot be opened, or cannot deliver what it promised.

    The message is one line, fit to show to a person.
    """


class SourceTruncated(SourceError):
    """
    A file ended before the number of bytes it had when it was opened: it was
    truncated while being sent.
    """


SHARED_CHUNK_SIZE = 4 * 2**20
"""
Chunk size of the generated sources whose chunks are shared by every
connection (zero, chargen): large, since a stalled connection holding one
costs nothing, and every send then moves as much as the socket takes.
"""

RANDOM_CHUNK_SIZE = 2 * 2**20
"""
Chunk size of L{RandomSource}: its chunks are new for each connection, so a
stalled connection holds one; measured, 2 MiB streams faster than 1 MiB
(fewer reactor turns per byte) and no slower than 4 MiB.
"""

FILE_CHUNK_SIZE = 240 * 1024
"""
Chunk size of L{FileSource}: a stalled connection holds one chunk, so this
keeps it, with the connection's own few KiB, under 256 KiB. Measured with a
1 GiB file: 1.19 GB/s and 0.82 CPU s/GB, against 0.83 GB/s and 1.17 s/GB
with 128 KiB chunks (a reactor turn per chunk dominates).
"""


@lru_cache(maxsize=16)
def _zeros(size: int) -> bytes:
    """
    The shared immutable run of C{size} zero bytes.
    """
    return bytes(size)


@implementer(ISharedChunkSource)
@define
class ZeroSource:
    """
    An endless supply of zero bytes, like C{/dev/zero}.
    """

    description = "zero"
    chunkSize = SHARED_CHUNK_SIZE

    def read(self, maxBytes: int) -> bytes:
        return _zeros(maxBytes)

    def close(self) -> None:
        pass


_PRINTABLE = bytes(range(0x20, 0x7F))
_LINE_LENGTH = 72


def _chargenPeriod() -> bytes:
    """
    One full period of the RFC 864 pattern: 95 lines of 72 printable
    characters and CRLF, line I{N} starting one character further along the
    ring of the 95 printable ASCII characters than line I{N-1}. Line 0
    starts with C{!}, as in the RFC's example.
    """
    ring = _PRINTABLE * 2
    return b"".join(
        ring[start : start + _LINE_LENGTH] + b"\r\n"
        for start in range(1, len(_PRINTABLE) + 1)
    )


CHARGEN_PERIOD = _chargenPeriod()


@lru_cache(maxsize=16)
def _chargenBlock(periods: int) -> bytes:
    """
    The shared immutable run of C{periods} whole chargen periods.
    """
    return CHARGEN_PERIOD * periods


@implementer(ISharedChunkSource)
@define
class ChargenSource:
    """
    The endless RFC 864 character generator pattern.

    Reads that start at a period boundary and may take at least one whole
    period get a shared block of whole periods, so the stream stays aligned
    and nothing is copied per chunk.
    """

    description = "chargen"
    chunkSize = SHARED_CHUNK_SIZE
    _phase: int = field(default=0, init=False)

    def read(self, maxBytes: int) -> bytes:
        period = len(CHARGEN_PERIOD)
        phase = self._phase
        if phase == 0 and maxBytes >= period:
            return _chargenBlock(maxBytes // period)
        size = min(maxBytes, period - phase)
        self._phase = (phase + size) % period
        return CHARGEN_PERIOD[phase : phase + size]

    def close(self) -> None:
        pass


@implementer(IRewindableSource)
@define
class RandomSource:
    """
    An endless supply of incompressible, non-repeating bytes: the AES-128-CTR
    keystream under a fresh random key, at several GB/s. Fit for testing
    links and compression, not for cryptography.
    """

    description = "random"
    chunkSize = RANDOM_CHUNK_SIZE
    _encryptor: object = field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._encryptor = Cipher(
            algorithms.AES(os.urandom(16)), modes.CTR(os.urandom(16))
        ).encryptor()

    def read(self, maxBytes: int) -> bytes:
        update = self._encryptor.update  # type: ignore[attr-defined]
        chunk: bytes = update(_zeros(maxBytes))
        return chunk

    def rewind(self, count: int) -> None:
        """
        Nothing: bytes never sent are as good as the next ones.
        """

    def close(self) -> None:
        pass


_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
_PROBE = bytearray(1)

MIN_CACHED_RUN = 32 * 1024
"""
When the whole of what L{FileSource} was asked for is not cached, the
shorter runs it probes shrink by four until one is at most this long.
"""


@implementer(ISendfileSource, IBlockingSource, IRewindableSource)
@define
class FileSource:
    """
    A run of bytes of an open regular file, read in order.

    Whether its next bytes can be had without waiting for the disk is asked
    of the kernel with a one-byte C{preadv(..., RWF_NOWAIT)} at each end of
    them, which fails with C{EAGAIN} on a page-cache miss (ext4, xfs, btrfs);
    if the far end misses, shorter runs are tried (what readahead has brought
    in is sent, and only the rest read in a thread).
    Where the file system cannot answer (FUSE, NFS, tmpfs, or no
    C{RWF_NOWAIT}: C{EOPNOTSUPP}), every read is taken to block.

    @ivar description: For logs, normally C{"file:" + path}.
    """

    _file: BinaryIO | None = field(alias="file")
    _remaining: int = field(alias="length")
    description: str = "file"
    chunkSize: int = FILE_CHUNK_SIZE
    _offset: int | None = field(default=None, alias="offset")
    """
    Where the next byte is in the file, when the file object is not there:
    at first, where the run starts (L{None} to read on from where the file
    is), so that several sources may share one file (the parts of a
    multipart response); after L{sendTo}, which leaves the file object where
    it was, past what it sent. It is sought before the next read.
    """
    _probes: bool = field(default=True, init=False)
    """
    Whether the file system answers C{RWF_NOWAIT} probes; learnt at the
    first one.
    """

    def read(self, maxBytes: int) -> bytes:
        if self._remaining == 0 or self._file is None:
            return b""
        if self._offset is not None:
            self._file.seek(self._offset)
            self._offset = None
        data = self._file.read(min(maxBytes, self._remaining))
        if not data:
            raise self._truncated()
        self._remaining -= len(data)
        return data

    def readNowait(self, maxBytes: int) -> bytes | None:
        if self._remaining == 0 or self._file is None:
            return b""
        size = self._cached(self._fileno(), min(maxBytes, self._remaining))
        if not size:
            return None
        return self.read(size)

    def sendTo(self, socket: int, maxBytes: int) -> int | None:
        if self._remaining == 0 or self._file is None:
            return 0
        fileno = self._fileno()
        if fileno is None:  # not a real file
            return None
        size = self._cached(fileno, min(maxBytes, self._remaining))
        if not size:
            return None
        position = self._position()
        sent = os.sendfile(socket, fileno, position, size)
        if not sent:
            raise self._truncated()
        self._offset = position + sent
        self._remaining -= sent
        return sent

    def rewind(self, count: int) -> None:
        if self._file is not None and count > 0:
            self._offset = self._position() - count
            self._remaining += count

    def _fileno(self) -> int | None:
        """
        The file's descriptor; L{None} for a file object without one (in
        memory).
        """
        assert self._file is not None
        try:
            return self._file.fileno()
        except (OSError, AttributeError, ValueError):
            return None

    def _position(self) -> int:
        """
        Where the next byte is: where the file object is (which, if it
        buffers, is not where its descriptor is), unless set apart.
        """
        assert self._file is not None
        return self._file.tell() if self._offset is None else self._offset

    def _cached(self, fileno: int | None, size: int) -> int:
        """
        How many of the next C{size} bytes can be read without waiting: all
        of them if they are in memory, or in the page cache at both ends;
        else the longest of a few shorter runs (a quarter, a sixteenth...,
        down to L{MIN_CACHED_RUN} or less) that is, as after the kernel's
        readahead; 0 if not even the first byte is.
        """
        if fileno is None:
            return size
        if not self._probes or _RWF_NOWAIT is None:
            return 0
        start = self._position()
        if not self._probe(fileno, start):
            return 0
        while size > MIN_CACHED_RUN:
            if self._probe(fileno, start + size - 1):
                return size
            size //= 4
        return size if self._probe(fileno, start + size - 1) else 0

    def _probe(self, fileno: int, offset: int) -> bool:
        """
        Whether the byte at C{offset} is in the page cache: a one-byte read
        that fails rather than wait for the disk.
        """
        try:
            os.preadv(fileno, [_PROBE], offset, _RWF_NOWAIT)  # type: ignore[arg-type]
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self._probes = False
            return False
        return True

    def _truncated(self) -> SourceTruncated:
        return SourceTruncated(
            f"{self.description}: file shrank while it was being sent "
            f"({self._remaining} bytes missing)"
        )

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()


@implementer(ISendfileSource)
@define
class BytesSource:
    """
    A few literal bytes, such as the headers of a part of a multipart body.
    """

    _data: bytes = field(alias="data")
    description: str = "bytes"
    chunkSize: int = FILE_CHUNK_SIZE

    def read(self, maxBytes: int) -> bytes:
        chunk, self._data = self._data[:maxBytes], self._data[maxBytes:]
        return chunk

    def sendTo(self, socket: int, maxBytes: int) -> int | None:
        """
        0 once all is read: its bytes are in memory, not in a file.
        """
        return None if self._data else 0

    def close(self) -> None:
        self._data = b""


@implementer(ISendfileSource, IBlockingSource)
@define
class ConcatenatedSource:
    """
    Several sources, one after the other. Parts may share a file (the ranges
    of a multipart response), so none is closed before the whole is.
    """

    _parts: list[ISource] = field(alias="parts")
    description: str = "parts"
    chunkSize: int = FILE_CHUNK_SIZE
    _current: int = field(default=0, init=False)

    def read(self, maxBytes: int) -> bytes:
        while self._current < len(self._parts):
            chunk = self._parts[self._current].read(maxBytes)
            if chunk:
                return chunk
            self._current += 1
        return b""

    def readNowait(self, maxBytes: int) -> bytes | None:
        while self._current < len(self._parts):
            part = self._parts[self._current]
            chunk: bytes | None = (
                part.readNowait(maxBytes)
                if IBlockingSource.providedBy(part)
                else part.read(maxBytes)
            )
            if chunk is None or chunk:
                return chunk
            self._current += 1
        return b""

    def sendTo(self, socket: int, maxBytes: int) -> int | None:
        while self._current < len(self._parts):
            part = self._parts[self._current]
            if not ISendfileSource.providedBy(part):
                return None
            sent: int | None = part.sendTo(socket, maxBytes)
            if sent != 0:
                return sent
            self._current += 1
        return 0

    def close(self) -> None:
        parts, self._parts = self._parts, []
        for part in parts:
            part.close()


@implementer(ISource)
@define(slots=False)  # alsoProvides() sets an attribute of its own
class TimedSource:
    """
    Another source, until a deadline: it ends at the first read after it.
    It provides L{ISendfileSource}, L{IBlockingSource},
    L{ISharedChunkSource} and L{IRewindableSource} if the other source does.
    """

    _source: ISource = field(alias="source")
    _clock: IReactorTime = field(alias="clock")
    _seconds: float = field(alias="seconds")
    _deadline: float = field(init=False)
    _rewound: int = field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._deadline = self._clock.seconds() + self._seconds
        for interface in (
            ISendfileSource,
            IBlockingSource,
            ISharedChunkSource,
            IRewindableSource,
        ):
            if interface.providedBy(self._source):
                alsoProvides(self, interface)

    @property
    def description(self) -> str:
        return self._source.description

    @property
    def chunkSize(self) -> int:
        return self._source.chunkSize

    def _allowed(self, maxBytes: int) -> int:
        """
        How many bytes may be had now: any number before the deadline;
        after it, only those handed out before it and given back since.
        """
        if self._clock.seconds() < self._deadline:
            return maxBytes
        return min(maxBytes, self._rewound)

    def _took(self, count: int) -> None:
        self._rewound = max(self._rewound - count, 0)

    def read(self, maxBytes: int) -> bytes:
        allowed = self._allowed(maxBytes)
        if not allowed:
            return b""
        chunk = self._source.read(allowed)
        self._took(len(chunk))
        return chunk

    def sendTo(self, socket: int, maxBytes: int) -> int | None:
        """
        As L{ISendfileSource.sendTo}, if the other source provides it.
        """
        allowed = self._allowed(maxBytes)
        if not allowed:
            return 0
        sent: int | None = ISendfileSource(self._source).sendTo(socket, allowed)
        self._took(sent or 0)
        return sent

    def readNowait(self, maxBytes: int) -> bytes | None:
        """
        As L{IBlockingSource.readNowait}, if the other source provides it.
        """
        allowed = self._allowed(maxBytes)
        if not allowed:
            return b""
        chunk: bytes | None = IBlockingSource(self._source).readNowait(allowed)
        self._took(len(chunk or b""))
        return chunk

    def rewind(self, count: int) -> None:
        """
        As L{IRewindableSource.rewind}, if the other source provides it:
        bytes given back are handed out again even after the deadline, since
        the stream may already have promised them (a chunk begun).
        """
        IRewindableSource(self._source).rewind(count)
        self._rewound += count

    def close(self) -> None:
        self._source.close()


def openRegularFile(path: str) -> tuple[BinaryIO, os.stat_result]:
    """
    Open a regular file for reading, without ever opening anything else.

    FIFOs, devices and sockets are refused before they are opened (opening a
    FIFO for reading blocks until a writer comes), and the file is opened
    non-blocking and checked again, so a path swapped in between cannot
    block either.

    @return: The unbuffered file and its status as opened.
    @raise SourceError: If the path is not a readable regular file.
    """
    try:
        _checkRegular(path, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise SourceError(_describeOSError(path, e)) from None
    try:
        info = os.fstat(fd)
        _checkRegular(path, info.st_mode)
        return os.fdopen(fd, "rb", buffering=0), info
    except BaseException:
        os.close(fd)
        raise


def openFile(path: str, offset: int = 0, length: int | None = None) -> FileSource:
    """
    Open a regular file for streaming, without ever opening anything else.

    FIFOs, devices and sockets are refused before they are opened (opening a
    FIFO for reading blocks until a writer comes), and the file is opened
    non-blocking and checked again, so a path swapped in between cannot
    block either.

    @param path: The file's path.
    @param offset: Where to start in the file.
    @param length: How many bytes to send from C{offset}; by default, the
        rest of the file as it is now.
    @raise SourceError: If the path is not a readable regular file (see
        L{openRegularFile}).
    """
    file, info = openRegularFile(path)
    available = max(info.st_size - offset, 0)
    length = available if length is None else min(length, available)
    return FileSource(
        file=file, length=length, offset=offset, description=f"file:{path}"
    )


@implementer(ISendfileSource, IBlockingSource, IRewindableSource)
@define
class PathSource:
    """
    A whole regular file, opened (with L{openFile}) at the first read, so
    that opening it, a file-system call that may block, is a read like the
    others: done in a thread by a producer that has one.

    The read that opens the file returns only its first byte if what follows
    is in the page cache: the rest can then be sent with C{sendfile()}
    rather than held in memory (a stalled client would hold that chunk).
    """

    _path: str = field(alias="path")
    chunkSize: int = FILE_CHUNK_SIZE
    _opened: FileSource | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)

    @property
    def description(self) -> str:
        return f"file:{self._path}"

    def read(self, maxBytes: int) -> bytes:
        if self._opened is None and not self._closed:
            opened = self._opened = openFile(self._path)
            size = min(maxBytes, opened._remaining)
            if size and opened._cached(opened._fileno(), size) == size:
                maxBytes = 1
        if self._opened is None:
            return b""
        return self._opened.read(maxBytes)

    def readNowait(self, maxBytes: int) -> bytes | None:
        if self._opened is None:
            return b"" if self._closed else None
        return self._opened.readNowait(maxBytes)

    def sendTo(self, socket: int, maxBytes: int) -> int | None:
        if self._opened is None:
            return 0 if self._closed else None
        return self._opened.sendTo(socket, maxBytes)

    def rewind(self, count: int) -> None:
        if self._opened is not None:
            self._opened.rewind(count)

    def close(self) -> None:
        self._closed = True
        opened, self._opened = self._opened, None
        if opened is not None:
            opened.close()


def _checkRegular(path: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise SourceError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device"
        )
        raise SourceError(f"{path}: is {kind}, not a regular file")


def _describeOSError(path: str, error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return f"{path}: no such file"
    if isinstance(error, PermissionError):
        return f"{path}: permission denied"
    return f"{path}: {error.strerror or error}"


SOURCE_NAMES = ("zero", "chargen", "random", "file:PATH")


def sourceFactory(spec: str) -> Callable[[], ISource]:
    """
    Turn a source specification into a factory of fresh sources, one per
    stream.

    @param spec: C{zero}, C{chargen}, C{random} or C{file:PATH}.
    @return: A callable returning a new L{ISource}; for a file, a
        L{PathSource}, which opens the file anew at its first read.
    @raise SourceError: If C{spec} names no source, or names a file that is
        not a readable regular file now.
    """
    generated: dict[str, Callable[[], ISource]] = {
        "zero": ZeroSource,
        "chargen": ChargenSource,
        "random": RandomSource,
    }
    if spec in generated:
        return generated[spec]
    if spec.startswith("file:") and spec != "file:":
        path = os.path.abspath(spec[len("file:") :])
        openFile(path).close()
        return partial(PathSource, path)
    raise SourceError(
        f"unknown source {spec!r} (choose one of {', '.join(SOURCE_NAMES)})"
    )
