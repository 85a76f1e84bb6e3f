"""
Direct sends: a stream's bytes written straight to the socket under its
consumer, without a trip through the transport's buffer.

This module knows sockets and Twisted's TCP transports, nothing of HTTP's
objects: L{twisted_zero._httpoutlet} builds the outlet under a
C{twisted.web} request. The owner of a connection builds its outlet
(L{transportOutlet} for a raw one) and hands it to the producer.

Twisted's socket transports send what they are given on a later reactor
turn, at most C{SEND_LIMIT} bytes per turn, and copy an unsent remainder
smaller than that on every turn. A producer that sends to the socket itself
while the transport's buffer is empty, as asyncio's transports do, skips all
of that; when the socket is full, it hands the transport a single byte so
that the transport pauses it, and resumes it once that byte, and so
everything before it, has left. Bytes are never sent past bytes still
waiting in the transport, so the stream stays in order.
"""

from __future__ import annotations

import socket as _socket
import struct
import sys

from twisted.internet import tcp
from twisted.internet.interfaces import IConsumer

from ._kernel import (
    MEMINFO,
    SIOCOUTQNSD,
    SNDBUF,
    SO_MEMINFO,
    TIOCOUTQ,
    WMEM_QUEUED,
    isNoRoom,
    queuedBytes,
    unsentLimit,
)


