"""
The loopback clients the benchmarks share: connections to a server of
127.0.0.1, reading a stream, HTTP requests and response heads, and waiting
for a server and its clients to settle. Not a benchmark itself.
"""

from __future__ import annotations

import fcntl
import socket
import sys
import termios
import time
from collections.abc import Callable, Sequence

from benchutil import HOST, BenchError

MAX_HEAD = 64 * 1024
"""
The most bytes a response head may take.
"""
HEAD_READ = 16 * 1024
"""
The most bytes read at once while a response head is not all there.
"""


# Connections -------------------------------------------------------------


def connect(port: int, deadline: float) -> socket.socket:
    """
    A connection to C{port} of L{HOST}, made before C{deadline}.
    """
    timeout = max(deadline - time.monotonic(), 0.1)
    return socket.create_connection((HOST, port), timeout=timeout)


def readStream(sock: socket.socket, view: memoryview, limit: int | None) -> int:
    """
    Read from C{sock} into C{view}, which is overwritten (the data is thrown
    away), until it has given C{limit} bytes; with no limit, to its end.

    @return: The bytes read: fewer than C{limit} if the stream ended first.
    """
    size = len(view)
    total = 0
    while limit is None or total < limit:
        count = sock.recv_into(
            view, size if limit is None else min(size, limit - total)
        )
        if not count:
            break
        total += count
    return total


def queuedBytes(sock: socket.socket) -> int:
    """
    Bytes received on C{sock} and not yet read.
    """
    result = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(result, sys.byteorder)


# HTTP --------------------------------------------------------------------


def getRequest(
    target: str, version: str = "1.1", host: str = "bench", close: bool = False
) -> bytes:
    """
    C{GET target} in HTTP/C{version}, to C{host}, with C{Connection: close}
    if C{close}.
    """
    connection = "Connection: close\r\n" if close else ""
    return (f"GET {target} HTTP/{version}\r\nHost: {host}\r\n{connection}\r\n").encode(
        "ascii"
    )


def headEnd(data: bytes | bytearray) -> int | None:
    """
    The length of the response head at the start of C{data}, its blank line
    included, or L{None} if it is not all there yet.

    @raise BenchError: If there is no end of it in L{MAX_HEAD} bytes.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD:
            raise BenchError(f"no end of the response head in {MAX_HEAD} bytes")
        return None
    return end + 4


def parseHead(data: bytes | bytearray, expected: int) -> int | None:
    """
    Check the response head at the start of C{data}: status 200 and a
    C{Content-Length} of C{expected}, no transfer coding.

    @return: The length of the head, or L{None} if it is not all there yet.
    @raise BenchError: If the response is not the one expected.
    """
    length = headEnd(data)
    if length is None:
        return None
    statusLine, *lines = bytes(data[: length - 4]).decode("latin-1").split("\r\n")
    parts = statusLine.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or parts[1] != "200":
        raise BenchError(f"status line {statusLine!r}, not 200")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise BenchError(f"transfer-encoding {headers['transfer-encoding']!r}")
    if headers.get("content-length") != str(expected):
        raise BenchError(
            f"content-length {headers.get('content-length')!r}, not {expected}"
        )
    return length


# Waiting -----------------------------------------------------------------


def waitUntil(condition: Callable[[], bool], deadline: float, what: str) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(0.02)


def waitUntilSettled(
    rss: Callable[[], int],
    socks: Sequence[socket.socket],
    deadline: float,
    least: float = 1.0,
    quiet: float = 1.0,
    most: float = 10.0,
) -> None:
    """
    Wait until neither the server's RSS (C{rss()}, in KiB: within 64 KiB) nor
    the bytes queued at the clients have changed for C{quiet} seconds; at
    least C{least} and at most C{most} seconds.
    """
    started = time.monotonic()
    end = min(started + most, deadline)
    settled = (rss(), sum(map(queuedBytes, socks)))
    since = started
    while (now := time.monotonic()) < end:
        if now - started >= least and now - since >= quiet:
            return
        time.sleep(0.1)
        current = (rss(), sum(map(queuedBytes, socks)))
        if abs(current[0] - settled[0]) > 64 or current[1] != settled[1]:
            settled, since = current, time.monotonic()
