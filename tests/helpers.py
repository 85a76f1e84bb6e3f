"""
Test doubles shared by the unit tests.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport


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


class PausingTransport(StringTransport):
    """
    A transport that, like a real one, pauses its streaming producer inside
    C{write} once more than C{bufferSize} bytes are waiting, and records the
    order of the calls made on it.
    """

    def __init__(self, bufferSize: int = 64 * 1024, lenient: bool = False) -> None:
        super().__init__(lenient=lenient)
        self.bufferSize = bufferSize
        self.calls: list[str] = []

    def write(self, data: bytes) -> None:
        super().write(data)
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

    def drain(self) -> bytes:
        """
        Take everything written so far, then resume the producer as a real
        transport does once its buffer is empty.
        """
        data = self.value()
        self.clear()
        if self.producer is not None and self.producerState == "paused":
            self.producerState = "producing"
            self.producer.resumeProducing()
        return data

    def unregisterProducer(self) -> None:
        self.calls.append("unregisterProducer")
        super().unregisterProducer()

    def loseConnection(self) -> None:
        self.calls.append("loseConnection")
        super().loseConnection()

    def abortConnection(self) -> None:
        self.calls.append("abortConnection")
        super().loseConnection()


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