class SocketOutlet:
    """
    The socket under a consumer: a plain TCP transport, or something on one
    (an HTTP request, see L{twisted_zero._httpoutlet}) whose bytes go on the
    wire as they are, or in chunks of HTTP/1.1's chunked coding, which the
    outlet then frames itself.

    Use L{transportOutlet} (or C{requestOutlet}) to make one. Bytes may be
    sent to it while it is L{usable} and L{ready}; while it is usable but
    not ready, the producer waits for room (L{waitForRoom}); once it is no
    longer usable, the producer writes to it (L{write}) as to any consumer,
    unless the transport's sending side is shut (L{shut}).

    A chunked body's frames are sent whole with C{sendmsg()} (size line,
    data, CRLF: the data is not copied). When the socket takes only part of
    a frame, the framing bytes it did not take are written to the transport
    at once, so that they go before anything else; data bytes it did not
    take are owed to that frame, and the next bytes sent or written go to it
    without a size line of their own.

    @ivar fileno: The socket's file descriptor.
    """

    def __init__(
        self, consumer: IConsumer, transport: tcp.Connection, chunked: bool = False
    ) -> None:
        """
        @param consumer: What the producer writes to: the transport, or what
            writes to it (an HTTP request).
        @param transport: The transport under C{consumer}, of a type
            L{transportOutlet} allows.
        @param chunked: Whether to frame the bytes in HTTP/1.1 chunks.
        """
        self._consumer = consumer
        self._transport = transport
        self._chunked = chunked
        self._owed = 0  # data bytes still owed to the current chunk
        self._sending = True
        socket = transport.getHandle()
        self._socket = socket
        self._send = socket.send
        self._sendmsg = socket.sendmsg
        self._measurable = sys.platform == "linux" and socket.family in (
            _socket.AF_INET,
            _socket.AF_INET6,
        )
        self._unsentLimit = unsentLimit(socket) if self._measurable else 0
        # Only used while usable(): once the connection is closed the number
        # may name another file.
        self.fileno: int = socket.fileno()

    def usable(self) -> bool:
        """
        Whether the stream may still be sent directly: the connection is
        open and not closing, and not TLS (bytes must be encrypted: a
        transport may start TLS in the middle of a stream).
        """
        transport = self._transport
        return bool(
            self._sending
            and transport.connected
            and not transport.disconnecting
            and not transport._writeDisconnecting
            and not transport._aborting
            and not transport.TLS
        )

    def shut(self) -> bool:
        """
        Whether nothing written to the transport will be sent any more: the
        connection is lost, or its sending side is shut down
        (C{loseWriteConnection}).
        """
        transport = self._transport
        return not transport.connected or bool(transport._writeDisconnected)

    @property
    def chunked(self) -> bool:
        """
        Whether this outlet frames the body in HTTP/1.1 chunks.
        """
        return self._chunked

    @property
    def owed(self) -> int:
        """
        How many data bytes the chunk begun last still needs.
        """
        return self._owed

    def awaitingHeaders(self) -> bool:
        """
        Whether the headers of what the bytes are the body of have yet to be
        written: only they go before the body, and the socket has room for
        them. Never, on a plain transport.
        """
        return False

    def stopSending(self) -> None:
        """
        Send nothing more directly: the transport is not one that pauses
        its producer as this outlet expects. Bytes are written (L{write})
        from now on.
        """
        self._sending = False

    def ready(self) -> bool:
        """
        Whether bytes may be sent now, if L{usable}: nothing written to the
        consumer before is still in the transport's buffer.
        """
        transport = self._transport
        unsent = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        return unsent == 0

    def send(self, data: memoryview) -> int:
        """
        Send what the socket takes now of C{data}.

        @return: How many bytes of C{data} were sent; 0 when the socket is
            full.
        @raise OSError: If the connection is broken.
        """
        try:
            if not self._chunked:
                return self._send(data)
            return self._sendFramed(data)
        except OSError as e:
            if isNoRoom(e):
                return 0
            raise

    def _sendFramed(self, data: memoryview) -> int:
        """
        Send C{data} in chunks: the rest of the chunk owed, then a chunk of
        its own for what is left; all in one C{sendmsg()}.
        """
        owed = self._owed
        first = min(len(data), owed)
        segments: list[tuple[bytes | memoryview, bool]] = []  # (bytes, data?)
        if first:
            segments.append((data[:first], True))
            if first == owed:
                segments.append((_CRLF, False))
        if len(data) > first:
            rest = len(data) - first
            segments += [
                (b"%x\r\n" % rest, False),
                (data[first:], True),
                (_CRLF, False),
            ]
        sent = self._sendmsg([segment for segment, _ in segments])
        # Walk what was sent: a cut in the data leaves the rest owed to its
        # chunk; a cut in framing has the rest of that framing written to
        # the transport, so that it goes before anything else.
        dataSent = 0
        self._owed = owed
        for segment, isData in segments:
            size = len(segment)
            took = min(sent, size)
            sent -= took
            if isData:
                dataSent += took
                self._owed -= took
                if took < size:
                    break
            elif segment is _CRLF:  # its chunk's data is all sent
                if took < size:
                    self._transport.write(segment[took:])
                    break
            else:  # a size line: once any of it is sent, its chunk begins
                if not took:
                    break
                self._owed = len(data) - first
                if took < size:
                    self._transport.write(bytes(segment[took:]))
                    break
        return dataSent

    def write(self, data: bytes) -> None:
        """
        Write C{data} to the consumer, after the rest of a chunk still owed.
        """
        owed = self._owed
        if owed:
            size = min(len(data), owed)
            self._owed = owed - size
            self._writeRaw(data[:size] + (_CRLF if size == owed else b""), size)
            data = data[size:]
        if data:
            self._consumer.write(data)

    def _writeRaw(self, wire: bytes, count: int) -> None:
        """
        Write bytes of a chunk this outlet frames (C{count} of them body) to
        the transport, past the consumer, which would frame them again.
        """
        self._transport.write(wire)
        self.countSent(count)

    def room(self) -> int | None:
        """
        How many bytes the socket would take now, as the kernel counts them:
        its send buffer's size less what it holds, in the buffer's own
        accounting (which counts each packet's overhead), scaled by the
        bytes per unit of that accounting of what is queued. Measured on
        loopback, this is within a few KiB of what a send then takes, so a
        producer that makes a new chunk for each send can make it no larger
        than what fits, and holds almost nothing once a client stops
        reading.

        A socket with a limit on its unsent bytes (C{TCP_NOTSENT_LOWAT},
        see L{twisted_zero._limits.limitUnsent}) takes no more than what
        is left of it.

        @return: The estimate; 0 while the kernel would not call the socket
            writable (less free than half what it holds, or unsent bytes
            over half their limit: a read for so little is not worth it,
            and waiting for room ends when it is writable again); L{None}
            when the kernel cannot tell (not a TCP socket, not Linux).
        """
        if not self._measurable:
            return None
        try:
            info = MEMINFO.unpack(
                self._socket.getsockopt(_socket.SOL_SOCKET, SO_MEMINFO, MEMINFO.size)
            )
            queued = queuedBytes(self.fileno, TIOCOUTQ)
            unsent = 0
            if self._unsentLimit:
                self._unsentLimit = unsentLimit(self._socket)  # may be lifted
            if self._unsentLimit:
                unsent = queuedBytes(self.fileno, SIOCOUTQNSD)
        except (OSError, struct.error):
            self._measurable = False
            return None
        accounted: int = info[WMEM_QUEUED]
        free: int = info[SNDBUF] - accounted
        if free <= 0 or free < accounted // 2:
            return 0
        if accounted:
            # Payload per unit of the buffer's accounting, as what is queued
            # shows it; a few bytes queued say little (a packet's overhead
            # dwarfs them), and it is never less than half.
            free = free * max(queued, accounted // 2) // accounted
        if self._unsentLimit:
            if unsent >= self._unsentLimit // 2:
                return 0
            free = min(free, self._unsentLimit - unsent)
        return free

    def countSent(self, count: int) -> None:
        """
        C{count} bytes were sent past the consumer: one that counts what it
        sends (an HTTP request) counts them as its own. A transport needs
        no telling.
        """

    def waitForRoom(self, data: bytes) -> None:
        """
        The socket is full: write C{data} (one byte will do) to the consumer
        in a way that makes the transport pause the producer, and resume it
        once the transport's buffer is empty again.
        """
        transport = self._transport
        had = "bufferSize" in vars(transport)
        saved = transport.bufferSize
        transport.bufferSize = 0  # any byte buffered pauses the producer
        try:
            self._writeToWait(data)
        finally:
            if had:
                transport.bufferSize = saved
            else:
                del transport.bufferSize  # back to the class's own

    def _writeToWait(self, data: bytes) -> None:
        """
        Write the bytes L{waitForRoom} is given, as the consumer would.
        """
        self._consumer.write(data)


_CRLF = b"\r\n"

ALLOWED_TRANSPORTS: tuple[type[tcp.Connection], ...] = (tcp.Server, tcp.Client)
"""
The transports whose internals L{SocketOutlet} was written against, by
exact type: not any L{tcp.Connection} (C{unix.Server} queues file
descriptors to pass with its bytes; a subclass may override C{write}).
"""

TRANSPORT_ATTRIBUTES = (
    "connected",
    "disconnecting",
    "dataBuffer",
    "offset",
    "_tempDataLen",
    "_writeDisconnecting",
    "_writeDisconnected",
    "_aborting",
    "TLS",
    "bufferSize",
)
"""
What L{SocketOutlet} reads of a transport besides its public methods: where
Twisted keeps the bytes it has not sent (C{dataBuffer} from C{offset} on,
and C{_tempDataLen} more), whether it is closing, whether it speaks TLS,
and the buffer size past which it pauses its producer. A transport missing
any of them gets no direct sends.
"""


def hasAll(thing: object, names: tuple[str, ...]) -> bool:
    """
    Whether C{thing} has every attribute in C{names}.
    """
    return all(hasattr(thing, name) for name in names)


def usableTransport(transport: object) -> tcp.Connection | None:
    """
    C{transport}, if direct sends may go to its socket: an open TCP
    transport of an allowed type (L{ALLOWED_TRANSPORTS}) with every
    attribute the outlet reads (L{TRANSPORT_ATTRIBUTES}), not speaking TLS.
    L{None} otherwise: its consumer is then written to, as any is.
    """
    if type(transport) not in ALLOWED_TRANSPORTS:
        return None
    assert isinstance(transport, tcp.Connection)
    if not (
        hasAll(transport, TRANSPORT_ATTRIBUTES)
        and isinstance(transport.dataBuffer, bytes)
        and isinstance(transport.offset, int)
        and isinstance(transport._tempDataLen, int)
        and isinstance(transport.bufferSize, int)
    ):
        return None
    if not transport.connected or transport.TLS:
        return None
    return transport


def transportOutlet(transport: object) -> SocketOutlet | None:
    """
    The outlet for a stream written to C{transport} itself (raw TCP), or
    L{None} when there is none to send to directly (see
    L{usableTransport}).
    """
    connection = usableTransport(transport)
    if connection is None:
        return None
    return SocketOutlet(connection, connection)
