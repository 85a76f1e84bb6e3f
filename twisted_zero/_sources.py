"""
Sources: what bytes a stream carries. Every kind of source, and
L{sourceFactory}, which makes one by name.

What a source is (its interfaces and errors) is in
L{twisted_zero._interfaces}; the generated ones in
L{twisted_zero._generated}; the files in L{twisted_zero._filesource}. Their
names are all importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

from ._filesource import (
    FILE_CHUNK_SIZE,
    MIN_CACHED_RUN,
    FileSource,
    PathSource,
    openFile,
    openRegularFile,
)
from ._generated import (
    CHARGEN_PERIOD,
    RANDOM_CHUNK_SIZE,
    SHARED_CHUNK_SIZE,
    BytesSource,
    ChargenSource,
    ConcatenatedSource,
    RandomSource,
    TimedSource,
    ZeroSource,
)
from ._interfaces import (
    IBlockingSource,
    IRewindableSource,
    ISendfileSource,
    ISharedChunkSource,
    ISource,
    SourceError,
    SourceTruncated,
)

__all__ = [
    "CHARGEN_PERIOD",
    "FILE_CHUNK_SIZE",
    "MIN_CACHED_RUN",
    "RANDOM_CHUNK_SIZE",
    "SHARED_CHUNK_SIZE",
    "SOURCE_NAMES",
    "BytesSource",
    "ChargenSource",
    "ConcatenatedSource",
    "FileSource",
    "IBlockingSource",
    "IRewindableSource",
    "ISendfileSource",
    "ISharedChunkSource",
    "ISource",
    "PathSource",
    "RandomSource",
    "SourceError",
    "SourceTruncated",
    "TimedSource",
    "ZeroSource",
    "openFile",
    "openRegularFile",
    "sourceFactory",
]

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
