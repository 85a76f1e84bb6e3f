"""
Tests for L{twisted_zero._webstream}: a response body streamed under the
server's protection (rates, stall watch, maximum duration), and every
abort it starts stopping its producer first.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from twisted_zero._protection import Protection

from .webserver import (
    Server,
    abortNoting,
    makeRoot,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return makeRoot(tmp_path)


class ProtectionTests:
    @pytest.mark.parametrize(
        ("rate", "status"), [("1M", 200), ("0", 400), ("fast", 400)]
    )
    def test_rate(self, rate: str, status: int) -> None:
        """
        C{?rate=} takes a positive size; anything else is a 400.
        """
        assert Server(None).get(f"/zero?bytes=100&rate={rate}").status == status

    @pytest.mark.parametrize(
        "path", ["/files/empty", "/zero?bytes=0", "/zero?bytes=10", "/files/data.bin"]
    )
    def test_nothingLeftScheduled(self, root: Path, path: str) -> None:
        """
        However a response ends, inside C{startStreaming} too (an empty
        body, or one that fits in the first send), its stall watch and its
        deadline end with it: nothing is left scheduled.
        """
        server = Server(
            root,
            protection=lambda clock: Protection(clock, stallTimeout=10, maxDuration=3),
        )
        for _ in range(2):  # two on the same keep-alive connection
            response = server.get(path)
            assert response.status == 200
        # The connection's own idle timeout ends with the connection.
        server.channel.connectionLost(Failure(ConnectionDone()))
        assert server.clock.getDelayedCalls() == []

    def test_stalledBody(self, root: Path) -> None:
        """
        A response whose client stops reading is aborted after the stall
        timeout, and logged as such.
        """
        server = Server(
            root, protection=lambda clock: Protection(clock, stallTimeout=10)
        )
        with capturedLogs() as events:
            server.send(b"GET /files/data.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            for _ in range(20):
                server.clock.advance(1)
            assert "abortConnection" in server.transport.calls
            server.channel.connectionLost(Failure(ConnectionLost()))
        [event] = [e for e in events if "status" in e]
        assert event["reason"] == "stalled"

    def test_maxDuration(self) -> None:
        """
        No response outlives the maximum duration.
        """
        server = Server(None, protection=lambda clock: Protection(clock, maxDuration=5))
        with capturedLogs() as events:
            server.send(b"GET /zero HTTP/1.1\r\nHost: t\r\n\r\n")
            server.clock.advance(4.9)
            assert "abortConnection" not in server.transport.calls
            server.clock.advance(0.1)
            assert "abortConnection" in server.transport.calls
            server.channel.connectionLost(Failure(ConnectionLost()))
        [event] = [e for e in events if "status" in e]
        assert event["reason"] == "max duration"


class AbortOrderTests:
    """
    Every abort the stream wiring starts stops the stream's producer first:
    its file is closed (nothing more is read into a doomed buffer) by the
    time the connection is aborted.
    """

    def test_stalled(self, root: Path) -> None:
        """
        A stalled response's file is closed before its connection is
        aborted.
        """
        server, transport = abortNoting(
            root, protection=lambda clock: Protection(clock, stallTimeout=10)
        )
        server.send(b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        for _ in range(20):
            server.clock.advance(1)
        assert transport.noted == [[True]]

    def test_maxDuration(self, root: Path) -> None:
        """
        A response past the maximum duration has its file closed before its
        connection is aborted, and logs why.
        """
        server, transport = abortNoting(
            root, protection=lambda clock: Protection(clock, maxDuration=5)
        )
        with capturedLogs() as events:
            server.send(b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            server.clock.advance(5)
            assert transport.noted == [[True]]
            server.channel.connectionLost(Failure(ConnectionLost()))
        [event] = [e for e in events if "status" in e]
        assert event["reason"] == "max duration"

    def test_sourceFailed(self, root: Path) -> None:
        """
        A response whose file fails (it shrank) has it closed before its
        connection is aborted.
        """
        server, transport = abortNoting(root)
        server.send(b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        os.truncate(root / "big.bin", 20_000)
        server.pump()
        assert transport.noted == [[True]]
