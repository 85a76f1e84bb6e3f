"""
Test doubles shared by the unit tests.
"""

from __future__ import annotations

import ctypes
import datetime
import io
import ipaddress
import mmap
import os
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest_twisted  # type: ignore[import-untyped]  # ships no type hints
from attrs import define
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import quoteStringArgument
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.ssl import Certificate
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from twisted_zero._iopool import IOPool
from twisted_zero._sources import IBlockingSource, ISource


class CountingFile(io.BytesIO):
    """
    An in-memory file that counts reads and remembers being closed.
    """

    def __init__(self, content: bytes) -> None:
        super().__init__(content)
        self.reads = 0
        self.closeCount = 0

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read of closed file")
        self.reads += 1
        return super().read(size)

    def close(self) -> None:
        self.closeCount += 1
        super().close()


T = TypeVar("T")


class PausingTransport(StringTransport):
    """
    A transport that, like a real one, pauses its streaming producer inside
    C{write} once more than C{bufferSize} bytes are waiting, and records the
    order of the calls made on it.
    """

    def __init__(self, bufferSize: int = 64 * 1024, lenient: bool = False) -> None:
        StringTransport.__init__(self, lenient=lenient)
        self.bufferSize = bufferSize
        self.calls: list[str] = []

    def write(self, data: bytes) -> None:
        StringTransport.write(self, data)
        self.calls.append("write")
        if (
            self.producer is not None
            and self.streaming
            and len(self.value()) > self.bufferSize
        ):
            self.producerState = "paused"
            self.producer.pauseProducing()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def value(self) -> bytes:
        """
        What was written and not cleared.
        """
        return cast(bytes, StringTransport.value(self))

    def drain(self) -> bytes:
        """
        Take everything written so far, then resume the producer as a real
        transport does once its buffer is empty.
        """
        data = self.value()
        StringTransport.clear(self)
        if self.producer is not None and self.producerState == "paused":
            self.producerState = "producing"
            self.producer.resumeProducing()
        return data

    def unregisterProducer(self) -> None:
        self.calls.append("unregisterProducer")
        StringTransport.unregisterProducer(self)

    def loseConnection(self) -> None:
        self.calls.append("loseConnection")
        StringTransport.loseConnection(self)

    def abortConnection(self) -> None:
        self.calls.append("abortConnection")
        StringTransport.loseConnection(self)


class TurnClock(Clock):
    """
    A clock that can also run one reactor turn: the calls due now, but not
    the ones they schedule (L{Clock.advance} would run those too, forever).
    """

    def runTurn(self) -> int:
        """
        Run the calls that are due now; return how many ran.
        """
        due = [call for call in self.calls if call.getTime() <= self.seconds()]
        for call in due:
            self.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)
        return len(due)


class ManualThreads:
    """
    A thread pool and a reactor's C{callFromThread} driven by hand: calls
    submitted to the pool wait in L{queued} until L{runThread} runs one, and
    what it hands back to the reactor thread waits in L{delivered} until
    L{deliver}. Between the two, a call is "running" as far as the reactor
    thread can tell.
    """

    def __init__(self) -> None:
        self.queued: list[Callable[[], object]] = []
        self.delivered: list[Callable[[], object]] = []

    def callInThread(
        self, func: Callable[..., object], *args: object, **kw: object
    ) -> None:
        self.queued.append(partial(func, *args, **kw))

    def callFromThread(
        self, func: Callable[..., object], *args: object, **kw: object
    ) -> None:
        self.delivered.append(partial(func, *args, **kw))

    def runThread(self) -> None:
        """
        Run the oldest queued call, as a thread would.
        """
        self.queued.pop(0)()

    def deliver(self) -> None:
        """
        Run, in the "reactor thread", what the threads handed back.
        """
        while self.delivered:
            self.delivered.pop(0)()

    def runAll(self) -> None:
        """
        Run every queued call and deliver its result, until none is left.
        """
        while self.queued or self.delivered:
            if self.queued:
                self.runThread()
            self.deliver()


def manualPool() -> tuple[IOPool, ManualThreads]:
    """
    An L{IOPool} on a L{ManualThreads}.
    """
    threads = ManualThreads()
    reactor = cast(IReactorFromThreads, threads)
    return IOPool(reactor=reactor, threads=threads), threads


