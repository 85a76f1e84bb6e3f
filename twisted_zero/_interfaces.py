"""
What a source is: the interfaces through which a producer reads one, and
the errors it may raise; and what a stream reports as it goes
(L{StreamObserver}).

A source hands out chunks of bytes on request and knows nothing of Twisted's
I/O. The kinds of source are in L{twisted_zero._generated} and
L{twisted_zero._filesource}; L{twisted_zero._sources} makes one by name.
"""

from __future__ import annotations

from typing import Protocol

from zope.interface import Attribute, Interface


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


class StreamObserver(Protocol):
    """
    What a producer tells about itself as it goes, for metrics.
    """

    def chunkWritten(self, count: int) -> None:
        """
        C{count} more bytes were written to the consumer.
        """

    def pauseChanged(self, paused: bool) -> None:
        """
        The consumer paused the producer, or it is producing again (or has
        ended) after a pause.
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
