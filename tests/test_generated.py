"""
Tests for L{twisted_zero._generated}: zeros, chargen, random bytes, bytes in
memory, sources one after another, and a source cut short in time.
"""

from __future__ import annotations

import zlib

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from twisted_zero import (
    ChargenSource,
    FileSource,
    ISource,
    RandomSource,
    ZeroSource,
)
from twisted_zero._sources import (
    CHARGEN_PERIOD,
    FILE_CHUNK_SIZE,
    BytesSource,
    ConcatenatedSource,
    TimedSource,
)

from .helpers import CountingFile, readAll


class ZeroSourceTests:
    def test_interface(self) -> None:
        """
        L{ZeroSource} provides L{ISource}.
        """
        assert verifyObject(ISource, ZeroSource())

    def test_zeros(self) -> None:
        """
        Every read returns exactly the number of zero bytes asked for.
        """
        source = ZeroSource()
        assert source.read(5) == b"\0" * 5
        assert source.read(100_000) == bytes(100_000)
        source.close()

    def test_shared(self) -> None:
        """
        Reads of the same size, even from different sources, return the same
        immutable object, so buffering it costs nothing per connection.
        """
        assert ZeroSource().read(65536) is ZeroSource().read(65536)


def chargenLines(count: int) -> list[bytes]:
    ring = bytes(range(32, 127))
    return [
        bytes(ring[(1 + n + i) % 95] for i in range(72)) + b"\r\n" for n in range(count)
    ]


class ChargenSourceTests:
    def test_interface(self) -> None:
        """
        L{ChargenSource} provides L{ISource}.
        """
        assert verifyObject(ISource, ChargenSource())

    def test_firstLineAsInRFC864(self) -> None:
        """
        The first line is the one printed in RFC 864's example.
        """
        first = ChargenSource().read(74)
        assert first == (
            b"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            b"[\\]^_`abcdefgh\r\n"
        )

    def test_lines(self) -> None:
        """
        Line I{N} is 72 consecutive characters of the ring of the 95 printable
        ASCII characters, starting one further along than line I{N-1}, ended
        by CRLF; the pattern repeats after 95 lines.
        """
        data = ChargenSource().read(74 * 95 * 3)
        lines = data.split(b"\r\n")[:-1]
        assert len(lines) == 95 * 3
        assert [line + b"\r\n" for line in lines] == chargenLines(95) * 3
        assert all(len(line) == 72 for line in lines)
        assert len(set(lines)) == 95

    @given(st.lists(st.integers(min_value=1, max_value=30_000), max_size=40))
    def test_anyReadSizes(self, sizes: list[int]) -> None:
        """
        Whatever sizes are asked for, each read returns at least one and at
        most that many bytes, and the reads join into the pattern.
        """
        source = ChargenSource()
        chunks = [source.read(size) for size in sizes]
        assert all(1 <= len(c) <= s for c, s in zip(chunks, sizes, strict=True))
        data = b"".join(chunks)
        pattern = CHARGEN_PERIOD * (len(data) // len(CHARGEN_PERIOD) + 1)
        assert data == pattern[: len(data)]

    def test_alignedReadsShared(self) -> None:
        """
        Aligned reads return the same object again: the pattern is
        precomputed and never copied per chunk.
        """
        source = ChargenSource()
        first = source.read(65536)
        assert len(first) % len(CHARGEN_PERIOD) == 0
        assert source.read(65536) is first
        assert ChargenSource().read(65536) is first


class RandomSourceTests:
    def test_interface(self) -> None:
        """
        L{RandomSource} provides L{ISource}.
        """
        assert verifyObject(ISource, RandomSource())

    def test_incompressible(self) -> None:
        """
        zlib at its best cannot shrink the output.
        """
        data = readAll(RandomSource(), [65536] * 64)
        assert len(data) == 4 * 2**20
        assert len(zlib.compress(data, 9)) >= len(data)

    def test_nonRepeating(self) -> None:
        """
        No 4 KiB block of several MiB is sent twice, within a stream or
        across two streams.
        """
        first = readAll(RandomSource(), [65536] * 64)
        second = readAll(RandomSource(), [65536] * 64)
        blocks = [
            data[i : i + 4096]
            for data in (first, second)
            for i in range(0, len(data), 4096)
        ]
        assert len(set(blocks)) == len(blocks)

    def test_exactSizes(self) -> None:
        """
        Every read returns exactly the number of bytes asked for.
        """
        source = RandomSource()
        assert [len(source.read(n)) for n in (1, 7, 65536)] == [1, 7, 65536]
        source.close()


class CompositeSourceTests:
    def test_bytesSource(self) -> None:
        """
        L{BytesSource} hands out its bytes, at most C{maxBytes} at a time.
        """
        source = BytesSource(data=b"abcdefg")
        assert verifyObject(ISource, source)
        assert [source.read(3) for _ in range(4)] == [b"abc", b"def", b"g", b""]
        source = BytesSource(data=b"abc")
        source.close()
        assert source.read(3) == b""

    def test_fileOffset(self) -> None:
        """
        A L{FileSource} with an offset seeks there before its first read, so
        several may share one file.
        """
        file = CountingFile(b"0123456789")
        first = FileSource(file=file, length=3, offset=7)
        second = FileSource(file=file, length=2, offset=1)
        assert readAll(first, [10, 10]) == b"789"
        assert readAll(second, [1, 1, 1]) == b"12"

    def test_concatenated(self) -> None:
        """
        L{ConcatenatedSource} reads its parts in turn, which may share a
        file; closing it closes them all.
        """
        file = CountingFile(b"0123456789")
        parts: list[ISource] = [
            BytesSource(data=b"<"),
            FileSource(file=file, length=4, offset=2),
            BytesSource(data=b">"),
        ]
        source = ConcatenatedSource(parts=parts)
        assert verifyObject(ISource, source)
        assert readAll(source, [100] * 5) == b"<2345>"
        assert file.closeCount == 0
        source.close()
        assert file.closeCount == 1
        unfinished = CountingFile(b"xyz")
        source = ConcatenatedSource(parts=[FileSource(file=unfinished, length=3)])
        source.close()
        assert unfinished.closeCount == 1

    def test_timed(self) -> None:
        """
        L{TimedSource} passes reads on until its deadline, then ends; it
        describes itself and closes as its source does.
        """
        clock = Clock()
        file = CountingFile(bytes(100))
        source = TimedSource(
            source=FileSource(file=file, length=100, description="f"),
            clock=clock,
            seconds=2,
        )
        assert verifyObject(ISource, source)
        assert (source.description, source.chunkSize) == ("f", FILE_CHUNK_SIZE)
        assert source.read(10) == bytes(10)
        clock.advance(1.9)
        assert source.read(10) == bytes(10)
        clock.advance(0.1)
        assert source.read(10) == b""
        source.close()
        assert file.closeCount == 1