@implementer(IBlockingSource)
class SlowSource:
    """
    A source of C{content} whose reads may block unless L{cached}: it counts
    reads made with and without waiting, and fails a test that closes it
    while a thread is reading it or reads it once closed.
    """

    description = "slow"
    chunkSize = 1000

    def __init__(self, content: bytes, cached: bool = False) -> None:
        self._content = content
        self.cached = cached
        self.reads = 0
        self.nowaitHits = 0
        self.closed = False
        self.failWith: Exception | None = None
        self.asked: list[int] = []

    def read(self, maxBytes: int) -> bytes:
        assert not self.closed, "read after close"
        self.reads += 1
        self.asked.append(maxBytes)
        if self.failWith is not None:
            raise self.failWith
        chunk, self._content = self._content[:maxBytes], self._content[maxBytes:]
        return chunk

    def readNowait(self, maxBytes: int) -> bytes | None:
        assert not self.closed, "read after close"
        if not self.cached:
            return None
        self.nowaitHits += 1
        return self.read(maxBytes)

    def close(self) -> None:
        self.closed = True


def residentPages(path: str | os.PathLike[str]) -> int:
    """
    How many of C{path}'s pages are in the page cache (C{mincore()}).
    """
    size = os.path.getsize(path)
    if not size:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    pageSize = mmap.PAGESIZE
    pages = (size + pageSize - 1) // pageSize
    with (
        open(path, "rb") as file,
        mmap.mmap(file.fileno(), size, access=mmap.ACCESS_COPY) as mapped,
    ):
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapped))
        vector = (ctypes.c_ubyte * pages)()
        if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vector):
            raise OSError(ctypes.get_errno(), "mincore failed")
        resident = sum(byte & 1 for byte in vector)
        del address
    return resident


def evict(path: str | os.PathLike[str]) -> bool:
    """
    Drop C{path}'s pages from the page cache, as a cold disk would have
    them, and check that they are gone (the kernel may keep pages it has
    not yet put on its lists: try again until it lets them go).

    @return: Whether they are gone; never, on a file system that lives in
        the page cache (tmpfs).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(100):
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if not residentPages(path):
                return True
    finally:
        os.close(fd)
    return False


@define
class TLSFiles:
    """
    A self-signed certificate for C{localhost} and 127.0.0.1, and its key.
    """

    keyPath: Path
    certPath: Path
    certPEM: bytes

    def trustRoot(self) -> Certificate:
        """
        The certificate, for a client to trust.
        """
        return Certificate.loadPEM(self.certPEM)

    def serverEndpoint(self) -> str:
        return (
            "ssl:0:interface=127.0.0.1"
            f":privateKey={quoteStringArgument(str(self.keyPath))}"
            f":certKey={quoteStringArgument(str(self.certPath))}"
        )


def writeTLSFiles(directory: Path) -> TLSFiles:
    """
    Generate a self-signed certificate and write it and its key to files in
    C{directory}.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certPEM = cert.public_bytes(serialization.Encoding.PEM)
    keyPath = directory / "key.pem"
    certPath = directory / "cert.pem"
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certPath.write_bytes(certPEM)
    return TLSFiles(keyPath, certPath, certPEM)


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers} {self.body[:80]!r}>"


def parseResponses(data: bytes, head: bool = False) -> list[Response]:
    """
    Split raw HTTP/1.1 responses into status, lower-case headers and body.
    """
    responses = []
    while data:
        header, _, data = data.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if head or status in (204, 304):
            body = b""
        elif "content-length" in headers:
            length = int(headers["content-length"])
            body, data = data[:length], data[length:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size, _, data = data.partition(b"\r\n")
                length = int(size, 16)
                body += data[:length]
                assert data[length : length + 2] == b"\r\n", "chunk not ended"
                data = data[length + 2 :]
                if length == 0:
                    break
        else:
            body, data = data, b""
        responses.append(Response(status, headers, body))
    return responses


_trial = SynchronousTestCase()


def successResultOf(deferred: Deferred[T]) -> T:
    """
    The result a L{Deferred} already has (trial's check, for pytest classes).
    """
    return _trial.successResultOf(deferred)


def failureResultOf(deferred: Deferred[Any], *expected: type[BaseException]) -> Failure:
    """
    The L{Failure} a L{Deferred} already has, optionally of the given types.
    """
    return cast(Failure, _trial.failureResultOf(deferred, *expected))


def assertNoResult(deferred: Deferred[Any]) -> None:
    """
    Check that a L{Deferred} has no result yet.
    """
    _trial.assertNoResult(deferred)


F = TypeVar("F", bound=Callable[..., Any])


def ensureDeferred(test: F) -> F:
    """
    C{pytest_twisted.ensureDeferred}, typed: run an C{async} test in the
    reactor.
    """
    wrapped: F = pytest_twisted.ensureDeferred(test)
    return wrapped


def asyncYieldFixture(fixture: F) -> F:
    """
    C{pytest_twisted.async_yield_fixture}, typed: an C{async} fixture that
    yields.
    """
    wrapped: F = pytest_twisted.async_yield_fixture(fixture)
    return wrapped


def readAll(source: object, sizes: list[int]) -> bytes:
    """
    What C{source} hands out for reads of the given sizes, one after another.
    """
    assert ISource.providedBy(source)
    return b"".join(source.read(size) for size in sizes)
