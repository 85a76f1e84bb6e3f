"""
Generated sources: zeros, chargen, random bytes, bytes in memory, sources
one after another, and a source cut short in time.

The generated sources precompute their data and hand out the same
immutable C{bytes} objects again and again, so a transport buffer holding one
of them costs (almost) nothing per connection.
"""

from __future__ import annotations

import os
from functools import lru_cache

from attrs import define, field
from cryptography.hazmat.primitives.ciphers import (
    Cipher,
    CipherContext,
    algorithms,
    modes,
)
from twisted.internet.interfaces import IReactorTime
from zope.interface import alsoProvides, implementer

from ._filesource import FILE_CHUNK_SIZE
from ._interfaces import (
    IBlockingSource,
    IRewindableSource,
    ISendfileSource,
    ISharedChunkSource,
    ISource,
)

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
    _encryptor: CipherContext = field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._encryptor = Cipher(
            algorithms.AES(os.urandom(16)), modes.CTR(os.urandom(16))
        ).encryptor()

    def read(self, maxBytes: int) -> bytes:
        return self._encryptor.update(_zeros(maxBytes))

    def rewind(self, count: int) -> None:
        """
        Nothing: bytes never sent are as good as the next ones.
        """

    def close(self) -> None:
        pass


@implementer(ISendfileSource)
@define
class BytesSource:
    """
    A few literal bytes, such as the headers of a part of a multipart body.

    @param data: The bytes.
    @param description: How the stream is named in logs and metrics.
    @param chunkSize: The most bytes to read at once, by default.
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

    @param parts: The sources, in order.
    @param description: How the stream is named in logs and metrics.
    @param chunkSize: The most bytes to read at once, by default.
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

    @param source: The other source.
    @param clock: What tells the time.
    @param seconds: How long from now the deadline is.
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
